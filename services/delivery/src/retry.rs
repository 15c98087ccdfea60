//! The retry decision, kept apart from sending: after each attempt, whether the job is done
//! (delivered, or failed for good) or is tried again, and when. Pure.

use crate::webhook::SendResult;
use std::time::Duration;

/// What follows an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The job is settled: delivered or not, with the detail for its timeline.
    Done { delivered: bool, detail: String },
    /// Try again after this long (the job stays unacked meanwhile).
    RetryIn(Duration),
}

/// Decide after attempt number `attempt` (1-based) of at most `max_attempts` ended in `result`.
/// A transient failure is retried with backoff (never before the provider's `Retry-After`)
/// until the attempts are used up; a permanent failure is final at once.
pub fn next_step(result: SendResult, attempt: i64, max_attempts: i64) -> Next {
    match result {
        SendResult::Delivered(detail) => Next::Done {
            delivered: true,
            detail,
        },
        SendResult::Permanent(detail) => Next::Done {
            delivered: false,
            detail,
        },
        SendResult::Transient { detail, .. } if attempt >= max_attempts => Next::Done {
            delivered: false,
            detail: format!("gave up after {attempt} attempts: {detail}"),
        },
        SendResult::Transient { after, .. } => {
            Next::RetryIn(tocsin_bus::backoff(attempt, after.unwrap_or_default()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(after: Option<Duration>) -> SendResult {
        SendResult::Transient {
            detail: "503".into(),
            after,
        }
    }

    #[test]
    fn delivered_and_permanent_are_final_at_once() {
        assert_eq!(
            next_step(SendResult::Delivered("200".into()), 1, 10),
            Next::Done {
                delivered: true,
                detail: "200".into()
            }
        );
        assert_eq!(
            next_step(SendResult::Permanent("404".into()), 1, 10),
            Next::Done {
                delivered: false,
                detail: "404".into()
            }
        );
    }

    #[test]
    fn transient_failures_back_off_until_the_attempts_are_used_up() {
        let first = next_step(transient(None), 1, 3);
        let second = next_step(transient(None), 2, 3);
        match (first, second) {
            (Next::RetryIn(a), Next::RetryIn(b)) => assert!(b > a, "{a:?} then {b:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            next_step(transient(None), 3, 3),
            Next::Done {
                delivered: false,
                detail: "gave up after 3 attempts: 503".into()
            }
        );
    }

    #[test]
    fn retry_after_is_a_floor() {
        let wait = Duration::from_secs(30);
        assert_eq!(next_step(transient(Some(wait)), 1, 10), Next::RetryIn(wait));
    }
}
