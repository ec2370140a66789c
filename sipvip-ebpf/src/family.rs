//! The two address families, as one trait: what the rules and `apply` need to know of a
//! family (its header layout, its maps, its ICMP) so that each is written once, generic over
//! the address. IPv4 addresses are `u32` and IPv6 addresses [`Ipv6Be`], both in network
//! order; every method is inlined, so each family's programs carry only their own code.
//!
//! What differs, in one place:
//! - the header: IPv4 has a header checksum and the TTL, IPv6 the hop limit and no header
//!   checksum (the L4 checksum covers the 16-byte addresses of the pseudo-header);
//! - the maps: each address-keyed map has an IPv6 twin (`SV_VIPS6_V1`, ...); counters,
//!   reasons, interfaces and pass-through port marks are shared;
//! - ICMP: both families answer echo to a VIP, track members' echo and translate errors
//!   about translated flows (each reads its own quote); IPv4 also sends the gateway's own
//!   errors (fragmentation needed, time exceeded) (see docs/architecture.md, "IPv6").

use aya_ebpf::maps::lpm_trie::Key;
use sipvip_common::{
    nexthop_slot, nexthop_slot6, CtKey, CtValue, FragKey, FragKey6, FragValue, Ipv6Be,
    MemberRecord, NextHop, Reason, VipRecord, IPPROTO_ICMP,
};

use crate::{
    csum::Delta,
    hook::{Frame, Verdict},
    maps,
    packet::{ipv4, ipv6, Ip},
    rules::{self, icmp::Quoted, IcmpError, Pending, QuoteRewrite},
};

/// An address family: IPv4 (`u32`) or IPv6 ([`Ipv6Be`]).
pub trait Family: Copy + PartialEq + 'static {
    const ZERO: Self;
    const V6: bool;
    /// The protocol number of the family's ICMP.
    const ICMP: u8;
    /// `AF_INET` or `AF_INET6`, for the FIB.
    const AF: u8;
    /// Whether the datapath builds the family's ICMP errors itself (fragmentation needed or
    /// packet too big, time exceeded); otherwise the kernel handles those packets.
    const ANSWERS: bool;
    /// Offsets of the source and destination addresses from the IP header.
    const SRC: usize;
    const DST: usize;
    /// The 16-bit word of the IP header holding the TTL (hop limit), and the TTL's byte in it.
    const TTL_WORD: usize;
    const TTL_BYTE: usize;
    /// Whether the IP header has a checksum of its own.
    const HEADER_CSUM: bool;

    /// The key of the family's fragment map.
    type FragKey: Copy;

    /// Parses the IP header at `l3` (see `packet`).
    fn parse<F: Frame>(f: &F, l3: usize, vlan: bool) -> Result<Ip<Self>, Reason>;

    /// Where the rules read the parsed packet from. IPv4: the value itself, in registers.
    /// IPv6: this CPU's slot of `SV_PACKET6_V1`, written once and read where used: the
    /// verifier knows nothing of a map value's contents, so the parse's many paths (the
    /// extension headers, each with its own offsets) meet in one state before the rules
    /// instead of each being verified through all of them (which goes past the verifier's
    /// million instructions), and the packet's fields are not held in registers and
    /// spilled onto the 512-byte stack.
    fn settle(p: &Ip<Self>) -> Option<&Ip<Self>>;

    fn is_zero(&self) -> bool;
    /// Adds the change of an address to a checksum delta.
    fn delta(d: &mut Delta, old: Self, new: Self);
    /// The address as 16-bit words as they lie in memory (for stores).
    fn store<F: Frame>(f: &F, off: usize, a: Self) -> Result<(), ()>;
    /// The address as the FIB takes it.
    fn fib(a: Self) -> [u32; 4];
    /// The address screen: martians dropped, broadcast and multicast passed.
    fn screen(p: &Ip<Self>) -> Result<(), Reason>;

    fn vip(a: &Self) -> Option<&'static VipRecord<Self>>;
    fn member(a: &Self) -> Option<&'static MemberRecord<Self>>;
    fn flow(k: &CtKey<Self>) -> Option<&'static CtValue<Self>>;
    fn insert_flow(k: &CtKey<Self>, v: &CtValue<Self>);
    fn excluded(a: &Self) -> bool;
    fn frag_key(p: &Ip<Self>, dir: u8) -> Self::FragKey;
    fn fragment(k: &Self::FragKey) -> Option<&'static FragValue<Self>>;
    fn insert_fragment(k: &Self::FragKey, v: &FragValue<Self>);
    /// This CPU's next-hop cache slot for `dst` arriving on `ingress_ifindex`.
    fn nexthop(dst: &Self, ingress_ifindex: u32) -> Option<*mut NextHop<Self>>;
    /// This CPU's pending slot (see `rules::Pending`).
    fn pending() -> Option<*mut Pending<Self>>;

    /// The packet quoted in an ICMP error.
    fn quoted<F: Frame>(f: &F, p: &Ip<Self>) -> Result<Quoted<Self>, Reason>;
    /// The source of the errors the gateway sends: the interface's address, else `fallback`.
    fn error_source<F: Frame>(f: &F, fallback: Self) -> Self;

    /// Answers an echo request in place (`apply` only).
    fn echo_reply<F: Frame>(f: &F, p: &Ip<Self>) -> Result<Verdict, Reason>;
    /// Answers the packet with the gateway's ICMP error (`apply` only).
    fn send_error<F: Frame>(f: &F, p: &Ip<Self>, e: IcmpError<Self>) -> Result<Verdict, Reason>;
    /// Rewrites an ICMP error's quote (`apply` only).
    fn rewrite_quote<F: Frame>(f: &F, p: &Ip<Self>, q: QuoteRewrite<Self>) -> Result<(), Reason>;
}

