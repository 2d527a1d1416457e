//! The `milspecctl` binary itself: how it names itself and refuses a bad
//! command line. (Its commands are tested against the real daemon in
//! daemon/tests/, which run this binary: a workspace test run builds it
//! because of this file.)
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn milspecctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_milspecctl")).args(args).output().unwrap()
}

#[test]
fn names_its_version_and_commands() {
    let o = milspecctl(&["--version"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("milspecctl {}", env!("CARGO_PKG_VERSION")));
    let help = String::from_utf8_lossy(&milspecctl(&["--help"]).stdout).into_owned();
    for cmd in ["verify", "inspect", "status", "install", "check", "rollback", "history", "slots", "watch"] {
        assert!(help.contains(cmd), "`{cmd}` missing from --help:\n{help}");
    }
}

#[test]
fn a_bad_command_line_is_a_usage_error() {
    let o = milspecctl(&["no-such-command"]);
    assert_eq!(o.status.code(), Some(2));
    let o = milspecctl(&["verify"]);
    assert_eq!(o.status.code(), Some(2), "verify without --keys and a package");
}
