//! One delivery job from start to outcome: send it (retrying transient failures in place as
//! [`crate::retry::next_step`] decides), remember what became of it, and report the outcome
//! with its events through the instance's outbox, which acks the job once the report is
//! durable: a delivered job as its timeline entry straight to history, a failed one to the
//! user's avatar (which may escalate).

use crate::Ctx;
use crate::fairness::Breaker;
use crate::retry::{Next, next_step};
use crate::webhook::SendResult;
use crate::{push, sms, webhook};
use std::collections::HashMap;
use std::time::Duration;
use tocsin_bus::{Disposition, Outgoing};
use tocsin_model::{
    AvatarMessage, Channel, DeliveryJob, DeliveryOutcome, Event, EventKind, JobKind, Millis,
    SourceStatus, now_ms,
};
use tracing::{Instrument, debug, debug_span, warn};

/// Send one job until it is delivered, fails for good, or has used its attempts.
pub(crate) async fn handle(
    ctx: &Ctx,
    channel: Channel,
    permits: &crate::permits::Permits,
    msg: tocsin_bus::Handed,
    job: DeliveryJob,
    breaker: &impl Fn(bool) -> Option<Breaker>,
) {
    // at debug level: a span is formatted when it is made, logged in or not (2-3 % of a burst's
    // CPU as an info span, one per job); the warnings below name the job themselves
    let span = debug_span!("deliver", notification = %job.notification.id, user = %job.notification.user, channel = channel.as_str());
    async {
        let (nid, user) = (&job.notification.id, &job.notification.user);
        let mut attempts = msg.delivered();
        let max = ctx.bus.config().max_deliver;
        let before = ctx.sent.lock().expect("sent lock").get(&job.job_id);
        if before.is_none() && ctx.done.contains(&job.job_id) {
            // sent by an instance that crashed before this copy (in another envelope) came:
            // its report is durable, and the job is done
            debug!("sent by an earlier instance; settled without sending it again");
            ctx.outbox.submit_then_ack(&ctx.bus, Vec::new(), msg).await;
            return;
        }
        // `attempted` events for sends that did not deliver, published with the outcome (and
        // settled with it); a send that delivers is the `delivered` event itself — one event,
        // not two, on the common path
        let mut events: Vec<Event> = Vec::new();
        let (delivered, detail, at_ms) = if let Some(done) = before {
            debug!("already sent; reporting it again instead of sending twice");
            attempts = done.attempts;
            (done.delivered, done.detail, done.at_ms)
        } else { loop {
            // a number or IM address removed or taken over since: no more messages to it
            if let Some(why) = Box::pin(crate::moved::gone(ctx, &job)).await {
                warn!(notification = %nid, %user, channel = channel.as_str(), attempt = attempts, "{why}");
                break (false, why, now_ms());
            }
            let result = {
                let _permit = permits.acquire(job.notification.user.as_str()).await;
                if let Some(rate) = ctx.rates.get(&channel) {
                    rate.wait().await;
                }
                send(ctx, &job).await
            };
            // the destination answered (delivered, or refused for good), or it did not
            if let Some(change) = breaker(!matches!(result, SendResult::Transient { .. })) {
                let last = match &result {
                    SendResult::Transient { detail, .. } => detail.as_str(),
                    _ => "",
                };
                // boxed, as the other rare paths below: not in every job's future
                Box::pin(report_breaker(ctx, &job, change, last)).await;
            }
            let (label, how) = match &result {
                SendResult::Delivered(d) => ("delivered", d),
                SendResult::Permanent(d) => ("failed", d),
                SendResult::Transient { detail, .. } => ("retry", detail),
            };
            if !matches!(result, SendResult::Delivered(_)) {
                events.push(
                    job_event(EventKind::Attempted, &job, &[&job.job_id, &attempts.to_string()], now_ms())
                        .attempt(attempts)
                        .detail(&format!("{label}: {how}")),
                );
            }
            metrics::counter!(crate::telemetry::ATTEMPTS, "channel" => channel.as_str(), "outcome" => label).increment(1);
            let detail = how.clone();
            match next_step(result, attempts, max) {
                Next::Done { delivered, detail } => break (delivered, detail, now_ms()),
                Next::RetryIn(wait) => {
                    warn!(notification = %nid, %user, channel = channel.as_str(), attempt = attempts, %detail, retry_in_ms = wait.as_millis() as u64, "delivery failed; will retry");
                    // the channel loop keeps the job alive while it waits
                    tokio::time::sleep(wait).await;
                    attempts += 1;
                }
            }
        } };
        ctx.sent
            .lock()
            .expect("sent lock")
            .insert(&job.job_id, Done { delivered, detail: detail.clone(), attempts, at_ms });
        if job.kind == JobKind::Reply {
            // an answer to the user's own command: nothing to record; acked with a round (in an
            // envelope, its progress is recorded with the round's, so a crash does not repeat it)
            ctx.outbox.submit_done_then_ack(&ctx.bus, Vec::new(), msg, job.job_id).await;
            return;
        }
        let outcome = DeliveryOutcome {
            job_id: job.job_id.clone(),
            notification_id: job.notification.id.clone(),
            user: job.notification.user.clone(),
            destination_id: job.destination.id.clone(),
            channel,
            delivered,
            detail,
            attempts,
            // the moment of the send, kept with it: a report made again is the same report
            at_ms,
        };
        if delivered {
            let since = (outcome.at_ms - job.notification.created_at_ms).max(0);
            metrics::histogram!(crate::telemetry::DELIVERED_SECONDS, "channel" => channel.as_str())
                .record(since as f64 / 1000.0);
        } else {
            warn!(notification = %nid, %user, channel = channel.as_str(), detail = %outcome.detail, "delivery failed for good");
        }
        let kind = if delivered { EventKind::Delivered } else { EventKind::Failed };
        events.push(
            job_event(kind, &job, &[&job.job_id], outcome.at_ms)
                .since(job.notification.created_at_ms)
                .attempt(attempts)
                .detail(&outcome.detail),
        );
        match report(ctx, &outcome, events) {
            Ok(items) => {
                ctx.outbox
                    .submit_done_then_ack(&ctx.bus, items, msg, job.job_id.clone())
                    .await
            }
            // the job is redelivered and reported again (not sent: it is in `sent`)
            Err(e) => {
                warn!(notification = %nid, %user, channel = channel.as_str(), error = %e, "cannot encode the outcome; the job will be redelivered");
                Box::pin(msg.settle(&ctx.bus, Disposition::Retry(Duration::from_secs(1)))).await;
            }
        }
    }
    .instrument(span)
    .await
}

