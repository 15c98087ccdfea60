//! The web app's sign-ins as a user's record keeps them: the browsers signed in (only a hash
//! of each cookie) and the one-time links mailed and not yet used.

use crate::Millis;
use serde::{Deserialize, Serialize};

/// A browser signed in to the web app. Only the hash of its cookie is kept, so a copy of the
/// record signs nobody in; ending it (signing out) is removing it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSession {
    /// SHA-256 (hex) of the session cookie's value.
    pub id_hash: String,
    pub created_at_ms: Millis,
    pub expires_at_ms: Millis,
    /// What signed in (the browser's `User-Agent`, cut to [`WebSession::MAX_LABEL`]).
    #[serde(default)]
    pub label: String,
}

impl WebSession {
    /// Signing in on an eleventh browser ends the session that started first.
    pub const MAX_PER_USER: usize = 10;
    pub const MAX_LABEL: usize = 80;

    /// `sessions` with `new` added: the expired ones dropped, the oldest ended when the user
    /// holds [`WebSession::MAX_PER_USER`], the label cut to its bound.
    pub fn admit(sessions: &mut Vec<WebSession>, mut new: WebSession, now: Millis) {
        sessions.retain(|s| s.expires_at_ms > now && s.id_hash != new.id_hash);
        while sessions.len() >= Self::MAX_PER_USER {
            let oldest = sessions
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.created_at_ms)
                .map_or(0, |(i, _)| i);
            sessions.remove(oldest);
        }
        if new.label.len() > Self::MAX_LABEL {
            new.label = crate::text::truncate(&new.label, Self::MAX_LABEL);
        }
        sessions.push(new);
    }

    /// Whether `id_hash` names a live session of `sessions` at `now`.
    pub fn live<'a>(
        sessions: &'a [WebSession],
        id_hash: &str,
        now: Millis,
    ) -> Option<&'a WebSession> {
        sessions
            .iter()
            .find(|s| s.expires_at_ms > now && s.id_hash == id_hash)
    }
}

/// A one-time sign-in link mailed to the user: only the hash of its code is kept; using it
/// removes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInLink {
    pub code_hash: String,
    pub expires_at_ms: Millis,
}

impl SignInLink {
    /// Links that may wait unused at once: more are refused until one is used or expires.
    pub const MAX_PENDING: usize = 3;
    /// How long a link works.
    pub const LIFETIME_MS: Millis = 15 * 60 * 1000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_ten_sessions_and_the_oldest_goes_first() {
        let session = |i: i64, expires: i64| WebSession {
            id_hash: format!("{i:064}"),
            created_at_ms: i,
            expires_at_ms: expires,
            label: "é".repeat(100),
        };
        let mut all = vec![session(0, 5)]; // expired at 10
        for i in 1..=11 {
            WebSession::admit(&mut all, session(i, 100), 10);
        }
        assert_eq!(all.len(), WebSession::MAX_PER_USER);
        assert_eq!(
            all[0].created_at_ms, 2,
            "the expired one and the first live one went"
        );
        assert!(all.iter().all(|s| s.label.len() <= WebSession::MAX_LABEL));
        assert!(WebSession::live(&all, &format!("{:064}", 11), 50).is_some());
        assert!(
            WebSession::live(&all, &format!("{:064}", 11), 100).is_none(),
            "expired"
        );
        assert!(
            WebSession::live(&all, &format!("{:064}", 1), 50).is_none(),
            "ended"
        );
        // signing in again with the same cookie replaces, never duplicates
        WebSession::admit(&mut all, session(11, 200), 10);
        assert_eq!(all.len(), WebSession::MAX_PER_USER);
    }
}
