//! `milspecd.toml(5)` from the shipped configuration file: its comments
//! are the text, its sections and keys (commented-out ones too, such as
//! the `[source]` example) the entries, its values the defaults. The
//! static checks hold that file equal to the built-in defaults, so the
//! page cannot drift from the code.

use crate::roff_text;

/// The file the package ships as `/etc/milspecd/milspecd.toml`.
pub const SHIPPED: &str = include_str!("../../dist/etc/milspecd/milspecd.toml");

/// One line of the file, read.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    Comment(&'a str),
    Section(&'a str),
    Key { key: &'a str, value: &'a str },
    Blank,
}

fn classify(line: &str) -> Line<'_> {
    let t = line.trim();
    if t.is_empty() {
        return Line::Blank;
    }
    // A commented-out section or key is an example of an optional one.
    let body = t.strip_prefix('#').map(str::trim_start).unwrap_or(t);
    let commented = t.starts_with('#');
    if let Some(name) = body.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
        if !name.contains(' ') {
            return Line::Section(name);
        }
    }
    if let Some((key, value)) = body.split_once(" = ").or_else(|| body.split_once('=')) {
        let key = key.trim();
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Line::Key { key, value: value.trim() };
        }
    }
    if commented {
        Line::Comment(body)
    } else {
        Line::Comment(t)
    }
}

/// The whole page.
pub fn render(file: &str) -> String {
    let mut out = String::from(
        ".TH MILSPECD.TOML 5 \"\" \"milspecd\" \"milspecd\"\n\
         .SH NAME\nmilspecd.toml \\- configuration of milspecd\n\
         .SH SYNOPSIS\n/etc/milspecd/milspecd.toml, /etc/milspecd/conf.d/*.toml\n\
         .SH DESCRIPTION\n",
    );
    let mut pending: Vec<&str> = Vec::new();
    let mut in_header = true;
    for line in file.lines() {
        match classify(line) {
            Line::Comment(c) => pending.push(c),
            Line::Blank => {
                if in_header && !pending.is_empty() {
                    out.push_str(&paragraph(&pending));
                    pending.clear();
                }
            }
            Line::Section(name) => {
                in_header = false;
                out.push_str(&format!(".SH \"[{}]\"\n", roff_text(name)));
                if !pending.is_empty() {
                    out.push_str(&paragraph(&pending));
                    pending.clear();
                }
            }
            Line::Key { key, value } => {
                in_header = false;
                out.push_str(&format!(".TP\n\\fB{}\\fR = {}\n", roff_text(key), roff_text(value)));
                out.push_str(&roff_text(&pending.join(" ")));
                out.push('\n');
                pending.clear();
            }
        }
    }
    if !pending.is_empty() {
        out.push_str(&paragraph(&pending));
    }
    out.push_str(
        ".SH FILES\n/etc/milspecd/milspecd.toml, then /etc/milspecd/conf.d/*.toml in name order; \
         check with \\fBmilspecd config\\fR.\n\
         .SH \"SEE ALSO\"\n\\fBmilspecd\\fR(8), \\fBmilspecctl\\fR(1), \\fBmilspec\\-repo\\fR(1)\n",
    );
    out
}

fn paragraph(lines: &[&str]) -> String {
    format!(".PP\n{}\n", roff_text(&lines.join(" ")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_are_read_as_comments_sections_and_keys() {
        assert_eq!(classify("[trust]"), Line::Section("trust"));
        assert_eq!(classify("#[source]"), Line::Section("source"));
        assert_eq!(classify("threshold = 1"), Line::Key { key: "threshold", value: "1" });
        assert_eq!(classify("#poll_interval = \"15m\""), Line::Key { key: "poll_interval", value: "\"15m\"" });
        assert_eq!(classify("# How long a check may run."), Line::Comment("How long a check may run."));
        assert_eq!(classify("  "), Line::Blank);
    }

    /// Every key of the built-in defaults has an entry, under its section.
    #[test]
    fn the_page_has_every_key_milspecd_knows() {
        let page = render(SHIPPED);
        let defaults = milspecd::config::Config::default().to_toml();
        for line in defaults.lines() {
            if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                assert!(page.contains(&format!(".SH \"[{section}]\"")), "[{section}] missing");
            } else if let Some((key, _)) = line.split_once(" = ") {
                assert!(page.contains(&format!("\\fB{}\\fR = ", roff_text(key))), "{key} missing:\n{page}");
            }
        }
        assert!(page.contains("[source]"), "the optional [source] is documented");
    }
}
