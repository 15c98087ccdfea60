//! tocsin's benchmarks, kept out of the product binary: each part starts a nats-server of its
//! own and prints its figures beside a baseline measured in the same run (`tocsin-bench all`
//! is the one table; docs/performance.md has the results and how to rerun them).

pub mod all;
pub mod archive;
pub mod common;
pub mod cpu;
pub mod feeds;
pub mod floor;
pub mod jobs;
pub mod mail;
pub mod memory;
pub mod pipeline;
pub mod reach;
pub mod store;
pub mod work;
pub mod writes;
