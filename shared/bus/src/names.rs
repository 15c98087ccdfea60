//! Every subject, stream, consumer and bucket name, built in one place under the prefix.

/// The streams of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Everything addressed to one silo's avatars (work queue, consumer `router`).
    Silo(u32),
    /// Routed notifications and timeline entries (work queue, consumers `history-<silo>`).
    History,
    /// Feed subscription changes (work queue, consumer `ingestor`).
    Ingest,
    /// Delivery jobs (work queue, consumers `delivery-<channel>`).
    Delivery,
    /// Dead letters (limits retention).
    DeadLetter,
    /// Events for the archive (limits retention, consumer `archiver`).
    Events,
}

/// Subject and stream names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
    upper: String,
}

impl Subjects {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            upper: prefix.to_ascii_uppercase().replace('-', "_"),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn stream(&self, kind: StreamKind) -> String {
        match kind {
            StreamKind::Silo(k) => format!("{}_SILO_{k}", self.upper),
            StreamKind::History => format!("{}_HISTORY", self.upper),
            StreamKind::Ingest => format!("{}_INGEST", self.upper),
            StreamKind::Delivery => format!("{}_DELIVERY", self.upper),
            StreamKind::DeadLetter => format!("{}_DLQ", self.upper),
            StreamKind::Events => format!("{}_EVENTS", self.upper),
        }
    }

    /// A KV bucket name (`avatars`, `feeds`).
    pub fn bucket(&self, name: &str) -> String {
        format!("{}_{}", self.upper, name.to_ascii_uppercase())
    }

    /// `<p>.silo.<k>.<user>.<kind>`: a message for one avatar.
    pub fn silo(&self, silo: u32, user: &str, kind: &str) -> String {
        format!("{}.silo.{silo}.{user}.{kind}", self.prefix)
    }

    /// `<p>.silo.<k>.ENVELOPE.<kind>`: messages of `kind` for many avatars of silo `k` in
    /// envelopes, each record addressed to its user ([`crate::envelope::addressed`]).
    pub fn silo_envelope(&self, silo: u32, kind: &str) -> String {
        self.silo(silo, crate::envelope::TOKEN, kind)
    }

    pub fn silo_all(&self, silo: u32) -> String {
        format!("{}.silo.{silo}.>", self.prefix)
    }

    /// Every subject of every silo.
    pub fn silos_all(&self) -> String {
        format!("{}.silo.>", self.prefix)
    }

    /// `<p>.history.<k>.<user>`: a record for the history service owning silo `k`.
    pub fn history(&self, silo: u32, user: &str) -> String {
        format!("{}.history.{silo}.{user}", self.prefix)
    }

    /// `<p>.history.<k>.ENVELOPE`: records of many users of silo `k` in envelopes.
    pub fn history_envelope(&self, silo: u32) -> String {
        let mut digits = [0u8; 10];
        joined(&[
            &self.prefix,
            ".history.",
            decimal(silo, &mut digits),
            ".",
            crate::envelope::TOKEN,
        ])
    }

    pub fn history_silo(&self, silo: u32) -> String {
        format!("{}.history.{silo}.*", self.prefix)
    }

    pub fn history_all(&self) -> String {
        format!("{}.history.*.*", self.prefix)
    }

    /// `<p>.rpc.history.<k>.<op>`: core NATS request/reply to the history owning silo `k`
    /// (`query`, `feed`).
    pub fn history_rpc(&self, silo: u32, op: &str) -> String {
        format!("{}.rpc.history.{silo}.{op}", self.prefix)
    }

    /// `<p>.rpc.archiver.<op>`: core NATS request/reply to any archiver (`report`).
    pub fn archiver_rpc(&self, op: &str) -> String {
        format!("{}.rpc.archiver.{op}", self.prefix)
    }

    /// `<p>.rpc.delivery.test.<channel>`: a test message to one destination, answered by a
    /// delivery instance serving `channel`.
    pub fn delivery_test(&self, channel: &str) -> String {
        format!("{}.rpc.delivery.test.{channel}", self.prefix)
    }

    /// `<p>.rpc.ingest.<op>`: core NATS request/reply to any ingestor (`preview`).
    pub fn ingest_rpc(&self, op: &str) -> String {
        format!("{}.rpc.ingest.{op}", self.prefix)
    }

