//! ICMP: echo to a VIP is answered; echo from a member is SNATed with its identifier tracked;
//! errors about translated flows are translated, embedded header included (RFC 5508).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use sipvip_common::{
    CtKey, CtValue, MemberRecord, Reason, VipRecord, CT_SNAT, IPPROTO_ICMP, IPPROTO_TCP,
    IPPROTO_UDP,
};

use crate::{
    csum::{Delta, Side, SAME_PORT},
    forward::{forward, translate, Out},
    lookup::{ensure_snat_flow, excluded, find_service, passthrough_flow, passthrough_port},
    maps::CONNTRACK,
    parse::{load, store, store_addr, Packet, IP_CSUM, IP_DST, IP_SRC, IP_TTL},
    reply::{DEST_UNREACH, REPLY_TTL, TIME_EXCEEDED},
    stats::{self, Dir},
};

const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST: u8 = 8;
const PARAMETER_PROBLEM: u8 = 12;
/// The ICMP header is 8 bytes: type, code, checksum, and 4 bytes (echo id/seq).
#[inline(always)]
fn header(ctx: &XdpContext, p: &Packet) -> Result<[u8; 8], Reason> {
    if p.l4 + 8 > p.l3 + p.tot_len as usize {
        return Err(Reason::DropTruncatedL4);
    }
    load(ctx, p.l4).map_err(|_| Reason::DropTruncatedL4)
}

#[inline(always)]
fn is_error(t: u8) -> bool {
    t == DEST_UNREACH || t == TIME_EXCEEDED || t == PARAMETER_PROBLEM
}

#[inline(always)]
fn icmp_flow(vip_be: u32, id_be: u16, remote_be: u32) -> CtKey {
    CtKey {
        addr_a_be: vip_be,
        addr_b_be: remote_be,
        port_a_be: id_be,
        port_b_be: 0,
        proto: IPPROTO_ICMP,
        kind: CT_SNAT,
        _pad: 0,
    }
}

/// ICMP arriving for a VIP (unfragmented).
#[inline(always)]
pub fn to_vip(ctx: &XdpContext, p: &Packet, vip: &VipRecord) -> Result<u32, Reason> {
    let h = header(ctx, p)?;
    match h[0] {
        ECHO_REQUEST => echo_reply(ctx, p, h),
        ECHO_REPLY => {
            let id = u16::from_ne_bytes([h[4], h[5]]);
            // SAFETY: the value is copied out.
            let Some(ct) = (unsafe { CONNTRACK.get(icmp_flow(p.dst_be, id, p.src_be)) }) else {
                return Err(Reason::DropIcmp);
            };
            let ct = *ct;
            if p.ttl <= 1 {
                return Err(Reason::DropTtl);
            }
            let out = Out {
                reason: Reason::ConntrackReply,
                vip_id: vip.vip_id,
                dir: Dir::In,
                service: u32::MAX,
                slot: ct.slot,
                fallback_src_be: p.dst_be,
                answerable: true,
            };
            translate(ctx, p, Side::Dst, ct.member_be, SAME_PORT, out)
        }
        t if is_error(t) => error_to_vip(ctx, p, vip),
        _ => Err(Reason::DropIcmp),
    }
}

/// Answers an echo request in place and sends it back out of the interface it came in on.
#[inline(always)]
fn echo_reply(ctx: &XdpContext, p: &Packet, h: [u8; 8]) -> Result<u32, Reason> {
    let e = |_| Reason::DropMalformedIp;
    let dmac: [u8; 6] = load(ctx, 0).map_err(e)?;
    let smac: [u8; 6] = load(ctx, 6).map_err(e)?;
    store(ctx, 0, smac).map_err(e)?;
    store(ctx, 6, dmac).map_err(e)?;

    // Swapping the addresses leaves the IP checksum unchanged; the TTL changes it.
    store_addr(ctx, p.l3 + IP_SRC, p.dst_be).map_err(e)?;
    store_addr(ctx, p.l3 + IP_DST, p.src_be).map_err(e)?;
    let old: u16 = load(ctx, p.l3 + IP_TTL).map_err(e)?;
    let mut b = old.to_ne_bytes();
    b[0] = REPLY_TTL;
    let new = u16::from_ne_bytes(b);
    if new != old {
        let mut d = Delta::new();
        d.word(old, new);
        let c: u16 = load(ctx, p.l3 + IP_CSUM).map_err(e)?;
        store(ctx, p.l3 + IP_TTL, new).map_err(e)?;
        store(ctx, p.l3 + IP_CSUM, d.apply(c)).map_err(e)?;
    }

    let mut d = Delta::new();
    d.word(
        u16::from_ne_bytes([ECHO_REQUEST, h[1]]),
        u16::from_ne_bytes([ECHO_REPLY, h[1]]),
    );
    let c = u16::from_ne_bytes([h[2], h[3]]);
    store(ctx, p.l4, [ECHO_REPLY, h[1]]).map_err(e)?;
    store(ctx, p.l4 + 2, d.apply(c)).map_err(e)?;
    stats::bump(Reason::EchoReply);
    Ok(xdp_action::XDP_TX)
}

