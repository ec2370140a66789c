//! Lookups the rules of both sides share: services, exclusions, pass-through ports and
//! flows, and the conntrack entries of member-opened flows. Reads only: the entries to write
//! are returned for the decision's record.

use aya_ebpf::maps::lpm_trie::Key;
use sipvip_common::{
    pt_port_slot, CtKey, CtValue, FragValue, MemberRecord, Service, CT_PASSTHROUGH, CT_SNAT,
    FRAG_ACT_TRANSLATE, FRAG_ACT_UNTOUCHED, MAX_PASSTHROUGH_PORTS, MAX_SERVICES, NO_SERVICE,
};

use crate::maps::{CONNTRACK, EXCLUSIONS, PT_PORTS};

/// The index of the service matching `proto` and `port_be` on the VIP side (`member_side`
/// false) or on the member side (`member_side` true).
#[inline(always)]
pub fn find_service(
    services: &[Service; MAX_SERVICES],
    proto: u8,
    port_be: u16,
    member_side: bool,
) -> Option<usize> {
    let mut i = 0;
    while i < MAX_SERVICES {
        let s = &services[i];
        if s.proto == 0 {
            // Services are packed (user space checks): the first unused slot ends them.
            return None;
        }
        let port = if member_side {
            s.member_port_be
        } else {
            s.port_be
        };
        if s.proto == proto && port == port_be {
            return Some(i);
        }
        i += 1;
    }
    None
}

pub const UNTOUCHED: FragValue = FragValue {
    addr_be: 0,
    action: FRAG_ACT_UNTOUCHED,
    slot: 0,
    service: NO_SERVICE,
    _pad: 0,
    stamp: 0,
};

#[inline(always)]
pub fn snat_to(m: &MemberRecord, service: u8) -> FragValue {
    FragValue {
        addr_be: m.vip_be,
        action: FRAG_ACT_TRANSLATE,
        slot: m.slot as u8,
        service,
        _pad: 0,
        stamp: 0,
    }
}

#[inline(always)]
pub fn excluded(dst_be: u32) -> bool {
    EXCLUSIONS.get(Key::new(32, dst_be)).is_some()
}

#[inline(always)]
pub fn passthrough_port(m: &MemberRecord, port_be: u16) -> bool {
    let mut i = 0;
    while i < MAX_PASSTHROUGH_PORTS {
        let p = m.passthrough_ports_be[i];
        if p == 0 {
            // Ports are packed (user space checks): the first 0 ends them.
            return false;
        }
        if p == port_be {
            return true;
        }
        i += 1;
    }
    false
}

/// True when a flow opened from outside to this member's physical address is known. Only
/// member ports marked in `SV_PTPORTS_V1` can have one.
#[inline(always)]
pub fn passthrough_flow(
    m: &MemberRecord,
    proto: u8,
    member_be: u32,
    mport: u16,
    remote_be: u32,
    rport: u16,
) -> bool {
    let (i, bucket) = pt_port_slot(m.vip_id, m.slot, mport);
    match PT_PORTS.get(i) {
        Some(pp) if pp.seen[bucket] == 0 => return false,
        _ => {}
    }
    let key = CtKey {
        addr_a_be: member_be,
        addr_b_be: remote_be,
        port_a_be: mport,
        port_b_be: rport,
        proto,
        kind: CT_PASSTHROUGH,
        _pad: 0,
    };
    // SAFETY: only tested for presence.
    unsafe { CONNTRACK.get(key) }.is_some()
}

/// The conntrack entry that makes replies to `VIP:vport` from `remote:rport` go to this
/// member, unless it is there already.
#[inline(always)]
pub fn snat_flow(
    proto: u8,
    vip_be: u32,
    vport: u16,
    remote_be: u32,
    rport: u16,
    member: CtValue,
) -> Option<(CtKey, CtValue)> {
    let key = CtKey {
        addr_a_be: vip_be,
        addr_b_be: remote_be,
        port_a_be: vport,
        port_b_be: rport,
        proto,
        kind: CT_SNAT,
        _pad: 0,
    };
    // SAFETY: the value is compared and dropped.
    match unsafe { CONNTRACK.get(key) } {
        Some(v) if *v == member => None,
        _ => Some((key, member)),
    }
}

/// The conntrack key of a packet's flow seen from this side: `local` (its destination, a VIP
/// or a member) with `lport`, and `remote` (its source) with `rport`.
#[inline(always)]
pub fn arriving_flow(
    local_be: u32,
    remote_be: u32,
    proto: u8,
    lport: u16,
    rport: u16,
    kind: u8,
) -> CtKey {
    CtKey {
        addr_a_be: local_be,
        addr_b_be: remote_be,
        port_a_be: lport,
        port_b_be: rport,
        proto,
        kind,
        _pad: 0,
    }
}
