//! tocsin's end-to-end harness, compiled once for every test in `tests/tests`: a real
//! nats-server, every service in this process or as its own OS process, the API on a port-0
//! listener, a feed server, recording HTTP endpoints, the channel settings the tests use, and
//! a scripted workload.

mod api;
pub mod browser;
mod channels;
mod feeds;
mod harness;
mod recorder;
mod tls;
pub mod workload;

pub use channels::{TWILIO_SID, XMPP_SERVICE, smtp_out, twilio_path, use_twilio, xmpp_service};
pub use feeds::{FeedServer, rdf};
pub use harness::{ADMIN, Harness, Settings, Svc, tocsin_binary};
pub use recorder::{Recorded, Recorder};
pub use tls::test_certificate;
