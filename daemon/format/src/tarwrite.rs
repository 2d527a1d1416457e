//! A small streaming writer for the plain ustar archives packages are made of.
//!
//! Entries are regular files with fixed metadata (mode 0644, owner 0, mtime 0)
//! so that the same inputs always give the same package bytes.

use std::io::{self, Write};

const BLOCK: u64 = 512;

#[derive(Debug)]
pub struct TarWriter<W: Write> {
    out: W,
    /// Bytes still owed to the entry being written.
    remaining: u64,
    /// Padding owed after the entry being written.
    pad: u64,
    open: bool,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out, remaining: 0, pad: 0, open: false }
    }

    /// Starts a regular file entry of exactly `size` bytes.
    pub fn begin(&mut self, path: &str, size: u64) -> io::Result<()> {
        if self.open {
            return Err(io::Error::other("tar entry still open"));
        }
        let mut h = tar::Header::new_ustar();
        h.set_path(path)?;
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        self.remaining = size;
        self.pad = (BLOCK - size % BLOCK) % BLOCK;
        self.open = true;
        Ok(())
    }

    pub fn data(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.len() as u64 > self.remaining {
            return Err(io::Error::other("tar entry data exceeds its declared size"));
        }
        self.out.write_all(chunk)?;
        self.remaining -= chunk.len() as u64;
        Ok(())
    }

    pub fn end(&mut self) -> io::Result<()> {
        if !self.open || self.remaining != 0 {
            return Err(io::Error::other("tar entry ended before its declared size"));
        }
        self.out.write_all(&[0u8; BLOCK as usize][..self.pad as usize])?;
        self.open = false;
        Ok(())
    }

    pub fn append(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        self.begin(path, data.len() as u64)?;
        self.data(data)?;
        self.end()
    }

    /// Writes the end-of-archive marker and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.open {
            return Err(io::Error::other("tar entry still open"));
        }
        self.out.write_all(&[0u8; 2 * BLOCK as usize])?;
        self.out.flush()?;
        Ok(self.out)
    }
}
