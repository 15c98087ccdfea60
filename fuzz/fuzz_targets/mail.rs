//! Mail normalisation: any message the SMTP ingress or an IMAP mailbox hands over must parse
//! to a notification or be refused — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(mail) = tocsin_ingestor::mail::parse::parse(data) {
        let _ = mail.body();
        let _ = mail.priority();
        for link in tocsin_ingestor::mail::parse::links(&mail.body()) {
            assert!(link.starts_with("http://") || link.starts_with("https://"), "{link:?}");
        }
    }
});
