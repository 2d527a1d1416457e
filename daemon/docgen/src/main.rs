//! `milspec-docgen OUT`: writes the manual pages and the shell completions
//! of the three programs, generated from their clap definitions, and
//! `milspecd.toml(5)` from the shipped default configuration (whose every
//! value the static checks hold equal to the built-in defaults):
//!
//! ```text
//! OUT/man/milspecd.8  OUT/man/milspecd-<command>.8     (one per subcommand)
//! OUT/man/milspecctl.1 ... OUT/man/milspec-repo.1 ...  OUT/man/milspecd.toml.5
//! OUT/completions/bash/NAME  OUT/completions/zsh/_NAME  OUT/completions/fish/NAME.fish
//! ```
//!
//! The `.deb` installs them (daemon/debian/build-debs runs this first).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

mod toml_page;

/// Every program: its command, its manual section, and the exit-status
/// text of its page.
fn programs() -> Vec<(clap::Command, &'static str, &'static str)> {
    vec![
        (milspecd::cli::Cli::command(), "8", EXIT_MILSPECD),
        (milspecctl::cli::Cli::command(), "1", EXIT_MILSPECCTL),
        (milspec_repo::cli::Cli::command(), "1", EXIT_REPO),
    ]
}

const EXIT_MILSPECD: &str = "0 done; 1 error; 2 rejected before any swap, nothing changed; \
3 swapped then rolled back (install, check), or nothing committed (load-committed); \
4 the committed version has no build for the running kernel (load-committed); \
6 no build for that kernel (prepare-kernel); 64 usage error.";
const EXIT_MILSPECCTL: &str = "0 done; 1 error; 2 rejected, nothing changed; 3 rolled back; \
4 permission denied; 5 the daemon went away while waiting; 6 no build for that kernel \
(kernel-installed); 7 milspecd is not running on this host (status prints the offline view); \
64 usage error.";
const EXIT_REPO: &str = "0 done; 1 error; 64 usage error.";

fn main() -> anyhow::Result<()> {
    let out = std::env::args_os().nth(1).map(PathBuf::from).context("usage: milspec-docgen OUT")?;
    let written = generate(&out)?;
    println!("milspec-docgen: {} files in {}", written.len(), out.display());
    Ok(())
}

/// Writes everything below `out`; returns the files written.
pub fn generate(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let man = out.join("man");
    fs::create_dir_all(&man).with_context(|| format!("cannot make {}", man.display()))?;
    let mut written = Vec::new();
    for (cmd, section, exit) in programs() {
        written.extend(man_pages(&man, cmd.clone(), section, exit)?);
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            written.push(completion(out, cmd.clone(), shell)?);
        }
    }
    let toml = man.join("milspecd.toml.5");
    fs::write(&toml, toml_page::render(toml_page::SHIPPED))
        .with_context(|| format!("cannot write {}", toml.display()))?;
    written.push(toml);
    Ok(written)
}

/// The program's page and one page per subcommand (`milspecctl-install.1`).
fn man_pages(dir: &Path, cmd: clap::Command, section: &str, exit: &str) -> anyhow::Result<Vec<PathBuf>> {
    let name = cmd.get_name().to_string();
    let mut pages = vec![(name.clone(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let full = format!("{name}-{}", sub.get_name());
        pages.push((full.clone(), sub.clone().name(full)));
    }
    let mut written = Vec::new();
    for (page, c) in pages {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).section(section).date("").source("milspecd").manual("milspecd").render(&mut buf)?;
        buf.extend_from_slice(format!(".SH \"EXIT STATUS\"\n{}\n", roff_text(exit)).as_bytes());
        buf.extend_from_slice(see_also(&page, &name).as_bytes());
        let path = dir.join(format!("{page}.{section}"));
        fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The other pages (a subcommand's page names its program's first).
fn see_also(page: &str, program: &str) -> String {
    let all = [("milspecd", "8"), ("milspecctl", "1"), ("milspec-repo", "1"), ("milspecd.toml", "5")];
    let mut refs: Vec<(&str, &str)> = all.into_iter().filter(|(n, _)| *n != page).collect();
    if let Some(i) = refs.iter().position(|(n, _)| *n == program) {
        let own = refs.remove(i);
        refs.insert(0, own);
    }
    let list: Vec<String> = refs.iter().map(|(n, s)| format!("\\fB{}\\fR({s})", roff_text(n))).collect();
    format!(".SH \"SEE ALSO\"\n{}\n.PP\n/usr/share/doc/milspecd/operations.md\n", list.join(", "))
}

/// Plain text as roff: backslashes and leading dots or quotes escaped.
pub fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// One shell's completion file, named where Debian's shells look for it.
fn completion(out: &Path, mut cmd: clap::Command, shell: Shell) -> anyhow::Result<PathBuf> {
    let name = cmd.get_name().to_string();
    let (dir, file) = match shell {
        Shell::Bash => ("bash", name.clone()),
        Shell::Zsh => ("zsh", format!("_{name}")),
        _ => ("fish", format!("{name}.fish")),
    };
    let dir = out.join("completions").join(dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, &name, &mut buf);
    let path = dir.join(file);
    fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_program_and_subcommand_has_a_page_and_every_shell_a_completion() {
        let d = tempfile::tempdir().unwrap();
        let written = generate(d.path()).unwrap();
        for (cmd, section, _) in programs() {
            let name = cmd.get_name();
            let page = fs::read_to_string(d.path().join(format!("man/{name}.{section}"))).unwrap();
            assert!(page.contains(".SH \"EXIT STATUS\""), "{name}");
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let sub_page = d.path().join(format!("man/{name}-{}.{section}", sub.get_name()));
                assert!(sub_page.exists(), "{}", sub_page.display());
                assert!(page.contains(&roff_text(sub.get_name())), "{name} lists {}", sub.get_name());
            }
            for f in [format!("bash/{name}"), format!("zsh/_{name}"), format!("fish/{name}.fish")] {
                let text = fs::read_to_string(d.path().join("completions").join(&f)).unwrap();
                assert!(text.contains(name), "{f}");
            }
        }
        assert!(written.iter().any(|p| p.ends_with("man/milspecd.toml.5")));
    }
}
