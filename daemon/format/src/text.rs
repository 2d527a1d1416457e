//! Untrusted text made safe to show: the one sanitiser for every string
//! that leaves the daemon or a tool (logs, D-Bus, JSON, terminals).
//!
//! Bytes from a package, an index, a mirror, the kernel log or a custom
//! check may hold anything. Shown raw, a NUL makes a D-Bus message invalid
//! (and the bus drops the connection that sent it), an ESC or an 8-bit CSI
//! repaints a terminal, a CR or LF forges a log line, and a bidi override
//! reorders what a reader sees. [`sanitize`] turns every such character
//! into a visible escape (`\x1b`, `\n`, `\u{202e}`) and bounds the length,
//! marking a cut with `…[+N chars]`. The result holds printable characters
//! only, so sanitising it again changes nothing.
//!
//! A backslash is kept as is: the escapes are for a reader, not a
//! reversible encoding, and doubling backslashes would make the result
//! grow each time it passed through another layer.

use std::fmt::{self, Write as _};

/// Longest text, in characters, that [`sanitize`] returns (marker included).
pub const MAX_TEXT: usize = 4096;

/// Whether `c` must be escaped before it is shown: C0 controls, DEL, C1
/// controls (U+0080..U+009F, U+009B is the 8-bit CSI), bidi controls, and
/// other invisible formatting that can hide or reorder text.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        // Soft hyphen, Arabic letter mark, Mongolian vowel separator.
        | '\u{ad}' | '\u{61c}' | '\u{180e}'
        // Zero-width space/joiners, LRM, RLM; line and paragraph separators;
        // bidi embeddings and overrides (LRE..RLO).
        | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        // Word joiner, invisible operators, bidi isolates (LRI..PDI),
        // deprecated format controls.
        | '\u{2060}'..='\u{206f}'
        // Byte-order mark / zero-width no-break space; interlinear annotation.
        | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
        // Tag characters (invisible), and noncharacters / private use are left
        // alone except the tags, which can smuggle hidden text.
        | '\u{e0000}'..='\u{e007f}'
    )
}

/// Whether `s` is already safe to show (no character [`is_unsafe`]).
pub fn is_clean(s: &str) -> bool {
    !s.chars().any(is_unsafe)
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// `s` with every unsafe character escaped, at most [`MAX_TEXT`] characters.
pub fn sanitize(s: &str) -> String {
    sanitize_to(s, MAX_TEXT)
}

/// `s` with every unsafe character escaped, cut to at most `max` characters
/// (counting the `…[+N chars]` marker of a cut; `max` below 24 is raised
/// to 24 so the marker fits).
pub fn sanitize_to(s: &str, max: usize) -> String {
    let max = max.max(24);
    if is_clean(s) && s.chars().count() <= max {
        return s.to_string();
    }
    // Each character as shown: itself, or its escape.
    let mut pieces: Vec<(usize, usize)> = Vec::new();
    let mut full = String::with_capacity(s.len());
    for c in s.chars() {
        let at = full.len();
        if is_unsafe(c) {
            escape_char(c, &mut full);
        } else {
            full.push(c);
        }
        pieces.push((at, full[at..].chars().count()));
    }
    let total: usize = pieces.iter().map(|p| p.1).sum();
    if total <= max {
        return full;
    }
    // Keep whole pieces while the marker for the rest still fits.
    let mut kept = 0usize;
    let mut shown = 0usize;
    for (i, &(_, n)) in pieces.iter().enumerate() {
        let marker_len = format!("…[+{} chars]", pieces.len() - i - 1).chars().count();
        if shown + n + marker_len > max {
            break;
        }
        shown += n;
        kept = i + 1;
    }
    let end = pieces.get(kept).map_or(full.len(), |p| p.0);
    let mut out = full[..end].to_string();
    let _ = write!(out, "…[+{} chars]", pieces.len() - kept);
    out
}

/// Bytes that should be text (a tar path, a kernel log line): invalid UTF-8
/// becomes `\xNN` escapes, then as [`sanitize_to`].
pub fn sanitize_bytes(b: &[u8], max: usize) -> String {
    let mut s = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        s.push_str(chunk.valid());
        for byte in chunk.invalid() {
            // Written as a visible escape, never as U+FFFD or raw.
            let _ = write!(s, "\\x{byte:02x}");
        }
    }
    sanitize_to(&s, max)
}

/// Displays a string sanitised (as [`sanitize`]), for `format!` and logs:
/// `warn!("rejected: {}", Escaped(&reason))`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= MAX_TEXT && is_clean(self.0) {
            f.write_str(self.0)
        } else {
            f.write_str(&sanitize(self.0))
        }
    }
}