/// The packet embedded in an ICMP error: its IPv4 header (no options) and the first 8 bytes of
/// its L4 header.
struct Embedded {
    proto: u8,
    src_be: u32,
    dst_be: u32,
    /// Source and destination ports, or the echo identifier in `sport` for ICMP echo.
    sport: u16,
    dport: u16,
    icmp_type: u8,
}

const EMB_L3: usize = 8;
const EMB_L4: usize = EMB_L3 + 20;

#[inline(always)]
fn embedded(ctx: &XdpContext, p: &Packet) -> Result<Embedded, Reason> {
    let ip: [u8; 20] = load(ctx, p.l4 + EMB_L3).map_err(|_| Reason::DropTruncatedL4)?;
    if ip[0] != 0x45 {
        return Err(Reason::DropIcmp);
    }
    let l4: [u8; 8] = load(ctx, p.l4 + EMB_L4).map_err(|_| Reason::DropTruncatedL4)?;
    if p.l4 + EMB_L4 + 8 > p.l3 + p.tot_len as usize {
        return Err(Reason::DropTruncatedL4);
    }
    let (sport, dport) = if ip[9] == IPPROTO_ICMP {
        (u16::from_ne_bytes([l4[4], l4[5]]), 0)
    } else {
        (
            u16::from_ne_bytes([l4[0], l4[1]]),
            u16::from_ne_bytes([l4[2], l4[3]]),
        )
    };
    Ok(Embedded {
        proto: ip[9],
        src_be: u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
        dst_be: u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
        sport,
        dport,
        icmp_type: l4[0],
    })
}

/// Rewrites one address of the embedded packet (and its port on that side), updating the
/// embedded IP checksum, the embedded TCP/UDP checksum when present, and the ICMP checksum.
#[inline(always)]
fn translate_embedded(
    ctx: &XdpContext,
    p: &Packet,
    inner: &Embedded,
    side: Side,
    new_addr: u32,
    port: (u16, u16),
) -> Result<(), Reason> {
    let e = |_| Reason::DropTruncatedL4;
    let il3 = p.l4 + EMB_L3;
    let il4 = p.l4 + EMB_L4;
    let (old_addr, addr_off, port_off) = match side {
        Side::Src => (inner.src_be, IP_SRC, 0),
        Side::Dst => (inner.dst_be, IP_DST, 2),
    };
    let mut icmp = Delta::new();

    let mut ipd = Delta::new();
    ipd.addr(old_addr, new_addr);
    let old_ic: u16 = load(ctx, il3 + IP_CSUM).map_err(e)?;
    let new_ic = ipd.apply(old_ic);
    store_addr(ctx, il3 + addr_off, new_addr).map_err(e)?;
    store(ctx, il3 + IP_CSUM, new_ic).map_err(e)?;
    icmp.addr(old_addr, new_addr);
    if new_ic != old_ic {
        icmp.word(old_ic, new_ic);
    }

    if inner.proto == IPPROTO_TCP || inner.proto == IPPROTO_UDP {
        let mut l4 = ipd;
        let (old, new) = port;
        if old != new {
            l4.word(old, new);
            icmp.word(old, new);
            store(ctx, il4 + port_off, new).map_err(e)?;
        }
        // The embedded TCP checksum lies past the 8 bytes RFC 792 guarantees: update it only
        // when the error carries it.
        let off = il4 + if inner.proto == IPPROTO_UDP { 6 } else { 16 };
        if off + 2 <= p.l3 + p.tot_len as usize {
            if let Ok(c) = load::<u16>(ctx, off) {
                let n = if inner.proto == IPPROTO_UDP {
                    l4.apply_udp(c)
                } else {
                    l4.apply(c)
                };
                if n != c {
                    store(ctx, off, n).map_err(e)?;
                    icmp.word(c, n);
                }
            }
        }
    }

    let c: u16 = load(ctx, p.l4 + 2).map_err(e)?;
    store(ctx, p.l4 + 2, icmp.apply(c)).map_err(e)?;
    Ok(())
}