impl Family for u32 {
    const ZERO: Self = 0;
    const V6: bool = false;
    const ICMP: u8 = IPPROTO_ICMP;
    const AF: u8 = 2;
    const ANSWERS: bool = true;
    const SRC: usize = ipv4::IP_SRC;
    const DST: usize = ipv4::IP_DST;
    const TTL_WORD: usize = ipv4::IP_TTL;
    const TTL_BYTE: usize = 0;
    const HEADER_CSUM: bool = true;
    type FragKey = FragKey;

    #[inline(always)]
    fn parse<F: Frame>(f: &F, l3: usize, vlan: bool) -> Result<Ip<Self>, Reason> {
        ipv4::parse(f, l3, vlan)
    }

    #[inline(always)]
    fn settle(p: &Ip<Self>) -> Option<&Ip<Self>> {
        Some(p)
    }

    #[inline(always)]
    fn is_zero(&self) -> bool {
        *self == 0
    }

    #[inline(always)]
    fn delta(d: &mut Delta, old: Self, new: Self) {
        d.addr(old, new);
    }

    #[inline(always)]
    fn store<F: Frame>(f: &F, off: usize, a: Self) -> Result<(), ()> {
        crate::apply::store_addr(f, off, a)
    }

    #[inline(always)]
    fn fib(a: Self) -> [u32; 4] {
        [a, 0, 0, 0]
    }

    #[inline(always)]
    fn screen(p: &Ip<Self>) -> Result<(), Reason> {
        rules::screen::screen(p)
    }

