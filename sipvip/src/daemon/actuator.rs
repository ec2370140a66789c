//! Carrying out the supervisor's flips: the datapath write, the flows of a failed member,
//! gratuitous ARP, the log event.

use std::sync::Arc;

use sipvip::{
    failover::{Actuator, Flip, Supervisor},
    plan::Plan,
};

use super::Shared;

pub(super) struct DaemonActuator {
    pub(super) plan: Arc<Plan>,
    /// Wakes the task that resolves members' names (a failed probe may mean a moved pod).
    pub(super) resolve_now: Arc<tokio::sync::Notify>,
    pub(super) shared: Arc<Shared>,
}

impl Actuator for DaemonActuator {
    fn probe_failed(&mut self, _sup: &Supervisor, vip: usize, member: usize) {
        if self.plan.vips[vip].members[member].host.is_some() {
            self.resolve_now.notify_one();
        }
    }

    fn flip(&mut self, _sup: &Supervisor, f: &Flip) {
        let v = &self.plan.vips[f.vip];
        let spec = self.plan.vip(f.vip, f.to);
        let mut reselected = 0;
        {
            let mut dp = self.shared.dp.lock().expect("lock");
            if let Err(e) = dp.set_active_slots(&spec, f.to, f.draining) {
                tracing::error!(vip = %v.name, error = %e, "cannot write the active member");
                return;
            }
            if let Some(gone) = f.forget {
                reselected = dp
                    .forget_member_flows(v.members[gone].address, v.members[gone].address6)
                    .unwrap_or(0);
            }
        }
        let name = |i: Option<usize>| {
            i.map(|i| v.members[i].name.clone())
                .unwrap_or_else(|| "none".into())
        };
        if !f.moves() {
            tracing::info!(
                event = "drain_end",
                vip = %v.name,
                reason = %f.reason,
                dropped_flows = reselected,
                "the drained member's connections are gone"
            );
            return;
        }
        tracing::info!(
            event = "failover",
            vip = %v.name,
            from = %name(f.from),
            to = %name(f.to),
            reason = %f.reason,
            since_last_good_reply_ms = f.since_last_ok.map(|d| d.as_secs_f64() * 1000.0),
            reselected_flows = reselected,
            draining = %name(f.draining),
            "active member changed"
        );
        // Gratuitous ARP for the VIP. On-node mode: the node that claims the VIP sends
        // them (`own_vips`); in a keepalived pair, the master.
        if f.to.is_some() && self.plan.ownership.is_none() && self.shared.announces(&self.plan) {
            super::garp_burst(self.plan.garp.clone(), v.spec.addr, v.spec.addr6);
        }
    }
}
