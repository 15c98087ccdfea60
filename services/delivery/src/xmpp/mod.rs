//! The XMPP channel: tocsin logs in with its own account, sends notifications as chat
//! messages, and listens: presence from users becomes `presence` messages to their avatars,
//! and what they write back becomes `reply` messages (acks and commands).
//!
//! One task owns the connection (tokio-xmpp, which reconnects by itself and uses stream
//! management, XEP-0198, where the server offers it). Everything else talks to that task over
//! a channel. A message counts as delivered when the server acknowledged it (XEP-0198), or —
//! on a server without stream management — once it was written to the connection.
//!
//! Who is who comes from the address index (`<P>_ADDRESSES`, written by the avatars): the task
//! watches the `xmpp.*` keys, asks each registered JID for a presence subscription (and
//! pre-approves theirs), and accepts presence and messages only from registered JIDs.

mod connection;

use crate::compose;
use crate::webhook::SendResult;
use async_nats::jetstream::kv;
use connection::Connection;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::Bus;
use tocsin_model::DeliveryJob;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::Stanza;
use tokio_xmpp::connect::{DnsConfig, StartTlsServerConnector, TcpServerConnector};
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message};
use tokio_xmpp::stanzastream::{StanzaStage, StanzaStream, StanzaToken};
use tokio_xmpp::xmlstream::Timeouts;
use tracing::warn;

/// The `[delivery.xmpp]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct XmppConfig {
    /// tocsin's own account: `tocsin@example.org`.
    pub jid: String,
    /// Give it through `TOCSIN_DELIVERY__XMPP__PASSWORD`.
    pub password: String,
    /// `host:port` of the server; empty: found through DNS SRV records of the JID's domain.
    pub server: String,
    /// `starttls` (required), or `none` — plain text, only for a server on the same machine.
    pub tls: XmppTls,
    /// How long a message may wait for the server's acknowledgement.
    pub send_timeout_secs: u64,
    /// Messages per second (0: no limit); servers throttle fast senders.
    pub rate_per_sec: f64,
    /// How often the connection is checked with an XMPP ping (XEP-0199); a connection that
    /// does not answer within `send_timeout_secs` is replaced by a fresh login.
    pub keepalive_secs: u64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum XmppTls {
    Starttls,
    None,
}

impl Default for XmppConfig {
    fn default() -> Self {
        Self {
            jid: String::new(),
            password: String::new(),
            server: String::new(),
            tls: XmppTls::Starttls,
            send_timeout_secs: 20,
            rate_per_sec: 20.0,
            keepalive_secs: 60,
        }
    }
}

impl XmppConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match BareJid::from_str(&self.jid) {
            Ok(j) if j.node().is_some() => {}
            _ => p.push(format!(
                "delivery.xmpp.jid: {:?} is not an account JID like tocsin@example.org",
                self.jid
            )),
        }
        if self.password.is_empty() {
            p.push("delivery.xmpp.password: needed (TOCSIN_DELIVERY__XMPP__PASSWORD)".into());
        }
        if !self.server.is_empty()
            && self
                .server
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            p.push(format!(
                "delivery.xmpp.server: {:?} is not host:port",
                self.server
            ));
        }
        if self.send_timeout_secs == 0 || self.keepalive_secs == 0 {
            p.push(
                "delivery.xmpp.send_timeout_secs and keepalive_secs: must be greater than 0".into(),
            );
        }
        p
    }
}

/// How long the connection may take to write one stanza before it is replaced.
pub(super) const PUT_TIMEOUT: Duration = Duration::from_secs(3);

/// A request to the connection task.
pub(super) enum Out {
    /// Send a stanza; answer with its tracking token.
    Send(Box<Stanza>, oneshot::Sender<Result<StanzaToken, String>>),
}

/// The state of the connection, as the sender sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Link {
    Offline,
    /// Online; whether the server offers stream management (acks per stanza).
    Online {
        acks: bool,
    },
}

/// A handle on the XMPP connection.
pub struct Xmpp {
    out: mpsc::Sender<Out>,
    /// The connection task, which ends when this handle is dropped.
    task: std::sync::Mutex<Option<tokio_util::task::AbortOnDropHandle<()>>>,
    link: watch::Receiver<Link>,
    send_timeout: Duration,
}

