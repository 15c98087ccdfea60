//! Configuration commands from the API (users, sources, destinations, policy, presence,
//! acks): each validated and applied to the record, or refused with a code.

use crate::decide::{Effects, Limits, Refusal};
use tocsin_model::{
    AddressEntry, Command, FeedSubscription, HistoryRecord, Millis, Source, SourceSpec,
    SubscriptionOp, UserId, UserRecord,
};

/// The furthest ahead a source may be muted.
const MAX_SOURCE_MUTE_MS: Millis = 366 * 86_400_000;

/// Stop what watches `source` for `user`: its feed subscription, its IMAP watch.
fn unsubscribe(user: &UserId, source: &Source, fx: &mut Effects) {
    fx.subscriptions
        .extend(subscription(user, source, SubscriptionOp::Remove));
    if matches!(source.spec, SourceSpec::Imap { .. }) {
        fx.imap.push(tocsin_model::ImapSubscription {
            op: SubscriptionOp::Remove,
            user: user.clone(),
            source_id: source.id.clone(),
            label: source.label.clone(),
            filter: source.filter.clone(),
            spec: None,
        });
    }
}

pub(crate) fn command_effects(
    user: &UserId,
    record: &mut Option<UserRecord>,
    command: Command,
    limits: &Limits,
    now: Millis,
    fx: &mut Effects,
) -> Result<(), Refusal> {
    match command {
        Command::CreateUser {
            name,
            token_hash,
            feed_token_hash,
            inbound_token_hash,
        } => {
            if let Some(r) = record {
                // a retried create (same token) is the same user: answer ok again
                return if r.token_hash == token_hash {
                    Ok(())
                } else {
                    Err(Refusal::exists(format!("user {user} already exists")))
                };
            }
            *record = Some(UserRecord {
                id: user.clone(),
                name,
                created_at_ms: now,
                token_hash,
                feed_token_hash,
                inbound_token_hash,
                sources: vec![],
                destinations: vec![],
                allowed_senders: vec![],
                require_authenticated_mail: false,
                mail_rules: vec![],
                topics: vec![],
                source_status: Default::default(),
                destination_status: Default::default(),
                recent: Default::default(),
                reach: Default::default(),
                sessions: vec![],
                reply_pin: None,
                sign_in_links: vec![],
            });
            fx.dirty = true;
            Ok(())
        }
        Command::AddSource { mut source } => {
            let r = existing(user, record)?;
            validate_source(&source)?;
            check_settings(r, &source.settings, now)?;
            let upserted = subscription(user, &source, SubscriptionOp::Upsert);
            let known = r.sources.iter().any(|s| s.id == source.id);
            if let SourceSpec::Feed { request, .. } = &mut source.spec {
                // a secret goes to the ingestor only (in `upserted`), never into the record
                if request.keyed && request.secret.is_none() && !known {
                    return Err(Refusal::field(
                        "secret",
                        "needed for a new source naming it",
                    ));
                }
                **request = request.without_secret();
            }
            if let SourceSpec::Imap { password, .. } = &mut source.spec {
                if password.is_none() && !known {
                    return Err(Refusal::field("password", "needed for a new IMAP source"));
                }
                fx.imap.push(tocsin_model::ImapSubscription {
                    op: SubscriptionOp::Upsert,
                    user: user.clone(),
                    source_id: source.id.clone(),
                    label: source.label.clone(),
                    filter: source.filter.clone(),
                    spec: None,
                });
                // the password goes to the ingestor only, never into the record
                let spec_with_password = source.spec.clone();
                if let SourceSpec::Imap { password, .. } = &mut source.spec {
                    *password = None;
                }
                if let Some(s) = fx.imap.last_mut() {
                    s.spec = Some(spec_with_password);
                }
            }
            let id = source.id.clone();
            upsert(
                &mut r.sources,
                source,
                |s| s.id == id,
                limits.max_sources,
                "sources",
            )?;
            crate::decide::heartbeats::added(r, &id, now);
            fx.subscriptions.extend(upserted);
            fx.dirty = true;
            Ok(())
        }
        Command::SetSourceSettings {
            source_id,
            settings,
        } => {
            let r = existing(user, record)?;
            check_settings(r, &settings, now)?;
            let source = r
                .sources
                .iter_mut()
                .find(|s| s.id == source_id)
                .ok_or_else(|| Refusal::not_found(format!("no source {source_id}")))?;
            source.settings = settings;
            fx.dirty = true;
            Ok(())
        }
        Command::RemoveSource { source_id } => {
            let r = existing(user, record)?;
            let source = take(&mut r.sources, |s| s.id == source_id, "source", &source_id)?;
            r.source_status.remove(&source_id);
            r.reach.groups.remove(&source_id);
            let fired = crate::decide::heartbeats::removed(r, &source_id, now);
            fx.take(user, fired);
            unsubscribe(user, &source, fx);
            fx.dirty = true;
            Ok(())
        }
        Command::SendVerificationCode {
            destination_id,
            code,
        } => {
            let r = existing(user, record)?;
            crate::decide::verify::send_code(r, &destination_id, &code, now, fx)
        }
        Command::VerifyDestination {
            destination_id,
            code_hash,
        } => {
            let r = existing(user, record)?;
            crate::decide::verify::verify(r, &destination_id, &code_hash, now, fx)
        }
        Command::DeleteUser {} => {
            let r = existing(user, record)?;
            for source in &r.sources {
                unsubscribe(user, source, fx);
            }
            for d in r
                .destinations
                .iter()
                .filter(|d| AddressEntry::indexed(d.channel))
            {
                fx.index
                    .push((AddressEntry::key(d.channel, &d.address), None));
            }
            fx.history
                .push(HistoryRecord::Forget { user: user.clone() });
            // what the user had pending (escalations, groups, digests) goes with the record
            *record = None;
            fx.dirty = true;
            Ok(())
        }
        Command::AddDestination { destination } => {
            let r = existing(user, record)?;
            let mut destination =
                tocsin_model::validate_destination(destination).map_err(Refusal::from)?;
            let id = destination.id.clone();
            // an edit of an unconfirmed destination keeps it unconfirmed: only its code
            // confirms it
            if let Some(old) = r.destinations.iter().find(|d| d.id == id)
                && old.address_key() == destination.address_key()
                && destination.verification.is_none()
            {
                destination.verification = old.verification.clone();
            }
            if let Some(old) = r.destinations.iter().find(|d| d.id == id)
                && AddressEntry::indexed(old.channel)
                && old.address_key() != destination.address_key()
            {
                fx.index
                    .push((AddressEntry::key(old.channel, &old.address), None));
                r.reach.presence.remove(&old.address_key());
            }
            if AddressEntry::indexed(destination.channel) {
                let (key, entry) = AddressEntry::of(user, &destination);
                fx.index.push((key, Some(entry)));
            }
            let limit = limits.max_destinations;
            upsert(
                &mut r.destinations,
                destination,
                |d| d.id == id,
                limit,
                "destinations",
            )?;
            fx.dirty = true;
            Ok(())
        }
        Command::SetAllowedSenders {
            senders,
            require_authenticated,
        } => {
            let r = existing(user, record)?;
            r.require_authenticated_mail = require_authenticated;
            r.allowed_senders = tocsin_model::validate_allowed_senders(&senders)
                .map_err(|e| Refusal::field("allowed_senders", e))?;
            fx.dirty = true;
            Ok(())
        }
        Command::RemoveDestination { destination_id } => {
            let r = existing(user, record)?;
            if r.reach
                .written_policies()
                .any(|p| p.names_destination(&destination_id))
            {
                return Err(Refusal::invalid(format!(
                    "an escalation policy names destination {destination_id}; change the policy first"
                )));
            }
            let d = take(
                &mut r.destinations,
                |d| d.id == destination_id,
                "destination",
                &destination_id,
            )?;
            r.destination_status.remove(&destination_id);
            if AddressEntry::indexed(d.channel) {
                fx.index
                    .push((AddressEntry::key(d.channel, &d.address), None));
                r.reach.presence.remove(&d.address_key());
            }
            fx.dirty = true;
            Ok(())
        }
        Command::SetPolicy { policy } => {
            let r = existing(user, record)?;
            if let Some(p) = &policy {
                check_policy(p, r)?;
            }
            r.reach.policy = policy.map(Box::new);
            fx.dirty = true;
            Ok(())
        }
        Command::AddSilence { silence } => {
            let r = existing(user, record)?;
            let fired = crate::decide::silences::add(r, silence, now)?;
            fx.take(user, fired);
            Ok(())
        }
        Command::AddTopic { name } => {
            let r = existing(user, record)?;
            tocsin_model::topics::validate_name(&name).map_err(|e| Refusal::field("name", e))?;
            if !r.topics.contains(&name) {
                if r.topics.len() >= tocsin_model::topics::MAX_PER_USER {
                    return Err(Refusal::invalid(format!(
                        "at most {} topics per user; delete one first",
                        tocsin_model::topics::MAX_PER_USER
                    )));
                }
                r.topics.push(name);
                fx.dirty = true;
            }
            Ok(())
        }
        Command::RemoveTopic { name } => {
            let r = existing(user, record)?;
            r.topics.retain(|t| *t != name);
            fx.dirty = true;
            Ok(())
        }
        Command::SetInboundAddress { inbound_token_hash } => {
            let r = existing(user, record)?;
            if inbound_token_hash.len() != 64 {
                return Err(Refusal::field(
                    "inbound_token_hash",
                    "must be 64 hex digits",
                ));
            }
            r.inbound_token_hash = inbound_token_hash;
            fx.dirty = true;
            Ok(())
        }
        Command::ReplaceCredentials {
            token_hash,
            feed_token_hash,
            end_sessions,
            keep_session,
        } => {
            let r = existing(user, record)?;
            crate::decide::sessions::replace_credentials(
                r,
                token_hash,
                feed_token_hash,
                end_sessions.then_some(keep_session.as_deref()),
                now,
            )?;
            fx.dirty = true;
            Ok(())
        }
        Command::SetReplyPin { pin_hash } => {
            let r = existing(user, record)?;
            if pin_hash.as_ref().is_some_and(|h| h.len() != 64) {
                return Err(Refusal::field("pin_hash", "must be 64 hex digits"));
            }
            r.reply_pin = pin_hash.map(|hash| {
                Box::new(tocsin_model::ReplyPin {
                    hash,
                    ..Default::default()
                })
            });
            fx.dirty = true;
            Ok(())
        }
        Command::StartSession { session } => {
            let r = existing(user, record)?;
            crate::decide::sessions::start(r, session, now)?;
            fx.dirty = true;
            Ok(())
        }
        Command::EndSession { id_hash } => {
            let r = existing(user, record)?;
            crate::decide::sessions::end(r, &id_hash, now);
            fx.dirty = true;
            Ok(())
        }
        Command::MailSignInLink { code_hash, link } => {
            let r = existing(user, record)?;
            crate::decide::sessions::mail_link(r, code_hash, &link, now, fx)?;
            fx.dirty = true;
            Ok(())
        }
        Command::UseSignInLink { code_hash, session } => {
            let r = existing(user, record)?;
            let used = crate::decide::sessions::use_link(r, &code_hash, session, now);
            // a refused link is still dropped if it expired
            fx.dirty = true;
            used
        }
        Command::SetMailRules { rules } => {
            let r = existing(user, record)?;
            tocsin_model::mail_rules::validate(&rules).map_err(Refusal::from)?;
            r.mail_rules = rules;
            fx.dirty = true;
            Ok(())
        }
        Command::RemoveSilence { silence_id } => {
            let r = existing(user, record)?;
            crate::decide::silences::remove(r, &silence_id)?;
            fx.dirty = true;
            Ok(())
        }
        Command::SetNamedPolicy { name, policy } => {
            let r = existing(user, record)?;
            if name == tocsin_model::Reach::DEFAULT_POLICY {
                if let Some(p) = &policy {
                    check_policy(p, r)?;
                }
                r.reach.policy = policy.map(Box::new);
                fx.dirty = true;
                return Ok(());
            }
            tocsin_model::Policy::validate_name(&name).map_err(|e| Refusal::field("name", e))?;
            match policy {
                Some(p) => {
                    check_policy(&p, r)?;
                    if !r.reach.policies.contains_key(&name)
                        && r.reach.policies.len() >= tocsin_model::Reach::MAX_POLICIES
                    {
                        return Err(Refusal::invalid(format!(
                            "at most {} named policies per user",
                            tocsin_model::Reach::MAX_POLICIES
                        )));
                    }
                    r.reach.policies.insert(name, p);
                }
                None => {
                    let users: Vec<&str> = r
                        .sources
                        .iter()
                        .filter(|s| s.settings.policy.as_deref() == Some(name.as_str()))
                        .map(|s| s.id.as_str())
                        .collect();
                    // `feeds` stays as the built-in one: a source may still name it
                    if !users.is_empty() && name != tocsin_model::Reach::FEEDS_POLICY {
                        return Err(Refusal::invalid(format!(
                            "sources {} follow policy {name}; change their policy first",
                            users.join(", ")
                        )));
                    }
                    if r.reach.policies.remove(&name).is_none() {
                        return Err(Refusal::not_found(format!("no policy {name}")));
                    }
                }
            }
            fx.dirty = true;
            Ok(())
        }
    }
}

