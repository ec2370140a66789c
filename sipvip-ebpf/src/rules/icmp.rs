//! ICMP and ICMPv6: echo to a VIP is answered; echo from a member is SNATed with its
//! identifier tracked; errors about translated flows are translated, quoted packet included
//! (RFC 5508; for ICMPv6 the same, the checksum covering the pseudo-header).

use sipvip_common::{
    CtKey, CtValue, Ipv6Be, MemberRecord, Reason, VipRecord, CT_SNAT, IPPROTO_ICMP, IPPROTO_TCP,
    IPPROTO_UDP, MEMBER_F_SERVICE_ONLY,
};

use super::{
    lookup::{find_service, passthrough_flow, passthrough_port, snat_flow},
    route::{self, Via, DEST_UNREACH, TIME_EXCEEDED},
    Action, Decision, Dir, Family, QuoteRewrite, Record, Side, SAME_PORT,
};
use crate::{
    hook::Frame,
    packet::{
        ipv4::Ipv4,
        ipv6::{self, NEXT_ICMPV6},
        Ip,
    },
};

pub const ECHO_REPLY: u8 = 0;
pub const ECHO_REQUEST: u8 = 8;
/// ICMPv6 echo (RFC 4443, 4.1 and 4.2).
pub const ECHO6_REQUEST: u8 = 128;
pub const ECHO6_REPLY: u8 = 129;
const PARAMETER_PROBLEM: u8 = 12;

/// Where the quoted packet of an ICMP error starts, from the ICMP header, and its L4 header
/// (the quote's IPv4 header has no options).
pub const QUOTE_L3: usize = 8;
pub const QUOTE_L4: usize = QUOTE_L3 + 20;

/// The ICMP header is 8 bytes: type, code, checksum, and 4 bytes (echo id/seq).
#[inline(always)]
fn header<F: Frame, A>(f: &F, p: &Ip<A>) -> Result<[u8; 8], Reason> {
    if p.l4 + 8 > p.l3 + p.tot_len as usize {
        return Err(Reason::DropTruncatedL4);
    }
    f.load(p.l4).map_err(|_| Reason::DropTruncatedL4)
}

/// The error types whose quote the datapath translates: destination unreachable, time
/// exceeded, parameter problem (IPv4); destination unreachable, packet too big, time
/// exceeded, parameter problem (ICMPv6, RFC 4443: types 1-4).
#[inline(always)]
fn is_error<A: Family>(t: u8) -> bool {
    if A::V6 {
        (1..=4).contains(&t)
    } else {
        t == DEST_UNREACH || t == TIME_EXCEEDED || t == PARAMETER_PROBLEM
    }
}

#[inline(always)]
fn icmp_flow<A: Family>(vip_be: A, id_be: u16, remote_be: A) -> CtKey<A> {
    CtKey {
        addr_a_be: vip_be,
        addr_b_be: remote_be,
        port_a_be: id_be,
        port_b_be: 0,
        proto: A::ICMP,
        kind: CT_SNAT,
        _pad: 0,
    }
}

/// The family's echo request and reply types.
#[inline(always)]
fn echo_types<A: Family>() -> (u8, u8) {
    if A::V6 {
        (ECHO6_REQUEST, ECHO6_REPLY)
    } else {
        (ECHO_REQUEST, ECHO_REPLY)
    }
}

/// ICMP arriving for a VIP (unfragmented).
#[inline(always)]
pub fn to_vip<F: Frame, A: Family>(
    f: &F,
    p: &Ip<A>,
    vip: &VipRecord<A>,
) -> Result<Decision<A>, Reason> {
    let h = header(f, p)?;
    let (request, reply) = echo_types::<A>();
    match h[0] {
        t if t == request => Ok(Decision {
            action: Action::EchoReply,
            reason: Reason::EchoReply,
            ..Decision::BLANK
        }),
        t if t == reply => {
            let id = u16::from_ne_bytes([h[4], h[5]]);
            let Some(ct) = A::flow(&icmp_flow(p.dst(), id, p.src())) else {
                return route::hand_over(f, p, Reason::DropIcmp);
            };
            let ct = *ct;
            if p.ttl <= 1 {
                return Err(Reason::DropTtl);
            }
            Ok(route::translate(
                f,
                p,
                Dir::In,
                vip.vip_id,
                (ct.member_be, ct.slot),
                u32::MAX,
                SAME_PORT,
                Reason::ConntrackReply,
                Record::NONE,
                Via::toward_members(vip.flags),
            ))
        }
        t if is_error::<A>(t) => error_to_vip(f, p, vip),
        _ => Err(Reason::DropIcmp),
    }
}

