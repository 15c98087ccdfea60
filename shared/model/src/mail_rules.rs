//! E-mail rules: what a user's inbound mail means beyond "a notification". A rule matches
//! regular expressions against the sender, the subject and the body, and sets the priority, the
//! alert key (a named group `key`) or says the mail resolves that key — so forwarded
//! Grafana, Zabbix or Nagios mail gets the same lifecycle as an alert from their webhooks.

use crate::{Invalid, Priority};
use serde::{Deserialize, Serialize};

/// One rule; the first rule whose every given expression matches decides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailRule {
    /// On the sender's address (the original sender of a forwarded message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// On the subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// On the body as text (its first 8,000 characters, as kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The notification's priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// The mail resolves the alert whose key its `key` group names, instead of being one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resolve: bool,
    /// The mail announces a listing (a classifieds or shop alert): its first link is the
    /// listing, so the same listing from a feed or another mail reaches the user once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub listing: bool,
}

/// What the first matching rule decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMatch {
    /// Its position in the list, from 1 (for timelines).
    pub rule: usize,
    pub priority: Option<Priority>,
    /// `mail:<the key group>`, when a matching expression has a group named `key`.
    pub key: Option<String>,
    pub resolve: bool,
    /// The mail is a listing: its first link is its key ([`MailRule::listing`]).
    pub listing: bool,
}

/// How many rules a user keeps.
pub const MAX_RULES: usize = 20;

/// The one named group that gives a rule's alert key.
const KEY_GROUP: &str = "key";

impl MailRule {
    fn patterns(&self) -> [(&'static str, Option<&String>); 3] {
        [
            ("from", self.from.as_ref()),
            ("subject", self.subject.as_ref()),
            ("body", self.body.as_ref()),
        ]
    }
}

/// Check a user's rules; every problem names its field (`rules[1].subject`).
pub fn validate(rules: &[MailRule]) -> Result<(), Invalid> {
    if rules.len() > MAX_RULES {
        return Err(Invalid::new("rules", format!("at most {MAX_RULES} rules")));
    }
    for (i, rule) in rules.iter().enumerate() {
        let field = |f: &str| format!("rules[{i}].{f}");
        let mut has_key = false;
        let mut any = false;
        for (name, pattern) in rule.patterns() {
            let Some(p) = pattern else { continue };
            any = true;
            if p.len() > crate::filter::MAX_REGEX_LEN {
                return Err(Invalid::new(
                    &field(name),
                    format!("at most {} bytes", crate::filter::MAX_REGEX_LEN),
                ));
            }
            let re = crate::filter::build_regex(p).map_err(|e| {
                Invalid::new(&field(name), format!("not a regular expression: {e}"))
            })?;
            has_key |= re.capture_names().flatten().any(|n| n == KEY_GROUP);
        }
        if !any {
            return Err(Invalid::new(
                &field("subject"),
                "a rule needs from, subject or body to match",
            ));
        }
        if rule.listing && (rule.resolve || has_key) {
            return Err(Invalid::new(
                &field("listing"),
                "a listing's key is its link: a rule marks a listing, or names an alert (a key group, resolve), not both",
            ));
        }
        if rule.resolve && !has_key {
            return Err(Invalid::new(
                &field("resolve"),
                "a rule that resolves needs a group named key, e.g. ^\\[RESOLVED\\] (?P<key>.+)$",
            ));
        }
    }
    Ok(())
}

/// How many compiled expressions the process keeps (all users' rules; past it, the cache
/// starts again).
const CACHE: usize = 4096;

/// `pattern` compiled, from a process-wide cache: compiling can take a millisecond, and a
/// router would otherwise spend it for every mail of every user with rules, on the worker
/// that serves other users too.
fn compiled(pattern: &str) -> Option<regex::Regex> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static COMPILED: OnceLock<Mutex<HashMap<String, regex::Regex>>> = OnceLock::new();
    let cache = COMPILED.get_or_init(Mutex::default);
    if let Some(re) = cache.lock().ok()?.get(pattern) {
        return Some(re.clone());
    }
    let re = crate::filter::build_regex(pattern).ok()?;
    let mut map = cache.lock().ok()?;
    if map.len() >= CACHE {
        map.clear();
    }
    map.insert(pattern.to_owned(), re.clone());
    Some(re)
}