/// An ICMP error for a VIP about a packet the VIP sent (a SNATed flow): to the member.
#[inline(always)]
fn error_to_vip(ctx: &XdpContext, p: &Packet, vip: &VipRecord) -> Result<u32, Reason> {
    let inner = embedded(ctx, p)?;
    if inner.src_be != p.dst_be {
        return Err(Reason::DropIcmp);
    }
    let mut port = SAME_PORT;
    let mut service = u32::MAX;
    let (member, slot) = match inner.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            if let Some(i) = find_service(&vip.services, inner.proto, inner.sport, false) {
                if vip.active_be == 0 {
                    return Err(Reason::DropNoActive);
                }
                port = (inner.sport, vip.services[i].member_port_be);
                service = i as u32;
                (vip.active_be, vip.active_slot)
            } else {
                let key = CtKey {
                    addr_a_be: p.dst_be,
                    addr_b_be: inner.dst_be,
                    port_a_be: inner.sport,
                    port_b_be: inner.dport,
                    proto: inner.proto,
                    kind: CT_SNAT,
                    _pad: 0,
                };
                // SAFETY: the value is copied out.
                let Some(ct) = (unsafe { CONNTRACK.get(key) }) else {
                    return Err(Reason::DropIcmp);
                };
                (ct.member_be, ct.slot)
            }
        }
        IPPROTO_ICMP if inner.icmp_type == ECHO_REQUEST => {
            let key = icmp_flow(p.dst_be, inner.sport, inner.dst_be);
            // SAFETY: the value is copied out.
            let Some(ct) = (unsafe { CONNTRACK.get(key) }) else {
                return Err(Reason::DropIcmp);
            };
            (ct.member_be, ct.slot)
        }
        _ => return Err(Reason::DropIcmp),
    };
    if p.ttl <= 1 {
        return Err(Reason::DropTtl);
    }
    translate_embedded(ctx, p, &inner, Side::Src, member, port)?;
    let out = Out {
        reason: Reason::IcmpErrorIn,
        vip_id: vip.vip_id,
        dir: Dir::In,
        service,
        slot,
        fallback_src_be: p.dst_be,
        answerable: false,
    };
    translate(ctx, p, Side::Dst, member, SAME_PORT, out)
}

/// ICMP from a member (unfragmented; TTL already checked).
#[inline(always)]
pub fn from_member(ctx: &XdpContext, p: &Packet, m: &MemberRecord) -> Result<u32, Reason> {
    if p.frag_offset != 0 || p.more_frags {
        return Err(Reason::PassIcmp);
    }
    let h = header(ctx, p)?;
    match h[0] {
        ECHO_REQUEST => {
            if excluded(p.dst_be) {
                return forward(ctx, p, Reason::Excluded);
            }
            let id = u16::from_ne_bytes([h[4], h[5]]);
            let member = CtValue {
                member_be: p.src_be,
                slot: m.slot,
            };
            ensure_snat_flow(IPPROTO_ICMP, m.vip_be, id, p.dst_be, 0, member);
            let out = Out {
                reason: Reason::Snat,
                vip_id: m.vip_id,
                dir: Dir::Out,
                service: u32::MAX,
                slot: m.slot,
                fallback_src_be: m.vip_be,
                answerable: true,
            };
            translate(ctx, p, Side::Src, m.vip_be, SAME_PORT, out)
        }
        t if is_error(t) => error_from_member(ctx, p, m),
        _ => Err(Reason::PassIcmp),
    }
}

/// An ICMP error a member sends about a packet it received through the VIP: it leaves with
/// the VIP as source and the embedded packet as the peer sent it.
#[inline(always)]
fn error_from_member(ctx: &XdpContext, p: &Packet, m: &MemberRecord) -> Result<u32, Reason> {
    let inner = match embedded(ctx, p) {
        Ok(i) => i,
        Err(Reason::DropTruncatedL4) => return Err(Reason::DropTruncatedL4),
        Err(_) => return Err(Reason::PassIcmp),
    };
    if inner.dst_be != p.src_be || (inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP) {
        return Err(Reason::PassIcmp);
    }
    // The member-side port is the embedded destination port.
    let mport = inner.dport;
    if passthrough_port(m, mport)
        || passthrough_flow(m, inner.proto, p.src_be, mport, inner.src_be, inner.sport)
    {
        return forward(ctx, p, Reason::Passthrough);
    }
    if excluded(p.dst_be) {
        return forward(ctx, p, Reason::Excluded);
    }
    let mut service = u32::MAX;
    let port = if let Some(i) = find_service(&m.services, inner.proto, mport, true) {
        service = i as u32;
        (mport, m.services[i].port_be)
    } else {
        let key = CtKey {
            addr_a_be: m.vip_be,
            addr_b_be: inner.src_be,
            port_a_be: mport,
            port_b_be: inner.sport,
            proto: inner.proto,
            kind: CT_SNAT,
            _pad: 0,
        };
        // SAFETY: the value is compared and dropped.
        match unsafe { CONNTRACK.get(key) } {
            Some(ct) if ct.member_be == p.src_be => SAME_PORT,
            _ => return Err(Reason::PassIcmp),
        }
    };
    translate_embedded(ctx, p, &inner, Side::Dst, m.vip_be, port)?;
    let out = Out {
        reason: Reason::IcmpErrorOut,
        vip_id: m.vip_id,
        dir: Dir::Out,
        service,
        slot: m.slot,
        fallback_src_be: m.vip_be,
        answerable: false,
    };
    translate(ctx, p, Side::Src, m.vip_be, SAME_PORT, out)
}