/// The packet quoted in an ICMP error: its IP header (IPv4 without options, IPv6 without
/// extension headers) and the first 8 bytes of its L4 header.
pub struct Quoted<A> {
    pub proto: u8,
    pub src_be: A,
    pub dst_be: A,
    /// Source and destination ports, or the echo identifier in `sport` for ICMP echo.
    pub sport: u16,
    pub dport: u16,
    pub icmp_type: u8,
}

/// Where the quoted packet of an ICMPv6 error starts, from the ICMPv6 header, and its L4
/// header (the quote's IPv6 header carries no extension headers the datapath reads past).
pub const QUOTE6_L3: usize = 8;
pub const QUOTE6_L4: usize = QUOTE6_L3 + 40;

/// The IPv6 packet quoted in an ICMPv6 error.
#[inline(always)]
pub fn quoted6<F: Frame>(f: &F, p: &Ip<Ipv6Be>) -> Result<Quoted<Ipv6Be>, Reason> {
    let e = |_| Reason::DropTruncatedL4;
    let h: [u16; 4] = f.load(p.l4 + QUOTE6_L3).map_err(e)?;
    let src: [u16; 8] = f.load(p.l4 + QUOTE6_L3 + 8).map_err(e)?;
    let dst: [u16; 8] = f.load(p.l4 + QUOTE6_L3 + 24).map_err(e)?;
    if h[0].to_ne_bytes()[0] >> 4 != 6 {
        return Err(Reason::DropIcmp);
    }
    let proto = h[3].to_ne_bytes()[0];
    let l4: [u8; 8] = f.load(p.l4 + QUOTE6_L4).map_err(e)?;
    if p.l4 + QUOTE6_L4 + 8 > p.l3 + p.tot_len as usize {
        return Err(Reason::DropTruncatedL4);
    }
    let (sport, dport) = if proto == NEXT_ICMPV6 {
        (u16::from_ne_bytes([l4[4], l4[5]]), 0)
    } else {
        (
            u16::from_ne_bytes([l4[0], l4[1]]),
            u16::from_ne_bytes([l4[2], l4[3]]),
        )
    };
    Ok(Quoted {
        proto,
        src_be: ipv6::addr(src),
        dst_be: ipv6::addr(dst),
        sport,
        dport,
        icmp_type: l4[0],
    })
}

/// The IPv4 packet quoted in an ICMP error.
#[inline(always)]
pub fn quoted<F: Frame>(f: &F, p: &Ipv4) -> Result<Quoted<u32>, Reason> {
    let ip: [u8; 20] = f
        .load(p.l4 + QUOTE_L3)
        .map_err(|_| Reason::DropTruncatedL4)?;
    if ip[0] != 0x45 {
        return Err(Reason::DropIcmp);
    }
    let l4: [u8; 8] = f
        .load(p.l4 + QUOTE_L4)
        .map_err(|_| Reason::DropTruncatedL4)?;
    if p.l4 + QUOTE_L4 + 8 > p.l3 + p.tot_len as usize {
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
    Ok(Quoted {
        proto: ip[9],
        src_be: u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
        dst_be: u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
        sport,
        dport,
        icmp_type: l4[0],
    })
}

/// An ICMP error for a VIP about a packet the VIP sent (a SNATed flow): to the member.
#[inline(always)]
pub fn error_to_vip<F: Frame, A: Family>(
    f: &F,
    p: &Ip<A>,
    vip: &VipRecord<A>,
) -> Result<Decision<A>, Reason> {
    let inner = A::quoted(f, p)?;
    if inner.src_be != p.dst() {
        return Err(Reason::DropIcmp);
    }
    let mut port = SAME_PORT;
    let mut service = u32::MAX;
    let (member, slot) = match inner.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            if let Some(i) = find_service(&vip.services, inner.proto, inner.sport, false) {
                if vip.active_be.is_zero() {
                    return Err(Reason::DropNoActive);
                }
                port = (inner.sport, vip.services[i].member_port_be);
                service = i as u32;
                (vip.active_be, vip.active_slot)
            } else {
                let key = CtKey {
                    addr_a_be: p.dst(),
                    addr_b_be: inner.dst_be,
                    port_a_be: inner.sport,
                    port_b_be: inner.dport,
                    proto: inner.proto,
                    kind: CT_SNAT,
                    _pad: 0,
                };
                let Some(ct) = A::flow(&key) else {
                    return route::hand_over(f, p, Reason::DropIcmp);
                };
                (ct.member_be, ct.slot)
            }
        }
        pr if pr == A::ICMP && inner.icmp_type == echo_types::<A>().0 => {
            let key = icmp_flow(p.dst(), inner.sport, inner.dst_be);
            let Some(ct) = A::flow(&key) else {
                return route::hand_over(f, p, Reason::DropIcmp);
            };
            (ct.member_be, ct.slot)
        }
        _ => return Err(Reason::DropIcmp),
    };
    if p.ttl <= 1 {
        return Err(Reason::DropTtl);
    }
    let quote = QuoteRewrite {
        side: Side::Src,
        old_addr: inner.src_be,
        addr: member,
        port,
        proto: inner.proto,
    };
    let mut record = Record::NONE;
    record.quote(quote);
    Ok(route::translate(
        f,
        p,
        Dir::In,
        vip.vip_id,
        (member, slot),
        service,
        SAME_PORT,
        Reason::IcmpErrorIn,
        record,
        Via::toward_members(vip.flags),
    ))
}

