//! What each configuration command records in the archive when it changes something: the
//! event's kind, what it names and a detail in words.

use tocsin_model::{Command, Event, EventKind, Millis};

/// The event a command records when it changes something (its detail names the change).
pub(crate) fn command_event(command: &Command, command_id: &str, now: Millis) -> Event {
    let (kind, source, destination, channel, detail) = match command {
        Command::CreateUser { .. } => (
            EventKind::UserCreated,
            None,
            None,
            None,
            "user created".to_owned(),
        ),
        Command::AddSource { source } => (
            EventKind::SourceChanged,
            Some(source.id.as_str()),
            None,
            None,
            format!("source {} set ({})", source.id, source.spec.kind()),
        ),
        Command::RemoveSource { source_id } => (
            EventKind::SourceChanged,
            Some(source_id.as_str()),
            None,
            None,
            format!("source {source_id} removed"),
        ),
        Command::SetSourceSettings {
            source_id,
            settings,
        } => (
            EventKind::SourceChanged,
            Some(source_id.as_str()),
            None,
            None,
            format!(
                "source {source_id} settings: priority {}, muted until {}, policy {}, group {}",
                settings
                    .priority
                    .map_or("as its items say".to_owned(), |p| p.get().to_string()),
                settings
                    .muted_until_ms
                    .map_or("never".to_owned(), |t| t.to_string()),
                settings.policy.as_deref().unwrap_or("as for its kind"),
                settings
                    .group_secs
                    .map_or("none".to_owned(), |s| format!("{s}s"))
            ) + &settings.digest.as_ref().map_or(String::new(), |d| {
                format!(", digest every {:?}", d.every).to_lowercase()
            }),
        ),
        Command::SetAllowedSenders { senders, .. } => (
            EventKind::SourceChanged,
            None,
            None,
            None,
            format!("allowed e-mail senders set ({})", senders.len()),
        ),
        Command::AddDestination { destination } => (
            EventKind::DestinationChanged,
            None,
            Some(destination.id.as_str()),
            Some(destination.channel),
            format!("destination {} set", destination.id),
        ),
        Command::SendVerificationCode { destination_id, .. } => (
            EventKind::DestinationChanged,
            None,
            Some(destination_id.as_str()),
            None,
            format!("a confirmation code sent to destination {destination_id}"),
        ),
        Command::VerifyDestination { destination_id, .. } => (
            EventKind::DestinationChanged,
            None,
            Some(destination_id.as_str()),
            None,
            format!("destination {destination_id} confirmed by its code"),
        ),
        Command::DeleteUser {} => (
            EventKind::UserDeleted,
            None,
            None,
            None,
            "user deleted, with their sources, destinations, history and timers".to_owned(),
        ),
        Command::RemoveDestination { destination_id } => (
            EventKind::DestinationChanged,
            None,
            Some(destination_id.as_str()),
            None,
            format!("destination {destination_id} removed"),
        ),
        Command::SetPolicy { policy } => (
            EventKind::PolicyChanged,
            None,
            None,
            None,
            if policy.is_some() {
                "policy set"
            } else {
                "policy reset to the default"
            }
            .to_owned(),
        ),
        Command::AddSilence { silence } => (
            EventKind::PolicyChanged,
            None,
            None,
            None,
            format!(
                "silence {} ({}) until {}",
                silence.id,
                silence.matcher.describe(),
                tocsin_model::text::utc_minute(silence.ends_at_ms)
            ),
        ),
        Command::AddTopic { name } => (
            EventKind::SourceChanged,
            None,
            None,
            None,
            format!("topic {name} created"),
        ),
        Command::RemoveTopic { name } => (
            EventKind::SourceChanged,
            None,
            None,
            None,
            format!("topic {name} removed"),
        ),
        Command::SetInboundAddress { .. } => (
            EventKind::SourceChanged,
            None,
            None,
            None,
            "inbound e-mail address replaced".to_owned(),
        ),
        Command::SetReplyPin { pin_hash } => (
            EventKind::SessionChanged,
            None,
            None,
            None,
            match pin_hash {
                Some(_) => "reply PIN set",
                None => "reply PIN removed",
            }
            .to_owned(),
        ),
        Command::ReplaceCredentials {
            token_hash,
            feed_token_hash,
            end_sessions,
            ..
        } => (
            EventKind::SessionChanged,
            None,
            None,
            None,
            [
                (token_hash.is_some(), "API token replaced"),
                (feed_token_hash.is_some(), "private feed address replaced"),
                (*end_sessions, "other web sessions ended"),
            ]
            .iter()
            .filter(|(done, _)| *done)
            .map(|(_, what)| *what)
            .collect::<Vec<_>>()
            .join(", "),
        ),
        Command::StartSession { session } => (
            EventKind::SessionChanged,
            None,
            None,
            None,
            format!("signed in to the web app ({})", session.label),
        ),
        Command::EndSession { .. } => (
            EventKind::SessionChanged,
            None,
            None,
            None,
            "signed out of the web app".to_owned(),
        ),
        Command::MailSignInLink { .. } => (
            EventKind::SessionChanged,
            None,
            None,
            None,
            "a sign-in link was mailed".to_owned(),
        ),
        Command::UseSignInLink { session, .. } => (
            EventKind::SessionChanged,
            None,
            None,
            None,
            format!(
                "signed in to the web app by a mailed link ({})",
                session.label
            ),
        ),
        Command::SetMailRules { rules } => (
            EventKind::SourceChanged,
            None,
            None,
            None,
            format!("e-mail rules set ({})", rules.len()),
        ),
        Command::RemoveSilence { silence_id } => (
            EventKind::PolicyChanged,
            None,
            None,
            None,
            format!("silence {silence_id} removed"),
        ),
        Command::SetNamedPolicy { name, policy } => (
            EventKind::PolicyChanged,
            None,
            None,
            None,
            if policy.is_some() {
                format!("policy {name} set")
            } else {
                format!("policy {name} removed")
            },
        ),
    };
    let mut e = Event::new(kind, &[command_id], now)
        .source(source)
        .channel(channel)
        .detail(&detail);
    e.destination = destination.map(str::to_owned);
    e
}
