//! Envelopes: many records for one subject in one bus message (ADR 0016). The format, and
//! reading a payload that may be an envelope or a single record.
//!
//! An envelope's payload is [`MAGIC`] followed by one frame per record: the record's id
//! (4-byte big-endian length, UTF-8) and its payload (4-byte big-endian length, bytes). A
//! record's payload is what it would be as a message of its own, so a consumer handles the
//! records of an envelope exactly as it would handle the same records one message each.
//! Records are applied idempotently by their own ids (a notification id, a timeline key, an
//! event id): the envelope's `Nats-Msg-Id` ([`id`]) only deduplicates a repeat of the same
//! envelope, not of the same record in another envelope.

use crate::BusError;
use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

/// The first bytes of every envelope. A JSON record never starts with a NUL byte.
pub const MAGIC: &[u8] = b"\0tocsin-envelope/1\n";

/// An envelope's payload is kept under this many bytes (records are packed into as many
/// envelopes as needed; a record larger than this travels in an envelope of its own).
pub const MAX_BYTES: usize = 512 * 1024;

/// An envelope carries at most this many records.
pub const MAX_RECORDS: usize = 1024;

/// The subject token that marks an envelope's subject (`<p>.history.<k>.ENVELOPE`,
/// `<p>.events.ENVELOPE`): user ids and event kinds are lowercase, so it names neither.
pub const TOKEN: &str = "ENVELOPE";

/// The id of a record for one user's avatar in a silo's envelope: the user, then the record's
/// own id (`<user>/<id>`). User ids never contain `/`.
pub fn addressed(user: &str, id: &str) -> String {
    format!("{user}/{id}")
}

/// The user a silo envelope's record is for, and the record's own id ([`addressed`]).
pub fn addressee(record_id: &str) -> Option<(&str, &str)> {
    record_id.split_once('/')
}

/// Whether `payload` is an envelope.
pub fn is_envelope(payload: &[u8]) -> bool {
    payload.starts_with(MAGIC)
}

/// The bytes one record adds to an envelope.
pub fn framed_len(id: &str, payload: &[u8]) -> usize {
    8 + id.len() + payload.len()
}

/// Encode `records` (id, payload) as one envelope.
pub fn encode<'a>(records: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Bytes {
    let mut out = BytesMut::with_capacity(4096);
    out.put_slice(MAGIC);
    for (id, payload) in records {
        out.put_u32(id.len() as u32);
        out.put_slice(id.as_bytes());
        out.put_u32(payload.len() as u32);
        out.put_slice(payload);
    }
    out.freeze()
}

/// The `Nats-Msg-Id` of an envelope holding records with these ids: the same records in the
/// same order always make the same id, so a republished envelope is dropped by the server.
pub fn id<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    let mut n = 0usize;
    for id in ids {
        h.update((id.len() as u32).to_be_bytes());
        h.update(id.as_bytes());
        n += 1;
    }
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("env:{n}:{hex}")
}

/// One record read from a payload: its id (empty for a payload that is a single record) and
/// its bytes (a slice of the message's payload, not a copy).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub payload: Bytes,
}

/// The records in `payload`: each record of an envelope, or the payload itself as one record.
/// A malformed envelope (a length past the end, an id that is not UTF-8) is an error naming
/// the byte offset; reading is linear in the payload's size.
pub fn records(payload: &Bytes) -> Result<Vec<Record>, BusError> {
    if !is_envelope(payload) {
        return Ok(vec![Record {
            id: String::new(),
            payload: payload.clone(),
        }]);
    }
    let bad = |at: usize, what: &str| BusError::Codec {
        what: "envelope".into(),
        message: format!("{what} at byte {at} of {}", payload.len()),
    };
    let mut out = Vec::new();
    let mut at = MAGIC.len();
    let len_at = |at: usize| -> Option<usize> {
        let b = payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    while at < payload.len() {
        let id_len = len_at(at).ok_or_else(|| bad(at, "a truncated id length"))?;
        let id_start = at + 4;
        let id_bytes = payload
            .get(id_start..id_start.saturating_add(id_len))
            .ok_or_else(|| bad(at, "an id longer than the envelope"))?;
        let id = std::str::from_utf8(id_bytes)
            .map_err(|_| bad(id_start, "an id that is not UTF-8"))?
            .to_owned();
        at = id_start + id_len;
        let len = len_at(at).ok_or_else(|| bad(at, "a truncated record length"))?;
        let start = at + 4;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= payload.len())
            .ok_or_else(|| bad(at, "a record longer than the envelope"))?;
        out.push(Record {
            id,
            payload: payload.slice(start..end),
        });
        at = end;
    }
    Ok(out)
}

