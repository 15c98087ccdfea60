//! `tocsin-archiver`: the archiver as its own process.

tocsin_runtime::service_binary!("archiver", tocsin_archiver);
