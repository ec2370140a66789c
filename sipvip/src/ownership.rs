//! VIP ownership in on-node mode, without an election: the node that hosts a VIP's active
//! member answers for the VIP (the address on its uplink, so its kernel answers ARP, and a
//! burst of gratuitous ARP when it becomes the owner); every other node stays silent.
//!
//! Every node probes the members itself and so decides the active member itself. A SIP
//! Server pair has at most one primary (the backup ignores UDP until promoted), so the nodes
//! agree. The hysteresis keeps a disagreement from showing: a node gives the VIP up at once
//! when its member stops being the active one, but claims it only after its member has been
//! the active one for `claim_after` without a break. Two nodes claim the VIP together only
//! if the old owner sees the failure more than `claim_after` later than the new one; with
//! `claim_after` at least one monitor timeout plus one interval, the old owner's own probes
//! have failed over by then (docs/operations.md, "VIP ownership").

use std::time::{Duration, Instant};

/// What a node does about one VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Answer for the VIP: add it to the uplink, send gratuitous ARP.
    Claim,
    /// Stop answering: remove it from the uplink.
    Release,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Silent,
    /// This node's member has been the active one since then.
    Claiming(Instant),
    Owner,
}

/// One VIP's ownership on this node.
#[derive(Clone, Debug)]
pub struct Ownership {
    claim_after: Duration,
    state: State,
}

impl Ownership {
    /// Starts as the node finds itself: `answering` if the VIP is already on its uplink (a
    /// restart or reload), so that a daemon restart never flaps the VIP.
    pub fn new(claim_after: Duration, answering: bool) -> Ownership {
        Ownership {
            claim_after,
            state: if answering {
                State::Owner
            } else {
                State::Silent
            },
        }
    }

    pub fn owner(&self) -> bool {
        self.state == State::Owner
    }

    /// What to do now that this node does (`hosts_active`) or does not host the VIP's
    /// active member.
    pub fn observe(&mut self, now: Instant, hosts_active: bool) -> Option<Change> {
        match (self.state, hosts_active) {
            (State::Owner, true) => None,
            (State::Owner, false) => {
                self.state = State::Silent;
                Some(Change::Release)
            }
            (State::Silent, true) if self.claim_after.is_zero() => {
                self.state = State::Owner;
                Some(Change::Claim)
            }
            (State::Silent, true) => {
                self.state = State::Claiming(now);
                None
            }
            (State::Claiming(since), true) => {
                if now.saturating_duration_since(since) >= self.claim_after {
                    self.state = State::Owner;
                    Some(Change::Claim)
                } else {
                    None
                }
            }
            (State::Claiming(_), false) | (State::Silent, false) => {
                self.state = State::Silent;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_millis(1000);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn claims_after_the_hold_and_releases_at_once() {
        let t0 = Instant::now();
        let mut o = Ownership::new(HOLD, false);
        assert_eq!(o.observe(at(t0, 0), true), None);
        assert_eq!(o.observe(at(t0, 999), true), None);
        assert!(!o.owner());
        assert_eq!(o.observe(at(t0, 1000), true), Some(Change::Claim));
        assert!(o.owner());
        assert_eq!(o.observe(at(t0, 5000), true), None);
        assert_eq!(o.observe(at(t0, 5001), false), Some(Change::Release));
        assert!(!o.owner());
        assert_eq!(o.observe(at(t0, 5002), false), None);
    }

    #[test]
    fn a_blip_shorter_than_the_hold_claims_nothing() {
        let t0 = Instant::now();
        let mut o = Ownership::new(HOLD, false);
        assert_eq!(o.observe(at(t0, 0), true), None);
        assert_eq!(o.observe(at(t0, 600), false), None);
        // The hold starts again from the next observation.
        assert_eq!(o.observe(at(t0, 700), true), None);
        assert_eq!(o.observe(at(t0, 1500), true), None);
        assert_eq!(o.observe(at(t0, 1700), true), Some(Change::Claim));
    }

    #[test]
    fn a_restart_keeps_the_vip_it_answers_for() {
        let t0 = Instant::now();
        let mut o = Ownership::new(HOLD, true);
        assert!(o.owner());
        assert_eq!(o.observe(t0, true), None);
        // A restart that finds the VIP on a node that no longer hosts the member gives it up.
        let mut stale = Ownership::new(HOLD, true);
        assert_eq!(stale.observe(t0, false), Some(Change::Release));
    }

    #[test]
    fn no_hold_claims_on_the_first_observation() {
        let mut o = Ownership::new(Duration::ZERO, false);
        assert_eq!(o.observe(Instant::now(), true), Some(Change::Claim));
    }
}
