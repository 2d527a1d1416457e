//! milspecd: keeps the `dell-milspec` kernel module up to date on a host.
//!
//! The binaries `milspecd`, `milspecctl` and `milspec-repo` are thin shells
//! over the modules here and over the shared format crate.

pub mod cli;
pub mod config;
pub mod health;
pub mod kernel_paths;

pub use milspec_format as format;
