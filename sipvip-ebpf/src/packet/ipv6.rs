//! IPv6 after Ethernet and one optional 802.1Q tag: the fixed header, then the extension
//! headers (hop-by-hop, routing, destination options, fragment) walked in a bounded loop of
//! at most `MAX_IPV6_EXT_HEADERS`. Every access is bounds-checked against the frame's end and
//! the payload length. The datapath has no IPv6 VIPs yet: a parsed packet is only screened
//! (`screen`), and every IPv6 packet goes to the kernel untouched or is a counted drop.

use sipvip_common::{Reason, MAX_IPV6_EXT_HEADERS};

use crate::hook::{Frame, MAX_OFFSET};

const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ROUTING: u8 = 43;
const NEXT_FRAGMENT: u8 = 44;
const NEXT_DEST_OPTS: u8 = 60;
const NEXT_ICMPV6: u8 = 58;
const ND_FIRST: u8 = 133;
const ND_LAST: u8 = 137;
const FIXED: usize = 40;

/// Where an IPv6 packet's upper-layer header starts, and what it is.
pub struct Ipv6 {
    /// The upper-layer header's offset, protocol and whether it is there (a later fragment
    /// carries none).
    pub l4: usize,
    pub proto: u8,
    pub later_fragment: bool,
    /// The end of the payload (the fixed header's payload length).
    pub end: usize,
}

/// Parses the fixed header at `l3` and walks the extension headers.
#[inline(always)]
pub fn parse<F: Frame>(f: &F, l3: usize) -> Result<Ipv6, Reason> {
    let bad = |_| Reason::DropMalformedIpv6;
    let h: [u16; 4] = f.load(l3).map_err(bad)?;
    // The addresses must be there too.
    let _: [u16; 16] = f.load(l3 + 8).map_err(bad)?;
    let [ver, _] = h[0].to_ne_bytes();
    if ver >> 4 != 6 {
        return Err(Reason::DropMalformedIpv6);
    }
    let payload = u16::from_be(h[2]) as usize;
    let [mut next, _hop_limit] = h[3].to_ne_bytes();
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
            later_fragment = frag >> 3 != 0;
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
    Ok(Ipv6 {
        l4: off,
        proto: next,
        later_fragment,
        end,
    })
}

/// What becomes of an IPv6 frame (the L3 header at `l3`): Neighbor Discovery and router
/// traffic and every well-formed packet go to the kernel, counted by kind; a malformed one
/// is a counted drop. Always an outcome: nothing is translated yet.
#[inline(always)]
pub fn screen<F: Frame>(f: &F, l3: usize) -> Reason {
    let p = match parse(f, l3) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if p.proto == NEXT_ICMPV6 && !p.later_fragment {
        if p.l4 + 4 > p.end {
            return Reason::DropMalformedIpv6;
        }
        // Type and code as one word (the loads the verifier follows best are 2-byte ones).
        let Ok(w) = f.load::<u16>(p.l4) else {
            return Reason::DropMalformedIpv6;
        };
        let [ty, _code] = w.to_ne_bytes();
        if (ND_FIRST..=ND_LAST).contains(&ty) {
            return Reason::PassNd;
        }
    }
    Reason::PassIpv6
}
