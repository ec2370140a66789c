//! Setting up: the datapath (adopted or loaded), the interfaces and host settings, the VIPs,
//! and what the monitors probe.

use std::{collections::BTreeSet, net::IpAddr, sync::Mutex};

use anyhow::{Context, Result};
use sipvip::plan::Plan;
use sipvip::{
    config::{Config, HaMode, Mode, Prefix},
    datapath::{be32, Datapath},
};
use sipvip_common::{ipv6_be, program_names};

pub(super) fn ifindex(name: &str) -> Result<u32> {
    Ok(sipvip::netif::index_of(name)?)
}

pub(super) fn open_datapath(
    cfg: &Config,
    plan: &Plan,
    replace: bool,
    debug: bool,
) -> Result<(Datapath, bool)> {
    let sizes = plan.sizes.clone();
    let dir = &cfg.admin.pin_dir;
    sipvip::datapath::mount_bpffs(dir)?;
    match Datapath::adopt(&sizes, dir) {
        Ok(Some(dp)) => {
            tracing::info!(pin_dir = %dir.display(), "adopted the pinned datapath; forwarding was never interrupted");
            if debug {
                tracing::warn!("--datapath-debug needs a fresh load of the debug programs: restart with --replace");
            }
            Ok((dp, true))
        }
        Ok(None) => Ok((Datapath::load_pinned(&sizes, dir, debug)?, false)),
        Err(e) if replace => {
            tracing::warn!(error = %e, "replacing the pinned datapath (--replace)");
            Datapath::remove_pins(dir)?;
            Ok((Datapath::load_pinned(&sizes, dir, debug)?, false))
        }
        Err(e) => Err(e.into()),
    }
}

/// Interfaces, host settings, VIP addresses, the devmap and the exclusions.
pub(super) fn prepare(
    cfg: &Config,
    dp: &mut Datapath,
    shared_excl: &Mutex<BTreeSet<(IpAddr, u8)>>,
) -> Result<()> {
    let dir = &cfg.admin.pin_dir;
    let mode = cfg.interfaces.xdp_mode;
    let ext = &cfg.interfaces.external;
    if dp.attach_pinned(program_names::EXTERNAL, ext, mode, dir)? {
        tracing::info!(interface = %ext, "attached sipvip_ext");
    }
    dp.add_egress(ifindex(ext)?)?;
    if cfg.interfaces.mode == Mode::Node
        && dp.attach_tc_egress_pinned(
            program_names::NODE_OUT,
            ext,
            dir,
            cfg.interfaces.tc_attach,
        )?
    {
        tracing::info!(interface = %ext, "attached sipvip_node_out (TC egress)");
    }
    for int in &cfg.interfaces.internal {
        if dp.attach_pinned(program_names::INTERNAL, int, mode, dir)? {
            tracing::info!(interface = %int, "attached sipvip_int");
        }
        dp.add_egress(ifindex(int)?)?;
    }
    dp.set_frag_lifetime(cfg.forwarding.fragment_lifetime.0)?;
    dp.set_flow_cache(cfg.forwarding.flow_cache)?;
    // 802.1Q tags must stay in the frame for the datapath to see them.
    for ifc in std::iter::once(ext).chain(&cfg.interfaces.internal) {
        if let Err(e) = sipvip::netif::rx_vlan_offload_off(ifc) {
            tracing::warn!(
                interface = %ifc,
                problem = %e,
                "receive VLAN offload could not be turned off: a tagged frame whose tag the NIC strips would be translated as untagged; attach sipvip to the VLAN devices instead of the trunk"
            );
        }
    }
    // The node's kernel settings (plan::node_sysctls says why each).
    for s in sipvip::plan::node_sysctls(cfg) {
        if let Err(e) = sipvip::plan::apply_sysctl(&s) {
            tracing::warn!(
                path = %s.path,
                value = s.value,
                error = %e,
                "cannot set sysctl; in a container /proc/sys is read-only: run `sipvip node-sysctls` with privileges first (the DaemonSet's init container does)"
            );
        }
    }
    if std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
    {
        tracing::warn!(
            "net.ipv4.ip_forward is 0: the kernel will not forward what the datapath hands it"
        );
    }
    // The VIPs live on the external interface, so the kernel answers ARP for them. On-node
    // mode: only on the node that hosts the active member, added when it claims the VIP; in a
    // keepalived pair, keepalived adds them on the master.
    let locals = sipvip::netif::local_addresses();
    let locals6 = sipvip::netif::local_addresses6();
    for v in cfg
        .vips
        .iter()
        .filter(|_| cfg.interfaces.mode == Mode::Gateway && cfg.ha.mode == HaMode::Single)
    {
        if let Some(a) = v.address.filter(|a| !locals.contains(a)) {
            sipvip::netif::add_ipv4_address(ifindex(ext)?, a, 32)
                .with_context(|| format!("adding VIP {a} to {ext}"))?;
        }
        // The VIP's IPv6 address, so the kernel answers Neighbor Solicitations.
        if let Some(a6) = v.address6 {
            if !locals6.contains(&a6) {
                sipvip::netif::add_ipv6_address(ifindex(ext)?, a6, 128)
                    .with_context(|| format!("adding VIP {a6} to {ext}"))?;
            }
        }
    }
    // Exclusions: the configured ones, plus the gateway's own addresses (members' replies to
    // our monitors must never be SNATed), in both families.
    let vips: BTreeSet<IpAddr> = cfg
        .vips
        .iter()
        .flat_map(|v| [v.address.map(IpAddr::V4), v.address6.map(IpAddr::V6)])
        .flatten()
        .collect();
    let mut want: BTreeSet<(IpAddr, u8)> = cfg
        .exclusions()
        .iter()
        .map(|Prefix { addr, len }| (*addr, *len))
        .collect();
    want.extend(
        sipvip::netif::local_addresses()
            .into_iter()
            .map(IpAddr::V4)
            .chain(
                sipvip::netif::local_addresses6()
                    .into_iter()
                    // Link-local addresses never reach the datapath's translation.
                    .filter(|a| a.segments()[0] & 0xffc0 != 0xfe80)
                    .map(IpAddr::V6),
            )
            .filter(|a| !vips.contains(a) && !a.is_loopback())
            .map(|a| (a, if a.is_ipv4() { 32 } else { 128 })),
    );
    let mut have = shared_excl.lock().expect("lock");
    for (a, l) in have.difference(&want) {
        dp.remove_exclusion(*a, *l)?;
    }
    for (a, l) in want.difference(&have) {
        dp.add_exclusion(*a, *l)?;
    }
    *have = want;
    Ok(())
}