    /// `<p>.ingest.subscriptions`: feed subscription changes for the ingestor.
    pub fn ingest_subscriptions(&self) -> String {
        format!("{}.ingest.subscriptions", self.prefix)
    }

    pub fn ingest_imap(&self) -> String {
        format!("{}.ingest.imap", self.prefix)
    }

    /// `<p>.ingest.topic.<name>`: a message published to a shared topic, for the ingestor
    /// to fan out to the topic's subscribers.
    pub fn ingest_topic(&self, name: &str) -> String {
        format!("{}.ingest.topic.{name}", self.prefix)
    }

    pub fn ingest_all(&self) -> String {
        format!("{}.ingest.>", self.prefix)
    }

    /// `<p>.delivery.<channel>`: delivery jobs for one channel.
    pub fn delivery(&self, channel: &str) -> String {
        joined(&[&self.prefix, ".delivery.", channel])
    }

    /// `<p>.delivery.<channel>.parked`: jobs parked back in the stream (a user over its
    /// share of the channel, a destination that keeps failing), consumer
    /// `delivery-<channel>-parked`.
    pub fn delivery_parked(&self, channel: &str) -> String {
        format!("{}.delivery.{channel}.parked", self.prefix)
    }

    pub fn delivery_all(&self) -> String {
        format!("{}.delivery.>", self.prefix)
    }

    /// `<p>.live.<user>`: core NATS, each notification as history stores it (for SSE).
    pub fn live(&self, user: &str) -> String {
        format!("{}.live.{user}", self.prefix)
    }

    /// `<p>.dlq.<stream>`: a dead letter taken from `stream`.
    pub fn dead_letter(&self, stream: &str) -> String {
        format!("{}.dlq.{}", self.prefix, stream.to_ascii_lowercase())
    }

    pub fn dead_letter_all(&self) -> String {
        format!("{}.dlq.>", self.prefix)
    }

    /// `<p>.events.<kind>`: one state change, for the archive.
    pub fn events(&self, kind: tocsin_model::EventKind) -> String {
        format!("{}.events.{kind}", self.prefix)
    }

    /// `<p>.events.ENVELOPE`: events of many kinds in envelopes.
    pub fn events_envelope(&self) -> String {
        joined(&[&self.prefix, ".events.", crate::envelope::TOKEN])
    }

    pub fn events_all(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// The user id in a silo subject, `<p>.silo.<k>.<user>.<kind>`.
    pub fn user_of_silo_subject<'a>(&self, subject: &'a str) -> Option<&'a str> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".silo.")?;
        let mut parts = rest.split('.');
        let _silo = parts.next()?;
        parts.next()
    }
}

/// `parts` as one string, allocated once at its length. The subjects an avatar names for each
/// of its outputs are made this way: through `format!` they were 6 % of the router's own work
/// on a notification (`tocsin-bench work`).
fn joined(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}

/// `n` in decimal, written at the end of `buf` (ten digits hold any `u32`).
fn decimal(mut n: u32, buf: &mut [u8; 10]) -> &str {
    let mut start = buf.len();
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(buf.get(start..).unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_parse_back() {
        let s = Subjects::new("t-1");
        assert_eq!(s.stream(StreamKind::Silo(3)), "T_1_SILO_3");
        assert_eq!(s.silo(3, "u1", "notify"), "t-1.silo.3.u1.notify");
        assert_eq!(s.user_of_silo_subject("t-1.silo.3.u1.notify"), Some("u1"));
        assert_eq!(s.user_of_silo_subject("other.silo.3.u1.notify"), None);
        assert_eq!(
            s.user_of_silo_subject(&s.silo_envelope(3, "notify")),
            Some(crate::envelope::TOKEN)
        );
        assert_eq!(s.history(2, "u1"), "t-1.history.2.u1");
        assert_eq!(s.bucket("avatars"), "T_1_AVATARS");
        assert_eq!(s.dead_letter("T_1_SILO_3"), "t-1.dlq.t_1_silo_3");
        assert_eq!(s.delivery("sink"), "t-1.delivery.sink");
        assert_eq!(s.events_envelope(), "t-1.events.ENVELOPE");
        for k in [0, 7, 10, 15, 999, u32::MAX] {
            assert_eq!(s.history_envelope(k), format!("t-1.history.{k}.ENVELOPE"));
        }
    }
}
