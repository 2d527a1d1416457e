//! The SHA-256 of a package file as the engine reads it, for the history:
//! the bytes that were verified (or refused) are the bytes hashed, so a
//! caller cannot change the file between a hash and the read.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// A reader that hashes every byte that passes through it.
#[derive(Debug)]
pub struct PackageHash<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    /// The reader failed: the hash would not be of the whole file.
    failed: bool,
}

impl<R: Read> PackageHash<R> {
    pub fn new(inner: R) -> Self {
        PackageHash { inner, hasher: Sha256::new(), read: 0, failed: false }
    }

    /// Reads what the package reader left (at most up to `limit` bytes in
    /// all) and returns the hex SHA-256 of the whole file; `None` if the
    /// file is larger than `limit` or could not be read to its end.
    pub fn finish(&mut self, limit: u64) -> Option<String> {
        let left = limit.saturating_add(1).saturating_sub(self.read);
        if io::copy(&mut self.by_ref().take(left), &mut io::sink()).is_err() {
            self.failed = true;
        }
        if self.failed || self.read > limit {
            return None;
        }
        let digest = std::mem::take(&mut self.hasher).finalize();
        self.failed = true; // finished: a second call has nothing to hash
        Some(milspec_format::Sha256Digest(digest.into()).to_string())
    }
}

impl<R: Read> Read for PackageHash<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.read = self.read.saturating_add(n as u64);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed = true;
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_the_whole_file_however_much_was_read() {
        let data = vec![7u8; 100_000];
        let want = milspec_format::Sha256Digest::of(&data).to_string();
        let mut r = PackageHash::new(&data[..]);
        let mut first = [0u8; 10];
        r.read_exact(&mut first).unwrap();
        assert_eq!(r.finish(1 << 20).as_deref(), Some(want.as_str()));
        assert_eq!(r.finish(1 << 20), None, "finished once");
        assert_eq!(PackageHash::new(&data[..]).finish(99_999), None, "over the limit");
        assert_eq!(PackageHash::new(&data[..]).finish(100_000).as_deref(), Some(want.as_str()));
    }
}
