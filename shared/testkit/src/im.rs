//! A real XMPP client for tests and benchmarks (tokio-xmpp): it logs in to Prosody as a user,
//! approves tocsin's presence subscription, shows a presence, collects the chat messages it
//! receives, writes back, sees who is online and sends IQ requests.

use anyhow::{Result, anyhow};
use futures::StreamExt;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_xmpp::Stanza;
use tokio_xmpp::connect::{DnsConfig, TcpServerConnector};
pub use tokio_xmpp::parsers;
pub use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
pub use tokio_xmpp::parsers::presence::Show;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::stanzastream::{Event, StanzaStage, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::Timeouts;

pub struct ImUser {
    out: mpsc::UnboundedSender<Stanza>,
    /// (from, body, when, stanza id)
    inbox: mpsc::UnboundedReceiver<(String, String, std::time::Instant, Option<String>)>,
    /// Answers to IQ requests (results and errors).
    answers: mpsc::UnboundedReceiver<Iq>,
    /// Contacts seen available: bare JID → the full JID of their latest available resource.
    online: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ImUser {
    /// Log in as `jid` on the server at `addr` (plain text, loopback) and wait until online.
    ///
    /// The stanza stream is owned by one task, as tocsin's own link owns it
    /// (`services/delivery/src/xmpp`): tokio-xmpp's `Client` stops receiving for good when a
    /// stanza arrives while it sends one (its receiving half answers `Pending` without a
    /// waker while the sending half holds their lock), which made about one login in
    /// twenty-five never see tocsin's subscription request.
    pub async fn login(addr: &str, jid: &str, password: &str) -> Result<ImUser> {
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| anyhow!("host:port"))?;
        let jid = BareJid::from_str(jid)?;
        let mut stream = StanzaStream::new_c2s(
            TcpServerConnector::from(DnsConfig::no_srv(host, port.parse()?)),
            jid.into(),
            password.to_owned(),
            Timeouts::default(),
            16,
        );
        // wait for the session
        let online = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(ev) = stream.next().await {
                if let Event::Stream(StreamEvent::Reset { .. }) = ev {
                    return Ok(());
                }
            }
            Err(anyhow!("the stream stopped"))
        })
        .await
        .map_err(|_| anyhow!("no XMPP session within 15s"))?;
        online?;
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Stanza>();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (answers_tx, answers) = mpsc::unbounded_channel();
        let online = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
        let seen = online.clone();
        let task = tokio::spawn(async move {
            // what to announce again after a fresh login, as a real client does
            let mut announced: Option<Presence> = None;
            loop {
                let send = tokio::select! {
                    ev = stream.next() => match ev {
                        Some(Event::Stream(StreamEvent::Reset { .. })) => announced.clone().map(Stanza::from),
                        Some(Event::Stanza(Stanza::Presence(p))) if p.type_ == PresenceType::Subscribe => {
                            // approve, and ask for theirs
                            let Some(from) = p.from else { continue };
                            let bare = from.to_bare();
                            put(&stream, Presence::subscribed().with_to(bare.clone()).into()).await;
                            Some(Presence::subscribe().with_to(bare).into())
                        }
                        Some(Event::Stanza(Stanza::Presence(p))) => {
                            if let Some(from) = p.from {
                                let mut seen = tocsin_runtime::lock(&seen);
                                match p.type_ {
                                    PresenceType::None => { seen.insert(from.to_bare().to_string(), from.to_string()); }
                                    PresenceType::Unavailable => { seen.remove(&from.to_bare().to_string()); }
                                    _ => {}
                                }
                            }
                            None
                        }
                        Some(Event::Stanza(Stanza::Iq(iq @ (Iq::Result { .. } | Iq::Error { .. })))) => {
                            let _ = answers_tx.send(iq);
                            None
                        }
                        Some(Event::Stanza(Stanza::Message(m))) => {
                            if let (Some(from), Some((_, body))) = (m.from.clone(), m.get_best_body(vec![])) {
                                let _ = in_tx.send((from.to_bare().to_string(), body.clone(), std::time::Instant::now(), m.id.as_ref().map(|i| i.0.clone())));
                            }
                            None
                        }
                        Some(_) => None,
                        None => break,
                    },
                    s = out_rx.recv() => match s {
                        Some(s) => {
                            if let Stanza::Presence(p) = &s
                                && p.to.is_none()
                            {
                                announced = Some(p.clone());
                            }
                            Some(s)
                        }
                        None => break,
                    },
                };
                if let Some(s) = send {
                    put(&stream, s).await;
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.close()).await;
        });
        Ok(ImUser {
            out: out_tx,
            inbox: in_rx,
            answers,
            online,
            task,
        })
    }

    /// The full JID (with its resource) of `bare` if this client has seen it available.
    pub fn online_as(&self, bare: &str) -> Option<String> {
        tocsin_runtime::lock(&self.online).get(bare).cloned()
    }

    /// Send the IQ request `iq` and wait (within `timeout`) for its answer, a result or an
    /// error.
    pub async fn request(&mut self, iq: Iq, timeout: Duration) -> Result<Iq> {
        let id = iq.id().to_owned();
        let _ = self.out.send(iq.into());
        tokio::time::timeout(timeout, async {
            while let Some(answer) = self.answers.recv().await {
                if answer.id() == id {
                    return Ok(answer);
                }
            }
            Err(anyhow!("the client stopped"))
        })
        .await
        .map_err(|_| anyhow!("no answer to IQ {id} within {timeout:?}"))?
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

    /// Write `text` to `to`, with a stanza id of its own as real clients give every message
    /// (tocsin tells a message from a copy of it by that id).
    pub fn say(&self, to: &str, text: &str) {
        static SAID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let to = Jid::from_str(to).expect("a JID");
        let mut m = Message::new_with_type(MessageType::Chat, Some(to));
        let n = SAID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        m.id = Some(tokio_xmpp::parsers::message::Id(format!(
            "testkit-{}-{n}",
            std::process::id()
        )));
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

/// Send `stanza` and wait (a few seconds at most) until it is written.
async fn put(stream: &StanzaStream, stanza: Stanza) {
    let mut token = stream.send(Box::new(stanza)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), token.wait_for(StanzaStage::Sent)).await;
}
