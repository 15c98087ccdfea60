//! The dead-letter stream: what failed too often, why, and a way to replay it.

use crate::{Bus, BusError, StreamKind};
use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use tracing::warn;

const H_SUBJECT: &str = "Tocsin-Dlq-Subject";
const H_STREAM: &str = "Tocsin-Dlq-Stream";
const H_SEQ: &str = "Tocsin-Dlq-Seq";
const H_REASON: &str = "Tocsin-Dlq-Reason";
const H_DELIVERIES: &str = "Tocsin-Dlq-Deliveries";
const H_MSG_ID: &str = "Tocsin-Dlq-Msg-Id";

/// A dead letter as the API and CLI show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream: the handle to replay or discard it.
    pub seq: u64,
    pub original_subject: String,
    pub original_stream: String,
    pub original_seq: u64,
    pub reason: String,
    pub deliveries: i64,
    pub payload: String,
}

/// Where an envelope came from, for dead-lettering one of its records: its stream, its
/// sequence there and how often it has been delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordOrigin {
    pub stream: String,
    pub seq: u64,
    pub delivered: i64,
}

impl RecordOrigin {
    /// The origin of a pulled message (None for a message that did not come from a stream).
    pub fn of(msg: &jetstream::Message) -> Option<RecordOrigin> {
        let info = msg.info().ok()?;
        Some(RecordOrigin {
            stream: info.stream.to_owned(),
            seq: info.stream_sequence,
            delivered: info.delivered,
        })
    }
}

impl Bus {
    pub(crate) async fn dead_letter(
        &self,
        msg: &jetstream::Message,
        reason: &str,
    ) -> Result<(), async_nats::Error> {
        self.set_aside(msg, reason).await?;
        msg.ack_with(jetstream::AckKind::Term).await
    }

    /// Copy `msg` into the dead-letter stream with `reason`, without settling it: for a
    /// consumer acknowledged by position ([`Bus::positional_consumer`]), whose user then
    /// counts it as settled (a per-message Term would settle everything before it).
    pub async fn set_aside(
        &self,
        msg: &jetstream::Message,
        reason: &str,
    ) -> Result<(), async_nats::Error> {
        let info = msg.info()?;
        let stream = info.stream.to_owned();
        let seq = info.stream_sequence;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(H_SUBJECT, msg.subject.as_str());
        headers.insert(H_STREAM, stream.as_str());
        headers.insert(H_SEQ, seq.to_string().as_str());
        headers.insert(H_REASON, tocsin_model::text::one_line(reason).as_str());
        headers.insert(H_DELIVERIES, info.delivered.to_string().as_str());
        if let Some(id) = msg.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")) {
            headers.insert(H_MSG_ID, id.as_str());
        }
        warn!(subject = %msg.subject, %stream, seq, %reason, "message dead-lettered");
        metrics::counter!("tocsin_bus_dead_lettered_total").increment(1);
        crate::publish::publish_with_retry(
            &self.js,
            &self.config,
            self.subjects.dead_letter(&stream),
            &crate::msg_id::dead_letter(&stream, seq),
            msg.payload.clone(),
            Some(headers),
        )
        .await?;
        Ok(())
    }

    /// Set record `index` of an envelope aside alone, as the message it would have been on its
    /// own (`subject`, `payload`, `record_id` as its `Nats-Msg-Id`), so that replaying it hands
    /// it to its consumer like any other message. The envelope itself is settled by its
    /// consumer once its other records are.
    pub async fn dead_letter_record(
        &self,
        origin: &RecordOrigin,
        index: usize,
        record: (&str, &str, bytes::Bytes),
        reason: &str,
    ) -> Result<(), BusError> {
        let (subject, record_id, payload) = record;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(H_SUBJECT, subject);
        headers.insert(H_STREAM, origin.stream.as_str());
        headers.insert(H_SEQ, origin.seq.to_string().as_str());
        headers.insert(H_REASON, tocsin_model::text::one_line(reason).as_str());
        headers.insert(H_DELIVERIES, origin.delivered.to_string().as_str());
        if !record_id.is_empty() {
            headers.insert(H_MSG_ID, record_id);
        }
        warn!(%subject, stream = %origin.stream, seq = origin.seq, index, %reason, "record of an envelope dead-lettered");
        metrics::counter!("tocsin_bus_dead_lettered_total").increment(1);
        crate::publish::publish_with_retry(
            &self.js,
            &self.config,
            self.subjects.dead_letter(&origin.stream),
            &crate::msg_id::dead_letter_record(&origin.stream, origin.seq, index),
            payload,
            Some(headers),
        )
        .await
    }

    /// Up to `limit` dead letters, oldest first, starting at sequence `from`.
    pub async fn dead_letters(&self, from: u64, limit: usize) -> Result<Vec<DeadLetter>, BusError> {
        let name = self.subjects.stream(StreamKind::DeadLetter);
        let setup = |e: &dyn std::fmt::Display| BusError::Setup {
            what: format!("stream {name}"),
            message: e.to_string(),
        };
        let mut stream = self.js.get_stream(&name).await.map_err(|e| setup(&e))?;
        let state = stream.info().await.map_err(|e| setup(&e))?.state.clone();
        let mut out = Vec::new();
        let mut seq = from.max(state.first_sequence);
        while seq <= state.last_sequence && out.len() < limit {
            if let Ok(m) = stream.get_raw_message(seq).await {
                out.push(to_dead_letter(seq, &m.headers, &m.payload));
            }
            seq += 1;
        }
        Ok(out)
    }

    /// Publish dead letter `seq` again to its original subject and remove it from the
    /// dead-letter stream. Its handlers are idempotent, so a replay of something that did
    /// land after all is harmless.
    pub async fn replay_dead_letter(&self, seq: u64) -> Result<DeadLetter, BusError> {
        let name = self.subjects.stream(StreamKind::DeadLetter);
        let setup = |e: &dyn std::fmt::Display| BusError::Setup {
            what: format!("dead letter {seq} in {name}"),
            message: e.to_string(),
        };
        let stream = self.js.get_stream(&name).await.map_err(|e| setup(&e))?;
        let m = stream.get_raw_message(seq).await.map_err(|e| setup(&e))?;
        let dl = to_dead_letter(seq, &m.headers, &m.payload);
        let msg_id = m
            .headers
            .get(H_MSG_ID)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_else(|| format!("{}:{}", dl.original_stream, dl.original_seq));
        self.publish(
            dl.original_subject.clone(),
            &crate::msg_id::replay(seq, &msg_id),
            m.payload.clone(),
        )
        .await?;
        stream.delete_message(seq).await.map_err(|e| setup(&e))?;
        Ok(dl)
    }
}

fn to_dead_letter(seq: u64, headers: &async_nats::HeaderMap, payload: &[u8]) -> DeadLetter {
    let h = |name: &str| {
        headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    DeadLetter {
        seq,
        original_subject: h(H_SUBJECT),
        original_stream: h(H_STREAM),
        original_seq: h(H_SEQ).parse().unwrap_or(0),
        reason: h(H_REASON),
        deliveries: h(H_DELIVERIES).parse().unwrap_or(0),
        payload: String::from_utf8_lossy(&payload[..payload.len().min(4096)]).into_owned(),
    }
}
