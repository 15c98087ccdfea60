//! Escalation policies: the steps that reach a person on the right channel at the right time,
//! their limits and checks, and quiet hours. What an avatar keeps while it escalates is in
//! `reach.rs`; what a person writes back, in `replies.rs`.
//!
//! A policy is an ordered list of steps. A step sends to some of the user's destinations
//! (chosen by id or by channel), optionally only when the user is present (or away), and then
//! waits `wait_secs` for an acknowledgement before the next step. A step that has nothing to
//! send — its condition does not hold, or the user has no such destination — ends at once, so
//! an away user is not kept waiting on the IM step.

use crate::local_time;
use crate::{Channel, Destination, Millis, Priority};
use chrono::NaiveTime;
use serde::{Deserialize, Serialize};

/// When a step applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    #[default]
    Always,
    /// Only while the user is present on IM (available or free for chat).
    Present,
    /// Only while the user is not present (away, extended away, do not disturb, offline).
    Away,
}

/// One step of an escalation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Destination ids to send to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
    /// Or every destination on these channels. Both empty: every destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub when: Condition,
    /// How long to wait for an acknowledgement before the next step.
    #[serde(default)]
    pub wait_secs: u64,
}

/// Quiet hours in the user's time zone: only urgent notifications escalate; the rest wait
/// until the quiet hours end or the user is next present.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuietHours {
    /// `HH:MM`, local time.
    pub start: String,
    /// `HH:MM`, local time; may be before `start` (the quiet hours span midnight).
    pub end: String,
    /// An IANA time zone: `Europe/Berlin`, `America/New_York`, `UTC`.
    pub tz: String,
}

/// A user's escalation policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub steps: Vec<Step>,
    /// Steps for urgent (priority 5) notifications; `steps` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgent_steps: Option<Vec<Step>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// Run the steps again this many times while nobody acknowledges (at most
    /// [`MAX_REPEAT`]; the last step's `wait_secs` is the pause before each round).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeat: u32,
    /// When an alert this policy paged for is resolved, tell every destination it reached.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tell_resolved: bool,
    /// An acknowledgement of an alert this policy paged for lasts this long: if the alert is
    /// still open then, its steps start again (60 s to a week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_expires_secs: Option<u64>,
}

pub(crate) fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Limits on a policy.
pub const MAX_STEPS: usize = 10;
pub const MAX_REPEAT: u32 = 5;
pub const MAX_WAIT_SECS: u64 = 7 * 24 * 3600;

impl Policy {
    /// The policy a user without one gets: every destination but SMS at once (IM only while
    /// present); SMS after five minutes without an acknowledgement.
    pub fn default_for(destinations: &[Destination]) -> Policy {
        let non_sms: Vec<Channel> = [
            Channel::Email,
            Channel::Push,
            Channel::Webhook,
            Channel::Sink,
        ]
        .into_iter()
        .filter(|c| destinations.iter().any(|d| d.channel == *c))
        .collect();
        let has = |c: Channel| destinations.iter().any(|d| d.channel == c);
        let mut steps = Vec::new();
        if has(Channel::Xmpp) {
            steps.push(Step {
                channels: vec![Channel::Xmpp],
                when: Condition::Present,
                ..Default::default()
            });
        }
        if !non_sms.is_empty() {
            steps.push(Step {
                channels: non_sms,
                ..Default::default()
            });
        }
        if has(Channel::Sms) {
            if let Some(last) = steps.last_mut() {
                last.wait_secs = 300;
            }
            steps.push(Step {
                channels: vec![Channel::Sms],
                ..Default::default()
            });
        }
        Policy {
            steps,
            ..Default::default()
        }
    }