/// Refuse source settings muted too far ahead or naming a policy the user does not have.
fn check_settings(
    r: &UserRecord,
    settings: &tocsin_model::SourceSettings,
    now: Millis,
) -> Result<(), Refusal> {
    if let Some(until) = settings.muted_until_ms
        && until > now + MAX_SOURCE_MUTE_MS
    {
        return Err(Refusal::field(
            "muted_until_ms",
            "at most a year ahead; remove the source to stop it for good",
        ));
    }
    if let Some(d) = &settings.digest {
        d.validate()
            .map_err(|e| Refusal::field(&e.field, e.message))?;
        if settings.group_secs.is_some() {
            return Err(Refusal::field(
                "digest",
                "a source is grouped (group_secs) or digested, not both",
            ));
        }
    }
    if let Some(secs) = settings.group_secs
        && !(tocsin_model::SourceSettings::MIN_GROUP_SECS
            ..=tocsin_model::SourceSettings::MAX_GROUP_SECS)
            .contains(&secs)
    {
        return Err(Refusal::field(
            "group_secs",
            format!(
                "must be {}-{} seconds",
                tocsin_model::SourceSettings::MIN_GROUP_SECS,
                tocsin_model::SourceSettings::MAX_GROUP_SECS
            ),
        ));
    }
    if settings.tags.len() > tocsin_model::SourceSettings::MAX_TAGS
        || settings.tags.iter().any(|t| {
            t.trim().is_empty()
                || t.len() > tocsin_model::SourceSettings::MAX_TAG
                || t.chars().any(char::is_control)
        })
    {
        return Err(Refusal::field(
            "tags",
            format!(
                "at most {} tags of 1-{} printable bytes",
                tocsin_model::SourceSettings::MAX_TAGS,
                tocsin_model::SourceSettings::MAX_TAG
            ),
        ));
    }
    if let Some(name) = &settings.policy
        && !r.reach.has_policy(name)
    {
        return Err(Refusal::field(
            "policy",
            format!("no policy {name}; write it first (PUT /v1/policies/{name})"),
        ));
    }
    Ok(())
}