/// ICMP from a member (unfragmented; TTL already checked).
#[inline(always)]
pub fn from_member<F: Frame, A: Family>(
    f: &F,
    p: &Ip<A>,
    m: &MemberRecord<A>,
) -> Result<Decision<A>, Reason> {
    if p.frag_offset != 0 || p.more_frags {
        return Err(Reason::PassIcmp);
    }
    let h = header(f, p)?;
    let (request, _) = echo_types::<A>();
    match h[0] {
        t if t == request => {
            if m.flags & MEMBER_F_SERVICE_ONLY != 0 {
                return Err(Reason::PassNotService);
            }
            if A::excluded(&p.dst()) {
                return Ok(route::forward(f, p, Reason::Excluded, Record::NONE));
            }
            let id = u16::from_ne_bytes([h[4], h[5]]);
            let member = CtValue {
                member_be: p.src(),
                slot: m.slot,
            };
            let mut record = Record::NONE;
            if let Some(w) = snat_flow(A::ICMP, m.vip_be, id, p.dst(), 0, member) {
                record.snat_flow(w);
            }
            Ok(route::translate(
                f,
                p,
                Dir::Out,
                m.vip_id,
                (m.vip_be, m.slot),
                u32::MAX,
                SAME_PORT,
                Reason::Snat,
                record,
                Via::Fib,
            ))
        }
        t if is_error::<A>(t) => error_from_member(f, p, m),
        _ => Err(Reason::PassIcmp),
    }
}

/// An ICMP error a member sends about a packet it received through the VIP: it leaves with
/// the VIP as source and the quoted packet as the peer sent it.
#[inline(always)]
pub fn error_from_member<F: Frame, A: Family>(
    f: &F,
    p: &Ip<A>,
    m: &MemberRecord<A>,
) -> Result<Decision<A>, Reason> {
    let inner = match A::quoted(f, p) {
        Ok(i) => i,
        Err(Reason::DropTruncatedL4) => return Err(Reason::DropTruncatedL4),
        Err(_) => return Err(Reason::PassIcmp),
    };
    if inner.dst_be != p.src() || (inner.proto != IPPROTO_TCP && inner.proto != IPPROTO_UDP) {
        return Err(Reason::PassIcmp);
    }
    // The member-side port is the quoted destination port.
    let mport = inner.dport;
    if passthrough_port(m, mport)
        || passthrough_flow(m, inner.proto, p.src(), mport, inner.src_be, inner.sport)
    {
        return Ok(route::forward(f, p, Reason::Passthrough, Record::NONE));
    }
    if A::excluded(&p.dst()) {
        return Ok(route::forward(f, p, Reason::Excluded, Record::NONE));
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
        match A::flow(&key) {
            Some(ct) if ct.member_be == p.src() => SAME_PORT,
            _ => return Err(Reason::PassIcmp),
        }
    };
    let quote = QuoteRewrite {
        side: Side::Dst,
        old_addr: inner.dst_be,
        addr: m.vip_be,
        port,
        proto: inner.proto,
    };
    let mut record = Record::NONE;
    record.quote(quote);
    Ok(route::translate(
        f,
        p,
        Dir::Out,
        m.vip_id,
        (m.vip_be, m.slot),
        service,
        SAME_PORT,
        Reason::IcmpErrorOut,
        record,
        Via::Fib,
    ))
}