    #[inline(always)]
    fn vip(a: &Self) -> Option<&'static VipRecord<Self>> {
        maps::find_vip(a)
    }

    #[inline(always)]
    fn member(a: &Self) -> Option<&'static MemberRecord<Self>> {
        maps::find_member(a)
    }

    #[inline(always)]
    fn flow(k: &CtKey<Self>) -> Option<&'static CtValue<Self>> {
        // SAFETY: as above.
        unsafe { maps::CONNTRACK.get(k) }
    }

    #[inline(always)]
    fn insert_flow(k: &CtKey<Self>, v: &CtValue<Self>) {
        let _ = maps::CONNTRACK.insert(k, v, 0);
    }

    #[inline(always)]
    fn excluded(a: &Self) -> bool {
        maps::EXCLUSIONS.get(Key::new(32, *a)).is_some()
    }

    #[inline(always)]
    fn frag_key(p: &Ip<Self>, dir: u8) -> FragKey {
        FragKey {
            src_be: p.src(),
            dst_be: p.dst(),
            id_be: p.id_be as u16,
            proto: p.proto,
            dir,
        }
    }

    #[inline(always)]
    fn fragment(k: &FragKey) -> Option<&'static FragValue<Self>> {
        // SAFETY: as above.
        unsafe { maps::FRAGS.get(k) }
    }

    #[inline(always)]
    fn insert_fragment(k: &FragKey, v: &FragValue<Self>) {
        let _ = maps::FRAGS.insert(k, v, 0);
    }

    #[inline(always)]
    fn nexthop(dst: &Self, ingress_ifindex: u32) -> Option<*mut NextHop<Self>> {
        maps::NEXTHOPS.get_ptr_mut(
            maps::cpu_block(sipvip_common::NEXTHOP_SLOTS) + nexthop_slot(*dst, ingress_ifindex),
        )
    }

    #[inline(always)]
    fn pending() -> Option<*mut Pending<Self>> {
        rules::PENDING.get_ptr_mut(0)
    }

    #[inline(always)]
    fn quoted<F: Frame>(f: &F, p: &Ip<Self>) -> Result<Quoted<Self>, Reason> {
        rules::icmp::quoted(f, p)
    }

    #[inline(always)]
    fn error_source<F: Frame>(f: &F, fallback: Self) -> Self {
        rules::screen::error_source(f, fallback)
    }

    #[inline(always)]
    fn echo_reply<F: Frame>(f: &F, p: &Ip<Self>) -> Result<Verdict, Reason> {
        crate::apply::answer::echo_reply(f, p)
    }

    #[inline(always)]
    fn send_error<F: Frame>(f: &F, p: &Ip<Self>, e: IcmpError<Self>) -> Result<Verdict, Reason> {
        crate::apply::answer::send_error(f, p, e.ty, e.code, e.mtu, e.src)
    }

    #[inline(always)]
    fn rewrite_quote<F: Frame>(f: &F, p: &Ip<Self>, q: QuoteRewrite<Self>) -> Result<(), Reason> {
        crate::apply::csum::rewrite_quote(f, p, q)
    }
}

impl Family for Ipv6Be {
    const ZERO: Self = [0; 4];
    const V6: bool = true;
    const ICMP: u8 = ipv6::NEXT_ICMPV6;
    const AF: u8 = 10;
    const ANSWERS: bool = true;
    const SRC: usize = ipv6::IP6_SRC;
    const DST: usize = ipv6::IP6_DST;
    const TTL_WORD: usize = ipv6::IP6_HOP_WORD;
    const TTL_BYTE: usize = 1;
    const HEADER_CSUM: bool = false;
    type FragKey = FragKey6;

    #[inline(always)]
    fn parse<F: Frame>(f: &F, l3: usize, vlan: bool) -> Result<Ip<Self>, Reason> {
        ipv6::parse(f, l3, vlan)
    }

    #[inline(always)]
    fn settle(p: &Ip<Self>) -> Option<&Ip<Self>> {
        let slot = maps::PACKET6.get_ptr_mut(0)?;
        // SAFETY: this CPU's slot; nothing else runs on this CPU until the program returns.
        unsafe {
            core::ptr::copy_nonoverlapping(p, slot, 1);
            Some(&*slot)
        }
    }

    #[inline(always)]
    fn is_zero(&self) -> bool {
        *self == [0; 4]
    }

