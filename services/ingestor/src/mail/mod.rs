//! E-mail in: forwarded mail through the SMTP ingress and watched IMAP mailboxes, both parsed
//! the same way and turned into notifications by the same plan.

pub mod auth;
pub mod capped;
pub mod imap;
pub mod parse;
pub mod plan;
pub mod smtp;
pub(crate) mod wire;
