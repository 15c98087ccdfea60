//! `tocsin-history`: the history service as its own process.

tocsin_runtime::service_binary!("history", tocsin_history);