    /// This policy with every SMS destination taken out: steps that send only SMS are
    /// dropped, a step that sends to every destination sends to every one but SMS. What the
    /// built-in `feeds` policy is made of, so a listing never pages anyone by text message.
    pub fn without_sms(&self, destinations: &[Destination]) -> Policy {
        let strip = |steps: &[Step]| -> Vec<Step> {
            steps
                .iter()
                .filter_map(|s| {
                    let every = s.destinations.is_empty() && s.channels.is_empty();
                    let channels: Vec<Channel> = if every {
                        Channel::ALL
                            .into_iter()
                            .filter(|c| *c != Channel::Sms)
                            .collect()
                    } else {
                        s.channels
                            .iter()
                            .copied()
                            .filter(|c| *c != Channel::Sms)
                            .collect()
                    };
                    let ids: Vec<String> = s
                        .destinations
                        .iter()
                        .filter(|id| {
                            destinations
                                .iter()
                                .any(|d| &d.id == *id && d.channel != Channel::Sms)
                        })
                        .cloned()
                        .collect();
                    (!channels.is_empty() || !ids.is_empty()).then_some(Step {
                        destinations: ids,
                        channels,
                        when: s.when,
                        wait_secs: s.wait_secs,
                    })
                })
                .collect()
        };
        Policy {
            repeat: self.repeat,
            tell_resolved: self.tell_resolved,
            ack_expires_secs: self.ack_expires_secs,
            steps: strip(&self.steps),
            urgent_steps: self
                .urgent_steps
                .as_deref()
                .map(strip)
                .filter(|s| !s.is_empty()),
            quiet_hours: self.quiet_hours.clone(),
        }
    }

    /// Whether any step names destination `id`.
    pub fn names_destination(&self, id: &str) -> bool {
        self.steps
            .iter()
            .chain(self.urgent_steps.iter().flatten())
            .any(|s| s.destinations.iter().any(|d| d == id))
    }

    /// Check a policy's name: 1-32 of `a-z 0-9 - _`, starting with a letter or digit.
    pub fn validate_name(name: &str) -> Result<(), String> {
        let ok = (1..=32).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{name:?} is not a policy name: 1-32 of a-z, 0-9, - and _"
            ))
        }
    }

    /// The steps for a notification of `priority`.
    pub fn steps_for(&self, priority: Priority) -> &[Step] {
        match &self.urgent_steps {
            Some(s) if priority >= Priority::URGENT => s,
            _ => &self.steps,
        }
    }

    /// Check a policy against the user's destinations; every problem is listed, each naming
    /// its field (`steps[0].destinations`).
    pub fn problems(&self, destinations: &[Destination]) -> Vec<crate::Invalid> {
        use crate::Invalid;
        let mut p = Vec::new();
        let mut check = |name: &str, steps: &[Step]| {
            if steps.is_empty() {
                p.push(Invalid::new(name, "at least one step is needed"));
            }
            if steps.len() > MAX_STEPS {
                p.push(Invalid::new(name, format!("at most {MAX_STEPS} steps")));
            }
            for (i, s) in steps.iter().enumerate() {
                for d in &s.destinations {
                    if !destinations.iter().any(|x| &x.id == d) {
                        p.push(Invalid::new(
                            &format!("{name}[{i}].destinations"),
                            format!("no destination {d}"),
                        ));
                    }
                }
                if s.wait_secs > MAX_WAIT_SECS {
                    p.push(Invalid::new(
                        &format!("{name}[{i}].wait_secs"),
                        format!("at most {MAX_WAIT_SECS} (a week)"),
                    ));
                }
            }
        };
        check("steps", &self.steps);
        if let Some(u) = &self.urgent_steps {
            check("urgent_steps", u);
        }
        if let Some(t) = self.ack_expires_secs
            && !(60..=MAX_WAIT_SECS).contains(&t)
        {
            p.push(Invalid::new(
                "ack_expires_secs",
                format!("60-{MAX_WAIT_SECS} seconds (a minute to a week)"),
            ));
        }
        if self.repeat > MAX_REPEAT {
            p.push(Invalid::new("repeat", format!("at most {MAX_REPEAT}")));
        }
        if self.repeat > 0 && self.steps.last().is_none_or(|s| s.wait_secs == 0) {
            p.push(Invalid::new(
                "repeat",
                "the last step needs a wait_secs: the pause before the steps run again",
            ));
        }
        if let Some(q) = &self.quiet_hours
            && let Err(e) = q.parse()
        {
            p.push(Invalid::new("quiet_hours", e));
        }
        p
    }
}

