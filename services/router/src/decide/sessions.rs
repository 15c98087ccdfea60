//! The web app's sign-ins and the user's credentials as the avatar keeps them: browsers'
//! sessions started and ended, one-time links mailed and used up (the link's use and the
//! session's start are one step, so a link signs in once however many browsers open it), the
//! API token and private feed secret replaced.

use crate::decide::{Effects, Refusal};
use tocsin_model::{
    Channel, DeliveryJob, JobKind, Millis, Notification, NotificationId, SignInLink, UserRecord,
    WebSession,
};

fn check_hash(field: &str, hash: &str) -> Result<(), Refusal> {
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Refusal::field(field, "must be 64 hex digits"))
    }
}

/// A browser signed in.
pub(crate) fn start(r: &mut UserRecord, session: WebSession, now: Millis) -> Result<(), Refusal> {
    check_hash("session.id_hash", &session.id_hash)?;
    WebSession::admit(&mut r.sessions, session, now);
    Ok(())
}

/// The API token and the private feed secret replaced (by their hashes), each when given;
/// with `end_sessions`, every web session ends but the one whose id hashes to the inner value.
/// Checked before anything changes.
pub(crate) fn replace_credentials(
    r: &mut UserRecord,
    token_hash: Option<String>,
    feed_token_hash: Option<String>,
    end_sessions: Option<Option<&str>>,
    now: Millis,
) -> Result<(), Refusal> {
    for (field, hash) in [
        ("token_hash", &token_hash),
        ("feed_token_hash", &feed_token_hash),
    ] {
        if let Some(h) = hash {
            check_hash(field, h)?;
        }
    }
    if let Some(h) = token_hash {
        r.token_hash = h;
    }
    if let Some(h) = feed_token_hash {
        r.feed_token_hash = h;
    }
    if let Some(keep) = end_sessions {
        r.sessions
            .retain(|s| Some(s.id_hash.as_str()) == keep && s.expires_at_ms > now);
    }
    Ok(())
}

/// A browser signed out (and the expired sessions go with it).
pub(crate) fn end(r: &mut UserRecord, id_hash: &str, now: Millis) {
    r.sessions
        .retain(|s| s.id_hash != id_hash && s.expires_at_ms > now);
}

/// Keep the link's code and mail the link to every e-mail destination of the user.
pub(crate) fn mail_link(
    r: &mut UserRecord,
    code_hash: String,
    link: &str,
    now: Millis,
    fx: &mut Effects,
) -> Result<(), Refusal> {
    check_hash("code_hash", &code_hash)?;
    let mail: Vec<_> = r
        .destinations
        .iter()
        .filter(|d| d.channel == Channel::Email && d.verified())
        .cloned()
        .collect();
    if mail.is_empty() {
        return Err(Refusal::invalid(
            "you have no e-mail destination to mail a sign-in link to: sign in with your API token",
        ));
    }
    r.sign_in_links.retain(|l| l.expires_at_ms > now);
    if r.sign_in_links.len() >= SignInLink::MAX_PENDING {
        return Err(Refusal::invalid(format!(
            "{} sign-in links are waiting already: use one, or wait {} minutes",
            SignInLink::MAX_PENDING,
            SignInLink::LIFETIME_MS / 60_000
        )));
    }
    r.sign_in_links.push(SignInLink {
        code_hash,
        expires_at_ms: now + SignInLink::LIFETIME_MS,
    });
    for d in mail {
        fx.jobs.push(DeliveryJob {
            job_id: tocsin_bus::msg_id::command_answer(&d.id, now, "sign in"),
            notification: Notification {
                url: Some(link.to_owned()),
                ..Notification::from_tocsin(
                    NotificationId(format!("signin{now}")),
                    r.id.clone(),
                    "Sign in to tocsin".into(),
                    format!(
                        "Open this link within {} minutes to sign in to tocsin in your browser:\n\n{link}\n\nIt works once. If you did not ask for it, ignore this mail: nobody can use it without this mailbox.",
                        SignInLink::LIFETIME_MS / 60_000
                    ),
                    now,
                )
            },
            destination: d,
            kind: JobKind::Reply,
            reference: None,
            ack_url: None,
        });
    }
    Ok(())
}

