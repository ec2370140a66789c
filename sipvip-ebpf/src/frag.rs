//! IPv4 fragments: every fragment of one datagram gets the same decision.
//!
//! The first fragment to arrive (whichever it is) records the decision under the datagram's
//! identity (src, dst, id, proto); later arrivals follow it. A first fragment decides from its
//! L4 header; a later fragment that arrives before the first decides by the default for its
//! direction (inbound: the active member; outbound: SNAT unless the destination is excluded).

use sipvip_common::{FragKey, FragValue};

use crate::{maps::FRAGS, parse::Packet};

/// Returns the decision recorded for this datagram, or records and returns `proposed`.
#[inline(always)]
pub fn datagram(p: &Packet, dir: u8, proposed: FragValue) -> FragValue {
    let key = FragKey {
        src_be: p.src_be,
        dst_be: p.dst_be,
        id_be: p.id_be,
        proto: p.proto,
        dir,
    };
    // SAFETY: the value is copied out immediately.
    if let Some(v) = unsafe { FRAGS.get(key) } {
        return *v;
    }
    // If the insert fails (it cannot for an LRU map), the fragments still follow `proposed`.
    let _ = FRAGS.insert(key, proposed, 0);
    proposed
}