/// Displays any `Display` value (an error, say) sanitised.
#[derive(Debug, Clone, Copy)]
pub struct EscapedDisplay<T>(pub T);

impl<T: fmt::Display> fmt::Display for EscapedDisplay<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&sanitize(&self.0.to_string()))
    }
}

/// Whether `s` is valid as a D-Bus string once encoded: valid UTF-8 (a Rust
/// string always is), no NUL. The sanitiser's output always is.
pub fn is_valid_dbus_string(s: &str) -> bool {
    !s.contains('\0')
}

/// A duration as a person reads it: `850 ms` below a second, `5.4 s`
/// below a minute, then whole units (`2 min 5 s`, `1 h 30 min`, `2 d 3 h`):
/// never more precision than a reader can use.
pub fn duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        return format!("{}.{} s", ms / 1000, (ms % 1000) / 100);
    }
    let s = d.as_secs();
    let (d_, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let parts = [(d_, "d"), (h, "h"), (m, "min"), (s, "s")];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..(first + 2).min(4)]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n} {u}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_writes_them() {
        use std::time::Duration as D;
        let cases = [
            (D::ZERO, "0 ms"),
            (D::from_nanos(5_004_945_621), "5.0 s"),
            (D::from_micros(999_999), "999 ms"),
            (D::from_millis(5_450), "5.4 s"),
            (D::from_secs(60), "1 min"),
            (D::from_secs(125), "2 min 5 s"),
            (D::from_secs(3600 + 30 * 60 + 7), "1 h 30 min"),
            (D::from_secs(7200), "2 h"),
            (D::from_secs(2 * 86_400 + 3 * 3600 + 59), "2 d 3 h"),
        ];
        for (d, want) in cases {
            assert_eq!(duration(d), want, "{d:?}");
        }
    }

    const HOSTILE: &[(&str, &str)] = &[
        ("\0", "\\x00"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\rb", "a\\rb"),
        ("a\nb", "a\\nb"),
        ("\t", "\\t"),
        ("\x7f", "\\x7f"),
        ("\u{9b}31m", "\\x9b31m"),
        ("\u{85}", "\\x85"),
        ("\u{202e}txt.exe", "\\u{202e}txt.exe"),
        ("\u{2066}\u{2069}", "\\u{2066}\\u{2069}"),
        ("\u{200e}\u{200f}\u{61c}", "\\u{200e}\\u{200f}\\u{61c}"),
        ("\u{200b}\u{feff}", "\\u{200b}\\u{feff}"),
        ("\u{2028}", "\\u{2028}"),
        ("\u{e0041}", "\\u{e0041}"),
    ];

    #[test]
    fn every_class_is_escaped_visibly() {
        for (input, want) in HOSTILE {
            assert_eq!(sanitize(input), *want, "{input:?}");
            assert!(is_clean(&sanitize(input)));
            assert_eq!(Escaped(input).to_string(), *want);
        }
    }

    #[test]
    fn printable_text_is_kept() {
        for s in ["Dell Inc.", "rolled back 1.2.0 -> 1.1.0: warn_count rose", "Größe «ok» — 日本 \\ 'q' \"d\"", ""]
        {
            assert_eq!(sanitize(s), s);
            assert!(is_clean(s));
        }
    }

    #[test]
    fn length_is_bounded_with_a_marker() {
        let long = "x".repeat(10_000);
        let s = sanitize_to(&long, 100);
        assert_eq!(s.chars().count(), 100, "{s}");
        assert!(s.ends_with("chars]") && s.contains('…'), "{s}");
        // Escapes count towards the bound.
        let nul = "\0".repeat(1000);
        let s = sanitize_to(&nul, 100);
        assert!(s.chars().count() <= 100 && is_clean(&s), "{s}");
        // Exactly at the bound: kept whole.
        let edge = "y".repeat(100);
        assert_eq!(sanitize_to(&edge, 100), edge);
        assert!(sanitize(&long).chars().count() <= MAX_TEXT);
    }

    #[test]
    fn idempotent() {
        let samples = [
            "\0\x1b\r\n\u{9b}\u{202e}".to_string(),
            "z".repeat(5000),
            format!("{}\u{202e}", "\x1b".repeat(3000)),
            "plain".into(),
        ];
        for s in &samples {
            for max in [24, 50, 100, MAX_TEXT] {
                let once = sanitize_to(s, max);
                assert_eq!(sanitize_to(&once, max), once, "{s:?} at {max}");
            }
        }
    }

    #[test]
    fn bytes_never_pass_raw() {
        let s = sanitize_bytes(b"ok\xff\xfe\x1b\x00\xc2\x9b", 200);
        assert_eq!(s, "ok\\xff\\xfe\\x1b\\x00\\x9b");
        assert!(is_valid_dbus_string(&s));
    }
}
