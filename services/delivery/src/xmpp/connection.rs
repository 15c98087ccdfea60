//! The task that owns the XMPP stream: it sends what the handle asks, keeps the presence
//! subscriptions of every registered JID, turns their presence and replies into messages to
//! their avatars, and answers the requests every XMPP entity must.

use super::{Link, Out, PUT_TIMEOUT, XmppConfig, new_stream};
use async_nats::jetstream::kv;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;
use tocsin_bus::Bus;
use tocsin_model::{AddressEntry, AvatarMessage, Channel, Show, now_ms};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_xmpp::Stanza;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::BareJid;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Show as XShow, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::stanzastream::{
    Event, StanzaStage, StanzaState, StanzaStream, StanzaToken, StreamEvent,
};
use tracing::{debug, info, warn};

/// The task that owns the stream.
pub(super) struct Connection {
    pub(super) stream: StanzaStream,
    pub(super) cfg: XmppConfig,
    pub(super) me: BareJid,
    pub(super) bus: Bus,
    pub(super) addresses: kv::Store,
    /// Registered JIDs (lower-case bare) → their index entry.
    pub(super) by_jid: HashMap<String, AddressEntry>,
    /// Online resources per bare JID and what each shows.
    pub(super) resources: HashMap<String, BTreeMap<String, Show>>,
    /// What we last told each avatar (per bare JID).
    pub(super) shown: HashMap<String, Show>,
    pub(super) link: watch::Sender<Link>,
    /// Whether the session has stream management (XEP-0198: the server acks each stanza); a
    /// resumed session keeps what it had.
    pub(super) acks: bool,
    /// The keepalive ping waiting for its answer: its id, and when it is overdue. A fresh
    /// login forgets it (the answer could only come on the stream that was replaced).
    pub(super) ping: Option<(String, tokio::time::Instant)>,
    /// Pings sent, for their ids.
    pub(super) pings: u64,
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
    pub(super) async fn run(mut self, mut out: mpsc::Receiver<Out>, shutdown: CancellationToken) {
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
        loop {
            let overdue = self.ping.as_ref().map(|(_, at)| *at);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = keepalive.tick(), if overdue.is_none() => self.send_ping().await,
                _ = tokio::time::sleep_until(overdue.unwrap_or_else(tokio::time::Instant::now)), if overdue.is_some() => {
                    // tokio-xmpp can get stuck retrying a stream resumption the server
                    // refused; a fresh login starts anew
                    warn!("the XMPP server did not answer a ping; logging in again");
                    self.relogin();
                }
                ev = self.stream.next() => match ev {
                    Some(ev) => self.event(ev).await,
                    None => {
                        warn!("the XMPP stream stopped");
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
        self.offline();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.stream.close()).await;
    }

    /// Replace the stream with a fresh one (a new login, no stream state carried over). The
    /// old one is closed in the background, bounded in time; a stanza it still queued could go
    /// out then — next to the retry of its job, which is the at-least-once the channel
    /// promises anyway.
    fn relogin(&mut self) {
        let Ok(fresh) = new_stream(&self.cfg, &self.me) else {
            return;
        };
        let old = std::mem::replace(&mut self.stream, fresh);
        self.ping = None;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), old.close()).await;
        });
        self.offline();
        metrics::counter!(crate::telemetry::XMPP_RELOGINS).increment(1);
    }

    /// Hand `stanza` to the stream and wait until it is written, which never happens on a
    /// connection stuck reconnecting: past [`PUT_TIMEOUT`] the connection is replaced (the
    /// stanza could still go out as the old stream closes, next to its job's retry: at least
    /// once, see [`Self::relogin`]).
    async fn put(&mut self, stanza: Stanza) -> Result<StanzaToken, String> {
        let stream = &self.stream;
        let written = tokio::time::timeout(PUT_TIMEOUT, async move {
            let mut token = stream.send(Box::new(stanza)).await;
            let state = token.wait_for(StanzaStage::Sent).await;
            (token, state)
        })
        .await;
        match written {
            Ok((token, Some(StanzaState::Sent { .. } | StanzaState::Acked { .. }))) => Ok(token),
            Ok((_, Some(StanzaState::Failed { error }))) => Err(error.to_string()),
            Ok((_, state)) => Err(format!(
                "the XMPP stream dropped the stanza before writing it ({state:?})"
            )),
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

    /// Send a keepalive ping (XEP-0199) to the server; its answer is awaited in the loop.
    async fn send_ping(&mut self) {
        self.pings += 1;
        let id = format!("tocsin-ping-{}", self.pings);
        let mut ping = Iq::from_get(id.clone(), Ping);
        if let Ok(server) = BareJid::from_str(self.me.domain().as_str()) {
            ping = ping.with_to(server.into());
        }
        // a ping the stream takes no time to write has already replaced the connection
        if self.put(ping.into()).await.is_ok() {
            let wait = Duration::from_secs(self.cfg.send_timeout_secs);
            self.ping = Some((id, tokio::time::Instant::now() + wait));
        }
    }

    async fn event(&mut self, ev: Event) {
        match ev {
            Event::Stream(StreamEvent::Reset {
                bound_jid,
                features,
            }) => {
                self.acks = features.stream_management.is_some();
                info!(jid = %bound_jid, stream_management = self.acks, "logged in to the XMPP server");
                // a fresh session: announce ourselves; the server then sends the presence of
                // everyone subscribed
                let _ = self.put(Presence::available().into()).await;
                self.resources.clear();
                let jids: Vec<String> = self.by_jid.keys().cloned().collect();
                for j in jids {
                    self.ask_subscription(&j).await;
                }
                self.online();
            }
            Event::Stream(StreamEvent::Resumed) => {
                info!("the XMPP session was resumed");
                self.online();
            }
            Event::Stream(StreamEvent::Suspended) => {
                // what is sent meanwhile waits in the stream's queue, and goes out when the
                // session is resumed (or fails with it)
                info!("lost the XMPP connection; reconnecting");
            }
            Event::Stanza(Stanza::Presence(p)) => self.presence(p).await,
            Event::Stanza(Stanza::Message(m)) => self.message(m).await,
            Event::Stanza(Stanza::Iq(iq)) => self.iq(iq).await,
        }
    }

    /// An answer to our ping; or a request, which every entity must answer (RFC 6120 §8.2.3):
    /// a ping (XEP-0199: servers that ping their clients drop those that stay silent) and a
    /// roster push from our own server with a result, anything else with
    /// `service-unavailable`.
    async fn iq(&mut self, iq: Iq) {
        let (from, id, payload) = match iq {
            Iq::Result { id, .. } | Iq::Error { id, .. } => {
                if self.ping.as_ref().is_some_and(|(p, _)| *p == id) {
                    // any answer, an error too, shows the server is there
                    self.ping = None;
                }
                return;
            }
            Iq::Get {
                from, id, payload, ..
            }
            | Iq::Set {
                from, id, payload, ..
            } => (from, id, payload),
        };
        let ours = from
            .as_ref()
            .is_none_or(|f| f.to_bare() == self.me || f.as_str() == self.me.domain().as_str());
        let answer = if payload.is("ping", ns::PING) || (ours && payload.is("query", ns::ROSTER)) {
            Iq::Result {
                from: None,
                to: from,
                id,
                payload: None,
            }
        } else {
            debug!(from = ?from, request = payload.name(), "an IQ request tocsin does not serve; answered service-unavailable");
            Iq::Error {
                from: None,
                to: from,
                id,
                payload: None,
                error: StanzaError::new(
                    ErrorType::Cancel,
                    DefinedCondition::ServiceUnavailable,
                    "en",
                    "tocsin answers only pings",
                ),
            }
        };
        if let Err(e) = self.put(answer.into()).await {
            debug!(error = %e, "cannot answer an IQ request");
        }
    }

    fn online(&self) {
        let _ = self.link.send(Link::Online { acks: self.acks });
        metrics::gauge!(crate::telemetry::XMPP_ONLINE).set(1.0);
    }

    fn offline(&self) {
        let _ = self.link.send(Link::Offline);
        metrics::gauge!(crate::telemetry::XMPP_ONLINE).set(0.0);
    }

    /// Whether `bare` (lower-case) is tocsin's own account.
    fn is_me(&self, bare: &str) -> bool {
        self.me.to_string().eq_ignore_ascii_case(bare)
    }

    async fn presence(&mut self, p: Presence) {
        let Some(from) = p.from.clone() else { return };
        let bare = from.to_bare().to_string().to_lowercase();
        if self.is_me(&bare) {
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
        if self.is_me(&bare) {
            // tocsin's own account (another instance, or a copy of what it sent): never a
            // reply, or tocsin would answer itself
            debug!(from = %from, "a message from tocsin's own account; ignored");
            return;
        }
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
}
