//! A silo's envelopes of many users' messages (a feed item's subscribers, the ticks due at
//! once): the inactive avatars among them activated with their records read in one batched
//! request, then each record handed to its user's avatar in order, as the message it would
//! have been on its own.

use crate::silo::{Loaded, Worker, spawn_avatar};
use std::collections::HashMap;
use std::time::Duration;
use tocsin_bus::handed::{self, Handed};
use tocsin_bus::{Disposition, envelope};
use tocsin_model::UserId;
use tracing::debug;

/// How long a batched read of avatars' records may take before they read their own.
const PRELOAD_TIMEOUT: Duration = Duration::from_secs(5);

impl Worker {
    /// Hand each record of an envelope to its user's avatar, in order. A record that names no
    /// user of this silo is dead-lettered alone; a damaged envelope is dead-lettered whole.
    pub(crate) async fn dispatch_envelope(&mut self, msg: tocsin_bus::Inbound) {
        let (bus, silo) = (self.ctx.bus.clone(), self.silo);
        let kind = msg
            .message()
            .subject
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        let records = match envelope::records(&msg.message().payload) {
            Ok(r) => r,
            Err(e) => {
                msg.settle(&bus, Disposition::Reject(e.to_string())).await;
                return;
            }
        };
        // each record as the message it would have been on its own
        let subjects = bus.subjects();
        let records: Vec<_> = records
            .into_iter()
            .map(|r| {
                let user = envelope::addressee(&r.id)
                    .map(|(u, _)| u)
                    .filter(|u| UserId::parse(u).is_ok())
                    .unwrap_or("-");
                (subjects.silo(silo, user, &kind), r.id, r.payload)
            })
            .collect();
        self.preload(&records).await;
        let Some(parts) = handed::split(&bus, msg, records, None).await else {
            return;
        };
        for part in parts {
            let part = Handed::Part(part);
            let user = subjects
                .user_of_silo_subject(part.subject())
                .and_then(|u| UserId::parse(u).ok())
                .filter(|u| bus.silo_of(u) == silo);
            match user {
                Some(user) => self.hand(user, part).await,
                None => {
                    let reason = format!(
                        "record {} of an envelope names no user of silo {silo}",
                        part.subject()
                    );
                    part.settle(&bus, Disposition::Reject(reason)).await;
                }
            }
        }
    }

    /// Activate the avatars of an envelope's records that are not active with their records
    /// read in one batched request, rather than one request per avatar as each would on its
    /// own; each avatar decodes its own. What cannot be read that way (an error, a key with
    /// no entry, a record that does not decode) is left to the avatar's own load.
    async fn preload(&mut self, records: &[(String, String, bytes::Bytes)]) {
        let subjects = self.ctx.bus.subjects();
        let mut users: Vec<UserId> = records
            .iter()
            .filter_map(|(subject, _, _)| subjects.user_of_silo_subject(subject))
            .filter_map(|u| UserId::parse(u).ok())
            .filter(|u| !self.avatars.contains_key(u) && self.ctx.bus.silo_of(u) == self.silo)
            .collect();
        users.sort_unstable();
        users.dedup();
        if users.is_empty() {
            return;
        }
        let keys: Vec<&str> = users.iter().map(UserId::as_str).collect();
        let latest = match self
            .ctx
            .bus
            .kv_latest(&self.ctx.kv, &keys, PRELOAD_TIMEOUT)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                debug!(silo = self.silo, error = %e, "cannot read the avatars' records in one request; each reads its own");
                return;
            }
        };
        let mut bases = self.preload_bases(&latest).await;
        let mut found: HashMap<String, tocsin_bus::Latest> =
            latest.into_iter().map(|l| (l.key.clone(), l)).collect();
        for user in users {
            // a key the read did not return is left to the avatar: "no such user" drops the
            // message, so only an entry read (or its deletion) may say it
            let Some(l) = found.remove(user.as_str()) else {
                continue;
            };
            let loaded = Loaded {
                value: l.value,
                revision: l.revision,
                base: bases.as_mut().and_then(|b| b.remove(user.as_str())),
            };
            let handle = spawn_avatar(
                &self.ctx,
                self.silo,
                &self.outbox,
                user.clone(),
                Some(loaded),
            );
            self.avatars.insert(user, handle);
        }
    }

    /// The bases of recent keys (ADR 0033) that the records just read need at once (they name
    /// one and carry no filter of it), in one more batched request: per such user its bytes
    /// (None: no entry) and revision. None if there are none, or they cannot be read that way;
    /// each avatar then reads its own when it needs it.
    async fn preload_bases(
        &self,
        records: &[tocsin_bus::Latest],
    ) -> Option<HashMap<String, (Option<bytes::Bytes>, u64)>> {
        let keys: Vec<&str> = records
            .iter()
            .filter(|l| {
                l.value
                    .as_deref()
                    .is_some_and(tocsin_model::recent::base_read_on_wake)
            })
            .map(|l| l.key.as_str())
            .collect();
        if keys.is_empty() {
            return None;
        }
        let read = self
            .ctx
            .bus
            .kv_latest(&self.ctx.seen, &keys, PRELOAD_TIMEOUT)
            .await;
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                debug!(silo = self.silo, error = %e, "cannot read the avatars' bases of recent keys in one request; each reads its own");
                return None;
            }
        };
        // a key the read did not return has no entry
        let mut bases: HashMap<String, (Option<bytes::Bytes>, u64)> = keys
            .into_iter()
            .map(|k| (k.to_owned(), (None, 0)))
            .collect();
        for l in read {
            bases.insert(l.key, (l.value, l.revision));
        }
        Some(bases)
    }
}
