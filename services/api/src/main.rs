//! `tocsin-api`: the API service as its own process.

tocsin_runtime::service_binary!("api", tocsin_api);
