//! `tocsin-router`: the router service as its own process.

tocsin_runtime::service_binary!("router", tocsin_router);
