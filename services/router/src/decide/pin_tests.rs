//! SMS replies that change settings need the user's reply PIN: refused (and told in history)
//! without it or with a wrong one, locked after five wrong ones, applied with it; IM replies
//! and acknowledgements need none.

use crate::decide::tests::{LIMITS, add_dest, command, create, user};
use crate::decide::{Outcome, apply};
use tocsin_model::*;

fn reply(channel: Channel, address: &str, text: &str, at_ms: Millis) -> AvatarMessage {
    AvatarMessage::Reply {
        channel,
        address: address.into(),
        text: text.into(),
        at_ms,
    }
}

fn with_phone_and_jid() -> Option<UserRecord> {
    let mut rec = None;
    apply(&user(), &mut rec, create(), &LIMITS, 0);
    apply(
        &user(),
        &mut rec,
        add_dest("p", Channel::Sms, PHONE),
        &LIMITS,
        0,
    );
    apply(
        &user(),
        &mut rec,
        add_dest("j", Channel::Xmpp, JID),
        &LIMITS,
        0,
    );
    rec
}

const PHONE: &str = "+15550001234";
const JID: &str = "ann@example.org";

/// Send `text` by SMS at `now`: whether it was refused, and why.
fn sms(rec: &mut Option<UserRecord>, text: &str, now: Millis) -> Option<String> {
    let fx = apply(
        &user(),
        rec,
        reply(Channel::Sms, PHONE, text, now),
        &LIMITS,
        now,
    );
    (fx.outcome == Outcome::Refused).then(|| match &fx.history[..] {
        [HistoryRecord::Notification { notification, .. }] => {
            assert_eq!(
                notification.title,
                format!("Refused an SMS reply from {PHONE}")
            );
            assert!(fx.dirty && fx.events[0].kind == EventKind::Refused);
            notification.body.clone()
        }
        other => panic!("a refusal is one notification in history: {other:?}"),
    })
}

fn muted(rec: &Option<UserRecord>) -> bool {
    rec.as_ref().unwrap().reach.muted_until_ms.is_some()
}

#[test]
fn settings_change_by_sms_only_with_the_pin() {
    let mut rec = with_phone_and_jid();
    // no PIN set: refused, saying how to set one; an acknowledgement needs none
    let why = sms(&mut rec, "mute 30d", 10).expect("refused");
    assert!(why.contains("PUT /v1/me/reply-pin"), "{why}");
    assert!(!muted(&rec));
    assert_eq!(sms(&mut rec, "ack", 11), None);
    assert_eq!(sms(&mut rec, "status", 12), None);
    // over IM the server vouches for the sender: no PIN
    apply(
        &user(),
        &mut rec,
        reply(Channel::Xmpp, JID, "mute 1h", 13),
        &LIMITS,
        13,
    );
    assert!(muted(&rec));
    apply(
        &user(),
        &mut rec,
        reply(Channel::Xmpp, JID, "unmute", 14),
        &LIMITS,
        14,
    );
    assert!(!muted(&rec));

    let hash = Some(reply_pin_hash(&user(), "4821"));
    apply(
        &user(),
        &mut rec,
        command(Command::SetReplyPin { pin_hash: hash }),
        &LIMITS,
        15,
    );
    let why = sms(&mut rec, "mute 30d", 16).expect("refused");
    assert!(why.contains("did not start with the reply PIN"), "{why}");
    assert_eq!(sms(&mut rec, "4821 mute 30d", 17), None);
    assert!(muted(&rec));
    assert_eq!(sms(&mut rec, "4821 unmute", 18), None);
    assert!(!muted(&rec));
    // a right PIN resets the count of wrong ones: four more wrong ones do not lock
    for at in 20..24 {
        assert_eq!(
            sms(&mut rec, "1111 mute 1h", at).as_deref(),
            Some("the reply PIN was wrong")
        );
    }
    assert_eq!(sms(&mut rec, "4821 mute 1h", 25), None);
    // five wrong in a row lock SMS settings changes for an hour, the right PIN too
    for at in 30..35 {
        assert!(sms(&mut rec, "9999 unmute", at).is_some());
    }
    let why = sms(&mut rec, "4821 unmute", 40).expect("locked");
    assert!(why.contains("5 wrong PINs in a row"), "{why}");
    assert!(muted(&rec));
    assert_eq!(sms(&mut rec, "4821 unmute", 35 + ReplyPin::LOCK_MS), None);
    assert!(!muted(&rec));
    // removed: SMS replies change no settings again
    apply(
        &user(),
        &mut rec,
        command(Command::SetReplyPin { pin_hash: None }),
        &LIMITS,
        36,
    );
    assert!(sms(&mut rec, "4821 mute 1h", 50 + ReplyPin::LOCK_MS).is_some());
}
