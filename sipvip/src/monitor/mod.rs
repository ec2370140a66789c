//! Health monitors: SIP OPTIONS over UDP or TCP, TCP connect, ICMP echo.
//!
//! Probers only observe and report [`Observation`]s; [`Health`] turns them into up/down with
//! BIG-IP's timing: a probe every `interval`; down when no valid reply has arrived for
//! `timeout` (or after `fall` unanswered probes); up on the first valid reply (or after `rise`
//! of them). An ICMP unreachable or a TCP RST is down at once.

pub mod probe;
pub mod sip;

use std::time::Duration;

use tokio::time::Instant;

/// Identifies one monitor instance: which VIP, which of its members, which monitor (indexes
/// in the configuration), and whether it probes the member's IPv6 address (a dual-stack
/// VIP's members are probed on both; a member is up when every instance is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonitorKey {
    pub vip: usize,
    pub member: usize,
    pub monitor: usize,
    pub v6: bool,
}

/// One observation of one monitor instance, as a prober reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub key: MonitorKey,
    pub obs: Observation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HardDown {
    /// ICMP port unreachable for a UDP probe (the SIP process is gone).
    PortUnreachable,
    /// ICMP host/net unreachable.
    HostUnreachable,
    /// TCP RST.
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// A valid reply; `up` says whether its status code counts as up. `code` is the SIP
    /// status (0 for TCP connect and ICMP echo).
    Reply { code: u16, up: bool, rtt: Duration },
    /// A probe went unanswered for a whole interval.
    Missed,
    /// Down at once.
    Hard(HardDown),
}

/// One monitor instance's state.
#[derive(Clone, Debug)]
pub struct Health {
    pub up: bool,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: Option<u32>,
    /// When the instance started (the deadline base before any reply).
    pub started: Instant,
    pub last_ok: Option<Instant>,
    pub ok_streak: u32,
    pub miss_streak: u32,
    pub last_code: Option<u16>,
    pub last_rtt: Option<Duration>,
    pub changed: Instant,
    pub reason: &'static str,
    /// Results observed (replies, misses, hard failures): a monitor that has run once has at
    /// least one.
    pub results: u64,
}

impl Health {
    /// `up` is the initial state: false for a new member (it must answer first), true for
    /// the active member of an adopted datapath (its deadline then runs from `now`).
    pub fn new(
        now: Instant,
        timeout: Duration,
        rise: Option<u32>,
        fall: Option<u32>,
        up: bool,
    ) -> Self {
        Health {
            up,
            timeout,
            rise: rise.unwrap_or(1).max(1),
            fall,
            started: now,
            last_ok: None,
            ok_streak: 0,
            miss_streak: 0,
            last_code: None,
            last_rtt: None,
            changed: now,
            reason: if up { "adopted" } else { "not yet checked" },
            results: 0,
        }
    }

    fn set(&mut self, now: Instant, up: bool, reason: &'static str) -> Option<bool> {
        self.reason = reason;
        if self.up == up {
            return None;
        }
        self.up = up;
        self.changed = now;
        Some(up)
    }

    /// Applies an observation; returns the new state when it changed.
    pub fn observe(&mut self, now: Instant, obs: Observation) -> Option<bool> {
        self.results += 1;
        match obs {
            Observation::Reply { code, up, rtt } => {
                self.last_code = Some(code);
                self.last_rtt = Some(rtt);
                self.miss_streak = 0;
                if !up {
                    self.ok_streak = 0;
                    return self.set(now, false, "rejected status code");
                }
                self.last_ok = Some(now);
                self.ok_streak += 1;
                if !self.up && self.ok_streak >= self.rise {
                    return self.set(now, true, "valid reply");
                }
                None
            }
            Observation::Missed => {
                self.ok_streak = 0;
                self.miss_streak += 1;
                match self.fall {
                    Some(f) if self.up && self.miss_streak >= f => {
                        self.set(now, false, "unanswered probes (fall)")
                    }
                    _ => None,
                }
            }
            Observation::Hard(h) => {
                self.ok_streak = 0;
                self.set(
                    now,
                    false,
                    match h {
                        HardDown::PortUnreachable => "ICMP port unreachable",
                        HardDown::HostUnreachable => "ICMP host unreachable",
                        HardDown::Refused => "TCP connection refused",
                    },
                )
            }
        }
    }

    /// When an up instance goes down for lack of replies.
    pub fn deadline(&self) -> Option<Instant> {
        self.up
            .then(|| self.last_ok.unwrap_or(self.started).max(self.started) + self.timeout)
    }

    /// Applies the timeout; returns the new state when it changed.
    pub fn tick(&mut self, now: Instant) -> Option<bool> {
        match self.deadline() {
            Some(d) if now >= d => {
                self.ok_streak = 0;
                self.set(now, false, "no valid reply within timeout")
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn reply() -> Observation {
        Observation::Reply {
            code: 200,
            up: true,
            rtt: MS(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn down_exactly_at_timeout_and_up_on_first_reply() {
        let t0 = Instant::now();
        let mut h = Health::new(t0, MS(4000), None, None, false);
        assert!(!h.up);
        assert_eq!(
            h.observe(Instant::now(), reply()),
            Some(true),
            "up on the first reply"
        );
        tokio::time::advance(MS(1000)).await;
        h.observe(Instant::now(), reply());
        let last = Instant::now();
        tokio::time::advance(MS(3999)).await;
        assert_eq!(
            h.tick(Instant::now()),
            None,
            "still up 1 ms before the timeout"
        );
        assert_eq!(h.deadline(), Some(last + MS(4000)));
        tokio::time::advance(MS(1)).await;
        assert_eq!(
            h.tick(Instant::now()),
            Some(false),
            "down exactly at the timeout"
        );
        assert_eq!(h.reason, "no valid reply within timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn rise_and_fall() {
        let mut h = Health::new(Instant::now(), MS(10_000), Some(3), Some(2), false);
        assert_eq!(h.observe(Instant::now(), reply()), None);
        assert_eq!(h.observe(Instant::now(), Observation::Missed), None);
        assert_eq!(
            h.observe(Instant::now(), reply()),
            None,
            "a miss resets the rise count"
        );
        assert_eq!(h.observe(Instant::now(), reply()), None);
        assert_eq!(
            h.observe(Instant::now(), reply()),
            Some(true),
            "up after 3 in a row"
        );
        assert_eq!(h.observe(Instant::now(), Observation::Missed), None);
        assert_eq!(
            h.observe(Instant::now(), Observation::Missed),
            Some(false),
            "down after 2 misses, before the timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn icmp_and_rst_are_down_at_once() {
        let mut h = Health::new(Instant::now(), MS(4000), None, None, false);
        h.observe(Instant::now(), reply());
        tokio::time::advance(MS(10)).await;
        assert_eq!(
            h.observe(Instant::now(), Observation::Hard(HardDown::PortUnreachable)),
            Some(false)
        );
        assert_eq!(h.reason, "ICMP port unreachable");
        h.observe(Instant::now(), reply());
        assert_eq!(
            h.observe(Instant::now(), Observation::Hard(HardDown::Refused)),
            Some(false)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_codes_are_down_and_an_adopted_member_gets_a_full_timeout() {
        let t0 = Instant::now();
        let mut h = Health::new(t0, MS(4000), None, None, true);
        assert_eq!(h.deadline(), Some(t0 + MS(4000)));
        assert_eq!(
            h.observe(
                t0,
                Observation::Reply {
                    code: 503,
                    up: false,
                    rtt: MS(1)
                }
            ),
            Some(false)
        );
        assert_eq!(h.reason, "rejected status code");
    }
}
