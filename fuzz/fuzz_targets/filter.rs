//! Filter parsing: any JSON a user sends as a source's filter must be refused with reasons or
//! compile to a filter that matches without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_model::filter::{Filter, Item};

fuzz_target!(|data: &[u8]| {
    let Ok(filter) = serde_json::from_slice::<Filter>(data) else {
        return;
    };
    let _ = filter.validate("filter");
    if let Ok(compiled) = filter.compile() {
        let categories = vec!["bikes".to_owned()];
        let text = String::from_utf8_lossy(data);
        let _ = compiled.matches(&Item {
            title: &text,
            text: "road bike $450",
            categories: &categories,
        });
    }
});
