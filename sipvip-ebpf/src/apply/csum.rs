//! The rewrites: addresses and ports, with their checksums updated incrementally (see
//! [`crate::csum`]).

use sipvip_common::{Reason, IPPROTO_TCP, IPPROTO_UDP};

use super::mem::{store, store_addr};
pub use crate::csum::Delta;
use sipvip_common::Ipv6Be;

use crate::{
    family::Family,
    hook::Frame,
    packet::{
        ipv4::{l4_csum_offset, Ipv4, IP_CSUM, IP_DST, IP_SRC},
        ipv6::{Ipv6, IP6_DST, IP6_SRC, NEXT_ICMPV6},
        Ip,
    },
    rules::{
        icmp::{QUOTE6_L3, QUOTE6_L4, QUOTE_L3, QUOTE_L4},
        QuoteRewrite, Rewrite, Side,
    },
};

/// Rewrites the source or destination address of the packet, and the port on that side from
/// `port.0` to `port.1` when they differ and the packet carries its L4 header. The TCP/UDP
/// checksum (pseudo-header and port) is updated incrementally here; the IPv4 header
/// checksum is not: the returned delta goes to `send`, which writes that checksum once,
/// together with the TTL decrement or alone when the packet goes to the kernel. An ICMPv6
/// checksum covers the pseudo-header too, and is updated here.
#[inline(always)]
pub fn rewrite<F: Frame, A: Family>(f: &F, p: &Ip<A>, r: Rewrite<A>) -> Result<Delta, Reason> {
    let (new_addr, port) = (r.addr, r.port);
    let (old_addr, addr_off, port_off) = match r.side {
        Side::Src => (p.src(), A::SRC, 0),
        Side::Dst => (p.dst(), A::DST, 2),
    };
    let mut ip = Delta::new();
    A::delta(&mut ip, old_addr, new_addr);
    A::store(f, p.l3 + addr_off, new_addr).map_err(|_| Reason::DropMalformedIp)?;

    if p.frag_offset != 0 {
        return Ok(ip);
    }
    if A::V6 && p.proto == A::ICMP {
        f.update_l4_csum(p.l4 + 2, false, ip, Delta::new())
            .map_err(|_| Reason::DropTruncatedL4)?;
        return Ok(ip);
    }
    if p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP {
        return Ok(ip);
    }
    let mut ports = Delta::new();
    let (old_port, new_port) = port;
    if old_port != new_port {
        ports.word(old_port, new_port);
        store(f, p.l4 + port_off, new_port).map_err(|_| Reason::DropTruncatedL4)?;
    }
    let off = p.l4 + l4_csum_offset(p.proto);
    f.update_l4_csum(off, p.proto == IPPROTO_UDP, ip, ports)
        .map_err(|_| Reason::DropTruncatedL4)?;
    Ok(ip)
}

/// Rewrites one address of the packet quoted in an ICMP error (and its port on that side),
/// updating the quoted IP checksum, the quoted TCP/UDP checksum when the quote carries it,
/// and the ICMP checksum.
#[inline(always)]
pub fn rewrite_quote<F: Frame>(f: &F, p: &Ipv4, q: QuoteRewrite) -> Result<(), Reason> {
    let e = |_| Reason::DropTruncatedL4;
    let il3 = p.l4 + QUOTE_L3;
    let il4 = p.l4 + QUOTE_L4;
    let (addr_off, port_off) = match q.side {
        Side::Src => (IP_SRC, 0),
        Side::Dst => (IP_DST, 2),
    };
    let mut icmp = Delta::new();

    let mut ipd = Delta::new();
    ipd.addr(q.old_addr, q.addr);
    let old_ic: u16 = f.load(il3 + IP_CSUM).map_err(e)?;
    let new_ic = ipd.apply(old_ic);
    store_addr(f, il3 + addr_off, q.addr).map_err(e)?;
    store(f, il3 + IP_CSUM, new_ic).map_err(e)?;
    icmp.addr(q.old_addr, q.addr);
    if new_ic != old_ic {
        icmp.word(old_ic, new_ic);
    }

    if q.proto == IPPROTO_TCP || q.proto == IPPROTO_UDP {
        let at = if q.proto == IPPROTO_UDP { 6 } else { 16 };
        let end = p.l3 + p.tot_len as usize;
        quoted_l4(
            f,
            (il4, end),
            q.proto,
            Some(at),
            (port_off, q.port),
            ipd,
            &mut icmp,
        )?;
    }

    let c: u16 = f.load(p.l4 + 2).map_err(e)?;
    store(f, p.l4 + 2, icmp.apply(c)).map_err(e)?;
    Ok(())
}

