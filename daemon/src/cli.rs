//! The command line of `milspecd`: its clap definition, shared by the
//! binary and by the generated manual page and shell completions.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "milspecd", version, about = "Keep the dell-milspec kernel module up to date")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(clap::Args, Debug)]
pub struct ConfigArg {
    /// Configuration file [default: /etc/milspecd/milspecd.toml]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the daemon: recover, then keep the module healthy.
    Run(ConfigArg),
    /// One full install cycle in the foreground, without a running daemon.
    /// Exit 0 committed, 2 rejected before any swap, 3 rolled back, 1 error.
    Install {
        #[command(flatten)]
        config: ConfigArg,
        /// Accept a package with a lower sequence than ever committed here.
        #[arg(long)]
        allow_downgrade: bool,
        /// Print the outcome as JSON on stdout.
        #[arg(long)]
        json: bool,
        package: PathBuf,
    },
    /// Bring the state and the live kernel together (what `run` does first), then exit.
    Recover(ConfigArg),
    /// Show slots, committed and trial versions, health and the last rollback,
    /// read from the state folder as it is: changes nothing on disk, needs
    /// no running daemon.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Load the committed slot's module (for modprobe's `install` hook):
    /// verified, hash-checked, with its parameters then PARAM=VALUE ones.
    /// Exit 0 loaded or already loaded, 3 no committed slot, 1 error.
    LoadCommitted {
        #[command(flatten)]
        config: ConfigArg,
        /// Module parameters over the package's defaults (modprobe's options).
        #[arg(last = true, value_name = "PARAM=VALUE")]
        params: Vec<String>,
    },
    /// Show what the kernel enforces for modules: whether it refuses an
    /// unsigned module (module.sig_enforce, lockdown, Secure Boot) and the
    /// keys it holds (/proc/keys). Reads only; exit 0, 1 on error.
    Policy {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the policy as one JSON object (milspec.host-policy/1) on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The compliance report for an auditor: Secure Boot, lockdown,
    /// module.sig_enforce and the kernel's keys, the kernel's taint
    /// decoded, the machine, the trusted package keys and threshold, the
    /// committed slot and the live module (its version, SHA-256 and
    /// signer). Reads only, without the daemon; a fact that cannot be read
    /// is shown as unknown. Exit 0, 1 on error.
    Report {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the report as one JSON object (milspec.report/1) on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration as `run` does (keys, threshold, source,
    /// health checks), print it with every default filled in, and name
    /// each problem on stderr. Exit 0 without problems, 1 with any.
    Config(ConfigArg),
    /// Make the committed version ready for kernel RELEASE in the
    /// foreground, as the daemon does when the kernel hook tells it: fetch
    /// its build from the mirror and add it to the committed slot.
    /// Exit 0 ready (or nothing committed), 6 no build, 2 rejected, 1 error.
    PrepareKernel {
        #[command(flatten)]
        config: ConfigArg,
        release: String,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Mark the metrics file `milspecd_up 0`, keeping its other values (the
    /// unit's ExecStopPost=, however the daemon stopped). Writes atomically;
    /// exit 0, also when [metrics] textfile is "" (nothing to do), 1 on error.
    MetricsDown(ConfigArg),
    /// Check the history's hash chain, reading the files directly (root on
    /// the host, no daemon needed): every record's `prev` is the hash of
    /// the one before, across rotated files. Exit 0 verified, 2 broken
    /// (the first broken record is named), 1 error.
    History {
        #[command(flatten)]
        config: ConfigArg,
        /// Verify the chain (the only mode here; `milspecctl history` lists events).
        #[arg(long, required = true)]
        verify: bool,
        /// Print the verification as JSON (milspec.history-verify/1) on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Poll the mirror once in the foreground and say what was done.
    /// Exit 0 up to date, waiting or committed, 2 rejected, 3 rolled back, 1 error.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Ignore the rollout schedule: take the newest version now (operator's force).
        #[arg(long)]
        now: bool,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}
