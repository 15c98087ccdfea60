//! `tocsin-bench work`: tocsin's own work on one notification with no bus, no server and no
//! disk, on one thread: what the router does with it (decode the message, decide, encode the
//! outputs, encode the user's record at a checkpoint), and what history and delivery do to
//! read what the router sent them. CPU time and heap allocations per notification, beside a
//! baseline from the same run: the notification's message parsed as a bare JSON value, no
//! decision. End to end a burst is too noisy on this machine to show a cut of a few per cent
//! (its runs differ by a quarter); here the ratio to the baseline moves by under a tenth
//! between runs and the allocations not at all, so they show what a change to this work buys
//! before the pipeline is asked.

use crate::common::{create_user, notification};
use crate::pipeline::sink;
use anyhow::{Context, Result, bail};
use tocsin_model::{
    AvatarMessage, Channel, Command, DeliveryJob, HistoryRecord, UserId, UserRecord, now_ms,
};
use tocsin_router::decide::{self, Limits, escalate::Links};
use tocsin_runtime::thread_meter::{allocations, thread_cpu};

#[derive(Debug, Clone)]
pub struct WorkOptions {
    pub users: usize,
    pub notifications: usize,
    /// Notifications an avatar handles between two checkpoints of its record.
    pub per_checkpoint: usize,
    /// Rounds of the whole set; each figure is the best round's (the least disturbed).
    pub rounds: usize,
}

/// One row: CPU µs and allocations per notification.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub micros: f64,
    pub allocations: f64,
}

#[derive(Debug)]
pub struct Report {
    pub options: WorkOptions,
    /// The notification's message parsed into a bare JSON value.
    pub baseline: Cost,
    /// Decode, decide and encode the outputs.
    pub route: Cost,
    /// The user's record encoded, per notification (one checkpoint per `per_checkpoint`).
    pub checkpoint: Cost,
    /// History's and delivery's decode of what the router sent them.
    pub read: Cost,
    /// Bytes the router sent on per notification (records, jobs, events).
    pub output_bytes: f64,
}

impl Report {
    /// The router's, history's and delivery's work together.
    pub fn total(&self) -> Cost {
        Cost {
            micros: self.route.micros + self.checkpoint.micros + self.read.micros,
            allocations: self.route.allocations
                + self.checkpoint.allocations
                + self.read.allocations,
        }
    }

    pub fn table(&self) -> String {
        let o = &self.options;
        let row = |name: &str, c: &Cost| {
            format!("{name:<56} {:>9.2} {:>11.1}\n", c.micros, c.allocations)
        };
        let total = self.total();
        let mut s = format!(
            "tocsin-bench work: {} notifications, {} users, a checkpoint per {}, best of {} rounds, one thread\n",
            o.notifications, o.users, o.per_checkpoint, o.rounds
        );
        s += &format!(
            "{:<56} {:>9} {:>11}\n",
            "per notification", "cpu µs", "allocations"
        );
        s += &row(
            "baseline: its message parsed as a bare JSON value",
            &self.baseline,
        );
        s += &row("router: decode, decide, encode the outputs", &self.route);
        s += &row(
            "router: the user's record encoded at a checkpoint",
            &self.checkpoint,
        );
        s += &row(
            "history and delivery: decode what the router sent",
            &self.read,
        );
        s += &row("tocsin's work, all of the above", &total);
        s += &format!(
            "ratio tocsin/baseline (cpu; allocations)                  {:>9.1} {:>11.1}\n",
            total.micros / self.baseline.micros.max(f64::EPSILON),
            total.allocations / self.baseline.allocations.max(f64::EPSILON)
        );
        s += &format!("bytes sent on per notification: {:.0}\n", self.output_bytes);
        s
    }
}

/// Run `f` and measure it: CPU µs and allocations, each divided by `n`.
fn measure<T>(n: usize, f: impl FnOnce() -> T) -> (T, Cost) {
    let (cpu, allocs) = (thread_cpu(), allocations());
    let out = f();
    let cost = Cost {
        micros: (thread_cpu() - cpu).as_secs_f64() * 1e6 / n as f64,
        allocations: (allocations() - allocs) as f64 / n as f64,
    };
    (out, cost)
}

fn best(a: Cost, b: Cost) -> Cost {
    if a.micros == 0.0 || b.micros < a.micros {
        b
    } else {
        a
    }
}

