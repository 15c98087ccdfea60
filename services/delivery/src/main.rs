//! `tocsin-delivery`: the delivery service as its own process.

tocsin_runtime::service_binary!("delivery", tocsin_delivery);
