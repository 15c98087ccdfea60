//! Publishing: every message with its `Nats-Msg-Id`, its PubAck awaited (or handed to a task
//! of its own with [`PendingAck`]); batches pipelined in one round trip; requests and replies.

use crate::{Bus, BusError, PublishWindow, decode, encode, event_message, publish};
use async_nats::jetstream::{self};
use serde::Serialize;
use std::time::Duration;
use tracing::debug;

/// A publish sent by [`Bus::send`] whose PubAck has not been awaited yet. A task of its own
/// receives the PubAck, so the client's in-flight permit (`max_ack_inflight`) is given back as
/// soon as the server answers. Holding the client's own PubAck futures instead deadlocks under
/// load: each holds a permit until awaited, and when every permit is held by senders that are
/// themselves waiting for a permit to send their next output, nobody awaits anything (seen
/// with 100k avatars routing one feed item at once).
pub struct PendingAck {
    subject: String,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl std::future::IntoFuture for PendingAck {
    type Output = Result<(), BusError>;
    type IntoFuture =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BusError>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let message = match self.task.await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(e) => format!("the PubAck task failed: {e}"),
            };
            Err(BusError::Publish {
                subject: self.subject,
                message,
            })
        })
    }
}

/// Wait for the PubAck of every publish sent with [`Bus::send`].
async fn await_acks(acks: Vec<PendingAck>) -> Result<(), BusError> {
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

impl Bus {
    /// Publish `payload` under `msg_id` and wait for the PubAck, retrying transient failures
    /// (no responders during a leader election, timeouts) with backoff for up to
    /// `publish_retry_secs`. A retry with the same id is deduplicated by the server.
    pub async fn publish(
        &self,
        subject: String,
        msg_id: &str,
        payload: bytes::Bytes,
    ) -> Result<(), BusError> {
        publish::publish_with_retry(&self.js, &self.config, subject, msg_id, payload, None).await
    }

    /// Send a publish now and return the PubAck future without waiting for it. Publishes sent
    /// this way leave in call order; the caller awaits the acks (all of them) before it
    /// treats the effect as durable. Used where order matters and a round trip per message
    /// would cost too much (an avatar's outputs).
    pub async fn send(
        &self,
        subject: String,
        msg_id: &str,
        payload: bytes::Bytes,
    ) -> Result<PendingAck, BusError> {
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(msg_id);
        let ack = self
            .js
            .send_publish(subject.clone(), msg)
            .await
            .map_err(|e| BusError::Publish {
                subject: subject.clone(),
                message: e.to_string(),
            })?;
        Ok(PendingAck {
            subject,
            task: tokio::spawn(async move { ack.await.map(drop).map_err(|e| e.to_string()) }),
        })
    }

    /// [`Bus::publish`] of a JSON value.
    pub async fn publish_json<T: Serialize>(
        &self,
        subject: String,
        msg_id: &str,
        value: &T,
    ) -> Result<(), BusError> {
        self.publish(subject, msg_id, encode(value)?).await
    }

    /// The subject, message id and payload of an event, ready for [`Bus::send`] or a
    /// [`PublishWindow`] beside the change's other outputs: `service` and (from `user`) `silo`
    /// are filled in. Events travel with the outputs of the change they record and are
    /// settled with them, so a crash never keeps the change and loses its event; their ids
    /// make a repeat after a crash a duplicate the server drops.
    pub fn event_output(
        &self,
        mut event: tocsin_model::Event,
        service: &str,
    ) -> Result<(String, String, bytes::Bytes), BusError> {
        if event.service.is_empty() {
            event.service = service.to_owned();
        }
        if event.silo.is_none()
            && let Some(u) = &event.user
        {
            event.silo = Some(self.silo_of(u));
        }
        event_message(&self.subjects, event, service)
    }

    /// Queue notification `n` for its user's avatar, with the events of its ingestion, in one
    /// pipelined batch ([`Bus::publish_all`]).
    pub async fn notify(
        &self,
        n: tocsin_model::Notification,
        events: Vec<tocsin_model::Event>,
        service: &str,
    ) -> Result<(), BusError> {
        let mut items = self.event_outputs(events, service)?;
        let subject = self
            .subjects
            .silo(self.silo_of(&n.user), n.user.as_str(), "notify");
        let id = n.id.to_string();
        let msg = tocsin_model::AvatarMessage::Notify { notification: n };
        items.push((subject, id, encode(&msg)?));
        self.publish_all(items).await
    }

    /// The `(subject, id, payload)` messages that queue `notifications` for their avatars
    /// ([`Bus::silo_outputs`] of each silo's), so one feed item for many subscribers costs a
    /// message per silo rather than one per subscriber.
    pub fn notify_outputs(
        &self,
        notifications: &[tocsin_model::Notification],
    ) -> Result<Vec<(String, String, bytes::Bytes)>, BusError> {
        let mut by_silo: std::collections::BTreeMap<u32, Vec<(&str, String, bytes::Bytes)>> =
            Default::default();
        for n in notifications {
            let msg = tocsin_model::AvatarMessage::Notify {
                notification: n.clone(),
            };
            by_silo.entry(self.silo_of(&n.user)).or_default().push((
                n.user.as_str(),
                n.id.to_string(),
                encode(&msg)?,
            ));
        }
        Ok(by_silo
            .into_iter()
            .flat_map(|(silo, records)| self.silo_outputs(silo, "notify", &records))
            .collect())
    }

    /// The `(subject, id, payload)` messages that carry `records` — (user, message id,
    /// payload), every user of silo `silo`, all of `kind` — to their avatars, in order: one
    /// record alone on its user's subject under its own id; several in envelopes on
    /// [`crate::Subjects::silo_envelope`], each record's id its user's and its own
    /// ([`crate::envelope::addressed`]).
    pub fn silo_outputs(
        &self,
        silo: u32,
        kind: &str,
        records: &[(&str, String, bytes::Bytes)],
    ) -> Vec<(String, String, bytes::Bytes)> {
        if let [(user, id, payload)] = records {
            return vec![(
                self.subjects.silo(silo, user, kind),
                id.clone(),
                payload.clone(),
            )];
        }
        let ids: Vec<String> = records
            .iter()
            .map(|(user, id, _)| crate::envelope::addressed(user, id))
            .collect();
        let framed: Vec<(&str, &[u8])> = ids
            .iter()
            .zip(records)
            .map(|(id, (_, _, p))| (id.as_str(), p.as_ref()))
            .collect();
        let subject = self.subjects.silo_envelope(silo, kind);
        crate::envelope::sealed(&framed)
            .into_iter()
            .map(|(id, payload)| (subject.clone(), id, payload))
            .collect()
    }

    /// [`Bus::event_output`] of each, in envelopes on [`crate::Subjects::events_envelope`]
    /// (each event a record under its own id): what a change that records many events at
    /// once publishes, instead of one message per event.
    pub fn event_envelopes(
        &self,
        events: Vec<tocsin_model::Event>,
        service: &str,
    ) -> Result<Vec<(String, String, bytes::Bytes)>, BusError> {
        let records = self.event_outputs(events, service)?;
        let framed: Vec<(&str, &[u8])> = records
            .iter()
            .map(|(_, id, p)| (id.as_str(), p.as_ref()))
            .collect();
        let subject = self.subjects.events_envelope();
        Ok(crate::envelope::sealed(&framed)
            .into_iter()
            .map(|(id, payload)| (subject.clone(), id, payload))
            .collect())
    }

    /// Publish events in one pipelined batch ([`Bus::publish_all`]).
    pub async fn publish_events(
        &self,
        events: Vec<tocsin_model::Event>,
        service: &str,
    ) -> Result<(), BusError> {
        self.publish_all(self.event_outputs(events, service)?).await
    }

    /// [`Bus::event_output`] of each.
    pub fn event_outputs(
        &self,
        events: Vec<tocsin_model::Event>,
        service: &str,
    ) -> Result<Vec<(String, String, bytes::Bytes)>, BusError> {
        events
            .into_iter()
            .map(|e| self.event_output(e, service))
            .collect()
    }

    /// Publish `(subject, id, payload)` items pipelined — every one sent, then every PubAck
    /// awaited: one round trip for the batch — retrying the whole batch on a transient failure
    /// for up to `publish_retry_secs` (the ids make a repeat harmless).
    pub async fn publish_all(
        &self,
        items: Vec<(String, String, bytes::Bytes)>,
    ) -> Result<(), BusError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.config.publish_retry_secs);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut acks = Vec::with_capacity(items.len());
            let mut result = Ok(());
            for (subject, id, payload) in &items {
                match self.send(subject.clone(), id, payload.clone()).await {
                    Ok(ack) => acks.push(ack),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if result.is_ok() {
                result = await_acks(acks).await;
            }
            match result {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    debug!(attempt, error = %e, "batch publish failed, retrying");
                    tokio::time::sleep(publish::retry_delay(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A bounded window of outstanding publishes for high-volume publishers.
    pub fn window(&self, size: usize) -> PublishWindow {
        PublishWindow::new(self.clone(), size)
    }

    /// A request over core NATS with a JSON body and a JSON reply, bounded by `timeout`.
    pub async fn request_json<Q: Serialize, R: serde::de::DeserializeOwned>(
        &self,
        subject: String,
        body: &Q,
        timeout: Duration,
    ) -> Result<R, BusError> {
        let payload = encode(body)?;
        let reply = tokio::time::timeout(timeout, self.client.request(subject.clone(), payload))
            .await
            .map_err(|_| BusError::Request {
                subject: subject.clone(),
                message: format!("no reply within {}ms", timeout.as_millis()),
            })?
            .map_err(|e| BusError::Request {
                subject: subject.clone(),
                message: e.to_string(),
            })?;
        decode(&reply.payload, "reply")
    }
}
