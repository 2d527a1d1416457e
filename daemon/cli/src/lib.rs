//! What the command-line tools `milspecd`, `milspecctl` and `milspec-repo`
//! share: one escaped error line on stderr and an exit code per error.

use std::process::ExitCode;

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
