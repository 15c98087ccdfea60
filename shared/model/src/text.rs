//! Text helpers: HTML reduced to plain text, prices in listing titles, length caps, durations.
//!
//! Notifications carry plain text only. Whatever HTML a feed or an e-mail brings is reduced
//! here, so no markup (and no script, event handler or `javascript:` link) can survive into
//! a chat message, an SMS, the private feed or the API: every output escapes plain text.

/// Reduce an HTML fragment to readable text: `script`/`style` content dropped, block
/// elements turned into line breaks, entities decoded, runs of white space folded.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let bytes = html.as_bytes();
    let mut i = 0;
    let mut text_start = 0;
    while i < bytes.len() {
        if bytes[i] == b'<' {
            out.push_str(&decode_entities(&html[text_start..i]));
            // comment
            if html[i..].starts_with("<!--") {
                i = html[i + 4..]
                    .find("-->")
                    .map(|e| i + 4 + e + 3)
                    .unwrap_or(bytes.len());
                text_start = i;
                continue;
            }
            let (tag, end) = match html[i..].find('>') {
                Some(e) => (&html[i + 1..i + e], i + e + 1),
                None => (&html[i + 1..], bytes.len()),
            };
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            i = end;
            if !tag.starts_with('/') && (name == "script" || name == "style") {
                // skip raw text up to the matching close tag
                i = match find_close_tag(&html[i..], &name) {
                    Some(p) => {
                        let after = i + p;
                        html[after..]
                            .find('>')
                            .map(|e| after + e + 1)
                            .unwrap_or(bytes.len())
                    }
                    None => bytes.len(),
                };
            } else if matches!(
                name.as_str(),
                "br" | "p"
                    | "div"
                    | "li"
                    | "tr"
                    | "h1"
                    | "h2"
                    | "h3"
                    | "h4"
                    | "h5"
                    | "h6"
                    | "ul"
                    | "ol"
                    | "table"
                    | "blockquote"
                    | "pre"
                    | "hr"
            ) {
                out.push('\n');
            } else if !matches!(
                name.as_str(),
                "a" | "b"
                    | "i"
                    | "u"
                    | "em"
                    | "strong"
                    | "span"
                    | "small"
                    | "font"
                    | "code"
                    | "sup"
                    | "sub"
                    | "abbr"
                    | "mark"
                    | "s"
                    | "q"
                    | "cite"
            ) {
                // inline elements join their text; anything else separates words
                out.push(' ');
            }
            text_start = i;
        } else {
            i += 1;
        }
    }
    if text_start < bytes.len() {
        out.push_str(&decode_entities(&html[text_start..]));
    }
    fold_whitespace(&out)
}

/// Where `</name` (any case) first starts in `s`. One pass: the text after each `</` is
/// compared in place, never lowercased as a copy (a copy per tag made many tags quadratic).
fn find_close_tag(s: &str, name: &str) -> Option<usize> {
    let b = s.as_bytes();
    s.match_indices("</").map(|(p, _)| p).find(|&p| {
        b.get(p + 2..p + 2 + name.len())
            .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// Fold runs of spaces and tabs into one space and runs of blank lines into one line break;
/// trim the ends. Control characters other than `\n` are dropped.
pub fn fold_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    let mut pending_newline = false;
    for c in s.chars() {
        if c == '\n' || c == '\r' {
            pending_newline = true;
        } else if c.is_whitespace() {
            pending_space = true;
        } else if c.is_control() {
            continue;
        } else {
            if !out.is_empty() {
                if pending_newline {
                    out.push('\n');
                } else if pending_space {
                    out.push(' ');
                }
            }
            pending_space = false;
            pending_newline = false;
            out.push(c);
        }
    }
    out
}

/// Escape text for XML content and attributes, dropping characters XML 1.0 forbids.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// A single line: all white space (line breaks included) folded into single spaces.
pub fn one_line(s: &str) -> String {
    // written into one string of the input's size: every event's detail comes through here
    let mut line = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    line
}

/// Decode HTML character references: the common named ones and every numeric one.
/// Unknown names are left as they are.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // a reference is short: look for its `;` in the next 12 bytes only (searching the
        // whole rest made a text of many `&` and one far `;` quadratic)
        let semi = rest.as_bytes()[1..]
            .iter()
            .take(12)
            .position(|&b| b == b';')
            .map(|p| p + 1);
        let decoded = semi.and_then(|p| {
            let name = &rest[1..p];
            let c = if let Some(num) = name.strip_prefix('#') {
                let n = if let Some(hex) = num.strip_prefix(['x', 'X']) {
                    u32::from_str_radix(hex, 16).ok()
                } else {
                    num.parse::<u32>().ok()
                };
                n.and_then(char::from_u32).filter(|c| *c != '\0')
            } else {
                named_entity(name)
            };
            c.map(|c| (c, p))
        });
        match decoded {
            Some((c, p)) => {
                out.push(c);
                rest = &rest[p + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn named_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "laquo" => '«',
        "raquo" => '»',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "bull" => '•',
        "middot" => '·',
        "deg" => '°',
        "times" => '×',
        _ => return None,
    })
}

/// Cut `s` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A time to the minute for people, in UTC: `2026-12-03 14:05 UTC`.
pub fn utc_minute(ms: crate::Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// A duration for people: `at once`, `90 s`, `5 min`, `1 h`, `1 h 30 min`, `2 d 3 h`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match secs {
        0 => "at once".to_owned(),
        1..120 => format!("{secs} s"),
        120..3600 if s == 0 => format!("{m} min"),
        120..3600 => format!("{m} min {s} s"),
        3600..86_400 if m == 0 => format!("{h} h"),
        3600..86_400 => format!("{h} h {m} min"),
        _ if h == 0 => format!("{d} d"),
        _ => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn html_is_reduced_to_text() {
        let html = r#"<p>Nice <b>bike</b> &amp; helmet</p><script>alert('x')</script><br>
            <a href="javascript:alert(1)" onclick="x()">link</a> &#36;200 &#x20AC;5 &bogus;"#;
        let t = html_to_text(html);
        assert_eq!(t, "Nice bike & helmet\nlink $200 €5 &bogus;");
        assert!(!t.contains("alert"));
        assert_eq!(html_to_text("<style>p{}</style>ok<!-- hidden -->"), "ok");
        assert_eq!(html_to_text("unterminated <b"), "unterminated");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo wörld", 7), "hél…");
        assert_eq!(truncate("héllo wörld", 6), "hé…");
        assert_eq!(truncate("short", 10), "short");
    }

    proptest! {
        #[test]
        fn html_to_text_never_panics_and_has_no_control_chars(s in ".{0,300}") {
            let t = html_to_text(&s);
            prop_assert!(!t.chars().any(|c| c.is_control() && c != '\n'));
        }

        #[test]
        fn truncate_is_bounded(s in ".{0,200}", max in 4usize..100) {
            let t = truncate(&s, max);
            if s.len() <= max { prop_assert_eq!(t, s); } else { prop_assert!(t.len() <= max); }
        }
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(super::duration(0), "at once");
        assert_eq!(super::duration(90), "90 s");
        assert_eq!(super::duration(300), "5 min");
        assert_eq!(super::duration(150), "2 min 30 s");
        assert_eq!(super::duration(3600), "1 h");
        assert_eq!(super::duration(5400), "1 h 30 min");
        assert_eq!(super::duration(86_400 * 2 + 3 * 3600), "2 d 3 h");
        assert_eq!(super::duration(7 * 86_400), "7 d");
    }
}
