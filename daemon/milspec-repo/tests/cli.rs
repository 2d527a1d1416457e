//! The `milspec-repo` binary itself: how it names itself and refuses a bad
//! command line. (Its commands are tested in daemon/tests/, which run this
//! binary: a workspace test run builds it because of this file.)
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn repo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_milspec-repo")).args(args).output().unwrap()
}

#[test]
fn names_its_version_and_commands() {
    let o = repo(&["--version"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("milspec-repo {}", env!("CARGO_PKG_VERSION")));
    let help = String::from_utf8_lossy(&repo(&["--help"]).stdout).into_owned();
    for cmd in ["keygen", "pack", "publish", "refresh"] {
        assert!(help.contains(cmd), "`{cmd}` missing from --help:\n{help}");
    }
}

#[test]
fn a_bad_command_line_is_a_usage_error() {
    let o = repo(&["no-such-command"]);
    assert_eq!(o.status.code(), Some(2));
    let o = repo(&["pack", "--version", "1.0.0"]);
    assert_eq!(o.status.code(), Some(2), "pack without --module, --key and --out");
}