impl Xmpp {
    /// Connect and start listening. The connection task runs until `shutdown`.
    pub fn start(
        cfg: &XmppConfig,
        bus: Bus,
        addresses: kv::Store,
        shutdown: CancellationToken,
    ) -> Result<Arc<Xmpp>, String> {
        let jid = BareJid::from_str(&cfg.jid).map_err(|e| format!("delivery.xmpp.jid: {e}"))?;
        if cfg.tls == XmppTls::None {
            warn!(
                "delivery.xmpp.tls = none: the XMPP password and messages travel in plain text; use it only for a server on this machine"
            );
        }
        let stream = new_stream(cfg, &jid)?;
        let (out_tx, out_rx) = mpsc::channel(256);
        let (link_tx, link_rx) = watch::channel(Link::Offline);
        let task = Connection {
            stream,
            cfg: cfg.clone(),
            me: jid,
            bus,
            addresses,
            by_jid: HashMap::new(),
            resources: HashMap::new(),
            shown: HashMap::new(),
            link: link_tx,
            acks: false,
            ping: None,
            pings: 0,
        };
        let task =
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(task.run(out_rx, shutdown)));
        Ok(Arc::new(Xmpp {
            out: out_tx,
            task: std::sync::Mutex::new(Some(task)),
            link: link_rx,
            send_timeout: Duration::from_secs(cfg.send_timeout_secs),
        }))
    }

    /// Wait (a few seconds at most) for the connection task to close the session after
    /// shutdown.
    pub async fn closed(&self) {
        let task = self.task.lock().expect("task lock").take();
        if let Some(t) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }

    /// Whether the connection is up (for readiness).
    pub fn online(&self) -> bool {
        matches!(*self.link.borrow(), Link::Online { .. })
    }

    /// Send `job` as a chat message to its destination JID.
    pub async fn send(&self, job: &DeliveryJob) -> SendResult {
        let to = match BareJid::from_str(&job.destination.address) {
            Ok(j) => j,
            Err(e) => {
                return SendResult::Permanent(format!(
                    "{:?} is not a JID: {e}",
                    job.destination.address
                ));
            }
        };
        // wait a little for a connection being (re)established, then give the job back
        let mut link = self.link.clone();
        let acks = match tokio::time::timeout(
            Duration::from_secs(5),
            link.wait_for(|l| matches!(l, Link::Online { .. })),
        )
        .await
        {
            Ok(Ok(l)) => matches!(*l, Link::Online { acks: true }),
            _ => {
                return SendResult::Transient {
                    detail: "not connected to the XMPP server".into(),
                    after: None,
                };
            }
        };
        let mut msg = Message::chat(Some(Jid::from(to)));
        // the job id, so a client that sees a resend can tell (XEP-0359 would be nicer)
        msg.id = Some(tokio_xmpp::parsers::message::Id(format!(
            "tocsin-{}",
            job.job_id.replace(':', "-")
        )));
        msg.bodies.insert(Lang::default(), compose::im_text(job));
        let (tx, rx) = oneshot::channel();
        if self
            .out
            .send(Out::Send(Box::new(msg.into()), tx))
            .await
            .is_err()
        {
            return SendResult::Transient {
                detail: "the XMPP connection task has stopped".into(),
                after: None,
            };
        }
        let mut token = match rx.await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                return SendResult::Transient {
                    detail: format!("cannot send over XMPP: {e}"),
                    after: None,
                };
            }
            Err(_) => {
                return SendResult::Transient {
                    detail: "the XMPP connection task has stopped".into(),
                    after: None,
                };
            }
        };
        let want = if acks {
            StanzaStage::Acked
        } else {
            StanzaStage::Sent
        };
        match tokio::time::timeout(self.send_timeout, token.wait_for(want)).await {
            Ok(Some(state)) if state == want => SendResult::Delivered(if acks {
                "acknowledged by the XMPP server".into()
            } else {
                "sent to the XMPP server (it offers no stream management to confirm)".into()
            }),
            Ok(state) => SendResult::Transient {
                detail: format!("the XMPP server did not take the message ({state:?})"),
                after: None,
            },
            Err(_) => SendResult::Transient {
                detail: format!(
                    "no acknowledgement from the XMPP server within {}s",
                    self.send_timeout.as_secs()
                ),
                after: None,
            },
        }
    }
}

/// The stanza stream for `cfg`: it logs in (and in again, resuming the session where the
/// server offers it) by itself once polled.
///
/// Used directly, not through tokio-xmpp's `Client`: the client (6.0) splits the stream into
/// halves behind one lock, and its receiving half answers `Pending` without a waker when the
/// sending half holds the lock. A stanza that arrives while a message is being handed over
/// then wakes the receiver once, finds the lock taken, and nothing wakes it again: the
/// client stops receiving for good (presence, replies and ping answers stay queued until a
/// fresh login drops them). One task owning the whole stream has no such lock.
pub(super) fn new_stream(cfg: &XmppConfig, jid: &BareJid) -> Result<StanzaStream, String> {
    let dns = if cfg.server.is_empty() {
        DnsConfig::srv_default_client(jid.domain().as_str())
    } else {
        let (host, port) = cfg
            .server
            .rsplit_once(':')
            .ok_or("delivery.xmpp.server: not host:port")?;
        let port: u16 = port.parse().map_err(|_| "delivery.xmpp.server: bad port")?;
        DnsConfig::no_srv(host, port)
    };
    let timeouts = Timeouts {
        read_timeout: Duration::from_secs(60),
        response_timeout: Duration::from_secs(30),
    };
    let jid = Jid::from(jid.clone());
    let password = cfg.password.clone();
    Ok(match cfg.tls {
        XmppTls::Starttls => StanzaStream::new_c2s(
            StartTlsServerConnector::from(dns),
            jid,
            password,
            timeouts,
            QUEUE_DEPTH,
        ),
        XmppTls::None => StanzaStream::new_c2s(
            TcpServerConnector::from(dns),
            jid,
            password,
            timeouts,
            QUEUE_DEPTH,
        ),
    })
}

/// Stanzas the stream queues each way (tokio-xmpp's `Client` uses the same).
const QUEUE_DEPTH: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_problems() {
        let c = XmppConfig {
            jid: "nope".into(),
            server: "host".into(),
            ..Default::default()
        };
        let p = c.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        let ok = XmppConfig {
            jid: "tocsin@example.org".into(),
            password: "pw".into(),
            server: "127.0.0.1:5222".into(),
            ..Default::default()
        };
        assert!(ok.problems().is_empty());
    }
}
