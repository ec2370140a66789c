//! The external side (phones, SIP devices, T-Lib clients): steering to a VIP (service
//! traffic, replies of member-opened flows, fragments, TTL expiry) and flows to a member's
//! physical address. See docs/architecture.md, "Per-packet rules".

use sipvip_common::{
    pt_port_slot, CtValue, FragValue, Reason, VipRecord, CT_PASSTHROUGH, CT_SNAT, CT_STEER,
    FRAG_ACT_TRANSLATE, FRAG_IN, IPPROTO_TCP, IPPROTO_UDP, MEMBER_F_SERVICE_ONLY, NO_SERVICE,
    VIP_F_SILENT,
};

use super::{
    frag, icmp,
    lookup::{arriving_flow, find_service},
    route::{self, Via},
    Cache, Decision, Dir, Family, Record, SAME_PORT,
};
use crate::{
    hook::Frame,
    maps::PT_PORTS,
    packet::{ports, Ip},
};

/// The external side's rules for a packet of either family.
#[inline(always)]
pub fn rules<F: Frame, A: Family>(f: &F, p: &Ip<A>) -> Result<Decision<A>, Reason> {
    let Some(vip) = A::vip(&p.dst_be) else {
        return not_for_vip(f, p);
    };
    if vip.flags & VIP_F_SILENT != 0 {
        return Err(Reason::PassNotOwner);
    }
    match p.proto {
        IPPROTO_TCP | IPPROTO_UDP => {}
        pr if pr == A::ICMP && p.frag_offset == 0 && !p.more_frags => {
            return icmp::to_vip(f, p, vip)
        }
        pr if pr == A::ICMP => return Err(Reason::DropIcmp),
        _ => return Err(Reason::DropVipProto),
    }

    let mut port = SAME_PORT;
    let mut record = Record::NONE;
    let draining_tcp = !vip.draining_be.is_zero() && p.proto == IPPROTO_TCP;
    let (target, reason) = if p.is_later_fragment() {
        if p.ttl <= 1 {
            // No ICMP error is sent about a later fragment (RFC 1122, 3.2.2).
            return Err(Reason::DropTtl);
        }
        let Some(t) = frag::follow(p, FRAG_IN) else {
            return Err(Reason::DropFragOrphan);
        };
        (t, Reason::FragIn)
    } else {
        let (sport, dport) = ports(f, p)?;
        let (t, r) = if let Some(i) = find_service(&vip.services, p.proto, dport, false) {
            let s = &vip.services[i];
            if s.enabled == 0 {
                return Err(Reason::DropVipClosed);
            }
            if vip.active_be.is_zero() {
                return Err(Reason::DropNoActive);
            }
            port = (dport, s.member_port_be);
            let (addr_be, slot) = if draining_tcp {
                draining(f, p, vip, sport, dport, &mut record)?
            } else {
                (vip.active_be, vip.active_slot)
            };
            let t = FragValue {
                addr_be,
                action: FRAG_ACT_TRANSLATE,
                slot: slot as u8,
                service: i as u8,
                _pad: 0,
                stamp: 0,
            };
            (t, Reason::Steered)
        } else {
            let key = arriving_flow(p.dst(), p.src(), p.proto, dport, sport, CT_SNAT);
            let Some(ct) = A::flow(&key) else {
                // No state here: behind ECMP, the return-path gateway's (see `hand_over`).
                return route::hand_over(f, p, Reason::DropVipClosed);
            };
            let t = FragValue {
                addr_be: ct.member_be,
                action: FRAG_ACT_TRANSLATE,
                slot: ct.slot as u8,
                service: NO_SERVICE,
                _pad: 0,
                stamp: 0,
            };
            (t, Reason::ConntrackReply)
        };
        if p.ttl <= 1 {
            // Would be forwarded: answered as a router does, so traceroute sees the gateway
            // (where the datapath builds the family's errors; otherwise dropped and counted).
            if !A::ANSWERS {
                return Err(Reason::DropTtl);
            }
            return Ok(route::time_exceeded(f, p.dst(), record));
        }
        if p.more_frags {
            let (k, v) = frag::first(p, FRAG_IN, t);
            record.fragment(k, v);
        }
        (t, r)
    };

    let member = (target.addr_be, u32::from(target.slot));
    let service = u32::from(target.service);
    // A service's packet, decided by its destination alone (no draining member's
    // connections, no fragment): the flow cache may keep the decision for the service.
    let cache = if reason == Reason::Steered && record == Record::NONE && !draining_tcp {
        Cache::Plain
    } else {
        Cache::No
    };
    let mut d = route::translate(
        f,
        p,
        Dir::In,
        vip.vip_id,
        member,
        service,
        port,
        reason,
        record,
        Via::toward_members(vip.flags),
    );
    d.cache = cache;
    Ok(d)
}

