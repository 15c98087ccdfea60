//! A user's account as a whole: deleting it.

use crate::decide::apply;
use crate::decide::tests::{LIMITS, add_dest, command, create, feed_source, user};
use tocsin_model::*;

#[test]
fn deleting_a_user_unsubscribes_unindexes_and_forgets_them() {
    let mut rec = None;
    apply(&user(), &mut rec, create(), &LIMITS, 1);
    let add_source = command(Command::AddSource {
        source: feed_source("bikes"),
    });
    apply(&user(), &mut rec, add_source, &LIMITS, 1);
    apply(
        &user(),
        &mut rec,
        add_dest("d1", Channel::Sms, "+15550001234"),
        &LIMITS,
        1,
    );
    let fx = apply(
        &user(),
        &mut rec,
        command(Command::DeleteUser {}),
        &LIMITS,
        2,
    );
    assert!(rec.is_none(), "the record goes");
    assert!(fx.dirty, "and is deleted before the command is acked");
    assert_eq!(fx.subscriptions.len(), 1);
    assert_eq!(fx.subscriptions[0].op, SubscriptionOp::Remove);
    assert_eq!(
        fx.index,
        [(AddressEntry::key(Channel::Sms, "+15550001234"), None)]
    );
    assert_eq!(fx.history, [HistoryRecord::Forget { user: user() }]);
    let kinds: Vec<_> = fx.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::UserDeleted]);
    assert!(fx.reply.unwrap().1.ok);
    // anything after it finds no user
    let again = apply(
        &user(),
        &mut rec,
        command(Command::DeleteUser {}),
        &LIMITS,
        3,
    );
    assert!(!again.reply.unwrap().1.ok);
}