/// `records` (id, payload), in order, as the envelopes that carry them ([`pack`]): each
/// envelope's `Nats-Msg-Id` ([`id`]) and payload ([`encode`]).
pub fn sealed(records: &[(&str, &[u8])]) -> Vec<(String, Bytes)> {
    pack(records)
        .into_iter()
        .map(|run| {
            let part = &records[run];
            (
                id(part.iter().map(|(id, _)| *id)),
                encode(part.iter().copied()),
            )
        })
        .collect()
}

/// Split `records` (id, payload), in order, into runs that each fit one envelope.
pub fn pack<I: AsRef<str>, T: AsRef<[u8]>>(records: &[(I, T)]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut bytes = MAGIC.len();
    for (i, (id, payload)) in records.iter().enumerate() {
        let add = framed_len(id.as_ref(), payload.as_ref());
        if i > start && (bytes + add > MAX_BYTES || i - start >= MAX_RECORDS) {
            runs.push(start..i);
            start = i;
            bytes = MAGIC.len();
        }
        bytes += add;
    }
    if start < records.len() {
        runs.push(start..records.len());
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_order_with_their_ids() {
        let env = encode([("a", &b"{\"x\":1}"[..]), ("", &b""[..]), ("c", &b"[]"[..])]);
        assert!(is_envelope(&env));
        let recs = records(&env).unwrap();
        let got: Vec<(&str, &[u8])> = recs
            .iter()
            .map(|r| (r.id.as_str(), r.payload.as_ref()))
            .collect();
        assert_eq!(
            got,
            vec![("a", &b"{\"x\":1}"[..]), ("", &b""[..]), ("c", &b"[]"[..])]
        );
    }

    #[test]
    fn a_plain_payload_is_one_record() {
        let p = Bytes::from_static(b"{\"x\":1}");
        assert_eq!(
            records(&p).unwrap(),
            vec![Record {
                id: String::new(),
                payload: p
            }]
        );
        assert_eq!(records(&encode([])).unwrap(), vec![]);
    }

    #[test]
    fn a_damaged_envelope_is_an_error_never_a_panic() {
        let env = encode([("abc", &b"payload"[..])]);
        for cut in MAGIC.len() + 1..env.len() {
            let e = records(&env.slice(..cut)).unwrap_err().to_string();
            assert!(e.contains("at byte"), "{e}");
        }
        let mut huge = BytesMut::from(MAGIC);
        huge.put_u32(0);
        huge.put_u32(u32::MAX);
        assert!(records(&huge.freeze()).is_err());
        let mut not_utf8 = BytesMut::from(MAGIC);
        not_utf8.put_u32(1);
        not_utf8.put_u8(0xff);
        not_utf8.put_u32(0);
        assert!(
            records(&not_utf8.freeze())
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    #[test]
    fn ids_depend_on_the_records_and_their_order() {
        assert_eq!(id(["a", "b"]), id(["a", "b"]));
        assert_ne!(id(["a", "b"]), id(["b", "a"]));
        assert_ne!(id(["ab"]), id(["a", "b"]));
        assert!(id(["a"]).starts_with("env:1:"));
    }

    #[test]
    fn addressed_ids_name_their_user() {
        let id = addressed("u-1", "n00ff");
        assert_eq!(addressee(&id), Some(("u-1", "n00ff")));
        assert_eq!(addressee("no-user"), None);
    }

    #[test]
    fn packing_keeps_order_and_bounds() {
        let big = vec![0u8; MAX_BYTES / 3];
        let recs: Vec<(String, Vec<u8>)> = (0..7).map(|i| (format!("r{i}"), big.clone())).collect();
        let runs = pack(&recs);
        assert_eq!(runs, vec![0..2, 2..4, 4..6, 6..7]);
        let small: Vec<(String, Vec<u8>)> = (0..MAX_RECORDS + 5)
            .map(|i| (i.to_string(), vec![1]))
            .collect();
        assert_eq!(
            pack(&small),
            vec![0..MAX_RECORDS, MAX_RECORDS..MAX_RECORDS + 5]
        );
        let huge = vec![(String::from("h"), vec![0u8; MAX_BYTES * 2])];
        assert_eq!(
            pack(&huge),
            vec![0..1],
            "a record larger than the bound goes alone"
        );
        assert!(pack::<String, Vec<u8>>(&[]).is_empty());
    }
}
