//! A steady stream of notifications for fault and scale-out tests: users spread over every
//! silo, each with a webhook at a [`Recorder`], a background publisher that retries every
//! publish with its idempotency key until the API accepts it (as a client would through an
//! outage), and the final check — every notification delivered once and in history once,
//! by id.

use crate::{Harness, Recorder};
use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tocsin_testkit::wait_for;

/// The title of the `i`-th notification published.
pub fn title(i: usize) -> String {
    format!("[n{i}]")
}

/// One request a webhook accepted.
struct Accepted {
    /// Its `X-Tocsin-Id`.
    job: String,
    /// The webhook's path (whose it is).
    path: String,
    at: std::time::Instant,
}

#[derive(Clone)]
pub struct User {
    pub token: String,
    pub path: String,
}

pub struct Workload {
    pub users: Vec<User>,
    pub hooks: Recorder,
    /// (user index, notification id) in publish order.
    published: Arc<Mutex<Vec<(usize, String)>>>,
    done: Arc<AtomicBool>,
    /// Time zero of the run's reports ([`Workload::elapsed`]).
    created: std::time::Instant,
    publisher: Option<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// `per_silo` users in each of the harness's silos, each with a webhook destination.
    pub async fn users(h: &Harness, per_silo: usize) -> Result<Workload> {
        let hooks = Recorder::start().await?;
        let make = |path: &str| vec![json!({"channel": "webhook", "address": hooks.url(path)})];
        Self::users_with(h, per_silo, hooks.clone(), make).await
    }

    /// `per_silo` users in each of the harness's silos, user `/u<i>` with the destinations
    /// `destinations("/u<i>")` gives, all of them in one step of the user's policy.
    pub async fn users_with(
        h: &Harness,
        per_silo: usize,
        hooks: Recorder,
        destinations: impl Fn(&str) -> Vec<serde_json::Value>,
    ) -> Result<Workload> {
        let silos = h.bus.silo_count;
        let mut users = Vec::new();
        let mut count: HashMap<u32, usize> = HashMap::new();
        for i in 0..(silos as usize * per_silo * 20) {
            if users.len() == silos as usize * per_silo {
                break;
            }
            let v = h.create_user_json(&format!("u{i}")).await?;
            let id = v["user_id"].as_str().context("user_id")?;
            let silo = tocsin_bus::silo_of(id, silos);
            if count.get(&silo).copied().unwrap_or(0) >= per_silo {
                continue;
            }
            *count.entry(silo).or_insert(0) += 1;
            let user = User {
                token: v["token"].as_str().context("token")?.to_owned(),
                path: format!("/u{i}"),
            };
            let mut ids = Vec::new();
            for d in destinations(&user.path) {
                ids.push(h.add_destination(&user.token, d).await?);
            }
            if ids.len() > 1 {
                // all at once (one destination needs no policy: it is the default's only step)
                let policy = json!({"steps": [{"destinations": ids}]});
                let (status, v) = h
                    .call(Method::PUT, "/v1/policy", Some(&user.token), Some(policy))
                    .await?;
                anyhow::ensure!(status == 200, "policy: {status} {v}");
            }
            users.push(user);
        }
        anyhow::ensure!(
            users.len() == silos as usize * per_silo,
            "could not place {per_silo} users in each of {silos} silos"
        );
        Ok(Workload {
            users,
            hooks,
            published: Arc::default(),
            done: Arc::default(),
            publisher: None,
            created: std::time::Instant::now(),
        })
    }

    /// How long since the workload was made: what a test's fault log and the report of
    /// repeated deliveries both count from.
    pub fn elapsed(&self) -> Duration {
        self.created.elapsed()
    }

    /// Publish round-robin over the users, one every `gap`, until [`Workload::finish`].
    pub fn start(&mut self, h: &Harness, gap: Duration) {
        let (users, published, done) = (
            self.users.clone(),
            self.published.clone(),
            self.done.clone(),
        );
        let (http, api) = (h.http.clone(), h.api_url.clone());
        self.publisher = Some(tokio::spawn(async move {
            let mut i = 0usize;
            while !done.load(Ordering::Relaxed) {
                let u = i % users.len();
                // a title no other title contains, to find it in an e-mail, SMS or IM
                let body = json!({"title": title(i), "idempotency_key": format!("n{i}")});
                let id = wait_for(Duration::from_secs(90), "an accepted publish", || async {
                    let r = http
                        .post(format!("{api}/v1/publish"))
                        .bearer_auth(&users[u].token)
                        .json(&body)
                        .send()
                        .await
                        .ok()?;
                    if r.status() != 202 {
                        return None;
                    }
                    let v: serde_json::Value = r.json().await.ok()?;
                    Some(v["id"].as_str()?.to_owned())
                })
                .await
                .expect("the API accepts every publish in the end");
                published.lock().unwrap().push((u, id));
                i += 1;
                tokio::time::sleep(gap).await;
            }
        }));
    }

