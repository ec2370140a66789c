//! A plain frame: untagged Ethernet, IPv4 without options, and a TCP or UDP header, all
//! inside the frame, checked once. The flow cache's lane (`crate::flow::lane`) parses it in
//! a few loads and `apply::cached` rewrites it through the same checked pointer, so a
//! cached packet pays one bounds check where the rules' path pays one per field.

use sipvip_common::{IPPROTO_TCP, IPPROTO_UDP};

use super::{
    ipv4::{addr, l4_csum_offset, IP_MF, IP_OFFSET_MASK},
    ETH_HLEN, ETH_P_IP_BE,
};
use crate::hook::Frame;

/// The bytes a plain UDP frame's headers take (Ethernet, IPv4, UDP).
const UDP_BYTES: usize = ETH_HLEN + 20 + 8;
/// The same for TCP.
const TCP_BYTES: usize = ETH_HLEN + 20 + 20;

/// Word indexes (16-bit words from the frame's start) of the fields the cache's path
/// reads or writes.
pub const W_ETHERTYPE: usize = 6;
pub const W_VER_IHL_TOS: usize = 7;
pub const W_TOT_LEN: usize = 8;
pub const W_FRAG: usize = 10;
/// The TTL and protocol, followed by the header checksum (`W_IP_CSUM`).
pub const W_TTL: usize = 11;
pub const W_IP_CSUM: usize = 12;
pub const W_SRC: usize = 13;
pub const W_DST: usize = 15;
pub const W_SPORT: usize = 17;
pub const W_DPORT: usize = 18;

/// A frame whose headers were found plain and inside it (its first `UDP_BYTES` bytes, and
/// `TCP_BYTES` for a TCP segment), with the fields the cache's path reads. Only [`plain`]
/// makes one.
pub struct Plain {
    start: *mut u16,
    pub proto: u8,
    pub ttl: u8,
    /// The IPv4 total length, host order.
    pub tot_len: u16,
    /// The frame length, for byte counters.
    pub len: u32,
    /// Addresses and ports in network order.
    pub src_be: u32,
    pub dst_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
}

impl Plain {
    /// The 16-bit word `i` as it lies in memory (a volatile read: right after the check,
    /// never re-read through another register).
    #[inline(always)]
    pub fn word(&self, i: usize) -> u16 {
        word(self.start, i)
    }

    /// Writes word `i` (`apply` only).
    #[inline(always)]
    pub fn set(&self, i: usize, v: u16) {
        // SAFETY: as in `word`.
        unsafe { core::ptr::write(self.start.add(i), v) }
    }

    /// The checksum word of the L4 header (TCP's only for a TCP segment, whose whole header
    /// was checked).
    #[inline(always)]
    pub fn l4_csum_word(&self) -> usize {
        (ETH_HLEN + 20 + l4_csum_offset(self.proto)) / 2
    }
}

/// Word `i` of a checked frame start.
#[inline(always)]
fn word(start: *mut u16, i: usize) -> u16 {
    // SAFETY: every index used is a constant below the checked length (the TCP checksum's
    // only for a TCP segment, whose whole header was checked); frames are 2-byte aligned
    // (see `Frame::load`).
    unsafe { core::ptr::read_volatile(start.add(i)) }
}

/// The frame as a plain one, parsed, or None when it is any other kind (tagged, not IPv4,
/// IPv4 options, a fragment, not TCP or UDP, an L4 header cut short in the frame or the
/// datagram, a datagram longer than the frame): the rules' path parses those.
#[inline(always)]
pub fn plain<F: Frame>(f: &F) -> Option<Plain> {
    // One read of the frame's bounds: its start for every word, its length for the checks
    // and the byte counters.
    let (start, end) = f.bounds();
    if start + UDP_BYTES > end {
        return None;
    }
    let len = (end - start) as u32;
    let start = start as *mut u16;
    let w = |i| word(start, i);
    if w(W_ETHERTYPE) != ETH_P_IP_BE || w(W_VER_IHL_TOS).to_ne_bytes()[0] != 0x45 {
        return None;
    }
    // Neither a later fragment nor a first one.
    if w(W_FRAG) & (IP_MF | IP_OFFSET_MASK).to_be() != 0 {
        return None;
    }
    let [ttl, proto] = w(W_TTL).to_ne_bytes();
    let need = match proto {
        IPPROTO_UDP => UDP_BYTES,
        IPPROTO_TCP => TCP_BYTES,
        _ => return None,
    };
    let tot_len = u16::from_be(w(W_TOT_LEN));
    // The L4 header inside the datagram (`packet::ports`), the datagram inside the frame
    // (`ipv4::parse`).
    if (tot_len as usize) < need - ETH_HLEN || u32::from(tot_len) > len - ETH_HLEN as u32 {
        return None;
    }
    if need == TCP_BYTES {
        f.ptr_at::<[u16; TCP_BYTES / 2]>(0).ok()?;
    }
    Some(Plain {
        start,
        proto,
        ttl,
        tot_len,
        len,
        src_be: addr(w(W_SRC), w(W_SRC + 1)),
        dst_be: addr(w(W_DST), w(W_DST + 1)),
        sport_be: w(W_SPORT),
        dport_be: w(W_DPORT),
    })
}