/// A browser opened a mailed link: if it is live, it is used up and the session starts.
pub(crate) fn use_link(
    r: &mut UserRecord,
    code_hash: &str,
    session: WebSession,
    now: Millis,
) -> Result<(), Refusal> {
    let live = r
        .sign_in_links
        .iter()
        .position(|l| l.code_hash == code_hash && l.expires_at_ms > now);
    r.sign_in_links.retain(|l| l.expires_at_ms > now);
    let Some(_) = live else {
        return Err(Refusal::not_found(
            "this sign-in link was used already or has expired: ask for a new one",
        ));
    };
    r.sign_in_links.retain(|l| l.code_hash != code_hash);
    start(r, session, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::tests::{add_dest, create, limits_with_links, user};

    fn record_with(dests: &[(Channel, &str)]) -> UserRecord {
        let l = limits_with_links();
        let mut rec = None;
        crate::decide::apply(&user(), &mut rec, create(), &l, 0);
        for (channel, id) in dests {
            let address = match channel {
                Channel::Email => "ann@example.org",
                _ => "+15551234567",
            };
            crate::decide::apply(&user(), &mut rec, add_dest(id, *channel, address), &l, 0);
        }
        rec.expect("created")
    }

    fn session(i: u8) -> WebSession {
        WebSession {
            id_hash: format!("{i:064}"),
            created_at_ms: 0,
            expires_at_ms: i64::MAX,
            label: "test".into(),
        }
    }

    #[test]
    fn credentials_are_replaced_only_when_well_formed_and_other_sessions_end() {
        let mut r = record_with(&[]);
        for i in 1..=3 {
            start(&mut r, session(i), 0).unwrap();
        }
        let before = r.clone();
        let bad = replace_credentials(&mut r, Some("a".repeat(64)), Some("xyz".into()), None, 0);
        assert!(bad.is_err());
        assert_eq!(r, before, "nothing changes when one hash is bad");
        let keep = session(2).id_hash;
        replace_credentials(&mut r, Some("a".repeat(64)), None, Some(Some(&keep)), 0).unwrap();
        assert_eq!(r.token_hash, "a".repeat(64));
        assert_eq!(r.feed_token_hash, before.feed_token_hash);
        assert_eq!(r.sessions, [session(2)]);
        replace_credentials(&mut r, None, Some("b".repeat(64)), Some(None), 0).unwrap();
        assert_eq!(r.feed_token_hash, "b".repeat(64));
        assert!(r.sessions.is_empty());
    }

    #[test]
    fn a_mailed_link_signs_in_once_within_its_time() {
        let mut r = record_with(&[(tocsin_model::Channel::Email, "e")]);
        let mut fx = Effects::default();
        let code = "a".repeat(64);
        mail_link(
            &mut r,
            code.clone(),
            "https://t.example/app/sign-in/link/u/x",
            0,
            &mut fx,
        )
        .unwrap();
        assert_eq!(fx.jobs.len(), 1);
        assert!(
            fx.jobs[0]
                .notification
                .body
                .contains("https://t.example/app/sign-in/link/u/x")
        );
        assert_eq!(fx.jobs[0].kind, JobKind::Reply);
        use_link(&mut r, &code, session(1), 1000).unwrap();
        assert_eq!(r.sessions.len(), 1);
        assert!(use_link(&mut r, &code, session(2), 1000).is_err(), "once");
        let late = "b".repeat(64);
        mail_link(&mut r, late.clone(), "l", 0, &mut fx).unwrap();
        assert!(
            use_link(&mut r, &late, session(3), SignInLink::LIFETIME_MS).is_err(),
            "expired"
        );
        for i in 0..SignInLink::MAX_PENDING {
            mail_link(&mut r, format!("{i:064}"), "l", 10, &mut fx).unwrap();
        }
        assert!(
            mail_link(&mut r, "c".repeat(64), "l", 10, &mut fx).is_err(),
            "a cap on waiting links"
        );
        let mut none = record_with(&[(tocsin_model::Channel::Sms, "s")]);
        assert!(
            mail_link(&mut none, code, "l", 0, &mut fx).is_err(),
            "no e-mail destination"
        );
    }
}