/// What reports `outcome`: its events; a delivered job's timeline entry, for the history of the
/// user's silo; a failed job's outcome, for the user's avatar (which may escalate).
fn report(
    ctx: &Ctx,
    outcome: &DeliveryOutcome,
    events: Vec<Event>,
) -> Result<Vec<Outgoing>, tocsin_bus::BusError> {
    let subjects = ctx.bus.subjects();
    let silo = ctx.bus.silo_of(&outcome.user);
    let mut items = Vec::with_capacity(events.len() + 1);
    if outcome.delivered {
        let record = outcome.timeline_record();
        let id = tocsin_bus::msg_id::timeline(
            &outcome.notification_id,
            "delivered",
            Some(outcome.channel),
            outcome.at_ms,
        );
        items.push(Outgoing::record(
            subjects.history_envelope(silo),
            id,
            tocsin_bus::encode(&record)?,
        ));
    } else {
        let msg = AvatarMessage::Outcome {
            outcome: outcome.clone(),
        };
        items.push(Outgoing::alone(
            subjects.silo(silo, outcome.user.as_str(), "outcome"),
            tocsin_bus::msg_id::outcome(&outcome.job_id),
            tocsin_bus::encode(&msg)?,
        ));
    }
    for event in events {
        let (_, id, payload) = ctx.bus.event_output(event, "delivery")?;
        items.push(Outgoing::record(subjects.events_envelope(), id, payload));
    }
    Ok(items)
}

