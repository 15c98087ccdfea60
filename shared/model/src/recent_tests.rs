//! Tests of a user's recent keys: the bound, the stored forms, and merging a base back in.

use super::*;

fn keys(set: &RecentSet) -> Vec<u64> {
    set.order.iter().copied().collect()
}

/// `set` stored in a record and read back, with `base` (the stored base, if any) merged in.
fn stored_and_read(set: &RecentSet, base: Option<(&[u8], u64)>) -> RecentSet {
    let json = serde_json::to_string(set).unwrap();
    let mut back: RecentSet = serde_json::from_str(&json).unwrap();
    if back.needs_base() {
        back.adopt_base(base).unwrap();
    }
    back
}

/// Whether `set` needs its base merged to answer for `key`.
fn wants_base_for(set: &RecentSet, key: &str) -> bool {
    let probe = set.clone();
    probe.contains(key);
    probe.took_unsure()
}

/// A set of `n` keys `<prefix><i>` just written as base `revision`, and that base.
fn with_base(prefix: &str, n: usize, revision: u64) -> (RecentSet, Vec<u8>) {
    let mut r = RecentSet::default();
    for i in 0..n {
        r.insert(format!("{prefix}{i}"));
    }
    let base = r.base_bytes();
    r.rebased(revision);
    (r, base)
}

#[test]
fn is_bounded_and_round_trips() {
    let mut r = RecentSet::default();
    for i in 0..RecentSet::CAPACITY + 10 {
        assert!(r.insert(format!("k{i}")));
    }
    assert_eq!(r.len(), RecentSet::CAPACITY);
    assert!(!r.contains("k0"));
    assert!(r.contains("k521"));
    assert!(!r.insert("k521"));
    assert!(r.remove("k521"));
    assert!(!r.remove("k521"));
    assert!(!r.contains("k521"));
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        json.len() < RecentSet::CAPACITY * 11 + 2,
        "{} bytes",
        json.len()
    );
    let back: RecentSet = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    // and the order survives: the oldest is forgotten first after the round trip too
    let mut back = back;
    back.insert("new"); // back to capacity (k521 was removed)
    back.insert("newer");
    assert!(!back.contains("k10"));
    assert!(back.contains("k11"));
}