    /// (user index, notification id, title) of every notification accepted so far, in order.
    pub fn accepted(&self) -> Vec<(usize, String, String)> {
        let published = self.published.lock().unwrap();
        published
            .iter()
            .enumerate()
            .map(|(i, (u, id))| (*u, id.clone(), title(i)))
            .collect()
    }

    /// How many notifications have been accepted so far.
    pub fn published(&self) -> usize {
        self.published.lock().unwrap().len()
    }

    /// Wait until `n` more notifications have been accepted.
    pub async fn advance(&self, n: usize) -> Result<()> {
        let start = self.published();
        wait_for(
            Duration::from_secs(120),
            &format!("{n} more notifications accepted"),
            || async { (self.published() >= start + n).then_some(()) },
        )
        .await
    }

    /// Stop publishing; returns how many were published.
    pub async fn finish(&mut self) -> Result<usize> {
        self.done.store(true, Ordering::Relaxed);
        if let Some(p) = self.publisher.take() {
            p.await?;
        }
        Ok(self.published())
    }

    /// The notification ids the webhooks accepted, each with every accepted request that
    /// carried it (refused attempts are not deliveries).
    fn delivered(&self) -> HashMap<String, Vec<Accepted>> {
        let mut out: HashMap<String, Vec<Accepted>> = HashMap::new();
        for u in &self.users {
            for r in self.hooks.requests(&u.path) {
                if r.status >= 300 {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                let id = v["id"].as_str().unwrap_or_default().to_owned();
                let job = r
                    .headers
                    .get("x-tocsin-id")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                out.entry(id).or_default().push(Accepted {
                    job,
                    path: u.path.clone(),
                    at: r.at,
                });
            }
        }
        out
    }

    /// Every published notification reached its webhook exactly once and is in its user's
    /// history exactly once — by id, also a moment later.
    pub async fn assert_each_delivered_once(&self, h: &Harness) -> Result<()> {
        self.assert_each_delivered(h, 0).await
    }

    /// Like [`Workload::assert_each_delivered_once`], except that up to `repeats` deliveries
    /// may be repeated — the jobs in flight when a delivery instance was killed, sent but not
    /// yet acknowledged — each repeat with the same `X-Tocsin-Id`, by which receivers
    /// deduplicate.
    pub async fn assert_each_delivered(&self, h: &Harness, repeats: usize) -> Result<()> {
        let published = self.published.lock().unwrap().clone();
        let all: HashSet<String> = published.iter().map(|(_, id)| id.clone()).collect();
        anyhow::ensure!(
            all.len() == published.len(),
            "two publishes got the same notification id"
        );
        wait_for(
            Duration::from_secs(120),
            "every webhook delivery",
            || async {
                let d = self.delivered();
                all.iter().all(|id| d.contains_key(id)).then_some(())
            },
        )
        .await
        .with_context(|| {
            let d = self.delivered();
            let missing = all.iter().filter(|id| !d.contains_key(*id)).count();
            format!("{missing} of {} notifications not delivered", all.len())
        })?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let d = self.delivered();
        let twice: Vec<_> = d.iter().filter(|(_, got)| got.len() > 1).collect();
        // each repeat: whose, its job id, and when each copy arrived (seconds into the run, as
        // [`Workload::elapsed`] counts), to tell which fault it followed
        let described: Vec<String> = twice
            .iter()
            .map(|(_, got)| {
                let times: Vec<String> = got
                    .iter()
                    .map(|a| {
                        let since = a.at.saturating_duration_since(self.created);
                        format!("{:.3}s", since.as_secs_f64())
                    })
                    .collect();
                format!("{} {} at {}", got[0].path, got[0].job, times.join(", "))
            })
            .collect();
        anyhow::ensure!(
            twice.len() <= repeats,
            "delivered more than once ({} allowed): {described:#?}",
            repeats
        );
        anyhow::ensure!(
            twice
                .iter()
                .all(|(_, got)| got.iter().all(|a| a.job == got[0].job)),
            "a repeated delivery changed its X-Tocsin-Id: {described:#?}"
        );
        if !twice.is_empty() {
            eprintln!(
                "{} deliveries repeated after a delivery crash (same X-Tocsin-Id): {described:#?}",
                twice.len()
            );
        }
        anyhow::ensure!(
            d.keys().all(|id| all.contains(id)),
            "a webhook got a notification nobody published"
        );
        self.assert_each_in_history_once(h).await?;
        eprintln!(
            "{} notifications: each delivered once and in history once",
            all.len()
        );
        Ok(())
    }

    /// Each user's history holds exactly the notifications published to them, by id.
    pub async fn assert_each_in_history_once(&self, h: &Harness) -> Result<()> {
        let published = self.published.lock().unwrap().clone();
        for (u, user) in self.users.iter().enumerate() {
            let ids: HashSet<String> = published
                .iter()
                .filter(|(p, _)| *p == u)
                .map(|(_, id)| id.clone())
                .collect();
            h.assert_history_is_exactly(&user.token, &ids).await?;
        }
        Ok(())
    }
}