/// The first rule that matches a mail from `from` with `subject` and `body`. The expressions are
/// the `regex` crate's: linear in the input, never backtracking.
pub fn first_match(rules: &[MailRule], from: &str, subject: &str, body: &str) -> Option<RuleMatch> {
    'rules: for (i, rule) in rules.iter().enumerate() {
        let mut key = None;
        for (name, pattern) in rule.patterns() {
            let Some(p) = pattern else { continue };
            // validated when set; a rule that no longer compiles matches nothing
            let Some(re) = compiled(p) else {
                continue 'rules;
            };
            let hay = match name {
                "from" => from,
                "subject" => subject,
                _ => body,
            };
            let Some(caps) = re.captures(hay) else {
                continue 'rules;
            };
            if let Some(k) = caps.name(KEY_GROUP) {
                let k = k.as_str().trim();
                if !k.is_empty() {
                    key = Some(format!("mail:{k}"));
                }
            }
        }
        return Some(RuleMatch {
            rule: i + 1,
            priority: rule.priority,
            key,
            resolve: rule.resolve,
            listing: rule.listing,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grafana's alert mail: `[FIRING:1] HighCPU (web1)`, then `[RESOLVED] HighCPU (web1)`.
    fn grafana() -> Vec<MailRule> {
        vec![
            MailRule {
                subject: Some(r"^\[RESOLVED\] (?P<key>.+)$".into()),
                resolve: true,
                ..Default::default()
            },
            MailRule {
                from: Some(r"@grafana\.example\.org$".into()),
                subject: Some(r"^\[FIRING:\d+\] (?P<key>.+)$".into()),
                priority: Some(Priority::new(5).unwrap()),
                ..Default::default()
            },
        ]
    }

    #[test]
    fn the_first_matching_rule_decides_and_names_the_key() {
        let rules = grafana();
        validate(&rules).unwrap();
        let firing = first_match(
            &rules,
            "alerts@grafana.example.org",
            "[FIRING:1] HighCPU (web1)",
            "",
        )
        .unwrap();
        assert_eq!(
            firing,
            RuleMatch {
                rule: 2,
                priority: Some(Priority::new(5).unwrap()),
                key: Some("mail:HighCPU (web1)".into()),
                resolve: false,
                listing: false,
            }
        );
        let resolved = first_match(&rules, "x@y.org", "[RESOLVED] HighCPU (web1)", "").unwrap();
        assert_eq!((resolved.rule, resolved.resolve), (1, true));
        assert_eq!(resolved.key, firing.key, "the same alert");
        // every given expression must match: another sender's FIRING mail is no alert
        assert_eq!(
            first_match(&rules, "eve@x.org", "[FIRING:1] HighCPU", ""),
            None
        );
    }

    /// The Zabbix and Nagios patterns docs/alerts.md gives, on those tools' default subjects.
    #[test]
    fn the_documented_zabbix_and_nagios_rules_pair_problem_and_recovery() {
        let rule = |subject: &str, resolve: bool| MailRule {
            subject: Some(subject.into()),
            resolve,
            ..Default::default()
        };
        for (rules, problem, recovery) in [
            (
                vec![
                    rule(r"^Resolved(?: in [^:]+)?: (?P<key>.+)$", true),
                    rule(r"^Problem: (?P<key>.+)$", false),
                ],
                "Problem: High CPU utilization on web1",
                "Resolved in 5m 12s: High CPU utilization on web1",
            ),
            (
                vec![
                    rule(r"^\*\* RECOVERY Service Alert: (?P<key>\S+)", true),
                    rule(r"^\*\* PROBLEM Service Alert: (?P<key>\S+)", false),
                ],
                "** PROBLEM Service Alert: web1/HTTP is CRITICAL **",
                "** RECOVERY Service Alert: web1/HTTP is OK **",
            ),
        ] {
            validate(&rules).unwrap();
            let p = first_match(&rules, "", problem, "").unwrap();
            let r = first_match(&rules, "", recovery, "").unwrap();
            assert!(!p.resolve && r.resolve, "{problem}");
            assert!(p.key.is_some() && p.key == r.key, "{problem}: {p:?} {r:?}");
        }
    }

    #[test]
    fn bad_rules_are_refused_by_field() {
        let field = |rules: Vec<MailRule>| validate(&rules).unwrap_err().field;
        let bad = MailRule {
            subject: Some("([unclosed".into()),
            ..Default::default()
        };
        assert_eq!(
            field(vec![MailRule::default(), bad.clone()]),
            "rules[0].subject"
        );
        assert_eq!(field(vec![bad]), "rules[0].subject");
        let no_key = MailRule {
            subject: Some("RESOLVED".into()),
            resolve: true,
            ..Default::default()
        };
        assert_eq!(field(vec![no_key]), "rules[0].resolve");
        let listing_and_alert = MailRule {
            subject: Some("^New (?P<key>.+)$".into()),
            listing: true,
            ..Default::default()
        };
        assert_eq!(field(vec![listing_and_alert]), "rules[0].listing");
        let huge = MailRule {
            body: Some("a".repeat(501)),
            ..Default::default()
        };
        assert_eq!(field(vec![huge]), "rules[0].body");
        assert_eq!(field(vec![grafana()[0].clone(); MAX_RULES + 1]), "rules");
        // an expression that would blow up compiled size is refused, not built
        let big = MailRule {
            body: Some(r"\w{1000}\w{1000}\w{1000}".into()),
            ..Default::default()
        };
        assert_eq!(field(vec![big]), "rules[0].body");
    }
}