#[test]
fn a_list_of_keys_from_before_reads_as_their_fingerprints() {
    let old: RecentSet = serde_json::from_str(r#"["nabc","k:sha256:01","ack:nabc"]"#).unwrap();
    assert_eq!(old.len(), 3);
    assert!(old.contains("nabc") && old.contains("k:sha256:01") && old.contains("ack:nabc"));
    assert!(!old.contains("ndef"));
    // escaped text is the key it stands for
    let escaped: RecentSet = serde_json::from_str(r#"["k:a\"b"]"#).unwrap();
    assert!(escaped.contains("k:a\"b"));
}

#[test]
fn damaged_fingerprints_are_refused_with_what_is_wrong() {
    for (bad, says) in [
        (r#""AAAA""#, "whole number"),
        (r#""!!!""#, "not base64"),
        (r#"42"#, "packed fingerprints"),
        (r#"{"added":""}"#, "names no base"),
        (
            r#"{"base":3,"added":"!!"}"#,
            "recent keys added: not base64",
        ),
        (r#"{"base":3,"forgot":"AAAA"}"#, "recent keys forgotten"),
    ] {
        let e = serde_json::from_str::<RecentSet>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
    let huge = format!("\"{}\"", "A".repeat(RecentSet::CAPACITY * 64));
    let e = serde_json::from_str::<RecentSet>(&huge)
        .unwrap_err()
        .to_string();
    assert!(e.contains("four times"), "{e}");
    let mut r: RecentSet = serde_json::from_str(r#"{"base":3,"added":""}"#).unwrap();
    for (base, says) in [
        (&[1u8, 0, 0][..], "whole number"),
        (&[9u8][..], "unknown format 9"),
        (&[][..], "empty"),
    ] {
        let e = r.clone().adopt_base(Some((base, 3))).unwrap_err();
        assert!(e.contains(says), "{e}");
    }
    // gone altogether: what the record holds, and a new base is created next
    r.adopt_base(None).unwrap();
    assert!(r.is_empty() && r.base_revision() == 0 && !r.needs_base());
}

#[test]
fn a_few_keys_stay_in_the_record_and_more_spill_into_a_base() {
    let mut r = RecentSet::default();
    for i in 0..RecentSet::SPILL {
        r.insert(format!("k{i}"));
    }
    assert!(!r.wants_base(), "{} changes", r.changes());
    // as before bases: one string of every key
    assert!(serde_json::to_value(&r).unwrap().is_string());
    r.insert("one more");
    assert!(r.wants_base());
    let base = r.base_bytes();
    assert_eq!(base.len(), 1 + 8 * (RecentSet::SPILL + 1));
    r.rebased(7);
    assert_eq!((r.changes(), r.base_revision()), (0, 7));
    // since the base: two added, one of its keys forgotten, one added and forgotten again
    r.insert("a");
    r.insert("b");
    r.insert("c");
    assert!(r.remove("k3") && r.remove("b"));
    assert_eq!(r.changes(), 3);
    let stored = serde_json::to_value(&r).unwrap();
    assert_eq!(stored["base"], 7, "{stored}");
    let record_keys =
        stored["added"].as_str().unwrap().len() + stored["forgot"].as_str().unwrap().len();
    assert!(record_keys < 40, "{stored}");
    let read: RecentSet = serde_json::from_value(stored).unwrap();
    assert!(read.needs_base() && !read.wants_base());
    let back = stored_and_read(&r, Some((&base, 7)));
    assert_eq!(keys(&back), keys(&r));
    assert_eq!(back.changes(), 3);
    assert!(back.contains("a") && back.contains("c") && back.contains("k2"));
    assert!(!back.contains("b") && !back.contains("k3"));
}

#[test]
fn a_base_written_after_the_record_merges_to_the_same_keys() {
    let (mut r, first) = with_base("k", 100, 4);
    r.insert("x");
    r.remove("k50");
    // the record is written with this change; its checkpoint then writes a new base, and
    // stops before the next record write: the record's change is in that base already
    let record = serde_json::to_string(&r).unwrap();
    let second = r.base_bytes();
    let mut read: RecentSet = serde_json::from_str(&record).unwrap();
    read.adopt_base(Some((&second, 9))).unwrap();
    assert_eq!(keys(&read), keys(&r));
    assert_eq!((read.changes(), read.base_revision()), (0, 9));
    // and with the base it was written against, the same keys with the change kept
    let mut read: RecentSet = serde_json::from_str(&record).unwrap();
    read.adopt_base(Some((&first, 4))).unwrap();
    assert_eq!(keys(&read), keys(&r));
    assert_eq!(read.changes(), 2);
}

#[test]
fn at_capacity_the_added_keys_push_out_the_oldest_of_the_base() {
    let (mut r, base) = with_base("old", RecentSet::CAPACITY, 2);
    for i in 0..10 {
        r.insert(format!("new{i}"));
    }
    assert_eq!((r.len(), r.changes()), (RecentSet::CAPACITY, 10));
    assert!(!r.contains("old9") && r.contains("old10"));
    let back = stored_and_read(&r, Some((&base, 2)));
    assert_eq!(keys(&back), keys(&r));
    // a set of only new keys at capacity: every key is a change
    let mut all_new = RecentSet::default();
    for i in 0..RecentSet::CAPACITY + 3 {
        all_new.insert(format!("n{i}"));
    }
    assert_eq!(all_new.changes(), RecentSet::CAPACITY);
}

#[test]
fn a_record_naming_a_base_is_told_from_its_bytes() {
    let mut r = RecentSet::default();
    r.insert("a");
    let record = |r: &RecentSet, title: &str| {
        serde_json::to_vec(&serde_json::json!({"name": title, "seen": r})).unwrap()
    };
    assert!(change_in(&record(&r, "plain")).is_none());
    // a user's own text cannot pass for it: its quotes are escaped
    assert!(change_in(&record(&r, r#"x"seen":{"base":1}"#)).is_none());
    r.rebased(3);
    r.insert("b");
    assert!(change_in(&record(&r, "plain")).is_some());
    // with the base's filter in the change, waking needs no base; without it (a record from
    // before filters), it does, whatever else of the record is called a filter
    assert!(!base_read_on_wake(&record(&r, "plain")));
    let mut without = serde_json::to_value(&r).unwrap();
    without.as_object_mut().unwrap().remove("filter");
    let old = serde_json::to_vec(&serde_json::json!({"a": {"filter": "x"}, "seen": without}));
    assert!(base_read_on_wake(&old.unwrap()));
    let plain = RecentSet::default();
    assert!(!base_read_on_wake(&record(&plain, "plain")));
}

#[test]
fn read_with_its_filter_a_record_answers_without_its_base_for_keys_the_base_cannot_hold() {
    let (mut r, base) = with_base("old", 300, 5);
    r.insert("new0");
    assert!(r.remove("old7"));
    let record = serde_json::to_string(&r).unwrap();
    let mut read: RecentSet = serde_json::from_str(&record).unwrap();
    assert!(read.needs_base() && !read.base_wanted());
    // every key of the base still held (old7 is forgotten) needs it read; almost no other
    // key does
    assert!(
        (0..300)
            .filter(|&i| i != 7)
            .all(|i| wants_base_for(&read, &format!("old{i}")))
    );
    let fresh: Vec<String> = (0..1000).map(|i| format!("item{i}")).collect();
    let answerable: Vec<&str> = fresh
        .iter()
        .map(String::as_str)
        .filter(|k| !wants_base_for(&read, k))
        .collect();
    assert!(answerable.len() > 950, "{} of 1000", answerable.len());
    // those are answered and added without the base, and stored again with the same filter
    assert!(read.contains("new0") && !read.contains(answerable[0]));
    assert!(read.insert(answerable[0]) && !read.insert(answerable[0]));
    assert!(read.remove("new0"));
    assert!(!read.took_unsure());
    // a key of the base is not answered for (its answer would be a guess), and says so
    let probe = read.clone();
    probe.contains("old8");
    assert!(probe.took_unsure() && !read.took_unsure());
    let again: serde_json::Value = serde_json::to_value(&read).unwrap();
    let first: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(
        (&again["filter"], &again["base"]),
        (&first["filter"], &first["base"])
    );
    // merged at last, it holds what a set merged at once and changed the same way holds
    let mut reread: RecentSet = serde_json::from_value(again).unwrap();
    reread.adopt_base(Some((&base, 5))).unwrap();
    let mut direct: RecentSet = serde_json::from_str(&record).unwrap();
    direct.adopt_base(Some((&base, 5))).unwrap();
    direct.insert(answerable[0]);
    direct.remove("new0");
    assert_eq!(keys(&reread), keys(&direct));
    assert!(reread.contains(answerable[0]) && reread.contains("old8") && !reread.contains("old7"));
    // a merged set stores a filter of the base keys it still holds
    let stored = serde_json::to_value(&reread).unwrap();
    let filter = crate::packed::unpack(stored["filter"].as_str().unwrap(), 8, 64, "f").unwrap();
    let filter = BaseFilter::from_bytes(&filter).unwrap();
    assert!(filter.may_hold(fingerprint("old8")));
}

#[test]
fn an_unmerged_base_is_wanted_once_the_change_is_due_to_spill_or_there_is_no_filter() {
    let (r, _) = with_base("old", 100, 3);
    let mut read: RecentSet = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    let mut added = 0;
    for i in 0..10_000 {
        let k = format!("item{i}");
        if wants_base_for(&read, &k) {
            continue;
        }
        if read.changes() >= RecentSet::SPILL {
            break;
        }
        read.insert(k);
        added += 1;
    }
    assert_eq!(added, RecentSet::SPILL);
    assert!(read.base_wanted() && !read.wants_base());
    // a record from before filters: its base is wanted before any use
    let mut stored = serde_json::to_value(&r).unwrap();
    stored.as_object_mut().unwrap().remove("filter");
    let old: RecentSet = serde_json::from_value(stored.clone()).unwrap();
    assert!(old.base_wanted());
    // as is one whose filter does not read
    stored["filter"] = "AAAA".into();
    let damaged: RecentSet = serde_json::from_value(stored).unwrap();
    assert!(damaged.base_wanted());
}
