//! What the command-line tools `milspecd`, `milspecctl` and `milspec-repo`
//! share: the command-line parse (usage errors exit [`EXIT_USAGE`]), one
//! escaped error line on stderr and an exit code per error.

use std::process::ExitCode;

/// The exit code of a bad command line, in every tool (`EX_USAGE` of
/// sysexits.h). clap's own is 2, which the tools use for "rejected".
pub const EXIT_USAGE: u8 = 64;

/// Parses the command line. A usage error is printed by clap on stderr and
/// exits [`EXIT_USAGE`]; `--help` and `--version` print on stdout and exit 0.
pub fn parse<T: clap::Parser>() -> T {
    parse_from(std::env::args_os()).unwrap_or_else(|exit| exit.exit())
}

/// [`parse`] over `args` (the program name first); what to print and how
/// to exit instead of the parsed value.
pub fn parse_from<T, I, A>(args: I) -> Result<T, UsageExit>
where
    T: clap::Parser,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    T::try_parse_from(args).map_err(|error| UsageExit { code: usage_code(&error), error })
}

/// A command line that did not parse, or asked for help or the version.
#[derive(Debug)]
pub struct UsageExit {
    /// [`EXIT_USAGE`], or 0 for `--help` and `--version`.
    pub code: u8,
    pub error: clap::Error,
}

impl UsageExit {
    /// Prints clap's text (stdout for help and version, stderr otherwise)
    /// and exits with [`UsageExit::code`].
    pub fn exit(self) -> ! {
        let _ = self.error.print();
        std::process::exit(i32::from(self.code))
    }
}

fn usage_code(e: &clap::Error) -> u8 {
    // Help and version are what was asked for, on stdout; everything
    // else (including help shown for a missing subcommand) is a usage error.
    if e.use_stderr() {
        EXIT_USAGE
    } else {
        0
    }
}

/// Runs a tool's main body and turns an error into one line on stderr,
/// `TOOL: error: outer: inner: ...`, and a non-zero exit code.
pub fn run_main(tool: &str, body: impl FnOnce() -> anyhow::Result<ExitCode>) -> ExitCode {
    match body() {
        Ok(code) => code,
        Err(e) => {
            // Errors quote files, packages and the daemon's replies: escaped.
            eprintln!("{tool}: error: {}", milspec_format::text::sanitize(&one_line(&e)));
            ExitCode::from(exit_code_of(&e))
        }
    }
}

/// The whole error chain on one line. Many errors already quote their
/// cause in their own message; a cause already shown is not repeated.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

/// An error that carries its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

fn exit_code_of(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<Exit>().map_or(1, |x| x.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    #[command(name = "t", version)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Cmd {
        Go {
            #[arg(long)]
            n: u32,
        },
    }

    fn code(args: &[&str]) -> Result<u32, u8> {
        parse_from::<Cli, _, _>(std::iter::once("t").chain(args.iter().copied()))
            .map(|c| match c.cmd {
                Cmd::Go { n } => n,
            })
            .map_err(|e| e.code)
    }

    #[test]
    fn usage_errors_are_64_help_and_version_are_0() {
        assert_eq!(code(&["go", "--n", "3"]), Ok(3));
        for bad in [&["nope"][..], &["go"], &["go", "--n", "x"], &["go", "--n", "1", "--extra"], &[]] {
            assert_eq!(code(bad), Err(EXIT_USAGE), "{bad:?}");
        }
        for ask in [&["--help"][..], &["--version"], &["go", "--help"], &["help"]] {
            assert_eq!(code(ask), Err(0), "{ask:?}");
        }
    }
}
