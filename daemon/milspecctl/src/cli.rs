//! The command line of `milspecctl`: its clap definition, shared by the
//! binary and by the generated manual page and shell completions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "milspecctl", version, about = "Inspect, verify and control dell-milspec module updates")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Verify a package offline, with the host's trust by default: the
    /// `[trust]` keys folder and threshold of the milspecd configuration.
    /// Exit 0 trusted, 2 rejected (what `install` would refuse), 1 an I/O
    /// or configuration error (or a path that is not a regular file).
    Verify {
        /// milspecd configuration whose `[trust]` is used [default: /etc/milspecd/milspecd.toml]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Folder of trusted *.pub keys [default: the configuration's `[trust] keys_dir`]
        #[arg(long, value_name = "DIR")]
        keys: Option<PathBuf>,
        /// Distinct trusted signatures required [default: the configuration's `[trust] threshold`]
        #[arg(long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
        threshold: Option<usize>,
        package: PathBuf,
    },
    /// Show what a package holds, checking its structure and hashes but not
    /// who signed it.
    Inspect {
        package: PathBuf,
        /// Print the manifest and the signatures' key ids as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show the daemon's state, versions, health and flags. With milspecd
    /// not running, a read-only offline view of its state folder instead
    /// (as `milspecd status`; changes nothing on disk), after a line that
    /// says so, and exit 7. Exit 0 daemon running, 7 not running, 1 error.
    Status {
        /// milspecd configuration naming the state folder, for the offline
        /// view [default: /etc/milspecd/milspecd.toml]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the status as JSON on stdout (offline: the document of
        /// `milspecd status --json`, and the note on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Install a package through the daemon and follow it to its outcome.
    /// Exit 0 committed (or already installed), 2 rejected or invalid,
    /// 3 rolled back, 4 access denied, 1 other error.
    Install {
        package: PathBuf,
        /// Give up following the outcome after this long.
        #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print the outcome as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Ask the daemon to poll its mirror now; follows an install to its outcome.
    Check {
        #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print the outcome as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// End the running trial now and go back to the committed version; with
    /// no trial, go back to the earlier version kept in the other slot (a
    /// trial of its own, followed to its outcome). Exit 0 done or committed,
    /// 3 the earlier version failed its probation, 4 access denied, 1 other.
    Rollback {
        /// Give up following a rollback to the other slot after this long.
        #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Print the outcome as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Tell the daemon the module was loaded or unloaded behind its back
    /// (the udev rule runs this); it repairs as at startup.
    Reconcile {
        /// Print the result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Take a version off this host's blocklist (root or polkit), so the
    /// mirror or an install may bring it again; the history records who.
    Unblock {
        /// The version (any build of its release: 1.2.0 covers 1.2.0+b1).
        version: String,
        /// Print the outcome as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Pause automatic polling (kept across restarts).
    Pause {
        /// Print the new setting as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Resume automatic polling.
    Resume {
        /// Print the new setting as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show the newest events of the daemon's history.
    History {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Check the hash chain instead (the daemon reads every file): exit
        /// 0 verified, 2 broken (the first broken record is named).
        #[arg(long)]
        verify: bool,
        /// Print the events as a JSON array on stdout (with --verify, one
        /// milspec.history-verify/1 object).
        #[arg(long)]
        json: bool,
    },
    /// Show the two A/B slots.
    Slots {
        /// Print the slots as a JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show the daemon's compliance report for an auditor: Secure Boot,
    /// lockdown, module.sig_enforce and the kernel's keys, the kernel's
    /// taint decoded, the machine, the trusted package keys and threshold,
    /// the committed slot and the live module (version, SHA-256, signer).
    /// Read-only; `milspecd report` reads the same without the daemon.
    /// Exit 0, 7 not running, 1 error.
    Report {
        /// Print the report as one JSON object (milspec.report/1) on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Show the running kernel and which kernels the committed version has
    /// builds for (and which installed kernels it has none for).
    Kernels {
        /// Print the kernels as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Tell the daemon kernel RELEASE was installed (the kernel's postinst
    /// hook runs this): it fetches and adds the committed version's build
    /// for it now, before its first boot. Exit 0 ready (or nothing
    /// committed), 6 no build for that kernel, 1 error or no answer in time.
    KernelInstalled {
        release: String,
        /// Give up waiting after this long (the daemon goes on).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
        timeout: Duration,
        /// Print the result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Tell the daemon kernel RELEASE was removed (the kernel's postrm hook
    /// runs this): its build is dropped from the slots.
    KernelRemoved {
        release: String,
        /// Print the result as one JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print each signal and property change as it happens, until
    /// interrupted. Waits for milspecd to start if it is not running, and
    /// follows it across restarts (notes about that go to stderr).
    Watch {
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
        /// Print one JSON object per event, one per line, on stdout.
        #[arg(long)]
        json: bool,
    },
}

impl Cmd {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            Cmd::Status { json, .. }
            | Cmd::Install { json, .. }
            | Cmd::Check { json, .. }
            | Cmd::Rollback { json, .. }
            | Cmd::Reconcile { json }
            | Cmd::Unblock { json, .. }
            | Cmd::Pause { json }
            | Cmd::Resume { json }
            | Cmd::History { json, .. }
            | Cmd::Slots { json }
            | Cmd::Report { json }
            | Cmd::Kernels { json }
            | Cmd::KernelInstalled { json, .. }
            | Cmd::KernelRemoved { json, .. }
            | Cmd::Watch { json, .. }
            | Cmd::Inspect { json, .. } => *json,
            Cmd::Verify { .. } => false,
        }
    }
}
