//! How versions are matched against lists: revocations, the blocklist, pins.
//!
//! SemVer build metadata (`+b1`) does not change which release a build is
//! (SemVer 2.0 §10: it is ignored when determining precedence), so revoking
//! or blocklisting `1.2.0` covers `1.2.0+b1` and `1.2.0+b2`, and a pin to
//! `1.2.0` accepts them. A pre-release (`1.2.0-rc.1`) is another release.
//! What identifies the *live* module stays its exact version string.

use std::cmp::Ordering;

/// `a` and `b` are the same release: equal but for build metadata.
pub fn same_release(a: &semver::Version, b: &semver::Version) -> bool {
    a.cmp_precedence(b) == Ordering::Equal
}

/// `v` is the same release as one of `list`.
pub fn listed(list: &[semver::Version], v: &semver::Version) -> bool {
    list.iter().any(|l| same_release(l, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        s.parse().unwrap()
    }

    #[test]
    fn build_metadata_is_ignored_pre_release_is_not() {
        assert!(same_release(&v("1.2.0"), &v("1.2.0+b1")));
        assert!(same_release(&v("1.2.0+b2"), &v("1.2.0+b1")));
        assert!(same_release(&v("1.2.0-rc.1+x"), &v("1.2.0-rc.1")));
        assert!(!same_release(&v("1.2.0"), &v("1.2.0-rc.1")));
        assert!(!same_release(&v("1.2.0"), &v("1.2.1+b1")));
        assert!(listed(&[v("1.0.0"), v("1.2.0")], &v("1.2.0+b1")));
        assert!(!listed(&[v("1.0.0")], &v("1.2.0+b1")));
    }
}
