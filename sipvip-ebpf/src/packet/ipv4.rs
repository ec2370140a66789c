//! IPv4 (with options) after Ethernet and one optional 802.1Q tag: where the headers are and
//! the fields the rules decide on. Every access is bounds-checked against the frame's end.

use sipvip_common::{Reason, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

pub use super::Ipv4;
use crate::hook::Frame;

pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET_MASK: u16 = 0x1fff;

// IPv4 header field offsets.
pub const IP_TTL: usize = 8;
pub const IP_CSUM: usize = 10;
pub const IP_SRC: usize = 12;
pub const IP_DST: usize = 16;

/// Parses the IPv4 header at `l3` up to the L4 header offset; broken headers are counted
/// drops.
#[inline(always)]
pub fn parse<F: Frame>(f: &F, l3: usize, vlan: bool) -> Result<Ipv4, Reason> {
    let len = f.len();
    // The fixed 20-byte header must be present. It is loaded as ten 16-bit words (headers
    // are 2-byte aligned), which is half the loads of a byte array.
    let h: [u16; 10] = f.load(l3).map_err(|_| Reason::DropMalformedIp)?;
    let [ver_ihl, tos] = h[0].to_ne_bytes();
    if ver_ihl >> 4 != 4 {
        return Err(Reason::DropMalformedIp);
    }
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(Reason::DropMalformedIp);
    }
    let tot_len = u16::from_be(h[1]);
    let avail = (len as usize).saturating_sub(l3);
    if (tot_len as usize) < ihl || tot_len as usize > avail {
        return Err(Reason::DropMalformedIp);
    }
    let frag = u16::from_be(h[3]);
    let [ttl, proto] = h[4].to_ne_bytes();
    Ok(Ipv4 {
        l3,
        l4: l3 + ihl,
        vlan,
        proto,
        ttl,
        tos,
        tot_len,
        id_be: u32::from(h[2]),
        frag_offset: frag & IP_OFFSET_MASK,
        more_frags: frag & IP_MF != 0,
        df: frag & IP_DF != 0,
        src_be: addr(h[6], h[7]),
        dst_be: addr(h[8], h[9]),
        len,
    })
}

/// An address from its two words as loaded from packet memory (network order kept).
#[inline(always)]
pub fn addr(hi: u16, lo: u16) -> u32 {
    let (a, b) = (hi.to_ne_bytes(), lo.to_ne_bytes());
    u32::from_ne_bytes([a[0], a[1], b[0], b[1]])
}

/// Offset of the L4 checksum field from the L4 header, for the protocols we rewrite.
#[inline(always)]
pub fn l4_csum_offset(proto: u8) -> usize {
    match proto {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        IPPROTO_ICMP | super::ipv6::NEXT_ICMPV6 => 2,
        _ => 0,
    }
}
