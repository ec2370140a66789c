//! Incremental Internet checksum updates (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
//!
//! All values are 16-bit words exactly as loaded from packet memory. One's-complement sums are
//! byte-order independent (RFC 1071), so no byte swapping is needed.

use aya_ebpf::programs::XdpContext;
use sipvip_common::{Reason, IPPROTO_TCP, IPPROTO_UDP};

use crate::parse::{l4_csum_offset, load, store, store_addr, Packet, IP_DST, IP_SRC};

/// An accumulated difference: the sum of `~old + new` over every changed 16-bit word.
#[derive(Clone, Copy)]
pub struct Delta(u32);

impl Delta {
    #[inline(always)]
    pub const fn new() -> Self {
        Delta(0)
    }

    #[inline(always)]
    pub fn word(&mut self, old: u16, new: u16) {
        self.0 += u32::from(!old) + u32::from(new);
    }

    /// A 32-bit field (an IPv4 address) as two words.
    #[inline(always)]
    pub fn addr(&mut self, old: u32, new: u32) {
        self.word(old as u16, new as u16);
        self.word((old >> 16) as u16, (new >> 16) as u16);
    }

    /// Applies the difference to a checksum field.
    #[inline(always)]
    pub fn apply(self, csum: u16) -> u16 {
        !fold(u32::from(!csum) + self.0)
    }

    /// Applies the difference to a UDP checksum: 0 means "no checksum" and stays 0, and a
    /// computed 0 is sent as 0xffff (RFC 768).
    #[inline(always)]
    pub fn apply_udp(self, csum: u16) -> u16 {
        if csum == 0 {
            return 0;
        }
        match self.apply(csum) {
            0 => 0xffff,
            c => c,
        }
    }
}

#[inline(always)]
fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// No port change.
pub const SAME_PORT: (u16, u16) = (0, 0);

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Source address (and port).
    Src,
    /// Destination address (and port).
    Dst,
}

/// Rewrites the source or destination address of the packet, and the port on that side from
/// `port.0` to `port.1` when they differ and the packet carries its L4 header. The TCP/UDP
/// checksum (pseudo-header and port) is updated incrementally here; the IPv4 header
/// checksum is not: the returned delta goes to `forward`, which writes that checksum once,
/// together with the TTL decrement or alone when the packet goes to the kernel.
#[inline(always)]
pub fn rewrite(
    ctx: &XdpContext,
    p: &Packet,
    side: Side,
    new_addr: u32,
    port: (u16, u16),
) -> Result<Delta, Reason> {
    let (old_addr, addr_off, port_off) = match side {
        Side::Src => (p.src_be, IP_SRC, 0),
        Side::Dst => (p.dst_be, IP_DST, 2),
    };
    let mut ip = Delta::new();
    ip.addr(old_addr, new_addr);
    store_addr(ctx, p.l3 + addr_off, new_addr).map_err(|_| Reason::DropMalformedIp)?;

    if p.frag_offset != 0 || (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP) {
        return Ok(ip);
    }
    let mut l4 = ip;
    let (old_port, new_port) = port;
    if old_port != new_port {
        l4.word(old_port, new_port);
        store(ctx, p.l4 + port_off, new_port).map_err(|_| Reason::DropTruncatedL4)?;
    }
    let off = p.l4 + l4_csum_offset(p.proto);
    let c: u16 = load(ctx, off).map_err(|_| Reason::DropTruncatedL4)?;
    let n = if p.proto == IPPROTO_UDP {
        l4.apply_udp(c)
    } else {
        l4.apply(c)
    };
    store(ctx, off, n).map_err(|_| Reason::DropTruncatedL4)?;
    Ok(ip)
}
