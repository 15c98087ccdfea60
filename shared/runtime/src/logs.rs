//! Logging: `TOCSIN_LOG` filters, `TOCSIN_LOG_FORMAT=json` for clusters; in the text format
//! every field and message has its control characters escaped, so input that reaches a log
//! line (a feed title, an e-mail sender) cannot start a forged line or colour a terminal.

use std::fmt::Write as _;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;

/// Set up logging: `TOCSIN_LOG` (an `EnvFilter`, default `info`) and `TOCSIN_LOG_FORMAT`
/// (text, the default, or `json`, where the encoder escapes). Safe to call more than once.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TOCSIN_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
    let json = std::env::var("TOCSIN_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().fmt_fields(text_fields()).try_init()
    };
}

/// The text format's fields: `name=value`, the message bare, control characters escaped.
/// Each value is written straight into the line through [`Escaped`]: spans are formatted when
/// they are made, one per active avatar and one per delivery job (and per message an avatar
/// handles at debug level), so this runs on the hot path.
pub fn text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    tracing_subscriber::fmt::format::debug_fn(|w: &mut Writer<'_>, field, value| {
        if field.name() != "message" {
            write!(w, "{}=", field.name())?;
        }
        write!(Escaped(w), "{value:?}")
    })
    .delimited(" ")
}

/// Writes through to `W` with every control character written as an escape (`\n`, `\r`,
/// `\t`, `\u{1b}`), so input that reaches a log line cannot start another.
struct Escaped<W>(W);

impl<W: std::fmt::Write> std::fmt::Write for Escaped<W> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if !c.is_control() {
                continue;
            }
            self.0.write_str(&s[start..i])?;
            start = i + c.len_utf8();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            crate::lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn input_in_a_log_line_cannot_start_another_or_colour_it() {
        let buf = Buffer::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .compact()
            .fmt_fields(text_fields())
            .finish();
        let title = "Bike\n2026-12-03T00:00:00Z  INFO forged: admin signed in\x1b[31m";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(title = %title, sender = "eve\r\n", "fetched {}", title);
        });
        let text = String::from_utf8(crate::lock(&buf.0).clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.contains("title=Bike\\n2026"), "{text}");
        assert!(text.contains("fetched Bike\\n"), "{text}");
        assert!(text.contains(r#"sender="eve\r\n""#), "{text}");
    }

    #[test]
    fn every_control_character_is_escaped_and_the_rest_kept() {
        let mut out = String::new();
        Escaped(&mut out).write_str("a\tb\u{7}c\u{85}é\n").unwrap();
        assert_eq!(out, r"a\tb\u{7}c\u{85}é\n");
    }
}
