//! Map writes: interfaces, settings, VIPs and members, the active member, exclusions, and
//! conntrack housekeeping.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::lpm_trie::Key;
use sipvip_common::{ipv6_be, map_names, time_units, Iface, Settings, VIP_F_SILENT};

use super::{be32, map_err, Datapath, DatapathError, Result, VipSpec};

impl Datapath {
    /// Registers an interface the datapath runs on and may send by: the devmap entry for
    /// XDP_REDIRECT, and its MAC and own IPv4 and IPv6 addresses (read from the current
    /// network namespace) for the L2 acceptance rule and the ICMP errors it sends as the
    /// gateway.
    /// Call it again after the interface's MAC or address changes.
    pub fn add_egress(&mut self, ifindex: u32) -> Result<()> {
        let err = |what: String| DatapathError::Egress { ifindex, what };
        let slot = sipvip_common::iface_slot(ifindex);
        let held = self
            .ifaces
            .get(&slot, 0)
            .map_err(map_err(map_names::IFACES))?;
        // The slot may hold this interface, nothing, or one that no longer exists.
        if held.ifindex != 0 && held.ifindex != ifindex && crate::netif::name(held.ifindex).is_ok()
        {
            return Err(err(format!(
                "shares datapath interface slot {slot} with ifindex {}; the datapath serves \
                 interfaces whose ifindex differs modulo {}: recreate one of them",
                held.ifindex,
                sipvip_common::IFACE_SLOTS
            )));
        }
        self.devmap
            .insert(ifindex, ifindex, None, 0)
            .map_err(|e| err(e.to_string()))?;
        let (mac, addr, addr6) =
            crate::netif::mac_and_addresses(ifindex).map_err(|e| err(e.to_string()))?;
        // A slot taken over from a gone interface: the flow cache's entries that send there
        // are the old interface's, and go before the slot names the new one.
        if self.devmap_slots.is_some() && held.ifindex != 0 && held.ifindex != ifindex {
            self.flows_changed()?;
        }
        if let Some(m) = &mut self.devmap_slots {
            m.set(slot, ifindex, None, 0)
                .map_err(|e| err(e.to_string()))?;
        }
        let rec = Iface {
            mac,
            _pad: 0,
            addr_be: addr.map(be32).unwrap_or(0),
            ifindex,
        };
        // The IPv6 address first: the slot's IPv4 record is what makes it valid.
        if let Some(m) = &mut self.ifaces6 {
            m.set(
                slot,
                addr6.map(|a| ipv6_be(a.octets())).unwrap_or_default(),
                0,
            )
            .map_err(map_err(map_names::IFACES6))?;
        }
        self.ifaces
            .set(slot, rec, 0)
            .map_err(map_err(map_names::IFACES))?;
        self.flows_changed()
    }

