//! Feed normalisation: any bytes a feed server sends must give items or a clean error —
//! never a panic, never an item without a key.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(feed) = tocsin_ingestor::feeds::normalize::normalize(data) {
        for item in &feed.items {
            assert!(!item.key.is_empty(), "an item without a key");
            let _ = tocsin_model::text::one_line(&item.title);
        }
    }
});
