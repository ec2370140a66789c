//! Fragments (IPv4, and IPv6 by its fragment header): every fragment of one datagram gets the decision of its first fragment.
//!
//! - A first fragment (offset 0, MF set) decides from its L4 header, like an unfragmented
//!   packet, and records that decision under the datagram's identity (src, dst, id, proto,
//!   direction), replacing any entry: an entry found then belongs to an older datagram that
//!   reused the identity (or to a duplicate), never to this one, because only first fragments
//!   write entries.
//! - A later fragment follows the recorded decision while it is younger than the fragment
//!   lifetime (`Settings::frag_lifetime`, default 2 s). Otherwise it is an orphan: its first
//!   fragment has not passed (yet). XDP cannot hold it, so inbound it is dropped and counted
//!   (its ports are unknown, so it must not reach a member); outbound it takes the default
//!   for member traffic (SNAT unless the destination is excluded) and records nothing.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use sipvip_common::{time_units, FragValue, DEFAULT_FRAG_LIFETIME_NS, TIME_UNIT_SHIFT};

use super::Family;
use crate::{maps::SETTINGS, packet::Ip};

#[inline(always)]
fn now() -> u32 {
    // SAFETY: a helper without arguments.
    (unsafe { bpf_ktime_get_coarse_ns() } >> TIME_UNIT_SHIFT) as u32
}

/// The record of a first fragment's decision, for the rest of its datagram. (An LRU map
/// makes room for it; if the write fails anyway, the later fragments are orphans.)
#[inline(always)]
pub fn first<A: Family>(p: &Ip<A>, dir: u8, decision: FragValue<A>) -> (A::FragKey, FragValue<A>) {
    let v = FragValue {
        stamp: now(),
        ..decision
    };
    (A::frag_key(p, dir), v)
}

/// The decision of this later fragment's first fragment, if it passed within the lifetime.
#[inline(always)]
pub fn follow<A: Family>(p: &Ip<A>, dir: u8) -> Option<FragValue<A>> {
    let v = *A::fragment(&A::frag_key(p, dir))?;
    let lifetime = match SETTINGS.get(0) {
        Some(s) if s.frag_lifetime != 0 => s.frag_lifetime,
        _ => const { time_units(DEFAULT_FRAG_LIFETIME_NS) },
    };
    if now().wrapping_sub(v.stamp) > lifetime {
        return None;
    }
    Some(v)
}