/// Users as the pipeline bench makes them: created, each with a `sink` destination.
fn users(n: usize, limits: &Limits) -> Result<Vec<(UserId, Option<UserRecord>)>> {
    (0..n)
        .map(|i| {
            let user = UserId::parse(&format!("bench{i}")).context("a bench user id")?;
            let mut record = None;
            let commands = [
                create_user(&user, String::new()),
                Command::AddDestination {
                    destination: sink(),
                },
            ];
            for (k, command) in commands.into_iter().enumerate() {
                let msg = AvatarMessage::Command {
                    command_id: format!("c{k}-{user}"),
                    command,
                    reply_to: None,
                };
                let fx = decide::apply(&user, &mut record, msg, limits, now_ms());
                if fx.reply.is_some_and(|(_, r)| !r.ok) {
                    bail!("the bench's user {user} was refused");
                }
            }
            Ok((user, record))
        })
        .collect()
}

pub fn run(opts: WorkOptions) -> Result<Report> {
    let limits = Limits {
        max_sources: 10,
        max_destinations: 10,
        links: Links {
            base_url: "http://127.0.0.1:8080".into(),
        },
    };
    let subjects = tocsin_bus::Subjects::new("bench");
    let n = opts.notifications;
    let mut report = Report {
        options: opts.clone(),
        baseline: Cost::default(),
        route: Cost::default(),
        checkpoint: Cost::default(),
        read: Cost::default(),
        output_bytes: 0.0,
    };
    for round in 0..opts.rounds.max(1) {
        let mut people = users(opts.users, &limits)?;
        // the messages as the publisher sent them (made before the clock starts)
        let payloads: Vec<bytes::Bytes> = (0..n)
            .map(|i| {
                let user = &people[i % people.len()].0;
                let note = notification(user, format!("w{round}-{i}"), format!("bench {i}"));
                tocsin_bus::encode(&AvatarMessage::Notify { notification: note })
            })
            .collect::<Result<_, _>>()?;
        let (parsed, baseline) = measure(n, || {
            payloads
                .iter()
                .filter(|p| serde_json::from_slice::<serde_json::Value>(p).is_ok())
                .count()
        });
        if parsed != n {
            bail!("the baseline parsed {parsed} of {n} messages");
        }
        let users_n = people.len();
        let (outputs, route) = measure(n, || -> Result<Vec<tocsin_bus::Outgoing>> {
            let mut out = Vec::with_capacity(n * 3);
            for (i, payload) in payloads.iter().enumerate() {
                let (user, record) = &mut people[i % users_n];
                let msg =
                    tocsin_bus::decode_with(payload, "avatar message", AvatarMessage::from_json)?;
                let mut fx = decide::apply(user, record, msg, &limits, now_ms());
                let silo = 0;
                out.extend(tocsin_router::outputs::outputs(
                    &mut fx, user, silo, &subjects, "",
                )?);
            }
            Ok(out)
        });
        let outputs = outputs?;
        let checkpoints = (n / opts.per_checkpoint.max(1)).max(1);
        let (encoded, checkpoint) = measure(n, || -> Result<usize> {
            let mut bytes = 0;
            for i in 0..checkpoints {
                if let Some(rec) = &people[i % users_n].1 {
                    bytes += tocsin_bus::encode(rec)?.len();
                }
            }
            Ok(bytes)
        });
        encoded?;
        let (history, jobs) = (
            subjects.history_envelope(0),
            subjects.delivery(Channel::Sink.as_str()),
        );
        let (read_n, read) = measure(n, || -> Result<usize> {
            let mut read = 0;
            for o in &outputs {
                if o.subject == history {
                    tocsin_bus::decode_with(
                        &o.payload,
                        "history record",
                        HistoryRecord::from_json,
                    )?;
                    read += 1;
                } else if o.subject == jobs {
                    tocsin_bus::decode::<DeliveryJob>(&o.payload, "delivery job")?;
                    read += 1;
                }
            }
            Ok(read)
        });
        // each notification is stored (a history record) and sent to its user's sink (a job)
        let read_n = read_n?;
        if read_n != 2 * n {
            bail!("{read_n} history records and jobs for {n} notifications, not two each");
        }
        report.output_bytes =
            outputs.iter().map(|o| o.payload.len()).sum::<usize>() as f64 / n as f64;
        report.baseline = best(report.baseline, baseline);
        report.route = best(report.route, route);
        report.checkpoint = best(report.checkpoint, checkpoint);
        report.read = best(report.read, read);
    }
    Ok(report)
}
