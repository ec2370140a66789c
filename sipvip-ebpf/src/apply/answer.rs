//! Answers the datapath builds in place and sends back where a packet came from: the echo
//! reply of a VIP (both families), and the ICMP errors it sends as the gateway (fragmentation needed, time
//! exceeded). See docs/architecture.md, "Path MTU".

use sipvip_common::{Ipv6Be, Reason, IPPROTO_ICMP};

use super::{csum::Delta, mem::store, mem::store_addr};
use crate::{
    family::Family,
    hook::{Frame, Verdict},
    packet::{
        ipv4::{Ipv4, IP_CSUM, IP_DST, IP_SRC, IP_TTL},
        ipv6::{Ipv6, IP6_DST, IP6_HOP_WORD, IP6_SRC, NEXT_ICMPV6},
    },
    rules::{
        icmp::{ECHO6_REPLY, ECHO6_REQUEST, ECHO_REPLY, ECHO_REQUEST},
        route::{DEST_UNREACH, FRAG_NEEDED},
    },
};

/// TTL of the packets the datapath originates.
pub const REPLY_TTL: u8 = 64;
/// Type of service of the ICMP errors the datapath sends (precedence "internetwork
/// control", as Linux sends them).
const ERROR_TOS: u8 = 0xc0;
/// The new IPv4 and ICMP headers in front of the quoted packet.
const ERROR_HEADERS: usize = 28;
/// The quoted packet's L4 bytes: RFC 792's 64 bits, enough for ports (and an echo id).
const QUOTED_L4: usize = 8;

/// Answers an echo request in place and sends it back out of the interface it came in on.
#[inline(always)]
pub fn echo_reply<F: Frame>(f: &F, p: &Ipv4) -> Result<Verdict, Reason> {
    let e = |_| Reason::DropMalformedIp;
    let h: [u8; 4] = f.load(p.l4).map_err(e)?;
    let dmac: [u8; 6] = f.load(0).map_err(e)?;
    let smac: [u8; 6] = f.load(6).map_err(e)?;
    store(f, 0, smac).map_err(e)?;
    store(f, 6, dmac).map_err(e)?;

    // Swapping the addresses leaves the IP checksum unchanged; the TTL changes it.
    store_addr(f, p.l3 + IP_SRC, p.dst_be).map_err(e)?;
    store_addr(f, p.l3 + IP_DST, p.src_be).map_err(e)?;
    let old: u16 = f.load(p.l3 + IP_TTL).map_err(e)?;
    let mut b = old.to_ne_bytes();
    b[0] = REPLY_TTL;
    let new = u16::from_ne_bytes(b);
    if new != old {
        let mut d = Delta::new();
        d.word(old, new);
        let c: u16 = f.load(p.l3 + IP_CSUM).map_err(e)?;
        store(f, p.l3 + IP_TTL, new).map_err(e)?;
        store(f, p.l3 + IP_CSUM, d.apply(c)).map_err(e)?;
    }

    let mut d = Delta::new();
    d.word(
        u16::from_ne_bytes([ECHO_REQUEST, h[1]]),
        u16::from_ne_bytes([ECHO_REPLY, h[1]]),
    );
    let c = u16::from_ne_bytes([h[2], h[3]]);
    store(f, p.l4, [ECHO_REPLY, h[1]]).map_err(e)?;
    store(f, p.l4 + 2, d.apply(c)).map_err(e)?;
    Ok(Verdict::Bounce)
}