/// Tell the user's avatar that `job`'s destination was paused, or delivers again.
async fn report_breaker(ctx: &Ctx, job: &DeliveryJob, change: Breaker, last_error: &str) {
    let user = &job.notification.user;
    let destination = &job.destination.id;
    let at = now_ms();
    let status = match change {
        Breaker::Opened { pause, failures } => {
            warn!(%user, %destination, channel = job.destination.channel.as_str(), pause_secs = pause.as_secs(), failures, last_error, "a destination keeps failing; its further jobs are parked until the pause is over");
            SourceStatus {
                ok: false,
                error: Some(format!(
                    "failed {failures} times in a row (last: {last_error}); paused for {}s, then one delivery tries it again",
                    pause.as_secs()
                )),
                checked_at_ms: at,
                consecutive_failures: failures,
                ..Default::default()
            }
        }
        Breaker::Closed => SourceStatus {
            ok: true,
            checked_at_ms: at,
            ..Default::default()
        },
    };
    let subject = ctx
        .bus
        .subjects()
        .silo(ctx.bus.silo_of(user), user.as_str(), "status");
    let id = tocsin_bus::msg_id::destination_status(user, destination, at);
    let msg = AvatarMessage::DestinationStatus {
        destination_id: destination.clone(),
        status,
    };
    if let Err(e) = ctx.bus.publish_json(subject, &id, &msg).await {
        warn!(%user, %destination, error = %e, "cannot report a destination's status");
    }
}

/// An event about `job`, keyed by `key`.
pub(crate) fn job_event(
    kind: EventKind,
    job: &DeliveryJob,
    key: &[&str],
    at_ms: tocsin_model::Millis,
) -> Event {
    Event::new(kind, key, at_ms)
        .user(&job.notification.user)
        .notification(&job.notification.id)
        .source(job.notification.source.id.as_deref())
        .channel(Some(job.destination.channel))
        .destination(&job.destination.id)
}

/// One attempt at sending `job` on its channel.
pub(crate) async fn send(ctx: &Ctx, job: &DeliveryJob) -> SendResult {
    let not_served = |c: Channel| {
        SendResult::Permanent(format!(
            "this delivery instance does not serve the {} channel (delivery.channels)",
            c.as_str()
        ))
    };
    match job.destination.channel {
        Channel::Webhook => webhook::send(&ctx.http, job, now_ms()).await,
        Channel::Push => push::send(&ctx.http, ctx.vapid.as_ref(), job).await,
        Channel::Sms => sms::send(&ctx.providers, &ctx.cfg.sms, job).await,
        Channel::Email => match &ctx.mailer {
            Some(m) => m.send(job).await,
            None => not_served(Channel::Email),
        },
        Channel::Xmpp => match &ctx.xmpp {
            Some(x) => x.send(job).await,
            None => not_served(Channel::Xmpp),
        },
        Channel::Sink => SendResult::Delivered(format!("discarded ({})", job.destination.address)),
    }
}

/// What became of a job that was sent.
#[derive(Clone, Debug)]
pub(crate) struct Done {
    delivered: bool,
    detail: String,
    attempts: i64,
    /// When the last attempt ended.
    at_ms: Millis,
}

/// The last [`Sent::CAPACITY`] jobs' results, oldest forgotten first.
#[derive(Default)]
pub(crate) struct Sent {
    results: HashMap<String, Done>,
    order: std::collections::VecDeque<String>,
}

impl Sent {
    const CAPACITY: usize = 65_536;

    fn get(&self, job: &str) -> Option<Done> {
        self.results.get(job).cloned()
    }

    fn insert(&mut self, job: &str, result: Done) {
        if self.results.insert(job.to_owned(), result).is_none() {
            self.order.push_back(job.to_owned());
            if self.order.len() > Self::CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.results.remove(&old);
            }
        }
    }
}

/// At most `per_sec` sends per second, spaced evenly.
pub(crate) struct Rate {
    gap: Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Rate {
    pub(crate) fn new(per_sec: f64) -> Option<Rate> {
        (per_sec > 0.0).then(|| Rate {
            gap: Duration::from_secs_f64(1.0 / per_sec),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        })
    }

    async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let at = (*next).max(now);
            *next = at + self.gap;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}
