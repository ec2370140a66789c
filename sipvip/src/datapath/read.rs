//! Reading state and counters back.

use std::{collections::BTreeMap, net::Ipv4Addr};

use sipvip_common::{
    ipv6_be, map_names, CtKey, CtValue, FragKey, FragKey6, FragValue, Iface, Ipv6Be, Reason,
    VipCells, VipCounters, VipRecord,
};

use super::{be32, map_err, Datapath, DatapathError, Result};

impl Datapath {
    /// The interface records in use.
    pub fn interfaces(&self) -> Result<Vec<Iface>> {
        Ok(self
            .ifaces
            .iter()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(map_err(map_names::IFACES))?
            .into_iter()
            .filter(|i| i.ifindex != 0)
            .collect())
    }

    /// The fragment table's entry for one datagram, if any.
    pub fn frag_entry(&self, key: &FragKey) -> Result<Option<FragValue>> {
        match self.frags.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(map_names::FRAGS)(e)),
        }
    }

    /// The IPv6 fragment table's entry for one datagram, if any.
    pub fn frag_entry6(&self, key: &FragKey6) -> Result<Option<FragValue<Ipv6Be>>> {
        let Some(v6) = &self.v6 else {
            return Ok(None);
        };
        match v6.frags.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(map_names::FRAGS6)(e)),
        }
    }

    /// Whether the loaded object has the IPv6 maps (another build's may not).
    pub fn has_ipv6(&self) -> bool {
        self.v6.is_some()
    }

    /// The VIP's IPv6 record as the datapath sees it.
    pub fn vip_record6(&self, vip: std::net::Ipv6Addr) -> Option<VipRecord<Ipv6Be>> {
        self.v6.as_ref()?.vips.get(&ipv6_be(vip.octets())).ok()?
    }

    /// Every IPv6 conntrack entry.
    pub fn conntrack6(&self) -> Result<Vec<(CtKey<Ipv6Be>, CtValue<Ipv6Be>)>> {
        let Some(v6) = &self.v6 else {
            return Ok(Vec::new());
        };
        v6.conntrack
            .iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(map_err(map_names::CONNTRACK6))
    }

    /// Every IPv6 fragment-tracking entry.
    pub fn frags6(&self) -> Result<Vec<(FragKey6, FragValue<Ipv6Be>)>> {
        let Some(v6) = &self.v6 else {
            return Ok(Vec::new());
        };
        v6.frags
            .iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(map_err(map_names::FRAGS6))
    }

    /// The VIP's record as the datapath sees it.
    pub fn vip_record(&self, vip: Ipv4Addr) -> Result<VipRecord> {
        self.vips
            .get(&be32(vip))?
            .ok_or(DatapathError::UnknownVip(vip))
    }

    /// Every conntrack entry.
    pub fn conntrack(&self) -> Result<Vec<(CtKey, CtValue)>> {
        self.conntrack
            .iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(map_err(map_names::CONNTRACK))
    }

    /// The flow cache's current generations (user space's, the datapath's), if it has them:
    /// user space's from the control value the lane reads (`SV_FLOWCTL_V2`), the datapath's
    /// from `SV_FLOWGEN_V3`, or either from the slots of `SV_FLOWGEN_V2` in an earlier
    /// build's object.
    fn flow_generations(&self) -> Result<Option<(u32, u32)>> {
        let legacy = |slot| match &self.flow_gen_legacy {
            Some(m) => m
                .get(&slot, 0)
                .map(Some)
                .map_err(map_err(map_names::FLOW_GEN_V2)),
            None => Ok(None),
        };
        let user = match &self.flow_ctl {
            Some(c) => Some(c.get(&0, 0).map_err(map_err(map_names::FLOW_CTL))?.gen),
            None => legacy(sipvip_common::FLOW_GEN_USER)?,
        };
        let kernel = match &self.flow_gen {
            Some(g) => Some(g.get(&0, 0).map_err(map_err(map_names::FLOW_GEN))?),
            None => legacy(sipvip_common::FLOW_GEN_KERNEL)?,
        };
        Ok(user.zip(kernel))
    }

    /// The flow cache's slots per CPU (None without a flow cache): each possible CPU has
    /// a block of them (an earlier build's cache, a bench's baseline object's, is sized as
    /// this build's at load).
    pub(super) fn flow_slots(&self) -> Result<Option<u32>> {
        let entries = match (&self.flows, self.legacy_flow_entries) {
            (Some(flows), _) => flows.len(),
            (None, Some(entries)) => entries,
            (None, None) => return Ok(None),
        };
        let cpus = super::load::possible_cpus()?;
        Ok(Some((entries / cpus.max(1)).max(1)))
    }

    /// The flow cache's entries of the current generations (what later packets take), of
    /// every CPU, and how many slots hold an entry in all (stale ones included).
    pub fn cached_flows(
        &self,
    ) -> Result<(
        Vec<(sipvip_common::FlowKey, sipvip_common::FlowEntry)>,
        usize,
    )> {
        let (Some(flows), Some((user, kernel))) = (&self.flows, self.flow_generations()?) else {
            return Ok((Vec::new(), 0));
        };
        let (mut live, mut n) = (Vec::new(), 0);
        for s in flows.iter() {
            let s = s.map_err(map_err(map_names::FLOWS))?;
            if s.entry.gen_user == 0 {
                continue;
            }
            n += 1;
            if current(&s.key, &s.entry, user, kernel) {
                live.push((s.key, s.entry));
            }
        }
        Ok((live, n))
    }

    /// The flow cache's entry for `key` on any CPU, if it holds one of the current
    /// generations (the one the flow's next packet takes there).
    pub fn cached_flow(
        &self,
        key: &sipvip_common::FlowKey,
    ) -> Result<Option<sipvip_common::FlowEntry>> {
        let (Some(flows), Some((user, kernel)), Some(slots)) =
            (&self.flows, self.flow_generations()?, self.flow_slots()?)
        else {
            return Ok(None);
        };
        let (hash, mask) = (sipvip_common::flow_slot(key), slots - 1);
        for cpu in 0..flows.len() / slots {
            // The lane's order: the flow's own slot, then its neighbour.
            for way in 0..2 {
                let slot = sipvip_common::flow_way(hash, mask, way);
                let s = flows
                    .get(&(cpu * slots + slot), 0)
                    .map_err(map_err(map_names::FLOWS))?;
                if s.key == *key && current(&s.key, &s.entry, user, kernel) {
                    return Ok(Some(s.entry));
                }
            }
        }
        Ok(None)
    }

    /// Every fragment-tracking entry.
    pub fn frags(&self) -> Result<Vec<(FragKey, FragValue)>> {
        self.frags
            .iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(map_err(map_names::FRAGS))
    }

    /// Per-reason counters summed over CPUs (only reasons with a non-zero count): a reason's
    /// own slot, the VIPs' counts of it with the traffic they counted in a cell
    /// (`VipCells::reasons`), and the flow cache slots' counts of their entries' reason
    /// (read last: see `counts`); none below what the last read reported.
    pub fn reasons(&self) -> Result<BTreeMap<&'static str, u64>> {
        let mut slots = [0u64; sipvip_common::REASON_SLOTS as usize];
        for r in Reason::ALL {
            slots[*r as usize] = self
                .reasons
                .get(&(*r as u32), 0)
                .map_err(map_err(map_names::REASONS))?
                .iter()
                .sum();
        }
        if let Some(stats) = &self.vip_stats {
            for vip_id in 0..stats.len() {
                for c in self.vip_cells(vip_id)?.iter() {
                    for (s, v) in slots.iter_mut().zip(c.reasons) {
                        *s += v;
                    }
                }
            }
        }
        if let Some(view) = &self.slot_view {
            // Every reason's counts; no VIP's cells (an empty range of VIPs).
            let cached = super::counts::SlotCounts::read(view, 0..0);
            for (s, v) in slots.iter_mut().zip(cached.reasons) {
                *s += v;
            }
        }
        self.reported().reasons(&mut slots);
        Ok(Reason::ALL
            .iter()
            .filter(|r| slots[**r as usize] != 0)
            .map(|r| (r.label(), slots[*r as usize]))
            .collect())
    }

    /// A VIP's traffic counters: its cells summed over CPUs with the flow cache slots'
    /// counts of its cells (read last: see `counts`), and into the VIP's, the services' and
    /// the members' counters; none below what the last read reported.
    pub fn vip_counters(&self, vip_id: u32) -> Result<VipCounters> {
        let counters = self.vips_counters(vip_id..vip_id.saturating_add(1))?;
        Ok(counters.into_iter().next().unwrap_or_default())
    }

    /// [`Datapath::vip_counters`] of several VIPs, with one read of the flow cache's slots.
    pub fn vips_counters(&self, vip_ids: std::ops::Range<u32>) -> Result<Vec<VipCounters>> {
        let mut all = Vec::new();
        for vip_id in vip_ids.clone() {
            let mut total = VipCounters::default();
            for c in self.vip_cells(vip_id)?.iter() {
                c.add_to(&mut total);
            }
            all.push(total);
        }
        if let Some(view) = &self.slot_view {
            let cached = super::counts::SlotCounts::read(view, vip_ids.clone());
            for (vip_id, total) in vip_ids.clone().zip(all.iter_mut()) {
                if let Some(c) = cached.vips.get(&vip_id) {
                    c.add_to(total);
                }
            }
        }
        let mut reported = self.reported();
        for (vip_id, total) in vip_ids.zip(all.iter_mut()) {
            reported.vip(vip_id, total);
        }
        Ok(all)
    }

    /// What the counters' readers reported last (a poisoned lock's value is still good:
    /// every update leaves it whole).
    fn reported(&self) -> std::sync::MutexGuard<'_, super::counts::Reported> {
        self.reported
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A VIP's `VipCells`, one per CPU.
    fn vip_cells(&self, vip_id: u32) -> Result<aya::maps::PerCpuValues<VipCells>> {
        self.vip_stats
            .as_ref()
            .ok_or(DatapathError::MissingMap(map_names::VIP_STATS))?
            .get(&vip_id, 0)
            .map_err(map_err(map_names::VIP_STATS))
    }
}

/// Whether a flow cache entry is of the current generations, as the lane tells: user
/// space's (0: the cache off), and the datapath's, except for a service's steering
/// (`FLOW_HOOK_EXT`), whose entries hold kernel generation 0.
fn current(
    key: &sipvip_common::FlowKey,
    entry: &sipvip_common::FlowEntry,
    user: u32,
    kernel: u32,
) -> bool {
    let kernel = if key.hook == sipvip_common::FLOW_HOOK_EXT {
        0
    } else {
        kernel
    };
    user != 0 && entry.gen_user == user && entry.gen_kernel == kernel
}
