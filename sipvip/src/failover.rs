//! The failover decision: one active member per VIP.
//!
//! - While the active member is up it stays active; an old primary that comes back does not
//!   take over again (no flap-back).
//! - When it goes down (or is forced offline) and another member is up, flip at once to the
//!   best one (highest priority, then configuration order).
//! - When no member is up: keep the last active member, or drop (per VIP).
//!
//! [`Supervisor`] holds every monitor's [`Health`] and every VIP's state and returns the flips
//! to carry out; [`run`] drives it from events and the monitors' deadlines.

use std::{collections::BTreeMap, time::Duration};

use tokio::{sync::mpsc, time::Instant};

use crate::{
    config::AllDownPolicy,
    monitor::{Health, MonitorKey, Observation, Report},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub name: String,
    pub priority: i32,
    /// All monitors up.
    pub up: bool,
    /// Forced offline by the operator (BIG-IP "Forced Offline").
    pub disabled: bool,
    /// The last valid reply from any of its monitors.
    pub last_ok: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipState {
    pub name: String,
    pub members: Vec<MemberState>,
    pub active: Option<usize>,
    pub active_since: Instant,
    pub policy: AllDownPolicy,
    pub failovers: u64,
    /// The last flip's time from the failed member's last valid reply to the flip.
    pub last_failover_time: Option<Duration>,
    /// With no active member yet, the first choice waits until then, so that every member
    /// has answered its first probe and priority, not speed, decides.
    pub settle_until: Option<Instant>,
    /// A healthy member the VIP was moved away from (manual failover, forced offline): its
    /// established TCP connections stay on it until it goes down or the VIP moves again.
    pub draining: Option<usize>,
}

/// A change of active member to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flip {
    pub vip: usize,
    pub from: Option<usize>,
    pub to: Option<usize>,
    pub reason: String,
    /// From the old member's last valid reply to the flip.
    pub since_last_ok: Option<Duration>,
    pub at: Instant,
    /// The member that keeps its established flows after this flip: the old one when it is
    /// healthy (BIG-IP "Forced Offline" lets active connections finish).
    pub draining: Option<usize>,
    /// The member whose tracked flows are dropped (it is down, so they are dead).
    pub forget: Option<usize>,
}

impl Flip {
    /// True when the active member changes (false: only a drain ends).
    pub fn moves(&self) -> bool {
        self.from != self.to
    }
}

impl VipState {
    pub fn new(
        name: String,
        members: Vec<MemberState>,
        active: Option<usize>,
        policy: AllDownPolicy,
        now: Instant,
    ) -> Self {
        VipState {
            name,
            members,
            active,
            active_since: now,
            policy,
            failovers: 0,
            last_failover_time: None,
            settle_until: None,
            draining: None,
        }
    }

    fn usable(&self, i: usize) -> bool {
        self.members[i].up && !self.members[i].disabled
    }

    fn best(&self) -> Option<usize> {
        (0..self.members.len())
            .filter(|&i| self.usable(i))
            .max_by_key(|&i| (self.members[i].priority, std::cmp::Reverse(i)))
    }

    /// Decides; returns a flip when the active member must change.
    pub fn evaluate(&mut self, vip: usize, now: Instant, reason: &str) -> Option<Flip> {
        if self.active.is_some_and(|a| self.usable(a)) {
            return None;
        }
        if self.active.is_none() && self.settle_until.is_some_and(|t| now < t) {
            return None;
        }
        let to = match (self.active, self.best()) {
            (_, Some(c)) => Some(c),
            (Some(_), None) if self.policy == AllDownPolicy::KeepLast => return None,
            (Some(_), None) => None,
            (None, None) => return None,
        };
        Some(self.apply(vip, to, now, reason))
    }

    fn apply(&mut self, vip: usize, to: Option<usize>, now: Instant, reason: &str) -> Flip {
        let from = self.active;
        let since_last_ok = from
            .and_then(|f| self.members[f].last_ok)
            .map(|t| now.saturating_duration_since(t));
        self.active = to;
        self.active_since = now;
        if from.is_some() {
            self.failovers += 1;
            self.last_failover_time = since_last_ok;
        }
        // A healthy old member keeps its flows; a failed one loses them.
        let healthy = from.filter(|&f| self.members[f].up && to.is_some());
        self.draining = healthy;
        Flip {
            vip,
            from,
            to,
            reason: reason.to_string(),
            since_last_ok,
            at: now,
            draining: healthy,
            forget: from.filter(|_| healthy.is_none()),
        }
    }

