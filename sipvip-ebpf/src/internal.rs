//! The internal side (`sipvip_int`, the SIP server hosts): outbound SNAT of member traffic,
//! with exclusions and pass-through. See docs/architecture.md, "Per-packet rules".

use aya_ebpf::programs::XdpContext;
use sipvip_common::{
    CtValue, Reason, FRAG_ACT_TRANSLATE, FRAG_OUT, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
    MEMBER_F_SNAT, NO_SERVICE,
};

use crate::{
    csum::{Side, SAME_PORT},
    forward::{forward, translate, Out},
    frag, icmp,
    lookup::{
        ensure_snat_flow, excluded, find_service, passthrough_flow, passthrough_port, snat_to,
        UNTOUCHED,
    },
    maps::MEMBERS,
    parse::{accept, parse, ports, screen},
    stats::Dir,
};

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