    #[inline(always)]
    fn delta(d: &mut Delta, old: Self, new: Self) {
        let (o, n) = (old, new);
        let mut i = 0;
        while i < 4 {
            d.addr(o[i], n[i]);
            i += 1;
        }
    }

    #[inline(always)]
    fn store<F: Frame>(f: &F, off: usize, a: Self) -> Result<(), ()> {
        // SAFETY: same size, every bit pattern valid; the bytes stay in memory order.
        let w = unsafe { core::mem::transmute::<Ipv6Be, [u16; 8]>(a) };
        crate::apply::store(f, off, w)
    }

    #[inline(always)]
    fn fib(a: Self) -> [u32; 4] {
        a
    }

    #[inline(always)]
    fn screen(p: &Ip<Self>) -> Result<(), Reason> {
        rules::screen::screen6(p)
    }

    #[inline(always)]
    fn vip(a: &Self) -> Option<&'static VipRecord<Self>> {
        maps::find_vip6(a)
    }

    #[inline(always)]
    fn member(a: &Self) -> Option<&'static MemberRecord<Self>> {
        maps::find_member6(a)
    }

    #[inline(always)]
    fn flow(k: &CtKey<Self>) -> Option<&'static CtValue<Self>> {
        // SAFETY: as above.
        unsafe { maps::CONNTRACK6.get(k) }
    }

    #[inline(always)]
    fn insert_flow(k: &CtKey<Self>, v: &CtValue<Self>) {
        let _ = maps::CONNTRACK6.insert(k, v, 0);
    }

    #[inline(always)]
    fn excluded(a: &Self) -> bool {
        maps::EXCLUSIONS6.get(Key::new(128, *a)).is_some()
    }

    #[inline(always)]
    fn frag_key(p: &Ip<Self>, dir: u8) -> FragKey6 {
        FragKey6 {
            src_be: p.src(),
            dst_be: p.dst(),
            id_be: p.id_be,
            proto: p.proto,
            dir,
            _pad: 0,
        }
    }

    #[inline(always)]
    fn fragment(k: &FragKey6) -> Option<&'static FragValue<Self>> {
        // SAFETY: as above.
        unsafe { maps::FRAGS6.get(k) }
    }

    #[inline(always)]
    fn insert_fragment(k: &FragKey6, v: &FragValue<Self>) {
        let _ = maps::FRAGS6.insert(k, v, 0);
    }

    #[inline(always)]
    fn nexthop(dst: &Self, ingress_ifindex: u32) -> Option<*mut NextHop<Self>> {
        maps::NEXTHOPS6.get_ptr_mut(
            maps::cpu_block(sipvip_common::NEXTHOP_SLOTS) + nexthop_slot6(dst, ingress_ifindex),
        )
    }

    #[inline(always)]
    fn pending() -> Option<*mut Pending<Self>> {
        rules::PENDING6.get_ptr_mut(0)
    }

    #[inline(always)]
    fn quoted<F: Frame>(f: &F, p: &Ip<Self>) -> Result<Quoted<Self>, Reason> {
        rules::icmp::quoted6(f, p)
    }

    #[inline(always)]
    fn error_source<F: Frame>(f: &F, fallback: Self) -> Self {
        rules::screen::error_source6(f, fallback)
    }

    #[inline(always)]
    fn echo_reply<F: Frame>(f: &F, p: &Ip<Self>) -> Result<Verdict, Reason> {
        crate::apply::answer::echo_reply6(f, p)
    }

    #[inline(always)]
    fn send_error<F: Frame>(f: &F, p: &Ip<Self>, e: IcmpError<Self>) -> Result<Verdict, Reason> {
        crate::apply::answer::send_error6(f, p, e.ty, e.code, e.mtu, e.src)
    }

    #[inline(always)]
    fn rewrite_quote<F: Frame>(f: &F, p: &Ip<Self>, q: QuoteRewrite<Self>) -> Result<(), Reason> {
        crate::apply::csum::rewrite_quote6(f, p, q)
    }
}
