//! The external side (phones, SIP devices, T-Lib clients): steering to a VIP (service
//! traffic, replies of member-opened flows, fragments, TTL expiry) and flows to a member's
//! physical address. See docs/architecture.md, "Per-packet rules".

use sipvip_common::{
    pt_port_slot, CtValue, FragValue, Reason, VipRecord, CT_PASSTHROUGH, CT_SNAT, CT_STEER,
    FRAG_ACT_TRANSLATE, FRAG_IN, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, MEMBER_F_SERVICE_ONLY,
    NO_SERVICE, VIP_F_SILENT,
};

use super::{
    frag, icmp,
    lookup::{arriving_flow, find_service},
    route::{self, Via},
    Decision, Dir, Record, SAME_PORT,
};
use crate::{
    hook::Frame,
    maps::{CONNTRACK, MEMBERS, PT_PORTS, VIPS},
    packet::ipv4::{ports, Ipv4},
};

/// The external side's rules for an IPv4 packet.
#[inline(always)]
pub fn ipv4<F: Frame>(f: &F, p: &Ipv4) -> Result<Decision, Reason> {
    // SAFETY: map values are only read.
    let Some(vip) = (unsafe { VIPS.get(p.dst_be) }) else {
        return not_for_vip(f, p);
    };
    if vip.flags & VIP_F_SILENT != 0 {
        return Err(Reason::PassNotOwner);
    }
    match p.proto {
        IPPROTO_TCP | IPPROTO_UDP => {}
        IPPROTO_ICMP if p.frag_offset == 0 && !p.more_frags => return icmp::to_vip(f, p, vip),
        IPPROTO_ICMP => return Err(Reason::DropIcmp),
        _ => return Err(Reason::DropVipProto),
    }

    let mut port = SAME_PORT;
    let mut record = Record::NONE;
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
            if vip.active_be == 0 {
                return Err(Reason::DropNoActive);
            }
            port = (dport, s.member_port_be);
            let (addr_be, slot) = if vip.draining_be != 0 && p.proto == IPPROTO_TCP {
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
            let key = arriving_flow(p.dst_be, p.src_be, p.proto, dport, sport, CT_SNAT);
            // SAFETY: the value is copied out.
            let Some(ct) = (unsafe { CONNTRACK.get(key) }) else {
                return Err(Reason::DropVipClosed);
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
            // Would be forwarded: answered as a router does, so traceroute sees the gateway.
            return Ok(route::time_exceeded(f, p.dst_be, record));
        }
        if p.more_frags {
            let (k, v) = frag::first(p, FRAG_IN, t);
            record.fragment(k, v);
        }
        (t, r)
    };

    let member = (target.addr_be, u32::from(target.slot));
    let service = u32::from(target.service);
    Ok(route::translate(
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
    ))
}

/// The member of a TCP service connection while another member drains: a new connection
/// (SYN without ACK) goes to the active member and is tracked; a tracked connection keeps
/// its member; any other segment belongs to a connection opened before the move, which
/// stays on the draining member.
#[inline(always)]
fn draining<F: Frame>(
    f: &F,
    p: &Ipv4,
    vip: &VipRecord,
    sport: u16,
    dport: u16,
    record: &mut Record,
) -> Result<(u32, u32), Reason> {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    let flags: u8 = f.load(p.l4 + 13).map_err(|_| Reason::DropTruncatedL4)?;
    let key = arriving_flow(p.dst_be, p.src_be, IPPROTO_TCP, dport, sport, CT_STEER);
    if flags & (SYN | ACK) == SYN {
        let v = CtValue {
            member_be: vip.active_be,
            slot: vip.active_slot,
        };
        record.flow(key, v);
        return Ok((vip.active_be, vip.active_slot));
    }
    // SAFETY: the value is copied out.
    Ok(match unsafe { CONNTRACK.get(key) } {
        Some(ct) => (ct.member_be, ct.slot),
        None => (vip.draining_be, vip.draining_slot),
    })
}

/// Not for a VIP: transit, the gateway itself, or a member's physical address. A flow opened
/// toward a member's physical address is remembered so the member's replies are never SNATed.
#[inline(always)]
fn not_for_vip<F: Frame>(f: &F, p: &Ipv4) -> Result<Decision, Reason> {
    // SAFETY: map values are only read.
    let Some(m) = (unsafe { MEMBERS.get(p.dst_be) }) else {
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
            let key = arriving_flow(p.dst_be, p.src_be, p.proto, dport, sport, CT_PASSTHROUGH);
            // The member port is marked before the flow is recorded, so the outbound side
            // never sees the flow without the mark.
            let (i, bucket) = pt_port_slot(m.vip_id, m.slot, dport);
            if matches!(PT_PORTS.get(i), Some(pp) if pp.seen[bucket] == 0) {
                record.port_mark(i, bucket as u32);
            }
            // SAFETY: only tested for presence.
            if unsafe { CONNTRACK.get(key) }.is_none() {
                let v = CtValue {
                    member_be: p.dst_be,
                    slot: m.slot,
                };
                record.flow(key, v);
            }
        }
    }
    Ok(Decision::stop(Reason::PassToMember, record))
}
