//! Answers the datapath builds in place and sends back where a packet came from: the ICMP
//! errors it sends as the gateway (fragmentation needed, time exceeded). See
//! docs/architecture.md, "Path MTU".

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use sipvip_common::{Reason, IPPROTO_ICMP};

use crate::{
    parse::{iface, load, store, Packet},
    stats,
};

pub const DEST_UNREACH: u8 = 3;
/// Code of DEST_UNREACH: fragmentation needed and DF set (RFC 1191).
pub const FRAG_NEEDED: u8 = 4;
pub const TIME_EXCEEDED: u8 = 11;
/// TTL of the packets the datapath originates.
pub const REPLY_TTL: u8 = 64;
/// Type of service of the ICMP errors the datapath sends (precedence "internetwork
/// control", as Linux sends them).
const ERROR_TOS: u8 = 0xc0;
/// The new IPv4 and ICMP headers in front of the quoted packet.
const ERROR_HEADERS: usize = 28;
/// The quoted packet's L4 bytes: RFC 792's 64 bits, enough for ports (and an echo id).
const QUOTED_L4: usize = 8;

/// Answers the packet with an ICMP error (`ty`/`code`; `mtu` for "fragmentation needed")
/// from the gateway: the source is the ingress interface's address (`fallback_src_be` if it
/// has none), the destination the packet's source, and the quote the packet's IP header and
/// first 8 bytes of payload exactly as they arrived. Built in place (the head grows by the
/// new headers, the tail is cut after the quote) and sent back with XDP_TX to the MAC it came
/// from, from the MAC it was sent to (the interface's own, by the acceptance rule).
#[inline(always)]
pub fn send_error(
    ctx: &XdpContext,
    p: &Packet,
    ty: u8,
    code: u8,
    mtu: u16,
    fallback_src_be: u32,
    counted: Reason,
) -> Result<u32, Reason> {
    let e = |_| Reason::DropMalformedIp;
    let ihl = p.l4 - p.l3;
    let quoted = ihl + QUOTED_L4;
    if p.l3 + quoted > p.l3 + p.tot_len as usize {
        return Err(Reason::DropTruncatedL4);
    }
    // The one's-complement sum of the quote (at most 60 + 8 bytes), before anything moves.
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < (60 + QUOTED_L4) / 2 {
        if i * 2 >= quoted {
            break;
        }
        let w: u16 = load(ctx, p.l3 + i * 2).map_err(e)?;
        sum += u32::from(w);
        i += 1;
    }
    let src_be = match iface(ctx) {
        Some(ifc) if ifc.addr_be != 0 => ifc.addr_be,
        _ => fallback_src_be,
    };
    // The frame's L2 header (18 bytes are always there: the IPv4 header follows).
    let l2: [u16; 9] = load(ctx, 0).map_err(e)?;

    // SAFETY: the helpers check their arguments; every pointer is re-derived afterwards.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ERROR_HEADERS as i32)) } != 0 {
        return Err(Reason::PassFib);
    }
    let want = p.l3 + ERROR_HEADERS + quoted;
    let have = p.len as usize + ERROR_HEADERS;
    // SAFETY: as above; the frame only shrinks, never below the headers just made room for.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, want as i32 - have as i32) } != 0 {
        return Err(Reason::DropMalformedIp);
    }

    // Ethernet (and the 802.1Q tag): back where it came from.
    store(ctx, 0, [l2[3], l2[4], l2[5], l2[0], l2[1], l2[2]]).map_err(e)?;
    if p.vlan {
        store(ctx, 12, [l2[6], l2[7], l2[8]]).map_err(e)?;
    } else {
        store(ctx, 12, l2[6]).map_err(e)?;
    }

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
    store(ctx, l3, ip).map_err(e)?;

    let mut icmp: [u16; 4] = [
        u16::from_ne_bytes([ty, code]),
        0,
        0,
        if ty == DEST_UNREACH { mtu.to_be() } else { 0 },
    ];
    icmp[1] = !fold(sum + icmp.iter().map(|w| u32::from(*w)).sum::<u32>());
    store(ctx, l3 + 20, icmp).map_err(e)?;
    stats::bump(counted);
    Ok(xdp_action::XDP_TX)
}

#[inline(always)]
fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}
