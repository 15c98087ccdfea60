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

use crate::compose;
use crate::webhook::SendResult;
use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::Bus;
use tocsin_model::{AddressEntry, AvatarMessage, Channel, DeliveryJob, Show, now_ms};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::connect::{DnsConfig, StartTlsServerConnector, TcpServerConnector};
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Show as XShow, Type as PresenceType};
use tokio_xmpp::stanzastream::{StanzaStage, StanzaToken};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, IqRequest, Stanza};
use tracing::{debug, info, warn};

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
const PUT_TIMEOUT: Duration = Duration::from_secs(3);

/// A request to the connection task.
enum Out {
    /// Send a stanza; answer with its tracking token.
    Send(Box<Stanza>, oneshot::Sender<Result<StanzaToken, String>>),
}

/// The state of the connection, as the sender sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Link {
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
        let client = new_client(cfg, &jid)?;
        let (out_tx, out_rx) = mpsc::channel(256);
        let (link_tx, link_rx) = watch::channel(Link::Offline);
        let task = Connection {
            client,
            cfg: cfg.clone(),
            me: jid,
            bus,
            addresses,
            by_jid: HashMap::new(),
            resources: HashMap::new(),
            shown: HashMap::new(),
            link: link_tx,
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

/// A client for `cfg`; it connects (and reconnects) by itself once polled.
fn new_client(cfg: &XmppConfig, jid: &BareJid) -> Result<Client, String> {
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
    Ok(match cfg.tls {
        XmppTls::Starttls => Client::new_with_connector(
            jid.clone(),
            cfg.password.clone(),
            StartTlsServerConnector::from(dns),
            timeouts,
        ),
        XmppTls::None => Client::new_with_connector(
            jid.clone(),
            cfg.password.clone(),
            TcpServerConnector::from(dns),
            timeouts,
        ),
    })
}

/// The task that owns the client.
struct Connection {
    client: Client,
    cfg: XmppConfig,
    me: BareJid,
    bus: Bus,
    addresses: kv::Store,
    /// Registered JIDs (lower-case bare) → their index entry.
    by_jid: HashMap<String, AddressEntry>,
    /// Online resources per bare JID and what each shows.
    resources: HashMap<String, BTreeMap<String, Show>>,
    /// What we last told each avatar (per bare JID).
    shown: HashMap<String, Show>,
    link: watch::Sender<Link>,
}

fn show_of(p: &Presence) -> Show {
    match (&p.type_, &p.show) {
        (PresenceType::Unavailable, _) => Show::Unavailable,
        (_, None) => Show::Available,
        (_, Some(XShow::Chat)) => Show::Chat,
        (_, Some(XShow::Away)) => Show::Away,
        (_, Some(XShow::Xa)) => Show::Xa,
        (_, Some(XShow::Dnd)) => Show::Dnd,
    }
}

/// The most available of several resources' shows.
fn best(shows: impl Iterator<Item = Show>) -> Show {
    let rank = |s: &Show| match s {
        Show::Chat => 0,
        Show::Available => 1,
        Show::Away => 2,
        Show::Dnd => 3,
        Show::Xa => 4,
        Show::Unavailable => 5,
    };
    shows.min_by_key(rank).unwrap_or(Show::Unavailable)
}

impl Connection {
    async fn run(mut self, mut out: mpsc::Receiver<Out>, shutdown: CancellationToken) {
        let prefix = "xmpp.";
        let mut index = loop {
            match self
                .addresses
                .watch_with_history(format!("{prefix}*"))
                .await
            {
                Ok(w) => break w,
                Err(e) => {
                    warn!(error = %e, "cannot watch the address index; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        let every = Duration::from_secs(self.cfg.keepalive_secs);
        let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let (pong_tx, mut pong_rx) = mpsc::channel::<bool>(4);
        let mut pinging = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = keepalive.tick(), if !pinging => {
                    pinging = true;
                    let server = BareJid::from_str(self.me.domain().as_str()).ok().map(Jid::from);
                    let token = match tokio::time::timeout(
                        PUT_TIMEOUT,
                        self.client.send_iq(server, IqRequest::Get(Ping.into())),
                    )
                    .await
                    {
                        Ok(t) => t,
                        Err(_) => {
                            pinging = false;
                            warn!("the XMPP connection takes no stanzas; logging in again");
                            self.relogin();
                            continue;
                        }
                    };
                    let tx = pong_tx.clone();
                    let wait = Duration::from_secs(self.cfg.send_timeout_secs);
                    tokio::spawn(async move {
                        let answered = matches!(tokio::time::timeout(wait, token).await, Ok(Ok(_)));
                        let _ = tx.send(answered).await;
                    });
                }
                Some(answered) = pong_rx.recv() => {
                    pinging = false;
                    if !answered {
                        // tokio-xmpp can get stuck retrying a stream resumption the server
                        // refused; a fresh client logs in anew
                        warn!("the XMPP server did not answer a ping; logging in again");
                        self.relogin();
                    }
                }
                ev = self.client.next() => match ev {
                    Some(ev) => self.event(ev).await,
                    None => {
                        warn!("the XMPP client stopped");
                        break;
                    }
                },
                req = out.recv() => match req {
                    Some(Out::Send(stanza, answer)) => {
                        let r = self.put(*stanza).await;
                        let _ = answer.send(r);
                    }
                    None => break,
                },
                entry = index.next() => match entry {
                    Some(Ok(e)) => self.index_changed(e).await,
                    Some(Err(e)) => warn!(error = %e, "the address index watch failed"),
                    None => {
                        warn!("the address index watch ended; restarting it");
                        if let Ok(w) = self.addresses.watch_with_history(format!("{prefix}*")).await {
                            index = w;
                        }
                    }
                },
            }
        }
        let _ = self.link.send(Link::Offline);
        let _ = self.client.send_end().await;
    }

    /// Replace the client with a fresh one (a new login, no stream state carried over). The
    /// old one is closed in the background, bounded in time (dropping it makes tokio-xmpp's
    /// worker panic); a stanza it still queued could go out then — next to the retry of its
    /// job, which is the at-least-once the channel promises anyway.
    fn relogin(&mut self) {
        let Ok(fresh) = new_client(&self.cfg, &self.me) else {
            return;
        };
        let old = std::mem::replace(&mut self.client, fresh);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), old.send_end()).await;
        });
        let _ = self.link.send(Link::Offline);
        metrics::counter!(crate::telemetry::XMPP_RELOGINS).increment(1);
    }

    /// Hand `stanza` to the connection. tokio-xmpp waits until it is written, which never
    /// happens on a connection stuck reconnecting: past [`PUT_TIMEOUT`] the connection is
    /// replaced (and the stanza with it, so it cannot go out later as a duplicate).
    async fn put(&mut self, stanza: Stanza) -> Result<StanzaToken, String> {
        match tokio::time::timeout(PUT_TIMEOUT, self.client.send_stanza(stanza)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => {
                warn!("the XMPP connection takes no stanzas; logging in again");
                self.relogin();
                Err("the XMPP connection took no stanza; logging in again".into())
            }
        }
    }

    async fn index_changed(&mut self, e: kv::Entry) {
        match e.operation {
            kv::Operation::Put => {
                let Ok(entry) = serde_json::from_slice::<AddressEntry>(&e.value) else {
                    warn!(key = e.key, "an unreadable address index entry; ignored");
                    return;
                };
                let jid = entry.address.to_lowercase();
                let new = self.by_jid.insert(jid.clone(), entry).is_none();
                if new && matches!(*self.link.borrow(), Link::Online { .. }) {
                    self.ask_subscription(&jid).await;
                }
            }
            _ => {
                // deleted: forget whoever it was (the key is a hash; find the entry by key)
                let gone: Vec<String> = self
                    .by_jid
                    .iter()
                    .filter(|(_, a)| AddressEntry::key(Channel::Xmpp, &a.address) == e.key)
                    .map(|(j, _)| j.clone())
                    .collect();
                for j in gone {
                    self.by_jid.remove(&j);
                    self.resources.remove(&j);
                    self.shown.remove(&j);
                }
            }
        }
    }

    /// Ask `jid` to share presence, and pre-approve theirs (RFC 6121 §3.4).
    async fn ask_subscription(&mut self, jid: &str) {
        let Ok(to) = BareJid::from_str(jid) else {
            return;
        };
        for p in [Presence::subscribed(), Presence::subscribe()] {
            if let Err(e) = self.put(p.with_to(to.clone()).into()).await {
                warn!(jid, error = %e, "cannot ask for a presence subscription");
            }
        }
    }

    async fn event(&mut self, ev: Event) {
        match ev {
            Event::Online {
                bound_jid,
                features,
                resumed,
            } => {
                let acks = features.stream_management.is_some();
                info!(jid = %bound_jid, stream_management = acks, resumed, "connected to the XMPP server");
                if !resumed {
                    // a fresh session: announce ourselves; the server then sends the presence
                    // of everyone subscribed
                    let _ = self.put(Presence::available().into()).await;
                    self.resources.clear();
                    let jids: Vec<String> = self.by_jid.keys().cloned().collect();
                    for j in jids {
                        self.ask_subscription(&j).await;
                    }
                }
                let _ = self.link.send(Link::Online { acks });
                metrics::gauge!(crate::telemetry::XMPP_ONLINE).set(1.0);
            }
            Event::Disconnected(e) => {
                warn!(error = %e, "lost the XMPP connection; reconnecting");
                let _ = self.link.send(Link::Offline);
                metrics::gauge!(crate::telemetry::XMPP_ONLINE).set(0.0);
            }
            Event::Stanza(Stanza::Presence(p)) => self.presence(p).await,
            Event::Stanza(Stanza::Message(m)) => self.message(m).await,
            Event::Stanza(Stanza::Iq(_)) => {}
        }
    }

    async fn presence(&mut self, p: Presence) {
        let Some(from) = p.from.clone() else { return };
        let bare = from.to_bare().to_string().to_lowercase();
        if bare == self.me.to_string().to_lowercase() {
            return;
        }
        let Some(entry) = self.by_jid.get(&bare).cloned() else {
            debug!(from = %from, "presence from a JID no user registered; ignored");
            return;
        };
        match p.type_ {
            PresenceType::Subscribe => {
                // a registered user asks to see us: approve
                let ok = Presence::subscribed().with_to(from.to_bare());
                let _ = self.put(ok.into()).await;
                return;
            }
            PresenceType::None | PresenceType::Unavailable => {}
            _ => return,
        }
        let resource = from.resource().map(|r| r.to_string()).unwrap_or_default();
        let res = self.resources.entry(bare.clone()).or_default();
        let show = show_of(&p);
        if show == Show::Unavailable {
            if resource.is_empty() {
                res.clear();
            } else {
                res.remove(&resource);
            }
        } else {
            res.insert(resource, show);
        }
        let now_shows = best(res.values().copied());
        if self.shown.get(&bare) == Some(&now_shows) {
            return;
        }
        self.shown.insert(bare.clone(), now_shows);
        let at_ms = now_ms();
        let msg = AvatarMessage::Presence {
            address: format!("xmpp:{}", entry.address),
            show: now_shows,
            at_ms,
        };
        let subject = self.bus.subjects().silo(
            self.bus.silo_of(&entry.user),
            entry.user.as_str(),
            msg.kind(),
        );
        let id = tocsin_bus::msg_id::presence(&entry.user, &entry.destination_id, at_ms);
        debug!(jid = bare, show = now_shows.as_str(), "presence");
        if let Err(e) = self.bus.publish_json(subject, &id, &msg).await {
            warn!(jid = bare, error = %e, "cannot pass a presence change on; the next one will be");
            self.shown.remove(&bare);
        }
    }

    async fn message(&mut self, m: Message) {
        if !matches!(m.type_, MessageType::Chat | MessageType::Normal) {
            return;
        }
        let Some(from) = m.from.clone() else { return };
        let Some((_, body)) = m.get_best_body(vec![]) else {
            return;
        };
        let bare = from.to_bare().to_string().to_lowercase();
        let Some(entry) = self.by_jid.get(&bare).cloned() else {
            info!(from = %from, "a message from a JID no user registered; ignored");
            return;
        };
        let at_ms = now_ms();
        let msg = AvatarMessage::Reply {
            channel: Channel::Xmpp,
            address: entry.address.clone(),
            text: tocsin_model::text::truncate(body, 1000),
            at_ms,
        };
        let subject = self.bus.subjects().silo(
            self.bus.silo_of(&entry.user),
            entry.user.as_str(),
            msg.kind(),
        );
        // several tocsin instances share the account and may all get the message: the stanza
        // id makes their publishes one
        let key = match &m.id {
            Some(i) => i.0.clone(),
            None => tocsin_model::digest(&[body, &(at_ms / 10_000).to_string()]),
        };
        let id = tocsin_bus::msg_id::xmpp_reply(&bare, &key);
        if let Err(e) = self.bus.publish_json(subject, &id, &msg).await {
            warn!(from = %from, error = %e, "cannot pass a reply on; it is lost, the user may resend");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_available_resource_wins() {
        assert_eq!(
            best([Show::Away, Show::Available].into_iter()),
            Show::Available
        );
        assert_eq!(best([Show::Xa, Show::Dnd].into_iter()), Show::Dnd);
        assert_eq!(best(std::iter::empty()), Show::Unavailable);
    }

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
