//! What a benchmark's run cost in CPU: this process's time and its nats-server's, read from
//! `/proc` before and after and divided per message — a figure the machine's other load
//! disturbs far less than a rate does.

use std::time::Duration;

/// Where to read: this process and, when known, the nats-server the bench started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuMeter {
    server: Option<u32>,
}

/// CPU time (user and system) used so far by this process and by the server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuTime {
    process: Duration,
    server: Duration,
}

/// The CPU a run cost per message, in µs: this process (the bench's publisher and readers,
/// and whatever services run in it) and the nats-server.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuPer {
    pub process_us: f64,
    pub server_us: f64,
}

impl CpuPer {
    pub fn total_us(&self) -> f64 {
        self.process_us + self.server_us
    }
}

impl CpuMeter {
    pub(crate) fn new(server: Option<u32>) -> Self {
        Self { server }
    }

    /// Now; None where `/proc` cannot be read (not Linux, or the server has gone).
    pub(crate) fn read(&self) -> Option<CpuTime> {
        let server = match self.server {
            Some(pid) => cpu_of(&pid.to_string())?,
            None => Duration::ZERO,
        };
        Some(CpuTime {
            process: cpu_of("self")?,
            server,
        })
    }
}

impl CpuTime {
    /// What was used from `self` to `later`, per message of `messages`.
    pub(crate) fn per(self, later: CpuTime, messages: usize) -> CpuPer {
        let each = |a: Duration, b: Duration| {
            b.saturating_sub(a).as_secs_f64() * 1e6 / messages.max(1) as f64
        };
        CpuPer {
            process_us: each(self.process, later.process),
            server_us: each(self.server, later.server),
        }
    }
}

/// User and system time of process `pid` ("self" for this one), from `/proc/<pid>/stat`.
fn cpu_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat, clock_ticks())
}

/// Fields 14 and 15 (utime, stime, in clock ticks) of a `stat` line. The command name (field
/// 2) is in parentheses and may itself hold spaces and parentheses, so fields are counted
/// after its last `)`.
fn parse_stat(stat: &str, ticks_per_sec: f64) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // after the name come field 3 (state) onwards: utime is field 14, at index 11
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks_per_sec,
    ))
}

/// `USER_HZ`, the unit of `/proc`'s times: 100 on every architecture Linux runs tocsin on (it
/// is part of the kernel's ABI, whatever the kernel's own tick rate).
fn clock_ticks() -> f64 {
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time_after_a_name_with_spaces_and_parentheses() {
        let line = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 \
                    1000 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line, 100.0), Some(Duration::from_secs_f64(3.0)));
        assert_eq!(parse_stat("4242 (x) S 1 2", 100.0), None);
        assert_eq!(parse_stat("no name here", 100.0), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let meter = CpuMeter::new(None);
        let before = meter.read().expect("/proc is readable on Linux");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let spent = before.per(meter.read().expect("readable"), 1);
        assert!(spent.process_us > 0.0, "{spent:?}");
        assert_eq!(spent.server_us, 0.0);
    }
}