/// Answers an ICMPv6 echo request in place (RFC 4443, 4.2) and sends it back out of the
/// interface it came in on: addresses swapped (which leaves the pseudo-header's sum, and so
/// the checksum, as it was), hop limit `REPLY_TTL`, type 129.
#[inline(always)]
pub fn echo_reply6<F: Frame>(f: &F, p: &Ipv6) -> Result<Verdict, Reason> {
    let e = |_| Reason::DropMalformedIpv6;
    let h: [u8; 4] = f.load(p.l4).map_err(e)?;
    let dmac: [u8; 6] = f.load(0).map_err(e)?;
    let smac: [u8; 6] = f.load(6).map_err(e)?;
    store(f, 0, smac).map_err(e)?;
    store(f, 6, dmac).map_err(e)?;

    <Ipv6Be as Family>::store(f, p.l3 + IP6_SRC, p.dst_be).map_err(e)?;
    <Ipv6Be as Family>::store(f, p.l3 + IP6_DST, p.src_be).map_err(e)?;
    let hop: u16 = f.load(p.l3 + IP6_HOP_WORD).map_err(e)?;
    let [next, _] = hop.to_ne_bytes();
    store(f, p.l3 + IP6_HOP_WORD, [next, REPLY_TTL]).map_err(e)?;

    let mut d = Delta::new();
    d.word(
        u16::from_ne_bytes([ECHO6_REQUEST, h[1]]),
        u16::from_ne_bytes([ECHO6_REPLY, h[1]]),
    );
    let c = u16::from_ne_bytes([h[2], h[3]]);
    store(f, p.l4, [ECHO6_REPLY, h[1]]).map_err(e)?;
    store(f, p.l4 + 2, d.apply(c)).map_err(e)?;
    Ok(Verdict::Bounce)
}

/// Answers the packet with an ICMP error (`ty`/`code`; `mtu` for "fragmentation needed")
/// from the gateway (`src_be`): the destination is the packet's source, and the quote the
/// packet's IP header and first 8 bytes of payload exactly as they arrived. Built in place (the head grows by the
/// new headers, the tail is cut after the quote) and sent back with XDP_TX to the MAC it came
/// from, from the MAC it was sent to (the interface's own, by the acceptance rule).
#[inline(always)]
pub fn send_error<F: Frame>(
    f: &F,
    p: &Ipv4,
    ty: u8,
    code: u8,
    mtu: u16,
    src_be: u32,
) -> Result<Verdict, Reason> {
    let e = |_| Reason::DropMalformedIp;
    let ihl = p.l4 - p.l3;
    let quoted = ihl + QUOTED_L4;
    if p.l3 + quoted > p.l3 + p.tot_len as usize {
        return Err(Reason::DropTruncatedL4);
    }
    // The one's-complement sum of the quote (at most 60 + 8 bytes), before anything moves.
    let sum = quote_sum::<F, { 60 + QUOTED_L4 }>(f, p.l3, quoted).map_err(e)?;
    // The frame's L2 header (18 bytes are always there: the IPv4 header follows).
    let l2: [u16; 9] = f.load(0).map_err(e)?;

    // Every pointer is re-derived after the frame moves.
    if !f.adjust_head(-(ERROR_HEADERS as i32)) {
        return Err(Reason::PassFib);
    }
    let want = p.l3 + ERROR_HEADERS + quoted;
    let have = p.len as usize + ERROR_HEADERS;
    // The frame only shrinks, never below the headers just made room for.
    if !f.adjust_tail(want as i32 - have as i32) {
        return Err(Reason::DropMalformedIp);
    }

    // Ethernet (and the 802.1Q tag): back where it came from.
    turn_around(f, l2, p.vlan).map_err(e)?;

    let l3 = p.l3;
    let tot = ((ERROR_HEADERS + quoted) as u16).to_be();
    let [s0, s1, s2, s3] = src_be.to_ne_bytes();
    let [d0, d1, d2, d3] = p.src_be.to_ne_bytes();
    let mut ip: [u16; 10] = [
        u16::from_ne_bytes([0x45, ERROR_TOS]),
        tot,
        0,
        0,
        u16::from_ne_bytes([REPLY_TTL, IPPROTO_ICMP]),
        0,
        u16::from_ne_bytes([s0, s1]),
        u16::from_ne_bytes([s2, s3]),
        u16::from_ne_bytes([d0, d1]),
        u16::from_ne_bytes([d2, d3]),
    ];
    ip[5] = !fold(ip.iter().map(|w| u32::from(*w)).sum());
    store(f, l3, ip).map_err(e)?;

    let mut icmp: [u16; 4] = [
        u16::from_ne_bytes([ty, code]),
        0,
        0,
        if ty == DEST_UNREACH { mtu.to_be() } else { 0 },
    ];
    icmp[1] = !fold(sum + icmp.iter().map(|w| u32::from(*w)).sum::<u32>());
    store(f, l3 + 20, icmp).map_err(e)?;
    Ok(Verdict::Bounce)
}

