//! The short numbers a user acknowledges with (`ack 12`): the notifications last sent, each
//! with its number, stored packed.
//!
//! Every routed notification takes a number, so a long-lived user's record carries the full
//! hundred, written at each checkpoint in which one changed. Stored, they are one base64
//! string under `refs`: per entry the number (2 bytes) and the id's 16 bytes, for ids of the
//! form every constructor in [`crate::ids`] gives (`n` and 32 hex digits), 2.4 KB at capacity.
//! A list that holds any other id is written as `[[number, "id"], …]` instead. A record from
//! before kept them under `references` as `[number, "id", "title"]` (the title was never
//! read); it is read as the same list. In memory an id of the usual form is held as its 16
//! bytes too, so writing the list copies them and finding a number compares them.

use crate::NotificationId;
use serde::de::{IgnoredAny, SeqAccess};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::VecDeque;

/// The notifications a user can acknowledge by number, oldest first. An id of the usual form
/// is held as its 16 bytes, so finding one compares 16 bytes and writing the list copies them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct References {
    order: VecDeque<(u32, Held)>,
}

/// A remembered id: its 16 bytes, or as written when it is not of the usual form.
#[derive(Clone, Debug, PartialEq)]
enum Held {
    Bytes([u8; 16]),
    Text(NotificationId),
}

impl Held {
    fn of(id: &NotificationId) -> Self {
        match id_bytes(id) {
            Some(b) => Held::Bytes(b),
            None => Held::Text(id.clone()),
        }
    }

    /// Whether this is `id`, whose bytes (if of the usual form) are `bytes`.
    fn is(&self, id: &NotificationId, bytes: Option<&[u8; 16]>) -> bool {
        match self {
            Held::Bytes(b) => bytes == Some(b),
            Held::Text(t) => t == id,
        }
    }

    fn id(&self) -> NotificationId {
        match self {
            Held::Bytes(b) => {
                let mut id = [b'n'; 33];
                // 16 bytes always fit 32 digits
                let _ = hex::encode_to_slice(b, &mut id[1..]);
                NotificationId(String::from_utf8_lossy(&id).into_owned())
            }
            Held::Text(t) => t.clone(),
        }
    }
}

/// The 16 bytes of an id of the usual form (`n` and 32 lowercase hex digits), read in one
/// pass. Upper-case digits would come back lower-case: such an id is held as written.
fn id_bytes(id: &NotificationId) -> Option<[u8; 16]> {
    let digits = id.as_str().strip_prefix('n')?.as_bytes();
    if digits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [high, low] = pair else { return None };
        *byte = (digit(*high)? << 4) | digit(*low)?;
    }
    Some(out)
}

/// A lowercase hex digit's value.
fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Bytes of one packed entry: the number, then the id's 16 bytes.
const PACKED: usize = 18;

impl References {
    /// How many are remembered.
    pub const CAPACITY: usize = 100;

    /// Remember `id` as number `r`, forgetting whatever held `r` before and the oldest past
    /// capacity.
    pub fn push(&mut self, r: u32, id: &NotificationId) {
        self.push_held(r, Held::of(id));
    }

    fn push_held(&mut self, r: u32, held: Held) {
        // numbers are unique, so at most one holds `r`: found without moving the others
        if let Some(i) = self.order.iter().position(|(x, _)| *x == r) {
            self.order.remove(i);
        }
        while self.order.len() >= Self::CAPACITY {
            self.order.pop_front();
        }
        self.order.push_back((r, held));
    }

    /// The number `id` was given if it is remembered; otherwise the number `next` gives it,
    /// remembered as [`References::push`] does. The id is read once for both.
    pub fn number_or_give(&mut self, id: &NotificationId, next: impl FnOnce() -> u32) -> u32 {
        let held = Held::of(id);
        if let Some((r, _)) = self.order.iter().find(|(_, x)| *x == held) {
            return *r;
        }
        let r = next();
        self.push_held(r, held);
        r
    }

    /// The number `id` was given, if it is remembered.
    pub fn number_of(&self, id: &NotificationId) -> Option<u32> {
        let bytes = id_bytes(id);
        self.order
            .iter()
            .find(|(_, x)| x.is(id, bytes.as_ref()))
            .map(|(r, _)| *r)
    }

    /// The notification number `r` stands for.
    pub fn by_number(&self, r: u32) -> Option<NotificationId> {
        self.order
            .iter()
            .find(|(x, _)| *x == r)
            .map(|(_, held)| held.id())
    }

    /// The notification sent last.
    pub fn latest(&self) -> Option<NotificationId> {
        self.order.back().map(|(_, held)| held.id())
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The packed form, if every entry has one.
    fn packed(&self) -> Option<String> {
        let mut packed = Vec::with_capacity(self.order.len() * PACKED);
        for (r, held) in &self.order {
            let Held::Bytes(b) = held else {
                return None;
            };
            packed.extend_from_slice(&u16::try_from(*r).ok()?.to_le_bytes());
            packed.extend_from_slice(b);
        }
        Some(crate::packed::pack(&packed))
    }
}

impl Serialize for References {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Some(packed) = self.packed() {
            return s.serialize_str(&packed);
        }
        let mut seq = s.serialize_seq(Some(self.order.len()))?;
        for (r, held) in &self.order {
            seq.serialize_element(&(r, held.id()))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for References {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Visitor)
    }
}

struct Visitor;

impl<'de> serde::de::Visitor<'de> for Visitor {
    type Value = References;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("packed references in base64, or a list of [number, id]")
    }