/// Installs every VIP, keeping the active member the datapath already has (adoption and
/// reload never flip). Returns each VIP's active member index.
pub(super) fn install(plan: &Plan, dp: &mut Datapath) -> Result<Vec<Installed>> {
    let mut out = Vec::new();
    for (i, v) in plan.vips.iter().enumerate() {
        // The VIP's record in its first family: the slot it names, if that member still
        // has the address it names (the members on the node's own address share it: the
        // slot tells them apart); else the member with that address.
        let found = match (v.spec.addr, v.spec.addr6) {
            (Some(a), _) => dp.vip_record(a).ok().map(|r| {
                let pick = |be, slot| member_slot(&v.members, be, slot, |m| m.address.map(be32));
                (
                    pick(r.active_be, r.active_slot),
                    pick(r.draining_be, r.draining_slot),
                )
            }),
            (None, Some(a6)) => dp.vip_record6(a6).map(|r| {
                let pick = |be, slot| {
                    member_slot(&v.members, be, slot, |m| {
                        m.address6.map(|a| ipv6_be(a.octets()))
                    })
                };
                (
                    pick(r.active_be, r.active_slot),
                    pick(r.draining_be, r.draining_slot),
                )
            }),
            (None, None) => None,
        };
        let (active, draining) = found.unwrap_or_default();
        let spec = plan.vip(i, active);
        dp.install_vip(&spec)?;
        if draining.is_some() {
            dp.set_active_slots(&spec, active, draining)?;
        }
        out.push(Installed { active, draining });
    }
    Ok(out)
}

/// The member a VIP record names by address and slot (either family): the slot, if that
/// member has the address; else the member with the address; None for no member.
fn member_slot<A: PartialEq + Default>(
    members: &[sipvip::plan::MemberPlan],
    addr_be: A,
    slot: u32,
    addr: impl Fn(&sipvip::plan::MemberPlan) -> Option<A>,
) -> Option<usize> {
    if addr_be == A::default() {
        return None;
    }
    match members.get(slot as usize) {
        Some(m) if addr(m).as_ref() == Some(&addr_be) => Some(slot as usize),
        _ => members
            .iter()
            .position(|m| addr(m).as_ref() == Some(&addr_be)),
    }
}

/// A VIP's members as found in the datapath when (re)starting: the active one, and one
/// still draining (kept across a restart or reload).
#[derive(Clone, Copy, Debug)]
pub(super) struct Installed {
    pub(super) active: Option<usize>,
    pub(super) draining: Option<usize>,
}
