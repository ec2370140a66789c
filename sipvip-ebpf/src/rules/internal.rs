//! The internal side (the SIP server hosts): outbound SNAT of member traffic, with
//! exclusions and pass-through. See docs/architecture.md, "Per-packet rules".

use sipvip_common::{
    CtValue, Reason, FRAG_ACT_TRANSLATE, FRAG_OUT, IPPROTO_TCP, IPPROTO_UDP, MEMBER_F_SERVICE_ONLY,
    MEMBER_F_SNAT, NO_SERVICE,
};

use super::{
    frag, icmp,
    lookup::{find_service, passthrough_flow, passthrough_port, snat_flow, snat_to, untouched},
    route::{self, Via},
    Cache, Decision, Dir, Family, Record, SAME_PORT,
};
use crate::{
    hook::Frame,
    packet::{ports, Ip},
};

/// The internal side's rules for a packet of either family.
#[inline(always)]
pub fn rules<F: Frame, A: Family>(f: &F, p: &Ip<A>) -> Result<Decision<A>, Reason> {
    let Some(m) = A::member(&p.src_be) else {
        return Err(Reason::PassNotMember);
    };
    if p.dst() == m.vip_be {
        return Err(Reason::PassToVip);
    }
    // A routed packet's TTL is the kernel's business (it decremented it already).
    if p.ttl <= 1 && !F::ROUTED {
        return Err(Reason::PassTtl);
    }
    if m.flags & MEMBER_F_SNAT == 0 {
        // The decision read what user space writes (the member) and the TTL, which a
        // cached packet checks.
        let mut d = route::forward(f, p, Reason::Passthrough, Record::NONE);
        d.cache = Cache::Plain;
        return Ok(d);
    }
    match p.proto {
        IPPROTO_TCP | IPPROTO_UDP => {}
        pr if pr == A::ICMP => return icmp::from_member(f, p, m),
        _ => return Err(Reason::PassOtherProto),
    }

    let mut port = SAME_PORT;
    let mut record = Record::NONE;
    let mut cache = Cache::No;
    let (decision, reason) = if p.is_later_fragment() {
        let d = match frag::follow(p, FRAG_OUT) {
            Some(d) => d,
            // An orphan: the default for member traffic, recorded nowhere.
            None if A::excluded(&p.dst()) || m.flags & MEMBER_F_SERVICE_ONLY != 0 => untouched(),
            None => snat_to(m, NO_SERVICE),
        };
        (d, Reason::FragOut)
    } else {
        let (sport, dport) = ports(f, p)?;
        // Unless stated otherwise below, the decision read what user space writes and the
        // absence of a pass-through flow (whose recording bumps the flow cache's
        // generation).
        cache = Cache::Plain;
        let (d, r) = if passthrough_port(m, sport) {
            (untouched(), Reason::Passthrough)
        } else if passthrough_flow(m, p.proto, p.src(), sport, p.dst(), dport) {
            cache = Cache::Require;
            (untouched(), Reason::Passthrough)
        } else if A::excluded(&p.dst()) {
            (untouched(), Reason::Excluded)
        } else if let Some(i) = find_service(&m.services, p.proto, sport, true) {
            // Service traffic leaves from the service port; replies to it are steered to
            // the active member, so no conntrack entry is needed.
            port = (sport, m.services[i].port_be);
            (snat_to(m, i as u8), Reason::Snat)
        } else if m.flags & MEMBER_F_SERVICE_ONLY != 0 {
            (untouched(), Reason::PassNotService)
        } else {
            let member = CtValue {
                member_be: p.src(),
                slot: m.slot,
            };
            if let Some(w) = snat_flow(p.proto, m.vip_be, sport, p.dst(), dport, member) {
                record.snat_flow(w);
            }
            cache = Cache::Refresh;
            (snat_to(m, NO_SERVICE), Reason::Snat)
        };
        if p.more_frags {
            let (k, v) = frag::first(p, FRAG_OUT, d);
            record.fragment(k, v);
        }
        (d, r)
    };

    if decision.action != FRAG_ACT_TRANSLATE {
        let mut d = route::forward(f, p, reason, record);
        d.cache = cache;
        return Ok(d);
    }
    let service = u32::from(decision.service);
    let vip = (decision.addr_be, m.slot);
    let mut d = route::translate(
        f,
        p,
        Dir::Out,
        m.vip_id,
        vip,
        service,
        port,
        reason,
        record,
        Via::Fib,
    );
    d.cache = cache;
    Ok(d)
}