    /// Behind ECMP: the gateway that carries the members' return path, which a packet of a
    /// flow without state here is handed to (`SV_RETPATH_V1`), or none (`None`: this
    /// gateway carries it, or none is known). The value is replaced whole.
    pub fn set_return_path(&mut self, rp: Option<sipvip_common::ReturnPath>) -> Result<()> {
        let Some(m) = &mut self.return_path else {
            return Err(DatapathError::MissingMap(map_names::RETURN_PATH));
        };
        match rp {
            Some(v) => m.insert(0, v, 0).map_err(map_err(map_names::RETURN_PATH)),
            None => match m.remove(&0) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(map_err(map_names::RETURN_PATH)(e)),
            },
        }
    }

    /// What `set_return_path` wrote last (None: no hand-over).
    pub fn return_path(&self) -> Option<sipvip_common::ReturnPath> {
        self.return_path.as_ref()?.get(&0, 0).ok()
    }

    /// Starts a trace with `filter` (its `on` set here), the per-CPU counters zeroed
    /// first.
    pub fn start_trace(&mut self, mut filter: sipvip_common::TraceFilter) -> Result<()> {
        let t = self
            .trace
            .as_mut()
            .ok_or(DatapathError::MissingMap(map_names::TRACE))?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| DatapathError::Trace(format!("count the CPUs: {e}")))?;
        let zero =
            aya::maps::PerCpuValues::try_from(vec![sipvip_common::TraceCpu::default(); cpus])
                .map_err(|e| DatapathError::Trace(format!("per-CPU counters: {e}")))?;
        t.cpu
            .set(0, zero, 0)
            .map_err(map_err(map_names::TRACE_CPU))?;
        filter.on = 1;
        t.filter
            .set(0, filter, 0)
            .map_err(map_err(map_names::TRACE))?;
        // The flow cache's lane stops while the trace runs.
        self.flows_changed()
    }

    /// Stops any trace: the datapath takes no more events.
    pub fn stop_trace(&mut self) -> Result<()> {
        let Some(t) = self.trace.as_mut() else {
            return Ok(());
        };
        t.filter
            .set(0, sipvip_common::TraceFilter::default(), 0)
            .map_err(map_err(map_names::TRACE))?;
        self.flows_changed()
    }

    /// The running trace's filter (`on` 0: none).
    pub fn trace_filter(&self) -> Option<sipvip_common::TraceFilter> {
        self.trace.as_ref()?.filter.get(&0, 0).ok()
    }

    /// The trace's counters, summed over the CPUs.
    pub fn trace_counters(&self) -> Result<sipvip_common::TraceCpu> {
        let t = self
            .trace
            .as_ref()
            .ok_or(DatapathError::MissingMap(map_names::TRACE_CPU))?;
        let v = t.cpu.get(&0, 0).map_err(map_err(map_names::TRACE_CPU))?;
        let mut sum = sipvip_common::TraceCpu::default();
        for c in v.iter() {
            sum.matched += c.matched;
            sum.emitted += c.emitted;
            sum.rate_limited += c.rate_limited;
            sum.lost += c.lost;
        }
        Ok(sum)
    }

    /// The trace's ring buffer, for its one reader (the daemon).
    pub fn take_trace_events(&mut self) -> Option<aya::maps::RingBuf<aya::maps::MapData>> {
        self.trace.as_mut()?.events.take()
    }

    /// How long a first fragment's decision holds for its later fragments.
    pub fn set_frag_lifetime(&mut self, lifetime: std::time::Duration) -> Result<()> {
        let s = Settings {
            frag_lifetime: time_units(lifetime.as_nanos().min(u128::from(u64::MAX)) as u64).max(1),
            _pad: 0,
        };
        self.settings
            .set(0, s, 0)
            .map_err(map_err(map_names::SETTINGS))
    }

    /// Turns the flow cache on or off (it runs only while the next-hop cache does); either
    /// way no entry decided before counts any more.
    pub fn set_flow_cache(&mut self, enabled: bool) -> Result<()> {
        self.flow_cache = enabled;
        self.flows_changed()
    }

    /// Tells the datapath how many flow cache slots each CPU has (the mask of `flow_slot`),
    /// where this build's cache is loaded.
    pub(super) fn write_flow_slot_mask(&mut self) -> Result<()> {
        let Some(slots) = self.flow_slots()? else {
            return Ok(());
        };
        let mask = slots - 1;
        if self.flow_ctl.is_some() {
            return self.update_flow_control(|c| c.mask = mask);
        }
        // An earlier build's object (a bench's baseline) reads it from `SV_FLOWGEN_V2`.
        if let Some(gen) = &mut self.flow_gen_legacy {
            gen.set(sipvip_common::FLOW_SLOT_MASK, mask, 0)
                .map_err(map_err(map_names::FLOW_GEN_V2))?;
        }
        Ok(())
    }

    /// Rewrites the flow cache's control value (`SV_FLOWCTL_V2`) with `change` made.
    fn update_flow_control(
        &mut self,
        change: impl FnOnce(&mut sipvip_common::FlowControl),
    ) -> Result<()> {
        let Some(map) = &mut self.flow_ctl else {
            return Err(DatapathError::MissingMap(map_names::FLOW_CTL));
        };
        let mut c = map.get(&0, 0).map_err(map_err(map_names::FLOW_CTL))?;
        change(&mut c);
        map.set(0, c, 0).map_err(map_err(map_names::FLOW_CTL))
    }

    /// Whether the flow cache is running.
    pub fn flow_cache_running(&self) -> bool {
        (self.flow_gen.is_some() || self.flow_gen_legacy.is_some())
            && self.flow_cache
            && self.nexthops_on
    }

    /// Starts a new flow-cache generation, after any change the rules read: no decision
    /// cached before it is taken again (each flow's next packet goes through the rules).
    /// Generation 0 turns the cache off, as it is while a trace runs (every packet then
    /// takes the rules' path, where the trace sees it). A generation is never given twice:
    /// the next one follows the last given (`FlowControl::given`, pinned with the maps), so
    /// that an entry decided before the cache was off never counts again.
    fn flows_changed(&mut self) -> Result<()> {
        let on = self.flow_cache_running() && self.trace_filter().is_none_or(|t| t.on == 0);
        if self.flow_ctl.is_some() {
            return self.update_flow_control(|c| {
                c.given = next_generation(c.given);
                c.gen = if on { c.given } else { 0 };
            });
        }
        // An earlier build's object (a bench's baseline) reads its generation from
        // `SV_FLOWGEN_V2`, and goes on from the current one.
        let Some(m) = &mut self.flow_gen_legacy else {
            return Ok(());
        };
        let current = m
            .get(&sipvip_common::FLOW_GEN_USER, 0)
            .map_err(map_err(map_names::FLOW_GEN_V2))?;
        let gen = if on { next_generation(current) } else { 0 };
        m.set(sipvip_common::FLOW_GEN_USER, gen, 0)
            .map_err(map_err(map_names::FLOW_GEN_V2))
    }

    /// Starts a new next-hop generation: the datapath asks the kernel's FIB again for each
    /// destination on its next packet (a route or neighbour change takes effect), and the
    /// flow cache, which holds next hops, starts a new generation too. With `enabled`
    /// false, the datapath asks the FIB for every packet (and the flow cache is off).
    /// Returns the generation. As the flow cache's, a generation is never given twice
    /// (`FlowControl::nexthops_given`).
    pub fn refresh_nexthops(&mut self, enabled: bool) -> Result<u32> {
        let last = match &self.flow_ctl {
            Some(c) => {
                c.get(&0, 0)
                    .map_err(map_err(map_names::FLOW_CTL))?
                    .nexthops_given
            }
            // An earlier build's object: from the current one.
            None => self
                .nexthop_gen
                .get(&0, 0)
                .map_err(map_err(map_names::NEXTHOP_GEN))?,
        };
        let next = next_generation(last);
        if self.flow_ctl.is_some() {
            self.update_flow_control(|c| c.nexthops_given = next)?;
        }
        let gen = if enabled { next } else { 0 };
        self.nexthop_gen
            .set(0, gen, 0)
            .map_err(map_err(map_names::NEXTHOP_GEN))?;
        self.nexthops_on = enabled;
        self.flows_changed()?;
        Ok(gen)
    }

    /// Installs or replaces a VIP and its members, in both families for a dual-stack VIP.
    pub fn install_vip(&mut self, spec: &VipSpec) -> Result<()> {
        spec.check()?;
        if spec.addr6.is_some() && self.v6.is_none() {
            return Err(DatapathError::Invalid {
                vip: spec.label(),
                what: "an IPv6 address, and this datapath has no IPv6 maps".into(),
            });
        }
        for slot in 0..spec.members.len() {
            if let Some((key, rec)) = spec.member_record(slot)? {
                self.members.insert(key, rec)?;
            }
            if let (Some((key6, rec6)), Some(v6)) = (spec.member_record6(slot)?, &mut self.v6) {
                v6.members.insert(key6, rec6)?;
            }
        }
        self.write_vip(spec, spec.active, None)
    }

    /// Writes a VIP's records: one map-value write per family it has.
    fn write_vip(
        &mut self,
        spec: &VipSpec,
        active: Option<usize>,
        draining: Option<usize>,
    ) -> Result<()> {
        // The IPv6 record first: when both change, IPv6 traffic follows no later than IPv4.
        let silent = [spec.addr.map(IpAddr::V4), spec.addr6.map(IpAddr::V6)]
            .into_iter()
            .flatten()
            .any(|a| self.silent.contains(&a));
        if let (Some(addr6), Some(mut rec6)) = (spec.addr6, spec.record6(active, draining)) {
            if silent {
                rec6.flags |= VIP_F_SILENT;
            }
            if let Some(v6) = &mut self.v6 {
                v6.vips.insert(ipv6_be(addr6.octets()), rec6)?;
            }
        }
        if let (Some(addr), Some(mut record)) = (spec.addr, spec.record(active, draining)) {
            if silent {
                record.flags |= VIP_F_SILENT;
            }
            self.vips.insert(be32(addr), record)?;
        }
        self.flows_changed()
    }

    /// On-node mode: whether this node answers for `vip` (it hosts the active member). A
    /// silent node hands what still arrives for the VIP to the kernel untranslated, which
    /// forwards it to the node that answers; it is never translated twice on its way. Kept
    /// across the active member's writes.
    pub fn set_vip_answering(&mut self, spec: &VipSpec, answering: bool) -> Result<()> {
        let addrs = [spec.addr.map(IpAddr::V4), spec.addr6.map(IpAddr::V6)];
        let mut changed = false;
        for a in addrs.into_iter().flatten() {
            changed |= if answering {
                self.silent.remove(&a)
            } else {
                self.silent.insert(a)
            };
        }
        if !changed {
            return Ok(());
        }
        let flags = |f: u32| (f & !VIP_F_SILENT) | if answering { 0 } else { VIP_F_SILENT };
        if let (Some(a6), Some(v6)) = (spec.addr6, &mut self.v6) {
            let key = ipv6_be(a6.octets());
            if let Some(mut r) = v6.vips.get(&key)? {
                r.flags = flags(r.flags);
                v6.vips.insert(key, r)?;
            }
        }
        if let Some(a) = spec.addr {
            if let Some(mut r) = self.vips.get(&be32(a))? {
                r.flags = flags(r.flags);
                self.vips.insert(be32(a), r)?;
            }
        }
        self.flows_changed()
    }

    /// Removes one member's record (a member that left its VIP, or moved to another
    /// address). Its flows stay until they age out; nothing is steered to it any more once
    /// the VIP's record no longer names it.
    pub fn remove_member(&mut self, member: IpAddr) -> Result<()> {
        // A record already gone is no error.
        match member {
            IpAddr::V4(a) => {
                self.members.remove(&be32(a))?;
            }
            IpAddr::V6(a) => {
                if let Some(v6) = &mut self.v6 {
                    v6.members.remove(&ipv6_be(a.octets()))?;
                }
            }
        }
        self.flows_changed()
    }

    /// Removes a VIP's IPv4 record (a VIP that lost or changed its IPv4 address).
    pub fn remove_vip4(&mut self, addr: Ipv4Addr) -> Result<()> {
        self.vips.remove(&be32(addr))?;
        self.flows_changed()
    }

    /// Removes a VIP's IPv6 record (a VIP that lost or changed its IPv6 address).
    pub fn remove_vip6(&mut self, addr6: Ipv6Addr) -> Result<()> {
        let Some(v6) = &mut self.v6 else {
            return Ok(());
        };
        v6.vips.remove(&ipv6_be(addr6.octets()))?;
        self.flows_changed()
    }

    /// Removes a VIP and its members, in both families.
    pub fn remove_vip(&mut self, spec: &VipSpec) -> Result<()> {
        // A record already gone is no error: the VIP is removed either way.
        if let Some(a) = spec.addr {
            self.vips.remove(&be32(a))?;
        }
        if let (Some(a6), Some(v6)) = (spec.addr6, &mut self.v6) {
            v6.vips.remove(&ipv6_be(a6.octets()))?;
        }
        for m in &spec.members {
            if let Some(a) = m.addr {
                self.members.remove(&be32(a))?;
            }
            if let Some(a6) = m.addr6 {
                self.remove_member(IpAddr::V6(a6))?;
            }
        }
        self.flows_changed()
    }

    /// Makes `member` (an address with a slot in `spec`) the active member of the VIP, or
    /// none. One map-value write: the datapath sees the old or the new record, never a mix.
    pub fn set_active(&mut self, spec: &VipSpec, member: Option<Ipv4Addr>) -> Result<()> {
        self.set_active_draining(spec, member, None)
    }

    /// Sets the active member, with `draining` (a healthy member the VIP moves away from)
    /// keeping the TCP service connections it had; see `VipRecord::draining_be`.
    pub fn set_active_draining(
        &mut self,
        spec: &VipSpec,
        member: Option<Ipv4Addr>,
        draining: Option<Ipv4Addr>,
    ) -> Result<()> {
        let slot = |member: Option<Ipv4Addr>| match member {
            Some(addr) => spec
                .members
                .iter()
                .position(|m| m.addr == Some(addr))
                .map(Some)
                .ok_or(DatapathError::UnknownMember {
                    vip: spec.label(),
                    member: addr,
                }),
            None => Ok(None),
        };
        self.set_active_slots(spec, slot(member)?, slot(draining)?)
    }

    /// [`Datapath::set_active_draining`] by member slot: the members on the node's own
    /// address (on-node mode) share it, so only the slot tells them apart.
    pub fn set_active_slots(
        &mut self,
        spec: &VipSpec,
        active: Option<usize>,
        draining: Option<usize>,
    ) -> Result<()> {
        for m in [active, draining].into_iter().flatten() {
            if m >= spec.members.len() {
                return Err(DatapathError::Invalid {
                    vip: spec.label(),
                    what: format!("member slot {m} out of range"),
                });
            }
        }
        self.write_vip(spec, active, draining)
    }

    /// Adds a conntrack entry another gateway sent (`sipvip::sync`) unless this datapath has
    /// one for the flow already (its own is as fresh or fresher); returns whether it added.
    pub fn sync_flow(&mut self, e: &crate::sync::Entry) -> Result<bool> {
        const BPF_NOEXIST: u64 = 1;
        // A pass-through flow: its member port is marked first, as the datapath marks it
        // before recording the flow (the outbound side looks such flows up only for marked
        // ports). User space can only write the whole value, which could undo a mark the
        // datapath stores meanwhile; so it marks every port of the member at once, which no
        // concurrent mark can be lost under (that member's outbound packets then always look
        // pass-through flows up on this gateway).
        let pt = match e {
            crate::sync::Entry::V4(k, v) if k.kind == sipvip_common::CT_PASSTHROUGH => self
                .members
                .get(&k.addr_a_be)
                .ok()
                .flatten()
                .map(|m| (m.vip_id, v.slot, k.port_a_be)),
            crate::sync::Entry::V6(k, v) if k.kind == sipvip_common::CT_PASSTHROUGH => self
                .v6
                .as_ref()
                .and_then(|v6| v6.members.get(&k.addr_a_be).ok().flatten())
                .map(|m| (m.vip_id, v.slot, k.port_a_be)),
            _ => None,
        };
        if let Some((vip_id, slot, port_be)) = pt {
            let (i, _) = sipvip_common::pt_port_slot(vip_id, slot, port_be);
            let pp = self
                .pt_ports
                .get(&i, 0)
                .map_err(map_err(map_names::PT_PORTS))?;
            if pp.seen.contains(&0) {
                let all = sipvip_common::PassthroughPorts {
                    seen: [1; sipvip_common::PT_PORT_BUCKETS],
                };
                self.pt_ports
                    .set(i, all, 0)
                    .map_err(map_err(map_names::PT_PORTS))?;
            }
        }
        let r = match e {
            crate::sync::Entry::V4(k, v) => self
                .conntrack
                .insert(k, v, BPF_NOEXIST)
                .map_err(map_err(map_names::CONNTRACK)),
            crate::sync::Entry::V6(k, v) => match &mut self.v6 {
                Some(v6) => v6
                    .conntrack
                    .insert(k, v, BPF_NOEXIST)
                    .map_err(map_err(map_names::CONNTRACK6)),
                None => return Ok(false),
            },
        };
        match r {
            // A pass-through flow turns its member's replies from SNAT to untouched.
            Ok(()) if pt.is_some() => self.flows_changed().map(|()| true),
            Ok(()) => Ok(true),
            Err(DatapathError::Map {
                source: aya::maps::MapError::SyscallError(e),
                ..
            }) if e.io_error.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds a host (`prefix` 32 or 128) or CIDR to the SNAT exclusions of its family.
    pub fn add_exclusion(&mut self, net: IpAddr, prefix: u8) -> Result<()> {
        let r = match net {
            IpAddr::V4(a) => self
                .exclusions
                .insert(&Key::new(u32::from(prefix), be32(a)), 1, 0)
                .map_err(map_err(map_names::EXCLUSIONS)),
            IpAddr::V6(a) => self
                .maps6(map_names::EXCLUSIONS6)?
                .exclusions
                .insert(&Key::new(u32::from(prefix), ipv6_be(a.octets())), 1, 0)
                .map_err(map_err(map_names::EXCLUSIONS6)),
        };
        r?;
        self.flows_changed()
    }

    pub fn remove_exclusion(&mut self, net: IpAddr, prefix: u8) -> Result<()> {
        let r = match net {
            IpAddr::V4(a) => self
                .exclusions
                .remove(&Key::new(u32::from(prefix), be32(a)))
                .map_err(map_err(map_names::EXCLUSIONS)),
            IpAddr::V6(a) => self
                .maps6(map_names::EXCLUSIONS6)?
                .exclusions
                .remove(&Key::new(u32::from(prefix), ipv6_be(a.octets())))
                .map_err(map_err(map_names::EXCLUSIONS6)),
        };
        r?;
        self.flows_changed()
    }

    /// The IPv6 maps, or the error of a datapath without them.
    fn maps6(&mut self, name: &'static str) -> Result<&mut super::Maps6> {
        self.v6.as_mut().ok_or(DatapathError::MissingMap(name))
    }

    /// Removes every conntrack entry of both families (as a daemon restart with fresh maps
    /// would).
    pub fn flush_conntrack(&mut self) -> Result<usize> {
        let mut n = remove_flows(&mut self.conntrack, |_, _| true);
        if let Some(v6) = &mut self.v6 {
            n += remove_flows(&mut v6.conntrack, |_, _| true);
        }
        self.flows_changed()?;
        Ok(n)
    }

    /// Removes the conntrack entries that send traffic to `member`: replies of the flows it
    /// opened, and service connections tracked while another member drained (BIG-IP
    /// "Reselect" after a failover). Returns how many were removed.
    pub fn forget_member_flows(
        &mut self,
        member: Option<Ipv4Addr>,
        member6: Option<Ipv6Addr>,
    ) -> Result<usize> {
        let steers = |kind: u8| kind == sipvip_common::CT_SNAT || kind == sipvip_common::CT_STEER;
        let mut n = 0;
        if let Some(a) = member {
            let target = be32(a);
            n += remove_flows(&mut self.conntrack, |k, v| {
                v.member_be == target && steers(k.kind)
            });
        }
        if let (Some(a6), Some(v6)) = (member6, &mut self.v6) {
            let target = ipv6_be(a6.octets());
            n += remove_flows(&mut v6.conntrack, |k, v| {
                v.member_be == target && steers(k.kind)
            });
        }
        self.flows_changed()?;
        Ok(n)
    }
}

/// Removes the conntrack entries (either family's map) that `doomed` picks; returns how many.
/// An entry the LRU evicted meanwhile is already gone.
fn remove_flows<K: aya::Pod, V: aya::Pod>(
    map: &mut aya::maps::HashMap<aya::maps::MapData, K, V>,
    doomed: impl Fn(&K, &V) -> bool,
) -> usize {
    let keys: Vec<K> = map
        .iter()
        .filter_map(|e| e.ok())
        .filter(|(k, v)| doomed(k, v))
        .map(|(k, _)| k)
        .collect();
    for k in &keys {
        let _ = map.remove(k);
    }
    keys.len()
}

/// The generation after `last` (0 is none: the cache off).
fn next_generation(last: u32) -> u32 {
    last.wrapping_add(1).max(1)
}
