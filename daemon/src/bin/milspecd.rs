//! `milspecd`: the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use milspecd::cli::run_main;
use milspecd::config::{self, Config};

#[derive(Parser, Debug)]
#[command(name = "milspecd", version, about = "Keep the dell-milspec kernel module up to date")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Check the configuration and print it with every default filled in.
    Config {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| config::DEFAULT_PATH.into());
    Ok(Config::load(&path, explicit)?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    run_main("milspecd", || {
        match cli.cmd {
            Cmd::Config { config } => print!("{}", load_config(config)?.to_toml()),
        }
        Ok(ExitCode::SUCCESS)
    })
}