/// The member of a TCP service connection while another member drains: a new connection
/// (SYN without ACK) goes to the active member and is tracked; a tracked connection keeps
/// its member; any other segment belongs to a connection opened before the move, which
/// stays on the draining member.
#[inline(always)]
fn draining<F: Frame, A: Family>(
    f: &F,
    p: &Ip<A>,
    vip: &VipRecord<A>,
    sport: u16,
    dport: u16,
    record: &mut Record,
) -> Result<(A, u32), Reason> {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    // The data offset and flags as one word: the verifier follows 2-byte loads best (a
    // 1-byte one compiles to a bounds check it cannot read).
    let w: u16 = f.load(p.l4 + 12).map_err(|_| Reason::DropTruncatedL4)?;
    let flags = w.to_ne_bytes()[1];
    let key = arriving_flow(p.dst(), p.src(), IPPROTO_TCP, dport, sport, CT_STEER);
    if flags & (SYN | ACK) == SYN {
        let v = CtValue {
            member_be: vip.active_be,
            slot: vip.active_slot,
        };
        record.flow(key, v);
        return Ok((vip.active_be, vip.active_slot));
    }
    Ok(match A::flow(&key) {
        Some(ct) => (ct.member_be, ct.slot),
        None => (vip.draining_be, vip.draining_slot),
    })
}

/// Not for a VIP: transit, the gateway itself, or a member's physical address. A flow opened
/// toward a member's physical address is remembered so the member's replies are never SNATed.
#[inline(always)]
fn not_for_vip<F: Frame, A: Family>(f: &F, p: &Ip<A>) -> Result<Decision<A>, Reason> {
    let Some(m) = A::member(&p.dst_be) else {
        return Err(Reason::PassNotVip);
    };
    let mut record = Record::NONE;
    if (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP) && p.frag_offset == 0 {
        if let Ok((sport, dport)) = ports(f, p) {
            // A member on the node's own address owns only its service ports: a flow to
            // any other port is the node's own, and its replies are never translated.
            if m.flags & MEMBER_F_SERVICE_ONLY != 0
                && find_service(&m.services, p.proto, dport, true).is_none()
            {
                return Err(Reason::PassToMember);
            }
            let key = arriving_flow(p.dst(), p.src(), p.proto, dport, sport, CT_PASSTHROUGH);
            let known = A::flow(&key).is_some();
            if !known {
                // Behind ECMP the member's replies leave through the return-path gateway:
                // the flow's first packets go through it too, so that it records the flow
                // before the member answers (see `hand_over`).
                if let Ok(d) = route::hand_over(f, p, Reason::PassToMember) {
                    return Ok(d);
                }
            }
            // The member port is marked before the flow is recorded, so the outbound side
            // never sees the flow without the mark.
            let (i, bucket) = pt_port_slot(m.vip_id, m.slot, dport);
            if matches!(PT_PORTS.get(i), Some(pp) if pp.seen[bucket] == 0) {
                record.port_mark::<A>(i, bucket as u32);
            }
            if !known {
                let v = CtValue {
                    member_be: p.dst(),
                    slot: m.slot,
                };
                record.flow(key, v);
            }
        }
    }
    Ok(Decision::stop(Reason::PassToMember, record))
}