    /// The stored form: each entry's number and id packed, 18 bytes each, in base64.
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<References, E> {
        // more than capacity keeps the newest, as pushing them one by one would
        let packed = crate::packed::unpack(v, PACKED, References::CAPACITY, "references")
            .map_err(E::custom)?;
        let mut out = References::default();
        for entry in packed.chunks_exact(PACKED) {
            // split by type, not by index: an entry of another length cannot reach a panic
            let (r, id) = entry
                .split_first_chunk::<2>()
                .and_then(|(r, id)| Some((*r, <[u8; 16]>::try_from(id).ok()?)))
                .ok_or_else(|| E::custom("references: an entry of the wrong length"))?;
            out.push_held(u32::from(u16::from_le_bytes(r)), Held::Bytes(id));
        }
        Ok(out)
    }

    /// Entries one by one: `[number, "id"]`, or `[number, "id", "title"]` from before.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<References, A::Error> {
        let mut out = References::default();
        while let Some(Entry(r, id)) = seq.next_element()? {
            out.push(r, &id);
        }
        Ok(out)
    }
}

/// One entry of the list form; what follows the id (an old record's title) is skipped.
struct Entry(u32, NotificationId);

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entry;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a reference: [number, id]")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entry, A::Error> {
                use serde::de::Error as _;
                let r: u32 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let id: Cow<'de, str> = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Entry(r, NotificationId(id.into_owned())))
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: usize) -> NotificationId {
        NotificationId(format!("n{}", &crate::digest(&[&i.to_string()])[..32]))
    }

    #[test]
    fn is_bounded_and_round_trips_packed() {
        let mut r = References::default();
        for i in 0..References::CAPACITY + 20 {
            r.push(i as u32 % 999 + 1, &id(i));
        }
        assert_eq!(r.len(), References::CAPACITY);
        assert_eq!(r.by_number(120), Some(id(119)));
        assert_eq!(r.number_of(&id(119)), Some(120));
        assert_eq!(r.by_number(20), None, "the oldest are forgotten");
        assert_eq!(r.latest(), Some(id(119)));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.starts_with('"'), "packed: {json}");
        assert!(json.len() <= 2_402, "{} bytes", json.len());
        let back: References = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        // a number taken again leaves its old notification
        let mut again = back;
        again.push(120, &id(1000));
        assert_eq!(again.by_number(120), Some(id(1000)));
        assert_eq!(again.number_of(&id(119)), None);
        assert_eq!(again.len(), References::CAPACITY);
    }

    #[test]
    fn an_id_keeps_its_number_and_a_new_one_is_given_the_next() {
        let mut r = References::default();
        let upper = NotificationId(format!("n{}", "AB".repeat(16)));
        let mut given = 0;
        for (i, n) in [id(1), upper.clone(), NotificationId("n2".into())]
            .iter()
            .enumerate()
        {
            let number = r.number_or_give(n, || {
                given += 1;
                i as u32 + 10
            });
            assert_eq!(number, i as u32 + 10);
            assert_eq!(r.by_number(number).as_ref(), Some(n));
        }
        assert_eq!(given, 3);
        // asked again, each keeps its number and `next` is not asked
        for (i, n) in [id(1), upper, NotificationId("n2".into())]
            .iter()
            .enumerate()
        {
            assert_eq!(
                r.number_or_give(n, || unreachable!("{n} has a number")),
                i as u32 + 10
            );
        }
        // one hex digit off is another notification; a non-hex digit is read as written
        let near = NotificationId(format!("n{}1", &id(1).as_str()[1..32]));
        assert_eq!(r.number_or_give(&near, || 20), 20);
        let odd = NotificationId(format!("n{}g", &id(1).as_str()[1..32]));
        assert_eq!(r.number_or_give(&odd, || 21), 21);
        assert_eq!(r.number_of(&odd), Some(21));
        assert_eq!(r.len(), 5);
    }

    #[test]
    fn ids_of_another_form_are_written_as_a_list() {
        let mut r = References::default();
        r.push(1, &id(1));
        r.push(2, &NotificationId("n2".into()));
        assert_eq!(r.number_of(&id(1)), Some(1));
        assert_eq!(r.number_of(&NotificationId("n2".into())), Some(2));
        assert_eq!(r.by_number(1), Some(id(1)));
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.starts_with('['), "{json}");
        let back: References = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        // upper-case hex is not the usual form either: kept as written
        let mut upper = References::default();
        upper.push(3, &NotificationId(format!("n{}", "AB".repeat(16))));
        let back: References =
            serde_json::from_str(&serde_json::to_string(&upper).unwrap()).unwrap();
        assert_eq!(back, upper);
    }

    #[test]
    fn a_list_with_titles_from_before_reads_without_them() {
        let old: References =
            serde_json::from_str(r#"[[7,"n1","Disk full"],[8,"n2","a \"quoted\" title"]]"#)
                .unwrap();
        assert_eq!(old.len(), 2);
        assert_eq!(old.by_number(8), Some(NotificationId("n2".into())));
        assert_eq!(old.latest(), Some(NotificationId("n2".into())));
    }

    #[test]
    fn damaged_references_are_refused_with_what_is_wrong() {
        for (bad, says) in [
            (r#""AAAA""#, "whole number"),
            (r#""!!!""#, "not base64"),
            (r#"42"#, "packed references"),
            (r#"[[1]]"#, "[number, id]"),
        ] {
            let e = serde_json::from_str::<References>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let long = format!("\"{}\"", "A".repeat(10_000));
        assert!(serde_json::from_str::<References>(&long).is_err());
    }
}
