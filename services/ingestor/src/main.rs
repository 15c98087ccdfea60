//! `tocsin-ingestor`: the ingestor service as its own process.

tocsin_runtime::service_binary!("ingestor", tocsin_ingestor);
