//! Who may send at once on a channel: at most `delivery.concurrency` sends in all, and at most
//! `delivery.max_sends_per_user` of them for one user. A send to a tarpit holds its permit
//! until the request times out; without a share per user, a tenant with a few such
//! destinations held every permit and everyone else's sends queued behind them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) struct Permits {
    all: Arc<Semaphore>,
    per_user: usize,
    users: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// The right to send one job now; dropping it gives both permits back.
pub(crate) struct Permit {
    _user: OwnedSemaphorePermit,
    _all: OwnedSemaphorePermit,
}

impl Permits {
    pub(crate) fn new(all: usize, per_user: usize) -> Permits {
        Permits {
            all: Arc::new(Semaphore::new(all)),
            per_user: per_user.clamp(1, all.max(1)),
            users: Mutex::default(),
        }
    }

    /// Wait for `user`'s share first, then for the channel's: a user at its share never
    /// queues for (and so never holds up) the channel's permits.
    pub(crate) async fn acquire(&self, user: &str) -> Permit {
        let mine = {
            let mut users = tocsin_runtime::lock(&self.users);
            users
                .entry(user.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_user)))
                .clone()
        };
        let user = mine.acquire_owned().await.expect("never closed");
        let all = self
            .all
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        Permit {
            _user: user,
            _all: all,
        }
    }

    /// Forget the users with no send in flight or waiting.
    pub(crate) fn sweep(&self) {
        let per_user = self.per_user;
        tocsin_runtime::lock(&self.users)
            .retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < per_user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_user_at_its_share_leaves_the_rest_to_others() {
        let p = Permits::new(4, 2);
        let _a = p.acquire("mallory").await;
        let _b = p.acquire("mallory").await;
        let third = tokio::time::timeout(Duration::from_millis(50), p.acquire("mallory")).await;
        assert!(third.is_err(), "mallory is at its share");
        let _c = p.acquire("ann").await;
        let _d = p.acquire("bob").await;
        let fifth = tokio::time::timeout(Duration::from_millis(50), p.acquire("cy")).await;
        assert!(fifth.is_err(), "the channel is full");
        drop(_a);
        let _e = p.acquire("mallory").await;
        p.sweep();
        assert_eq!(p.users.lock().unwrap().len(), 3);
    }
}
