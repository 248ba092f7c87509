//! Escaping for what the CLI prints for people: a task's log, output and
//! error text come from the task, and a terminal obeys escape sequences in
//! them (moving the cursor, rewriting earlier lines, setting the window
//! title, and in some terminals worse). `--json` output is left alone: it
//! is JSON-escaped already, and meant for programs.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` is printed as an escape: control characters (C0 but newline
/// and tab, DEL, C1) and the bidirectional overrides and isolates, which
/// reorder the text after them on screen.
fn needs_escape(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with each character that [`needs_escape`] written as `\xNN` (or
/// `\u{NNNN}` above U+00FF), so printing it cannot drive the terminal.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if (c as u32) <= 0xff {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// A log message escaped like [`escape_controls`], with every line after
/// the first indented, so that a message cannot pass for log lines of its
/// own (a forged time and level at the start of a line).
pub fn escape_log_message(text: &str) -> Cow<'_, str> {
    match escape_controls(text) {
        Cow::Borrowed(text) if !text.contains('\n') => Cow::Borrowed(text),
        escaped => Cow::Owned(escaped.replace('\n', "\n    ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_are_printed_as_text() {
        // Colour, window title (OSC, ended by BEL), clear screen, cursor
        // up, a carriage return that rewrites the line, a C1 CSI, DEL.
        let hostile = "a\x1b[31mred\x1b]0;pwned\x07\x1b[2J\x1b[1A\rb\u{9b}c\x7f\0";
        let escaped = escape_controls(hostile);
        assert_eq!(
            escaped,
            "a\\x1b[31mred\\x1b]0;pwned\\x07\\x1b[2J\\x1b[1A\\x0db\\x9bc\\x7f\\x00"
        );
        assert!(!escaped.chars().any(|c| c.is_control()), "{escaped}");
    }

    #[test]
    fn text_newlines_tabs_and_unicode_pass_unchanged() {
        let plain = "line one\n\tline two: café, 日本, emoji 🦀";
        assert!(matches!(escape_controls(plain), Cow::Borrowed(_)));
        assert_eq!(escape_controls(plain), plain);
    }

    #[test]
    fn bidirectional_overrides_are_escaped() {
        assert_eq!(
            escape_controls("file\u{202e}txt.exe\u{2066}"),
            "file\\u{202e}txt.exe\\u{2066}"
        );
    }

    #[test]
    fn log_messages_cannot_forge_lines() {
        assert_eq!(escape_log_message("plain"), "plain");
        assert_eq!(
            escape_log_message("done\n12:00:00.000  INFO task     forged\x1b[0m"),
            "done\n    12:00:00.000  INFO task     forged\\x1b[0m"
        );
    }
}
