//! IPv4 (with options) after Ethernet and one optional 802.1Q tag: where the headers are and
//! the fields the rules decide on. Every access is bounds-checked against the frame's end.

use sipvip_common::{Reason, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use super::{ETH_HLEN, ETH_P_8021Q_BE, ETH_P_IPV6_BE, ETH_P_IP_BE, VLAN_HLEN};
use crate::hook::Frame;

pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET_MASK: u16 = 0x1fff;

// IPv4 header field offsets.
pub const IP_TTL: usize = 8;
pub const IP_CSUM: usize = 10;
pub const IP_SRC: usize = 12;
pub const IP_DST: usize = 16;

/// Where the parsed headers are, as offsets from the start of the frame.
pub struct Ipv4 {
    pub l3: usize,
    pub l4: usize,
    pub vlan: bool,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    /// Host order.
    pub tot_len: u16,
    pub id_be: u16,
    /// Fragment offset in 8-byte units (host order); 0 for the first or only fragment.
    pub frag_offset: u16,
    pub more_frags: bool,
    /// Don't Fragment.
    pub df: bool,
    pub src_be: u32,
    pub dst_be: u32,
    /// The frame length, for byte counters.
    pub len: u32,
}

impl Ipv4 {
    /// True for a later fragment (no L4 header).
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        self.frag_offset != 0
    }
}

/// Parses up to the L4 header offset.
///
/// Non-IP frames are `PassNotIpv4`; IPv6 frames get `ipv6::screen`'s outcome; broken
/// headers are counted drops.
#[inline(always)]
pub fn parse<F: Frame>(f: &F) -> Result<Ipv4, Reason> {
    let len = f.len();
    let mut ethertype: u16 = f.load(12).map_err(|_| Reason::DropMalformedEth)?;
    let mut l3 = ETH_HLEN;
    let mut vlan = false;
    if ethertype == ETH_P_8021Q_BE {
        ethertype = f.load(ETH_HLEN + 2).map_err(|_| Reason::DropMalformedEth)?;
        l3 = ETH_HLEN + VLAN_HLEN;
        vlan = true;
    }
    if ethertype != ETH_P_IP_BE {
        if ethertype == ETH_P_IPV6_BE {
            return Err(super::ipv6::screen(f, l3));
        }
        return Err(Reason::PassNotIpv4);
    }
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
        id_be: h[2],
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
fn addr(hi: u16, lo: u16) -> u32 {
    let (a, b) = (hi.to_ne_bytes(), lo.to_ne_bytes());
    u32::from_ne_bytes([a[0], a[1], b[0], b[1]])
}

/// Source and destination ports (network order) of a TCP or UDP header at `l4`, checking that
/// the header the datapath rewrites (8 bytes for UDP, 20 for TCP) is present in the frame.
#[inline(always)]
pub fn ports<F: Frame>(f: &F, p: &Ipv4) -> Result<(u16, u16), Reason> {
    let need = match p.proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return Err(Reason::DropTruncatedL4),
    };
    // The L4 header must lie inside the IP datagram as well as inside the frame.
    if p.l4 + need > p.l3 + p.tot_len as usize {
        return Err(Reason::DropTruncatedL4);
    }
    let (sport, dport): (u16, u16) = if p.proto == IPPROTO_TCP {
        let h: [u16; 10] = f.load(p.l4).map_err(|_| Reason::DropTruncatedL4)?;
        (h[0], h[1])
    } else {
        let h: [u16; 4] = f.load(p.l4).map_err(|_| Reason::DropTruncatedL4)?;
        (h[0], h[1])
    };
    Ok((sport, dport))
}

/// Offset of the L4 checksum field from the L4 header, for the protocols we rewrite.
#[inline(always)]
pub fn l4_csum_offset(proto: u8) -> usize {
    match proto {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        IPPROTO_ICMP => 2,
        _ => 0,
    }
}