/// What one step of a policy would do for a notification sent now (the web app's preview).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedStep {
    /// 0-based, in the steps for the notification's priority.
    pub index: usize,
    /// When the step fires, counted from the notification, if nobody acknowledges before.
    pub after_secs: u64,
    /// The destination ids it sends to; empty: it is skipped.
    pub destinations: Vec<String>,
    /// Why it sends to nobody, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<&'static str>,
}

impl Policy {
    /// What this policy does for a notification of `priority` sent now, with presence
    /// `present` as it is, step by step (the steps as the router fires them: a step with no
    /// one to send to ends at once). Quiet hours are the caller's to tell: they hold
    /// non-urgent notifications before any step.
    pub fn plan(
        &self,
        priority: Priority,
        destinations: &[Destination],
        present: bool,
    ) -> Vec<PlannedStep> {
        let mut at = 0u64;
        let mut plan = Vec::new();
        for (index, step) in self.steps_for(priority).iter().enumerate() {
            let targets = step.targets_now(destinations, present);
            let skipped = if !step.applies(present) {
                Some(if present {
                    "only while you are away"
                } else {
                    "only while you are present"
                })
            } else if targets.is_empty() {
                Some("you have no destination it names")
            } else {
                None
            };
            plan.push(PlannedStep {
                index,
                after_secs: at,
                destinations: targets.iter().map(|d| d.id.clone()).collect(),
                skipped,
            });
            if !targets.is_empty() {
                at = at.saturating_add(step.wait_secs);
            }
        }
        plan
    }
}

impl Step {
    /// Whether the step applies given the user's presence.
    pub fn applies(&self, present: bool) -> bool {
        match self.when {
            Condition::Always => true,
            Condition::Present => present,
            Condition::Away => !present,
        }
    }

    /// The destinations the step sends to now: none when its condition does not hold.
    pub fn targets_now<'a>(
        &self,
        destinations: &'a [Destination],
        present: bool,
    ) -> Vec<&'a Destination> {
        if self.applies(present) {
            self.targets(destinations)
        } else {
            vec![]
        }
    }

    /// The destinations this step names, in the user's order; never one still waiting for
    /// its owner to confirm it.
    pub fn targets<'a>(&self, destinations: &'a [Destination]) -> Vec<&'a Destination> {
        destinations
            .iter()
            .filter(|d| {
                d.verified()
                    && ((self.destinations.is_empty() && self.channels.is_empty())
                        || self.destinations.contains(&d.id)
                        || self.channels.contains(&d.channel))
            })
            .collect()
    }
}

impl QuietHours {
    fn parse(&self) -> Result<(NaiveTime, NaiveTime, chrono_tz::Tz), String> {
        let start = local_time::time_of_day(&self.start, "start")?;
        let end = local_time::time_of_day(&self.end, "end")?;
        let tz = local_time::zone(&self.tz, "tz")?;
        if start == end {
            return Err("start and end are the same time".into());
        }
        Ok((start, end, tz))
    }

    /// If `now` falls in the quiet hours, when they end.
    pub fn ends_at(&self, now: Millis) -> Option<Millis> {
        let (start, end, tz) = self.parse().ok()?;
        let t = local_time::local_time(now, tz)?;
        let quiet = if start < end {
            t >= start && t < end
        } else {
            t >= start || t < end
        };
        if !quiet {
            return None;
        }
        local_time::next_at(now, end, tz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Reach;

    fn dest(id: &str, channel: Channel) -> Destination {
        Destination {
            id: id.into(),
            channel,
            address: String::new(),
            secret: None,
            label: String::new(),
            push_format: None,
            throttle: None,
            verification: None,
            created_at_ms: 0,
        }
    }

    #[test]
    fn default_policy_sends_im_and_the_rest_then_sms() {
        let ds = [
            dest("x", Channel::Xmpp),
            dest("s", Channel::Sms),
            dest("e", Channel::Email),
        ];
        let p = Policy::default_for(&ds);
        assert_eq!(p.steps.len(), 3);
        assert_eq!(p.steps[0].when, Condition::Present);
        assert_eq!(p.steps[0].wait_secs, 0);
        assert_eq!(p.steps[1].channels, [Channel::Email]);
        assert_eq!(p.steps[1].wait_secs, 300);
        assert_eq!(p.steps[2].channels, [Channel::Sms]);
        // webhooks only: one step, everything at once
        let p = Policy::default_for(&[dest("w", Channel::Webhook)]);
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].targets(&[dest("w", Channel::Webhook)]).len(), 1);
        assert!(p.problems(&[]).is_empty());
    }