/// Rewrites one address of the IPv6 packet quoted in an ICMPv6 error (and its port on that
/// side), updating the quoted upper-layer checksum when the quote carries it (it covers the
/// quoted pseudo-header: UDP, TCP and ICMPv6 alike) and the ICMPv6 checksum, whose message
/// body the quote is. There is no IPv6 header checksum; the outer pseudo-header's change is
/// `rewrite`'s.
#[inline(always)]
pub fn rewrite_quote6<F: Frame>(f: &F, p: &Ipv6, q: QuoteRewrite<Ipv6Be>) -> Result<(), Reason> {
    let e = |_| Reason::DropTruncatedL4;
    let il3 = p.l4 + QUOTE6_L3;
    let il4 = p.l4 + QUOTE6_L4;
    let (addr_off, port_off) = match q.side {
        Side::Src => (IP6_SRC, 0),
        Side::Dst => (IP6_DST, 2),
    };
    let mut addr = Delta::new();
    Ipv6Be::delta(&mut addr, q.old_addr, q.addr);
    Ipv6Be::store(f, il3 + addr_off, q.addr).map_err(e)?;
    let mut icmp = addr;

    let at = match q.proto {
        IPPROTO_UDP => Some(6),
        IPPROTO_TCP => Some(16),
        NEXT_ICMPV6 => Some(2),
        _ => None,
    };
    let end = p.l3 + p.tot_len as usize;
    quoted_l4(
        f,
        (il4, end),
        q.proto,
        at,
        (port_off, q.port),
        addr,
        &mut icmp,
    )?;

    let c: u16 = f.load(p.l4 + 2).map_err(e)?;
    store(f, p.l4 + 2, icmp.apply(c)).map_err(e)?;
    Ok(())
}

/// The quoted upper-layer header's part of a quote rewrite, both families: the port on the
/// rewritten side (TCP, UDP) at `il4 + port_off`, then the quoted checksum at `il4 + at`
/// (the change `l4` it covers so far, plus the port's), updated only when the error carries
/// it within the datagram's `end` (a quoted TCP checksum lies past the 8 bytes a quote
/// surely holds); each change is added to the ICMP checksum's `icmp`.
#[inline(always)]
fn quoted_l4<F: Frame>(
    f: &F,
    (il4, end): (usize, usize),
    proto: u8,
    at: Option<usize>,
    (port_off, (old, new)): (usize, (u16, u16)),
    mut l4: Delta,
    icmp: &mut Delta,
) -> Result<(), Reason> {
    let e = |_| Reason::DropTruncatedL4;
    if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && old != new {
        l4.word(old, new);
        icmp.word(old, new);
        store(f, il4 + port_off, new).map_err(e)?;
    }
    let Some(at) = at else {
        return Ok(());
    };
    let off = il4 + at;
    if off + 2 <= end {
        if let Ok(c) = f.load::<u16>(off) {
            let n = if proto == IPPROTO_UDP {
                l4.apply_udp(c)
            } else {
                l4.apply(c)
            };
            if n != c {
                store(f, off, n).map_err(e)?;
                icmp.word(c, n);
            }
        }
    }
    Ok(())
}
