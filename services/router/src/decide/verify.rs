//! Confirming a destination: a code sent to it (a `reply` job, like any answer of tocsin's),
//! given back by its owner. Until then it gets nothing else (`Step::targets` passes it over).

use crate::decide::{Effects, Refusal};
use tocsin_model::{
    DeliveryJob, JobKind, Millis, Notification, NotificationId, UserRecord, Verification,
    hash_token,
};

fn unconfirmed<'a>(
    r: &'a mut UserRecord,
    destination_id: &str,
) -> Result<&'a mut tocsin_model::Destination, Refusal> {
    let d = r
        .destinations
        .iter_mut()
        .find(|d| d.id == destination_id)
        .ok_or_else(|| Refusal::not_found(format!("no destination {destination_id}")))?;
    if d.verified() {
        return Err(Refusal::invalid(format!(
            "destination {destination_id} is confirmed already"
        )));
    }
    Ok(d)
}

/// Send `code` to the destination, replacing any earlier one.
pub(crate) fn send_code(
    r: &mut UserRecord,
    destination_id: &str,
    code: &str,
    now: Millis,
    fx: &mut Effects,
) -> Result<(), Refusal> {
    if code.len() < 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refusal::field("code", "must be 6 or more digits"));
    }
    let user = r.id.clone();
    let d = unconfirmed(r, destination_id)?;
    let v = d.verification.get_or_insert_with(|| {
        Box::new(Verification {
            code_hash: String::new(),
            sent_at_ms: 0,
            expires_at_ms: 0,
            attempts: 0,
        })
    });
    let wait = v.sent_at_ms.saturating_add(Verification::RESEND_MS) - now;
    if wait > 0 {
        return Err(Refusal::invalid(format!(
            "a code was sent less than a minute ago: wait {}s for another",
            (wait + 999) / 1000
        )));
    }
    **v = Verification {
        code_hash: hash_token(code),
        sent_at_ms: now,
        expires_at_ms: now + Verification::LIFETIME_MS,
        attempts: 0,
    };
    let destination = d.clone();
    fx.jobs.push(DeliveryJob {
        job_id: tocsin_bus::msg_id::command_answer(&destination.id, now, "verify"),
        notification: Notification::from_tocsin(
            NotificationId(format!("verify{now}")),
            user,
            format!("Your tocsin code: {code}"),
            format!(
                "Give this code to tocsin to get notifications here. It works for {} minutes. If you did not add this address to tocsin, ignore this message: nothing more is sent without the code.",
                Verification::LIFETIME_MS / 60_000
            ),
            now,
        ),
        destination,
        kind: JobKind::Reply,
        reference: None,
        ack_url: None,
    });
    fx.dirty = true;
    Ok(())
}

