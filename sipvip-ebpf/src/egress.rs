//! Internal side: outbound SNAT of member traffic, with exclusions and pass-through
//! (rules 4 and 5 of the datapath issue).

use aya_ebpf::{maps::lpm_trie::Key, programs::XdpContext};
use sipvip_common::{
    pt_port_slot, CtKey, CtValue, FragValue, MemberRecord, Reason, CT_PASSTHROUGH, CT_SNAT,
    FRAG_ACT_TRANSLATE, FRAG_ACT_UNTOUCHED, FRAG_OUT, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
    MAX_PASSTHROUGH_PORTS, MEMBER_F_SNAT, NO_SERVICE,
};

use crate::{
    csum::{Side, SAME_PORT},
    forward::{forward, translate, Out},
    frag, icmp,
    ingress::find_service,
    maps::{CONNTRACK, EXCLUSIONS, MEMBERS, PT_PORTS},
    parse::{accept, parse, ports, screen},
    stats::Dir,
};

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

/// Makes sure replies to `VIP:vport` from `remote:rport` go to this member.
#[inline(always)]
pub fn ensure_snat_flow(
    proto: u8,
    vip_be: u32,
    vport: u16,
    remote_be: u32,
    rport: u16,
    member: CtValue,
) {
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
        Some(v) if *v == member => {}
        _ => {
            let _ = CONNTRACK.insert(key, member, 0);
        }
    }
}

#[inline(always)]
pub fn try_internal(ctx: &XdpContext) -> Result<u32, Reason> {
    accept(ctx)?;
    let p = parse(ctx)?;
    screen(&p)?;
    // SAFETY: map values are only read.
    let Some(m) = (unsafe { MEMBERS.get(p.src_be) }) else {
        return Err(Reason::PassNotMember);
    };
    if p.dst_be == m.vip_be {
        return Err(Reason::PassToVip);
    }
    if p.ttl <= 1 {
        return Err(Reason::PassTtl);
    }
    if m.flags & MEMBER_F_SNAT == 0 {
        return forward(ctx, &p, Reason::Passthrough);
    }
    match p.proto {
        IPPROTO_TCP | IPPROTO_UDP => {}
        IPPROTO_ICMP => return icmp::from_member(ctx, &p, m),
        _ => return Err(Reason::PassOtherProto),
    }

    let mut port = SAME_PORT;
    let (decision, reason) = if p.is_later_fragment() {
        let d = match frag::follow(&p, FRAG_OUT) {
            Some(d) => d,
            // An orphan: the default for member traffic, recorded nowhere.
            None if excluded(p.dst_be) => UNTOUCHED,
            None => snat_to(m, NO_SERVICE),
        };
        (d, Reason::FragOut)
    } else {
        let (sport, dport) = ports(ctx, &p)?;
        let (d, r) = if passthrough_port(m, sport)
            || passthrough_flow(m, p.proto, p.src_be, sport, p.dst_be, dport)
        {
            (UNTOUCHED, Reason::Passthrough)
        } else if excluded(p.dst_be) {
            (UNTOUCHED, Reason::Excluded)
        } else if let Some(i) = find_service(&m.services, p.proto, sport, true) {
            // Service traffic leaves from the service port; replies to it are steered to
            // the active member, so no conntrack entry is needed.
            port = (sport, m.services[i].port_be);
            (snat_to(m, i as u8), Reason::Snat)
        } else {
            let member = CtValue {
                member_be: p.src_be,
                slot: m.slot,
            };
            ensure_snat_flow(p.proto, m.vip_be, sport, p.dst_be, dport, member);
            (snat_to(m, NO_SERVICE), Reason::Snat)
        };
        if p.more_frags {
            frag::record_first(&p, FRAG_OUT, d);
        }
        (d, r)
    };

    if decision.action != FRAG_ACT_TRANSLATE {
        return forward(ctx, &p, reason);
    }
    let out = Out {
        reason,
        vip_id: m.vip_id,
        dir: Dir::Out,
        service: u32::from(decision.service),
        slot: m.slot,
        fallback_src_be: m.vip_be,
        answerable: true,
    };
    translate(ctx, &p, Side::Src, decision.addr_be, port, out)
}