/// Refuse a policy with problems, naming the first field and listing them all.
fn check_policy(p: &tocsin_model::Policy, r: &UserRecord) -> Result<(), Refusal> {
    let problems = p.problems(&r.destinations);
    match problems.first() {
        None => Ok(()),
        Some(first) => {
            let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
            Err(Refusal {
                field: Some(first.field.clone()),
                ..Refusal::invalid(all.join("; "))
            })
        }
    }
}

/// The user's record, or the refusal for a command to a user that does not exist.
pub(crate) fn existing<'a>(
    user: &UserId,
    record: &'a mut Option<UserRecord>,
) -> Result<&'a mut UserRecord, Refusal> {
    record
        .as_mut()
        .ok_or_else(|| Refusal::not_found(format!("user {user} does not exist")))
}

/// Replace the entry `same` finds, or add `item` if there is room for `limit` entries.
pub(crate) fn upsert<T>(
    list: &mut Vec<T>,
    item: T,
    same: impl Fn(&T) -> bool,
    limit: usize,
    what: &str,
) -> Result<(), Refusal> {
    match list.iter().position(same) {
        Some(i) => list[i] = item,
        None if list.len() >= limit => {
            return Err(Refusal::invalid(format!("at most {limit} {what} per user")));
        }
        None => list.push(item),
    }
    Ok(())
}

