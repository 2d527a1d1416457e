//! milspecd: keeps the `dell-milspec` kernel module up to date on a host.
//!
//! The binaries `milspecd`, `milspecctl` and `milspec-repo` are thin shells
//! over the modules here and over the shared format crate.

pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod engine;
pub mod health;
pub mod history;
pub mod host;
pub mod host_policy;
pub mod journal;
pub mod kernel;
#[cfg(feature = "fake-kernel")]
pub mod kernel_fake;
pub mod kernel_paths;
pub mod kernels;
pub mod load_committed;
pub mod lock;
pub mod metrics;
pub mod mirror;
pub mod notice;
pub mod notify;
pub mod online;
pub mod outcome_json;
pub mod package_hash;
pub mod panic_evidence;
pub mod plan;
pub mod preflight;
pub mod reason_class;
pub mod recovery;
pub mod report;
pub mod slot_id;
pub mod slots;
pub mod staged_trust;
pub mod state;
pub mod status;
pub mod status_json;
pub mod trust_store;
pub mod worker;

pub use milspec_format as format;
