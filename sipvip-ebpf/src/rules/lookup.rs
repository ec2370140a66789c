//! Lookups the rules of both sides share: services, exclusions, pass-through ports and
//! flows, and the conntrack entries of member-opened flows. Reads only: the entries to write
//! are returned for the decision's record.

use sipvip_common::{
    pt_port_slot, CtKey, CtValue, FragValue, MemberRecord, Service, CT_PASSTHROUGH, CT_SNAT,
    FRAG_ACT_TRANSLATE, FRAG_ACT_UNTOUCHED, MAX_PASSTHROUGH_PORTS, MAX_SERVICES, NO_SERVICE,
};

use super::Family;
use crate::maps::PT_PORTS;

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

/// The decision to leave a packet (and its datagram) untranslated.
#[inline(always)]
pub fn untouched<A: Family>() -> FragValue<A> {
    FragValue {
        addr_be: A::ZERO,
        action: FRAG_ACT_UNTOUCHED,
        slot: 0,
        service: NO_SERVICE,
        _pad: 0,
        stamp: 0,
    }
}

#[inline(always)]
pub fn snat_to<A: Family>(m: &MemberRecord<A>, service: u8) -> FragValue<A> {
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
pub fn passthrough_port<A>(m: &MemberRecord<A>, port_be: u16) -> bool {
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
pub fn passthrough_flow<A: Family>(
    m: &MemberRecord<A>,
    proto: u8,
    member_be: A,
    mport: u16,
    remote_be: A,
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
    A::flow(&key).is_some()
}

/// The conntrack entry that makes replies to `VIP:vport` from `remote:rport` go to this
/// member, unless it is there already; and whether writing it takes the entry over from
/// another member.
#[inline(always)]
pub fn snat_flow<A: Family>(
    proto: u8,
    vip_be: A,
    vport: u16,
    remote_be: A,
    rport: u16,
    member: CtValue<A>,
) -> Option<(CtKey<A>, CtValue<A>, bool)> {
    let key = CtKey {
        addr_a_be: vip_be,
        addr_b_be: remote_be,
        port_a_be: vport,
        port_b_be: rport,
        proto,
        kind: CT_SNAT,
        _pad: 0,
    };
    match A::flow(&key) {
        Some(v) if v.member_be == member.member_be && v.slot == member.slot => None,
        // Another member's (the same ports to the same peer): taken over.
        Some(_) => Some((key, member, true)),
        None => Some((key, member, false)),
    }
}

/// The conntrack key of a packet's flow seen from this side: `local` (its destination, a VIP
/// or a member) with `lport`, and `remote` (its source) with `rport`.
#[inline(always)]
pub fn arriving_flow<A>(
    local_be: A,
    remote_be: A,
    proto: u8,
    lport: u16,
    rport: u16,
    kind: u8,
) -> CtKey<A> {
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