    /// The operator's `failover VIP --to MEMBER`.
    pub fn force(&mut self, vip: usize, to: usize, now: Instant) -> Result<Option<Flip>, String> {
        if to >= self.members.len() {
            return Err("no such member".into());
        }
        if self.members[to].disabled {
            return Err(format!(
                "{} is forced offline; enable it first",
                self.members[to].name
            ));
        }
        if self.active == Some(to) {
            return Ok(None);
        }
        Ok(Some(self.apply(vip, Some(to), now, "manual failover")))
    }
}

/// Every monitor's health and every VIP's decision state.
pub struct Supervisor {
    pub health: BTreeMap<MonitorKey, Health>,
    pub vips: Vec<VipState>,
}

impl Supervisor {
    /// Recomputes member `m` of VIP `v` from its monitors; returns a flip if one is due.
    fn member_changed(&mut self, v: usize, m: usize, now: Instant, reason: &str) -> Option<Flip> {
        let up = self
            .health
            .iter()
            .filter(|(k, _)| k.vip == v && k.member == m)
            .all(|(_, h)| h.up);
        let last_ok = self
            .health
            .iter()
            .filter(|(k, _)| k.vip == v && k.member == m)
            .filter_map(|(_, h)| h.last_ok)
            .max();
        let st = &mut self.vips[v].members[m];
        st.last_ok = last_ok.or(st.last_ok);
        if st.up == up {
            return None;
        }
        st.up = up;
        let name = st.name.clone();
        let vs = &mut self.vips[v];
        if !up && vs.draining == Some(m) {
            // The draining member failed: its connections are gone, and so is the drain.
            vs.draining = None;
            return Some(Flip {
                vip: v,
                from: vs.active,
                to: vs.active,
                reason: format!("{name} down: {reason}; its drain ends"),
                since_last_ok: None,
                at: now,
                draining: None,
                forget: Some(m),
            });
        }
        vs.evaluate(
            v,
            now,
            &format!("{name} {}: {reason}", if up { "up" } else { "down" }),
        )
    }

    /// Applies one observation.
    pub fn observe(&mut self, key: MonitorKey, obs: Observation, now: Instant) -> Option<Flip> {
        let h = self.health.get_mut(&key)?;
        let changed = h.observe(now, obs);
        let reason = h.reason;
        // Keep the member's last good reply current even without a state change.
        if let Observation::Reply { up: true, .. } = obs {
            self.vips[key.vip].members[key.member].last_ok = Some(now);
        }
        changed.and_then(|_| self.member_changed(key.vip, key.member, now, reason))
    }

    /// Applies timeouts and settling periods due at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Flip> {
        let due: Vec<(MonitorKey, &'static str)> = self
            .health
            .iter_mut()
            .filter_map(|(k, h)| h.tick(now).map(|_| (*k, h.reason)))
            .collect();
        let mut flips: Vec<Flip> = due
            .into_iter()
            .filter_map(|(k, reason)| self.member_changed(k.vip, k.member, now, reason))
            .collect();
        for (i, v) in self.vips.iter_mut().enumerate() {
            if v.settle_until.is_some_and(|t| now >= t) {
                v.settle_until = None;
                flips.extend(v.evaluate(i, now, "first choice after the first probes"));
            }
        }
        flips
    }

    /// The earliest monitor deadline or end of a settling period.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.health
            .values()
            .filter_map(Health::deadline)
            .chain(self.vips.iter().filter_map(|v| v.settle_until))
            .min()
    }

    pub fn set_disabled(
        &mut self,
        v: usize,
        m: usize,
        disabled: bool,
        now: Instant,
    ) -> Option<Flip> {
        let st = &mut self.vips[v].members[m];
        st.disabled = disabled;
        let name = st.name.clone();
        self.vips[v].evaluate(
            v,
            now,
            &format!(
                "{name} {}",
                if disabled {
                    "forced offline"
                } else {
                    "enabled"
                }
            ),
        )
    }
}