/// The owner's code: the destination is confirmed, or a try is used.
pub(crate) fn verify(
    r: &mut UserRecord,
    destination_id: &str,
    code_hash: &str,
    now: Millis,
    fx: &mut Effects,
) -> Result<(), Refusal> {
    let user = r.id.clone();
    let d = unconfirmed(r, destination_id)?;
    let Some(v) = d.verification.as_mut() else {
        return Ok(());
    };
    if v.code_hash.is_empty() || v.expires_at_ms <= now {
        return Err(Refusal::invalid(
            "no code is waiting for this destination (it expired, or none was sent): ask for a new one",
        ));
    }
    if v.attempts >= Verification::MAX_ATTEMPTS {
        return Err(Refusal::invalid("too many wrong codes: ask for a new one"));
    }
    if !constant_time_eq(v.code_hash.as_bytes(), code_hash.as_bytes()) {
        v.attempts += 1;
        fx.dirty = true;
        return Err(Refusal::field(
            "code",
            format!(
                "not the code sent ({} tries left)",
                Verification::MAX_ATTEMPTS - v.attempts
            ),
        ));
    }
    d.verification = None;
    // confirmed: the address is theirs in the index (taking it over from a holder who never
    // confirmed it)
    if tocsin_model::AddressEntry::indexed(d.channel) {
        let (key, entry) = tocsin_model::AddressEntry::of(&user, d);
        fx.index.push((key, Some(entry)));
    }
    fx.dirty = true;
    Ok(())
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::tests::{LIMITS, add_dest, create, user};
    use tocsin_model::{Channel, Step};

    fn unconfirmed_sms() -> UserRecord {
        let mut rec = None;
        crate::decide::apply(&user(), &mut rec, create(), &LIMITS, 0);
        crate::decide::apply(
            &user(),
            &mut rec,
            add_dest("p", Channel::Sms, "+15550001234"),
            &LIMITS,
            0,
        );
        let mut r = rec.expect("created");
        r.destinations[0].verification = Some(Box::new(Verification {
            code_hash: String::new(),
            sent_at_ms: 0,
            expires_at_ms: 0,
            attempts: 0,
        }));
        r
    }

    #[test]
    fn a_code_confirms_once_within_its_time_and_tries() {
        let mut r = unconfirmed_sms();
        let step = Step {
            channels: vec![Channel::Sms],
            ..Default::default()
        };
        assert!(
            step.targets(&r.destinations).is_empty(),
            "unconfirmed: no target"
        );
        let mut fx = Effects::default();
        send_code(&mut r, "p", "123456", 100_000, &mut fx).unwrap();
        assert_eq!(fx.jobs.len(), 1);
        assert!(fx.jobs[0].notification.title.contains("123456"));
        assert_eq!(fx.jobs[0].kind, JobKind::Reply);
        // another code within the minute is refused; the first one stays
        assert!(send_code(&mut r, "p", "654321", 130_000, &mut fx).is_err());
        let right = hash_token("123456");
        let wrong = hash_token("000000");
        for left in (0..Verification::MAX_ATTEMPTS).rev() {
            let e = verify(&mut r, "p", &wrong, 140_000, &mut fx).unwrap_err();
            assert!(
                e.message.contains(&format!("{left} tries left")),
                "{}",
                e.message
            );
        }
        let e = verify(&mut r, "p", &right, 140_000, &mut fx).unwrap_err();
        assert!(e.message.contains("too many"), "{}", e.message);
        // a new code: its tries are new; an expired code is refused
        send_code(&mut r, "p", "222222", 200_000, &mut fx).unwrap();
        let late = 200_000 + Verification::LIFETIME_MS;
        assert!(verify(&mut r, "p", &hash_token("222222"), late, &mut fx).is_err());
        send_code(&mut r, "p", "333333", late, &mut fx).unwrap();
        verify(&mut r, "p", &hash_token("333333"), late + 1, &mut fx).unwrap();
        assert!(r.destinations[0].verified());
        assert_eq!(step.targets(&r.destinations).len(), 1);
        assert!(verify(&mut r, "p", &hash_token("333333"), late + 2, &mut fx).is_err());
    }

    #[test]
    fn an_unconfirmed_number_cannot_change_anything_by_writing_back() {
        let mut rec = Some(unconfirmed_sms());
        let mute = tocsin_model::AvatarMessage::Reply {
            channel: Channel::Sms,
            address: "+15550001234".into(),
            text: "mute 30d".into(),
            at_ms: 5,
        };
        crate::decide::apply(&user(), &mut rec, mute, &LIMITS, 5);
        assert_eq!(rec.as_ref().unwrap().reach.muted_until_ms, None);
        rec.as_mut().unwrap().destinations[0].verification = None;
        rec.as_mut().unwrap().reply_pin = Some(Box::new(tocsin_model::ReplyPin {
            hash: tocsin_model::reply_pin_hash(&user(), "4821"),
            ..Default::default()
        }));
        let mute = tocsin_model::AvatarMessage::Reply {
            channel: Channel::Sms,
            address: "+15550001234".into(),
            text: "4821 mute 30d".into(),
            at_ms: 6,
        };
        crate::decide::apply(&user(), &mut rec, mute, &LIMITS, 6);
        assert!(
            rec.as_ref().unwrap().reach.muted_until_ms.is_some(),
            "once confirmed"
        );
    }
}
