//! Text paths that see hostile input take time linear in its size: eight times the input
//! may take at most about eight times as long (the bound here is 24×; each path this checks
//! was quadratic before, 64× and more).

use std::time::{Duration, Instant};
use tocsin_ingestor::feeds::normalize::normalize;
use tocsin_ingestor::mail::parse::{links, parse};
use tocsin_model::text::html_to_text;

/// The fastest of five runs of `run` on `input`.
fn fastest<T>(input: &T, run: &impl Fn(&T)) -> Duration {
    (0..5)
        .map(|_| {
            let t = Instant::now();
            run(input);
            t.elapsed()
        })
        .min()
        .unwrap()
}

/// Time `run` on `make(n)` and `make(8n)`, `n` grown until one run takes 10 ms (so timer
/// noise does not decide), and check the ratio.
fn assert_linear<T>(what: &str, make: impl Fn(usize) -> T, run: impl Fn(&T)) {
    let mut n = 4096;
    let mut base = fastest(&make(n), &run);
    while base < Duration::from_millis(10) && n < 1 << 20 {
        n *= 2;
        base = fastest(&make(n), &run);
    }
    let big = fastest(&make(8 * n), &run);
    let ratio = big.as_secs_f64() / base.as_secs_f64().max(1e-6);
    eprintln!(
        "{what}: {n} units in {base:?}, {} in {big:?} ({ratio:.1}x)",
        8 * n
    );
    assert!(
        ratio < 24.0,
        "{what}: 8x the input took {ratio:.1}x the time ({base:?} -> {big:?}); not linear"
    );
}

fn mail(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\nMessage-ID: <{}@x>\r\n\r\n{body}\r\n",
        "i".repeat(subject.len().min(600_000))
    )
    .into_bytes()
}

#[test]
fn html_with_many_script_tags() {
    assert_linear(
        "html_to_text(<script>…)",
        |n| "<script>x</script>".repeat(n / 18),
        |s| {
            html_to_text(s);
        },
    );
    assert_linear(
        "html_to_text(unclosed <style>)",
        |n| format!("{}<style>{}", "<p>a".repeat(n / 8), "</x".repeat(n / 6)),
        |s| {
            html_to_text(s);
        },
    );
}

#[test]
fn html_with_many_ampersands_and_one_far_semicolon() {
    assert_linear(
        "html_to_text(&&&…;)",
        |n| format!("{};", "&".repeat(n)),
        |s| {
            html_to_text(s);
        },
    );
}

#[test]
fn mail_links_in_one_long_word() {
    assert_linear(
        "links(http://http://…)",
        |n| "http://".repeat(n / 7),
        |s| {
            links(s);
        },
    );
}

#[test]
fn whole_mails_with_hostile_subjects_and_bodies() {
    assert_linear(
        "parse(Subject: Fwd:Fwd:…)",
        |n| mail(&"Fwd:".repeat(n / 4), "body"),
        |m| {
            parse(m).unwrap();
        },
    );
    assert_linear(
        "parse(body of http://…)",
        |n| mail("s", &"https://".repeat(n / 8)),
        |m| {
            parse(m).unwrap();
        },
    );
}

#[test]
fn feed_items_with_hostile_html() {
    assert_linear(
        "normalize(<description> of <script> tags)",
        |n| {
            format!(
                "<rss version=\"2.0\"><channel><title>t</title><item><title>x</title><description><![CDATA[{}]]></description></item></channel></rss>",
                "<script>x</script>".repeat(n / 18)
            )
            .into_bytes()
        },
        |d| {
            normalize(d).unwrap();
        },
    );
}