/// Carries out flips (the datapath write, conntrack reselect, gratuitous ARP, the log event).
pub trait Actuator {
    fn flip(&mut self, sup: &Supervisor, flip: &Flip);
    /// A probe of member `member` of VIP `vip` failed (no valid reply, a refused or
    /// unreachable port): a member given by a DNS name may have moved.
    fn probe_failed(&mut self, _sup: &Supervisor, _vip: usize, _member: usize) {}
}

/// Receives the flips an operator command decides.
pub type FlipSink<'a> = dyn FnMut(&Supervisor, &Flip) + 'a;
/// An operator command run inside the supervisor loop.
pub type Command = Box<dyn FnOnce(&mut Supervisor, &mut FlipSink) + Send>;

impl From<Report> for Event {
    fn from(r: Report) -> Self {
        Event::Observe(r.key, r.obs)
    }
}

/// Inputs of the supervisor loop.
pub enum Event {
    Observe(MonitorKey, Observation),
    /// Runs a closure with the supervisor and the actuator (operator commands, status).
    With(Command),
    Stop,
}

/// Runs until `Stop` or the channel closes: every flip goes to the actuator as soon as it is
/// decided; timeouts fire exactly at the monitors' deadlines.
pub async fn run<A: Actuator>(sup: &mut Supervisor, rx: &mut mpsc::Receiver<Event>, act: &mut A) {
    loop {
        let deadline = sup.next_deadline();
        let ev = match deadline {
            Some(d) => tokio::select! {
                ev = rx.recv() => ev,
                _ = tokio::time::sleep_until(d) => {
                    for f in sup.tick(Instant::now()) {
                        act.flip(sup, &f);
                    }
                    continue;
                }
            },
            None => rx.recv().await,
        };
        match ev {
            Some(Event::Observe(key, obs)) => {
                let failed = !matches!(obs, Observation::Reply { up: true, .. });
                if let Some(f) = sup.observe(key, obs, Instant::now()) {
                    act.flip(sup, &f);
                }
                if failed {
                    act.probe_failed(sup, key.vip, key.member);
                }
            }
            Some(Event::With(f)) => {
                let mut flips = Vec::new();
                f(sup, &mut |_, fl: &Flip| flips.push(fl.clone()));
                for fl in flips {
                    act.flip(sup, &fl);
                }
            }
            Some(Event::Stop) | None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::HardDown;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// The first monitor of member `member` of the first VIP.
    fn mk(member: usize) -> MonitorKey {
        MonitorKey {
            v6: false,
            vip: 0,
            member,
            monitor: 0,
        }
    }

    fn member(name: &str, priority: i32) -> MemberState {
        MemberState {
            name: name.into(),
            priority,
            up: false,
            disabled: false,
            last_ok: None,
        }
    }

    /// One VIP with primary and backup, one SIP monitor each (1 s / 4 s).
    fn sup(policy: AllDownPolicy) -> Supervisor {
        let now = Instant::now();
        let mut health = BTreeMap::new();
        health.insert(mk(0), Health::new(now, MS(4000), None, None, false));
        health.insert(mk(1), Health::new(now, MS(4000), None, None, false));
        Supervisor {
            health,
            vips: vec![VipState::new(
                "vip".into(),
                vec![member("primary", 10), member("backup", 5)],
                None,
                policy,
                now,
            )],
        }
    }

    fn ok() -> Observation {
        Observation::Reply {
            code: 200,
            up: true,
            rtt: MS(1),
        }
    }

    type Recorded = (Option<usize>, Option<usize>, Instant, Option<Duration>);
    #[derive(Default)]
    struct Recorder(Vec<Recorded>);
    impl Actuator for Recorder {
        fn flip(&mut self, _: &Supervisor, f: &Flip) {
            self.0.push((f.from, f.to, f.at, f.since_last_ok));
        }
    }

    /// The member's SIP process is gone (ICMP port unreachable to its probe).
    fn port_unreachable(s: &mut Supervisor, member: usize) -> Option<Flip> {
        s.observe(
            mk(member),
            Observation::Hard(HardDown::PortUnreachable),
            Instant::now(),
        )
    }

    /// Both members up, the primary active.
    fn both_up() -> Supervisor {
        let mut s = sup(AllDownPolicy::KeepLast);
        s.observe(mk(0), ok(), Instant::now());
        s.observe(mk(1), ok(), Instant::now());
        s
    }

    #[tokio::test(start_paused = true)]
    async fn first_member_up_becomes_active_and_no_flap_back() {
        let mut s = sup(AllDownPolicy::KeepLast);
        let f = s.observe(mk(0), ok(), Instant::now()).unwrap();
        assert_eq!((f.from, f.to), (None, Some(0)));
        assert_eq!(
            s.observe(mk(1), ok(), Instant::now()),
            None,
            "backup up: no change"
        );
        // Primary dies (ICMP fast path): flip to the backup at once.
        let f = port_unreachable(&mut s, 0).unwrap();
        assert_eq!((f.from, f.to), (Some(0), Some(1)));
        assert!(f.reason.contains("ICMP port unreachable"), "{}", f.reason);
        // Primary returns: the backup stays active.
        assert_eq!(s.observe(mk(0), ok(), Instant::now()), None);
        assert_eq!(s.vips[0].active, Some(1));
        assert_eq!(s.vips[0].failovers, 1);
    }

    /// Records which members' probes failed, as the loop reports them.
    #[derive(Default)]
    struct Failures(Vec<(usize, usize)>);
    impl Actuator for Failures {
        fn flip(&mut self, _: &Supervisor, _: &Flip) {}
        fn probe_failed(&mut self, _: &Supervisor, vip: usize, member: usize) {
            self.0.push((vip, member));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_failed_probe_is_reported_to_the_actuator() {
        let mut s = sup(AllDownPolicy::KeepLast);
        let (tx, mut rx) = mpsc::channel(16);
        let mut act = Failures::default();
        let task = async {
            run(&mut s, &mut rx, &mut act).await;
            act
        };
        let driver = async {
            tx.send(Event::Observe(mk(0), ok())).await.unwrap();
            tx.send(Event::Observe(mk(1), Observation::Missed))
                .await
                .unwrap();
            tx.send(Event::Observe(
                mk(0),
                Observation::Hard(HardDown::PortUnreachable),
            ))
            .await
            .unwrap();
            tx.send(Event::Observe(
                mk(1),
                Observation::Reply {
                    code: 503,
                    up: false,
                    rtt: MS(1),
                },
            ))
            .await
            .unwrap();
            tx.send(Event::Stop).await.unwrap();
        };
        let (act, ()) = tokio::join!(task, driver);
        assert_eq!(
            act.0,
            vec![(0, 1), (0, 0), (0, 1)],
            "a valid reply is no failure"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_flips_exactly_at_the_timeout() {
        let mut s = sup(AllDownPolicy::KeepLast);
        let (tx, mut rx) = mpsc::channel(16);
        let mut rec = Recorder::default();
        let t0 = Instant::now();
        let task = async {
            run(&mut s, &mut rx, &mut rec).await;
            (s, rec)
        };
        let driver = async {
            tx.send(Event::Observe(mk(0), ok())).await.unwrap();
            tx.send(Event::Observe(mk(1), ok())).await.unwrap();
            // The backup keeps answering every second; the primary goes silent after t0.
            for _ in 0..6 {
                tokio::time::sleep(MS(1000)).await;
                tx.send(Event::Observe(mk(1), ok())).await.unwrap();
            }
            tx.send(Event::Stop).await.unwrap();
        };
        let ((s, rec), ()) = tokio::join!(task, driver);
        assert_eq!(rec.0.len(), 2, "{:?}", rec.0);
        assert_eq!((rec.0[0].0, rec.0[0].1), (None, Some(0)));
        let (from, to, at, since) = rec.0[1];
        assert_eq!((from, to), (Some(0), Some(1)));
        assert_eq!(at - t0, MS(4000), "the flip happens exactly at the timeout");
        assert_eq!(
            since,
            Some(MS(4000)),
            "time from the last good reply to the flip"
        );
        assert_eq!(s.vips[0].active, Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn all_down_keep_last_or_drop() {
        for (policy, want) in [
            (AllDownPolicy::KeepLast, Some(0)),
            (AllDownPolicy::Drop, None),
        ] {
            let mut s = sup(policy);
            s.observe(mk(0), ok(), Instant::now());
            tokio::time::advance(MS(4000)).await;
            let flips = s.tick(Instant::now());
            assert_eq!(s.vips[0].active, want, "{policy:?}");
            assert_eq!(flips.len(), usize::from(want.is_none()), "{policy:?}");
            // The backup comes up: it takes over either way.
            let f = s.observe(mk(1), ok(), Instant::now()).unwrap();
            assert_eq!(f.to, Some(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn forced_offline_and_manual_failover() {
        let mut s = sup(AllDownPolicy::KeepLast);
        s.observe(mk(0), ok(), Instant::now());
        s.observe(mk(1), ok(), Instant::now());
        let f = s.set_disabled(0, 0, true, Instant::now()).unwrap();
        assert_eq!((f.from, f.to), (Some(0), Some(1)));
        assert!(
            s.vips[0].force(0, 0, Instant::now()).is_err(),
            "disabled member refused"
        );
        assert_eq!(
            s.set_disabled(0, 0, false, Instant::now()),
            None,
            "enable: no flap-back"
        );
        let f = s.vips[0].force(0, 0, Instant::now()).unwrap().unwrap();
        assert_eq!(
            (f.from, f.to, f.reason.as_str()),
            (Some(1), Some(0), "manual failover")
        );
    }

    /// A healthy member moved away from keeps its flows (it drains) until it goes down; a
    /// failed member loses them.
    #[tokio::test(start_paused = true)]
    async fn healthy_old_members_drain_failed_ones_lose_their_flows() {
        let mut s = both_up();
        // Manual failover: the primary is healthy, so it drains.
        let f = s.vips[0].force(0, 1, Instant::now()).unwrap().unwrap();
        assert_eq!(
            (f.from, f.to, f.draining, f.forget),
            (Some(0), Some(1), Some(0), None)
        );
        assert!(f.moves());
        assert_eq!(s.vips[0].draining, Some(0));
        // The drained primary fails: the drain ends and its flows go, with no flip.
        tokio::time::advance(MS(4000)).await;
        let flips = s.tick(Instant::now());
        assert_eq!(flips.len(), 1, "{flips:?}");
        let f = &flips[0];
        assert_eq!(
            (f.from, f.to, f.draining, f.forget),
            (Some(1), Some(1), None, Some(0))
        );
        assert!(!f.moves());
        assert_eq!((s.vips[0].active, s.vips[0].draining), (Some(1), None));
        assert_eq!(s.vips[0].failovers, 1, "a drain ending is no failover");

        // A monitor-detected failure: the failed member's flows go, nothing drains.
        let mut s = both_up();
        let f = port_unreachable(&mut s, 0).unwrap();
        assert_eq!(
            (f.from, f.to, f.draining, f.forget),
            (Some(0), Some(1), None, Some(0))
        );
        // Forced offline while healthy drains, like a manual failover.
        let mut s = both_up();
        let f = s.set_disabled(0, 0, true, Instant::now()).unwrap();
        assert_eq!((f.draining, f.forget), (Some(0), None));
    }

    #[tokio::test(start_paused = true)]
    async fn at_start_priority_not_speed_picks_the_first_active() {
        let mut s = sup(AllDownPolicy::KeepLast);
        let t0 = Instant::now();
        s.vips[0].settle_until = Some(t0 + MS(1000));
        assert_eq!(
            s.observe(mk(1), ok(), t0 + MS(2)),
            None,
            "the backup answers first: wait"
        );
        assert_eq!(s.observe(mk(0), ok(), t0 + MS(5)), None);
        assert_eq!(s.next_deadline(), Some(t0 + MS(1000)));
        let flips = s.tick(t0 + MS(1000));
        assert_eq!(flips.len(), 1);
        assert_eq!(flips[0].to, Some(0), "the primary (higher priority) wins");
    }

    #[tokio::test(start_paused = true)]
    async fn priority_picks_among_up_members() {
        let now = Instant::now();
        let mut health = BTreeMap::new();
        for m in 0..3 {
            health.insert(mk(m), Health::new(now, MS(4000), None, None, false));
        }
        let mut s = Supervisor {
            health,
            vips: vec![VipState::new(
                "v".into(),
                vec![member("a", 1), member("b", 7), member("c", 7)],
                None,
                AllDownPolicy::KeepLast,
                now,
            )],
        };
        s.observe(mk(0), ok(), now);
        s.observe(mk(1), ok(), now);
        s.observe(mk(2), ok(), now);
        let f = s.set_disabled(0, 0, true, now).unwrap();
        assert_eq!(f.to, Some(1), "highest priority, first in order");
    }
}
