//! IPv6 after Ethernet and one optional 802.1Q tag: the fixed header, then the extension
//! headers (hop-by-hop, routing, destination options, fragment) walked in a bounded loop of
//! at most `MAX_IPV6_EXT_HEADERS`. Every access is bounds-checked against the frame's end and
//! the payload length. Neighbor Discovery and router traffic, and chains the walk does not
//! finish, go to the kernel untouched; malformed packets are counted drops.

use sipvip_common::{Ipv6Be, Reason, MAX_IPV6_EXT_HEADERS};

pub use super::Ipv6;
use crate::hook::{Frame, MAX_OFFSET};

// IPv6 header field offsets.
pub const IP6_HOP_WORD: usize = 6;
pub const IP6_SRC: usize = 8;
pub const IP6_DST: usize = 24;

const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ROUTING: u8 = 43;
const NEXT_FRAGMENT: u8 = 44;
const NEXT_DEST_OPTS: u8 = 60;
pub const NEXT_ICMPV6: u8 = 58;
const ND_FIRST: u8 = 133;
const ND_LAST: u8 = 137;
const FIXED: usize = 40;

/// Parses the fixed header at `l3` and walks the extension headers.
#[inline(always)]
pub fn parse<F: Frame>(f: &F, l3: usize, vlan: bool) -> Result<Ipv6, Reason> {
    let bad = |_| Reason::DropMalformedIpv6;
    let h: [u16; 4] = f.load(l3).map_err(bad)?;
    let src: [u16; 8] = f.load(l3 + IP6_SRC).map_err(bad)?;
    let dst: [u16; 8] = f.load(l3 + IP6_DST).map_err(bad)?;
    let [ver, tc_flow] = h[0].to_ne_bytes();
    if ver >> 4 != 6 {
        return Err(Reason::DropMalformedIpv6);
    }
    let payload = u16::from_be(h[2]) as usize;
    let [mut next, hop_limit] = h[3].to_ne_bytes();
    // A jumbogram (RFC 2675) has payload length 0 and a hop-by-hop option giving its size.
    if payload == 0 && next == NEXT_HOP_BY_HOP {
        return Err(Reason::DropMalformedIpv6);
    }
    let len = f.len() as usize;
    if l3 + FIXED + payload > len {
        return Err(Reason::DropMalformedIpv6);
    }
    let end = l3 + FIXED + payload;
    let mut off = l3 + FIXED;
    let mut later_fragment = false;
    let (mut id_be, mut frag_offset, mut more_frags) = (0u32, 0u16, false);
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS | NEXT_FRAGMENT => {}
            _ => break,
        }
        // Headers are read within the first MAX_OFFSET bytes: a chain reaching past them is
        // the kernel's.
        if off + 8 > MAX_OFFSET {
            return Err(Reason::PassIpv6Ext);
        }
        if off + 8 > end {
            return Err(Reason::DropMalformedIpv6);
        }
        let w: [u16; 4] = f.load(off).map_err(bad)?;
        let [nh, hdr_len] = w[0].to_ne_bytes();
        let size = if next == NEXT_FRAGMENT {
            let frag = u16::from_be(w[1]);
            let more = frag & 1 != 0;
            // A non-final fragment carries a multiple of 8 octets (RFC 8200, 4.5).
            if more && !(end - (off + 8)).is_multiple_of(8) {
                return Err(Reason::DropMalformedIpv6);
            }
            // Nor may a fragment reach past the largest datagram (65,535 octets of payload).
            if ((frag >> 3) as usize) * 8 + (end - (off + 8)) > 0xffff {
                return Err(Reason::DropMalformedIpv6);
            }
            later_fragment = frag >> 3 != 0;
            let [a, b] = w[2].to_ne_bytes();
            let [c, d] = w[3].to_ne_bytes();
            id_be = u32::from_ne_bytes([a, b, c, d]);
            frag_offset = frag >> 3;
            more_frags = more;
            8
        } else {
            (hdr_len as usize + 1) * 8
        };
        if off + size > end {
            return Err(Reason::DropMalformedIpv6);
        }
        next = nh;
        off += size;
        if later_fragment {
            break;
        }
    }
    if !later_fragment
        && matches!(
            next,
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS | NEXT_FRAGMENT
        )
    {
        return Err(Reason::PassIpv6Ext);
    }
    if next == NEXT_ICMPV6 && !later_fragment {
        if off + 4 > end {
            return Err(Reason::DropMalformedIpv6);
        }
        // Type and code as one word (the loads the verifier follows best are 2-byte ones).
        let w: u16 = f.load(off).map_err(bad)?;
        let [ty, _code] = w.to_ne_bytes();
        if (ND_FIRST..=ND_LAST).contains(&ty) {
            return Err(Reason::PassNd);
        }
    }
    // A datagram longer than an IPv4 total length could say is the kernel's (only jumbo
    // frames get near it).
    let Ok(tot_len) = u16::try_from(FIXED + payload) else {
        return Err(Reason::PassIpv6);
    };
    Ok(Ipv6 {
        l3,
        l4: off,
        vlan,
        proto: next,
        ttl: hop_limit,
        tos: (ver << 4) | (tc_flow >> 4),
        tot_len,
        id_be,
        frag_offset,
        more_frags,
        df: true,
        src_be: addr(src),
        dst_be: addr(dst),
        len: len as u32,
    })
}

/// An address from its eight words as loaded from packet memory (network order kept),
/// combined into four at once: the words would otherwise be held (and spilled) one by one.
#[inline(always)]
pub fn addr(w: [u16; 8]) -> Ipv6Be {
    let pair = |lo: u16, hi: u16| {
        let (a, b) = (lo.to_ne_bytes(), hi.to_ne_bytes());
        u32::from_ne_bytes([a[0], a[1], b[0], b[1]])
    };
    [
        pair(w[0], w[1]),
        pair(w[2], w[3]),
        pair(w[4], w[5]),
        pair(w[6], w[7]),
    ]
}
