//! A real XMPP client for tests and benchmarks (tokio-xmpp): it logs in to Prosody as a user,
//! approves tocsin's presence subscription, shows a presence, collects the chat messages it
//! receives and writes back.

use anyhow::{Result, anyhow};
use futures::StreamExt;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_xmpp::connect::{DnsConfig, TcpServerConnector};
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
pub use tokio_xmpp::parsers::presence::Show;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, Event, Stanza};

pub struct ImUser {
    out: mpsc::UnboundedSender<Stanza>,
    /// (from, body, when, stanza id)
    inbox: mpsc::UnboundedReceiver<(String, String, std::time::Instant, Option<String>)>,
    task: tokio::task::JoinHandle<()>,
}

impl ImUser {
    /// Log in as `jid` on the server at `addr` (plain text, loopback) and wait until online.
    pub async fn login(addr: &str, jid: &str, password: &str) -> Result<ImUser> {
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| anyhow!("host:port"))?;
        let jid = BareJid::from_str(jid)?;
        let mut client = Client::new_with_connector(
            jid,
            password.to_owned(),
            TcpServerConnector::from(DnsConfig::no_srv(host, port.parse()?)),
            Timeouts::default(),
        );
        // wait for the session
        let online = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(ev) = client.next().await {
                match ev {
                    Event::Online { .. } => return Ok(()),
                    Event::Disconnected(e) => return Err(anyhow!("login failed: {e}")),
                    _ => {}
                }
            }
            Err(anyhow!("the client stopped"))
        })
        .await
        .map_err(|_| anyhow!("no XMPP session within 15s"))?;
        online?;
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Stanza>();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            // what to announce again after a reconnect, as a real client does
            let mut announced: Option<Presence> = None;
            // Answers to subscription requests, sent once nothing has arrived for a moment.
            // Answered at once — send_stanza awaited while a login's offline messages pour in
            // — this client stopped receiving for good in about one login in four (the fault
            // suite's read-back); deferred, never in 11 runs. Our guess, not pinned down: the
            // send waits for a write that tokio-xmpp does not make while its incoming queues
            // are full and nobody reads them. tocsin's own link, which also sends from its
            // loop, keeps delivering through a fresh session with 250 contacts online
            // (reach.rs).
            // ... or, at the latest, two seconds after the first was deferred: a steady trickle
            // of stanzas must not starve them (a subscription never answered, a user never
            // seen present)
            let mut deferred: Vec<Stanza> = Vec::new();
            let mut deferred_by = tokio::time::Instant::now();
            loop {
                let quiet = tokio::time::sleep(Duration::from_millis(300));
                let latest = tokio::time::sleep_until(deferred_by);
                tokio::select! {
                    _ = async { tokio::select! { _ = quiet => {}, _ = latest => {} } }, if !deferred.is_empty() => {
                        for st in deferred.drain(..) {
                            let _ = client.send_stanza(st).await;
                        }
                    }
                    ev = client.next() => match ev {
                        Some(Event::Online { .. }) => {
                            if let Some(p) = announced.clone() {
                                let _ = client.send_stanza(p.into()).await;
                            }
                        }
                        Some(Event::Stanza(Stanza::Presence(p))) if p.type_ == PresenceType::Subscribe => {
                            if let Some(from) = p.from {
                                let bare = from.to_bare();
                                if deferred.is_empty() {
                                    deferred_by = tokio::time::Instant::now() + Duration::from_secs(2);
                                }
                                deferred.push(Presence::subscribed().with_to(bare.clone()).into());
                                deferred.push(Presence::subscribe().with_to(bare).into());
                            }
                        }
                        Some(Event::Stanza(Stanza::Message(m))) => {
                            if let (Some(from), Some((_, body))) = (m.from.clone(), m.get_best_body(vec![])) {
                                let _ = in_tx.send((from.to_bare().to_string(), body.clone(), std::time::Instant::now(), m.id.as_ref().map(|i| i.0.clone())));
                            }
                        }
                        Some(_) => {}
                        None => break,
                    },
                    s = out_rx.recv() => match s {
                        Some(s) => {
                            if let Stanza::Presence(p) = &s
                                && p.to.is_none()
                            {
                                announced = Some(p.clone());
                            }
                            let _ = client.send_stanza(s).await;
                        }
                        None => break,
                    },
                }
            }
            let _ = client.send_end().await;
        });
        Ok(ImUser {
            out: out_tx,
            inbox: in_rx,
            task,
        })
    }

    /// Show a presence: `None` available, or away/xa/dnd/chat.
    pub fn show(&self, show: Option<Show>) {
        let mut p = Presence::available();
        p.show = show;
        let _ = self.out.send(p.into());
    }

    /// Go offline without closing the session's stream (unavailable presence).
    pub fn unavailable(&self) {
        let _ = self
            .out
            .send(Presence::new(PresenceType::Unavailable).into());
    }

    /// Write `text` to `to`.
    pub fn say(&self, to: &str, text: &str) {
        let to = Jid::from_str(to).expect("a JID");
        let mut m = Message::new_with_type(MessageType::Chat, Some(to));
        m.bodies.insert(Lang::default(), text.to_owned());
        let _ = self.out.send(m.into());
    }

    /// The next chat message (from, body) within `timeout`.
    pub async fn next_message(&mut self, timeout: Duration) -> Result<(String, String)> {
        let (from, body, _) = self.next_timed(timeout).await?;
        Ok((from, body))
    }

    /// The next chat message with the moment it arrived.
    pub async fn next_timed(
        &mut self,
        timeout: Duration,
    ) -> Result<(String, String, std::time::Instant)> {
        let (from, body, at, _) = tokio::time::timeout(timeout, self.inbox.recv())
            .await
            .map_err(|_| anyhow!("no chat message within {timeout:?}"))?
            .ok_or_else(|| anyhow!("the client stopped"))?;
        Ok((from, body, at))
    }

    /// Messages already received, without waiting.
    pub fn received(&mut self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        while let Ok((from, body, _, _)) = self.inbox.try_recv() {
            v.push((from, body));
        }
        v
    }

    /// The next chat message within `timeout`: (body, the stanza's id).
    pub async fn next_with_id(&mut self, timeout: Duration) -> Result<(String, Option<String>)> {
        let (_, body, _, id) = tokio::time::timeout(timeout, self.inbox.recv())
            .await
            .map_err(|_| anyhow!("no chat message within {timeout:?}"))?
            .ok_or_else(|| anyhow!("the client stopped"))?;
        Ok((body, id))
    }

    /// Messages already received, without waiting: (body, the stanza's id) — by which a
    /// client tells a resent message from a new one.
    pub fn received_with_ids(&mut self) -> Vec<(String, Option<String>)> {
        let mut v = Vec::new();
        while let Ok((_, body, _, id)) = self.inbox.try_recv() {
            v.push((body, id));
        }
        v
    }
}

impl Drop for ImUser {
    fn drop(&mut self) {
        self.task.abort();
    }
}