/// The most of the packet an ICMPv6 error of the datapath quotes: its IPv6 header, extension
/// headers and upper-layer header within this many bytes (RFC 4443 asks for as much as fits
/// in 1280; a prefix is what the sender needs to find its flow).
const QUOTED6: usize = 112;
/// The new IPv6 and ICMPv6 headers in front of the quote.
const ERROR6_HEADERS: usize = 48;

/// Answers the packet with an ICMPv6 error from the gateway (`src`): packet too big
/// (`ty`/`code` the IPv4 "fragmentation needed", with `mtu`) or time exceeded. The quote is
/// the packet as it arrived, up to `QUOTED6` bytes (an even count); built in place as the
/// IPv4 errors are, and sent back with XDP_TX.
#[inline(always)]
pub fn send_error6<F: Frame>(
    f: &F,
    p: &Ipv6,
    ty: u8,
    code: u8,
    mtu: u16,
    src: Ipv6Be,
) -> Result<Verdict, Reason> {
    let e = |_| Reason::DropMalformedIpv6;
    let (ty, code) = if ty == DEST_UNREACH && code == FRAG_NEEDED {
        (2, 0)
    } else {
        (3, 0)
    };
    let tot = p.tot_len as usize;
    let quoted = (if tot < QUOTED6 { tot } else { QUOTED6 }) & !1;
    let sum = quote_sum::<F, QUOTED6>(f, p.l3, quoted).map_err(e)?;
    let l2: [u16; 9] = f.load(0).map_err(e)?;
    let dst = p.src();

    if !f.adjust_head(-(ERROR6_HEADERS as i32)) {
        return Err(Reason::PassFib);
    }
    let want = p.l3 + ERROR6_HEADERS + quoted;
    let have = p.len as usize + ERROR6_HEADERS;
    if !f.adjust_tail(want as i32 - have as i32) {
        return Err(Reason::DropMalformedIpv6);
    }
    turn_around(f, l2, p.vlan).map_err(e)?;

    let l3 = p.l3;
    let len = (8 + quoted) as u16;
    let head: [u16; 4] = [
        u16::from_ne_bytes([0x60, 0]),
        0,
        len.to_be(),
        u16::from_ne_bytes([NEXT_ICMPV6, REPLY_TTL]),
    ];
    store(f, l3, head).map_err(e)?;
    <Ipv6Be as Family>::store(f, l3 + IP6_SRC, src).map_err(e)?;
    <Ipv6Be as Family>::store(f, l3 + IP6_DST, dst).map_err(e)?;

    let mut icmp: [u16; 4] = [
        u16::from_ne_bytes([ty, code]),
        0,
        0,
        if ty == 2 { mtu.to_be() } else { 0 },
    ];
    // The pseudo-header: both addresses, the length and the next header.
    let words = |a: Ipv6Be| -> u32 { a.iter().map(|w| (w & 0xffff) + (w >> 16)).sum::<u32>() };
    let pseudo = words(src)
        + words(dst)
        + u32::from(len.to_be())
        + u32::from(u16::from_ne_bytes([0, NEXT_ICMPV6]));
    icmp[1] = !fold(fold(sum) as u32 + pseudo + icmp.iter().map(|w| u32::from(*w)).sum::<u32>());
    store(f, l3 + 40, icmp).map_err(e)?;
    Ok(Verdict::Bounce)
}

/// The one's-complement sum of the first `quoted` bytes at `l3` (an even count, at most
/// `MAX`), read before the frame moves.
#[inline(always)]
fn quote_sum<F: Frame, const MAX: usize>(f: &F, l3: usize, quoted: usize) -> Result<u32, ()> {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < MAX / 2 {
        if i * 2 >= quoted {
            break;
        }
        let w: u16 = f.load(l3 + i * 2)?;
        sum += u32::from(w);
        i += 1;
    }
    Ok(sum)
}

/// Writes the saved link-layer header `l2` back, turned around: to the MAC the frame came
/// from, from the one it was sent to, the 802.1Q tag (if any) and ethertype kept.
#[inline(always)]
fn turn_around<F: Frame>(f: &F, l2: [u16; 9], vlan: bool) -> Result<(), ()> {
    store(f, 0, [l2[3], l2[4], l2[5], l2[0], l2[1], l2[2]])?;
    if vlan {
        store(f, 12, [l2[6], l2[7], l2[8]])
    } else {
        store(f, 12, l2[6])
    }
}

#[inline(always)]
fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}