    #[test]
    fn the_feeds_policy_is_the_default_without_sms() {
        let ds = [
            dest("x", Channel::Xmpp),
            dest("s", Channel::Sms),
            dest("e", Channel::Email),
        ];
        let every = Step {
            wait_secs: 60,
            ..Default::default()
        };
        let by_id = Step {
            destinations: vec!["s".into(), "e".into()],
            ..Default::default()
        };
        let sms_only = Step {
            channels: vec![Channel::Sms],
            ..Default::default()
        };
        let p = Policy {
            steps: vec![every, sms_only.clone(), by_id],
            urgent_steps: Some(vec![sms_only]),
            ..Default::default()
        };
        let f = p.without_sms(&ds);
        assert_eq!(f.steps.len(), 2, "the SMS-only step is gone: {f:?}");
        let names =
            |s: &Step| -> Vec<String> { s.targets(&ds).iter().map(|d| d.id.clone()).collect() };
        assert_eq!(names(&f.steps[0]), ["x", "e"]);
        assert_eq!(f.steps[0].wait_secs, 60);
        assert_eq!(names(&f.steps[1]), ["e"]);
        assert_eq!(
            f.urgent_steps, None,
            "urgent ones fall back to the steps left"
        );
        // and the built-in `feeds` is made of the user's default
        let reach = Reach {
            policy: Some(Box::new(p.clone())),
            ..Default::default()
        };
        assert_eq!(reach.policy_named("feeds", &ds), (f, false));
        assert_eq!(reach.policy_named("default", &ds), (p.clone(), true));
        assert_eq!(reach.policy_named("gone", &ds), (p, true));
        assert!(reach.has_policy("feeds") && !reach.has_policy("gone"));
    }

    #[test]
    fn policy_problems_name_the_field() {
        let p = Policy {
            steps: vec![Step {
                destinations: vec!["nope".into()],
                wait_secs: MAX_WAIT_SECS + 1,
                ..Default::default()
            }],
            urgent_steps: Some(vec![]),
            quiet_hours: Some(QuietHours {
                start: "25:00".into(),
                end: "07:00".into(),
                tz: "Mars/Olympus".into(),
            }),
            ..Default::default()
        };
        let problems = p.problems(&[]);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].to_string().starts_with("steps[0].destinations"));
        assert!(problems[2].to_string().starts_with("urgent_steps"));
        assert!(problems[3].to_string().starts_with("quiet_hours: start"));
    }

    #[test]
    fn quiet_hours_across_midnight_in_a_time_zone() {
        let q = QuietHours {
            start: "22:00".into(),
            end: "07:00".into(),
            tz: "Europe/Berlin".into(),
        };
        // 2026-01-15 21:30 UTC = 22:30 in Berlin (CET, +1): quiet until 06:00 UTC next day
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        assert_eq!(
            q.ends_at(at("2026-01-15T21:30:00Z")),
            Some(at("2026-01-16T06:00:00Z"))
        );
        // 05:00 Berlin the same night
        assert_eq!(
            q.ends_at(at("2026-01-16T04:00:00Z")),
            Some(at("2026-01-16T06:00:00Z"))
        );
        assert_eq!(q.ends_at(at("2026-01-16T12:00:00Z")), None);
        // summer time (+2)
        assert_eq!(
            q.ends_at(at("2026-07-15T21:00:00Z")),
            Some(at("2026-07-16T05:00:00Z"))
        );
    }
}
