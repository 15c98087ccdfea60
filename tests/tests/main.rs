//! tocsin's end-to-end tests as one test binary, a module per area, each against real servers
//! on loopback. One binary links every service once (sixteen did: 2.4 GB of a fresh
//! machine's disk); run one area with a filter: `cargo test -p tocsin-tests --test e2e faults::`.

mod alerts;
mod archive;
mod cluster;
mod delivery;
mod deployment;
mod email;
mod faults;
mod hostile;
mod im_link;
mod nats_auth;
mod pipeline;
mod reach;
mod sources;
mod trust;
mod upgrade;
mod web;
mod websub;