/// Remove and return the entry `same` finds.
pub(crate) fn take<T>(
    list: &mut Vec<T>,
    same: impl Fn(&T) -> bool,
    what: &str,
    id: &str,
) -> Result<T, Refusal> {
    let i = list
        .iter()
        .position(same)
        .ok_or_else(|| Refusal::not_found(format!("no {what} {id}")))?;
    Ok(list.remove(i))
}

pub(crate) fn validate_source(source: &Source) -> Result<(), Refusal> {
    tocsin_model::validate_source(source).map_err(Refusal::from)
}

pub(crate) fn subscription(
    user: &UserId,
    source: &Source,
    op: SubscriptionOp,
) -> Option<FeedSubscription> {
    // a shared topic's subscribers are kept by the ingestor like a feed's, under its own key
    let (url, deliver_existing, poll_interval_secs, extract, listing, request, active_hours) =
        match &source.spec {
            SourceSpec::Feed {
                url,
                deliver_existing,
                poll_interval_secs,
                extract,
                listing,
                request,
                active_hours,
            } => (
                url.clone(),
                *deliver_existing,
                *poll_interval_secs,
                extract.clone(),
                *listing,
                (**request).clone(),
                active_hours.as_deref().cloned(),
            ),
            SourceSpec::Topic { topic } => (
                tocsin_model::topics::subscription_url(topic),
                false,
                None,
                None,
                Default::default(),
                Default::default(),
                None,
            ),
            _ => return None,
        };
    Some(FeedSubscription {
        op,
        user: user.clone(),
        source_id: source.id.clone(),
        url,
        filter: source.filter.clone(),
        deliver_existing,
        label: source.label.clone(),
        poll_interval_secs,
        extract,
        listing,
        request,
        active_hours,
    })
}
