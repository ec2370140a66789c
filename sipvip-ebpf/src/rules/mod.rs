//! The rules: what to do with a packet, decided from the packet (read through
//! [`Frame`](crate::hook::Frame)) and the maps, without writing either. Each side returns a
//! [`Decision`], which [`crate::apply`] carries out; a rule that stops early returns the
//! counted reason as its error. See docs/architecture.md, "Per-packet rules" and "The code".
//!
//! - [`screen`]: the L2 acceptance rule and the address screen, before any other rule;
//! - [`external`] and [`internal`]: the two sides;
//! - [`icmp`]: echo and errors, both sides;
//! - [`frag`]: fragments follow their first fragment;
//! - [`lookup`]: the lookups the sides share (services, exclusions, pass-through, conntrack);
//! - [`route`]: the next hop, and how a translated packet leaves.
//!
//! The rules are written once, generic over the address family ([`Family`]: `u32` for
//! IPv4, 16 bytes for IPv6), so both families take the same rules and produce the same shape
//! of decision, while IPv4 keeps its 4-byte addresses.

pub mod external;
pub mod frag;
pub mod icmp;
pub mod internal;
pub mod lookup;
pub mod route;
pub mod screen;

use sipvip_common::{CtKey, CtValue, FragValue, Ipv6Be, NextHop, Reason};

use aya_ebpf::{macros::map, maps::PerCpuArray};

pub use crate::family::Family;
use crate::{hook::Frame, packet::Ip};

/// One side's rules (external, internal), for a packet of either family.
pub trait SideRules {
    /// The side, as a trace names it (`TRACE_SIDE_*`).
    const SIDE: u8;
    fn decide<F: Frame, A: Family>(f: &F, p: &Ip<A>) -> Result<Decision<A>, Reason>;
}

/// The external side.
pub struct External;
/// The internal side (and the node's own traffic at TC egress).
pub struct Internal;

impl SideRules for External {
    const SIDE: u8 = sipvip_common::TRACE_SIDE_EXT;
    #[inline(always)]
    fn decide<F: Frame, A: Family>(f: &F, p: &Ip<A>) -> Result<Decision<A>, Reason> {
        external::rules(f, p)
    }
}

impl SideRules for Internal {
    const SIDE: u8 = sipvip_common::TRACE_SIDE_INT;
    #[inline(always)]
    fn decide<F: Frame, A: Family>(f: &F, p: &Ip<A>) -> Result<Decision<A>, Reason> {
        internal::rules(f, p)
    }
}

/// A parsed packet on a side: the address screen, then the side's rules, whose decision
/// lands in `d`. An error is the reason the packet stopped before any rule of the side.
#[inline(always)]
pub fn decide<F: Frame, A: Family, S: SideRules>(
    f: &F,
    p: &Ip<A>,
    d: &mut Decision<A>,
) -> Result<(), Reason> {
    A::screen(p)?;
    // Completed on a local before it is stored: LLVM keeps it in registers.
    let mut decided = match S::decide(f, p) {
        Ok(d) => d,
        Err(r) => Decision::stop(r, Record::NONE),
    };
    route::resolve(f, p, &mut decided);
    *d = decided;
    Ok(())
}

/// Which address (and port) of a packet a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Source address (and port).
    Src,
    /// Destination address (and port).
    Dst,
}

/// No port change.
pub const SAME_PORT: (u16, u16) = (0, 0);

/// The direction of a translated packet, for the per-VIP counters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Toward a member.
    In,
    /// From a member.
    Out,
}

/// One address of the packet, and the port on that side from `port.0` to `port.1` when they
/// differ and the packet carries its L4 header.
#[derive(Clone, Copy)]
pub struct Rewrite<A = u32> {
    pub side: Side,
    pub addr: A,
    pub port: (u16, u16),
}

/// The rewrite of the packet quoted in an ICMP error (RFC 5508): one address, its port, and
/// the quoted checksums.
#[derive(Clone, Copy)]
pub struct QuoteRewrite<A = u32> {
    pub side: Side,
    /// The quoted address on `side` as it is now.
    pub old_addr: A,
    pub addr: A,
    pub port: (u16, u16),
    /// The quoted packet's protocol.
    pub proto: u8,
}

/// What a translated packet counts toward.
#[derive(Clone, Copy)]
pub struct Account {
    pub vip_id: u32,
    pub dir: Dir,
    /// A service slot, or anything from `MAX_SERVICES` up for none.
    pub service: u32,
    /// A member slot, or anything from `MAX_MEMBERS` up for none.
    pub slot: u32,
}

/// The link-layer next hop a packet is sent to: the egress device and the MACs.
#[derive(Clone, Copy)]
pub struct Link {
    pub ifindex: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
}

impl Link {
    #[inline(always)]
    pub fn of<A>(nh: &NextHop<A>) -> Self {
        Link {
            ifindex: nh.ifindex,
            dmac: nh.dmac,
            smac: nh.smac,
        }
    }
}

/// What happens to the packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Counted, then passed to the kernel untouched or dropped, as the reason's disposition
    /// says.
    Stop,
    /// Rewritten (`rewrite`, and `quote` for an ICMP error), counted toward `account`, and
    /// sent to `link`, or handed to the kernel translated when no link is due.
    Translate,
    /// Sent untranslated to `link`: TTL and MACs only.
    Forward,
    /// Sent back out of the interface it arrived on, untranslated (TTL and MACs only), to
    /// the gateway `link` names (behind ECMP: see `route::hand_over`).
    HandOver,
    /// An echo request to a VIP, answered in place.
    EchoReply,
    /// Answered with the ICMP error `error` from the gateway, quoting the packet as it
    /// arrived.
    Error,
}

/// An ICMP error the gateway sends: type, code, the MTU for "fragmentation needed", and its
/// source.
#[derive(Clone, Copy)]
pub struct IcmpError<A = u32> {
    pub ty: u8,
    pub code: u8,
    pub mtu: u16,
    pub src: A,
}

/// The parts of a decision that only some packets need (the state a packet leaves behind,
/// the rewrite of an ICMP error's quote, the ICMP error the gateway sends). They wait in a
/// per-CPU scratch slot (`SV_PENDING_V1`) from the rule that decides them to `apply`, which
/// reads those the decision's [`Record`] marks: the BPF stack (512 bytes) then holds only
/// the fields every packet uses. A program runs to its end on one CPU without preemption,
/// so the slot is this packet's until it returns.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending<A: Family = u32> {
    /// A conntrack entry to write.
    pub flow: (CtKey<A>, CtValue<A>),
    /// A member port to mark in `SV_PTPORTS_V1` (slot, bucket), before `flow` is written.
    pub port_mark: (u32, u32),
    /// A first fragment's decision, for the rest of its datagram.
    pub fragment: (A::FragKey, FragValue<A>),
    pub quote: QuoteRewrite<A>,
    pub error: IcmpError<A>,
    /// The flow cache's view of this packet (IPv4 only: see `crate::flow`), built here
    /// rather than on the stack.
    pub flow_probe: crate::flow::Probe,
}

/// Slot 0: the parts of this CPU's current decision that only some packets need. The
/// decision's own scratch, so it is declared here rather than with the shared maps
/// (`crate::maps`); user space never reads it.
#[map(name = "SV_PENDING_V1")]
pub static PENDING: PerCpuArray<Pending> = PerCpuArray::with_max_entries(1, 0);

/// The same for IPv6 packets.
#[map(name = "SV_PENDING6_V1")]
pub static PENDING6: PerCpuArray<Pending<Ipv6Be>> = PerCpuArray::with_max_entries(1, 0);

/// Which parts of [`Pending`] a decision carries: a bit each.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Record(u8);

impl Record {
    pub const NONE: Record = Record(0);
    pub const FLOW: u8 = 1;
    pub const PORT_MARK: u8 = 2;
    pub const FRAGMENT: u8 = 4;
    pub const QUOTE: u8 = 8;
    pub const ERROR: u8 = 16;
    /// The flow's entry (`FLOW`) takes a member-opened flow's conntrack entry over from
    /// another member: decisions the flow cache holds may rest on the old one.
    pub const TAKEOVER: u8 = 32;

    #[inline(always)]
    pub fn has(self, part: u8) -> bool {
        self.0 & part != 0
    }

    /// Writes a part into this CPU's pending slot and marks it. (Slot 0 of a per-CPU array
    /// always exists; were it missing, the part would be left out.)
    #[inline(always)]
    fn put<A: Family>(&mut self, part: u8, write: impl FnOnce(&mut Pending<A>)) {
        if let Some(slot) = A::pending() {
            // SAFETY: this CPU's slot; nothing else runs on this CPU until the program
            // returns.
            write(unsafe { &mut *slot });
            self.0 |= part;
        }
    }

    #[inline(always)]
    pub fn flow<A: Family>(&mut self, key: CtKey<A>, value: CtValue<A>) {
        self.put::<A>(Self::FLOW, |p| p.flow = (key, value));
    }

    /// A member-opened flow's conntrack entry, as `lookup::snat_flow` gives it: marked
    /// `TAKEOVER` when it replaces another member's.
    #[inline(always)]
    pub fn snat_flow<A: Family>(&mut self, (key, value, takeover): (CtKey<A>, CtValue<A>, bool)) {
        self.flow(key, value);
        if takeover && self.has(Self::FLOW) {
            self.0 |= Self::TAKEOVER;
        }
    }

    /// A pass-through port mark (family-neutral: the marks are shared), carried in the
    /// pending slot of the packet's family `A`.
    #[inline(always)]
    pub fn port_mark<A: Family>(&mut self, slot: u32, bucket: u32) {
        self.put::<A>(Self::PORT_MARK, |p| p.port_mark = (slot, bucket));
    }

    #[inline(always)]
    pub fn fragment<A: Family>(&mut self, key: A::FragKey, value: FragValue<A>) {
        self.put::<A>(Self::FRAGMENT, |p| p.fragment = (key, value));
    }

    #[inline(always)]
    pub fn quote<A: Family>(&mut self, q: QuoteRewrite<A>) {
        self.put::<A>(Self::QUOTE, |p| p.quote = q);
    }

    #[inline(always)]
    pub fn error<A: Family>(&mut self, e: IcmpError<A>) {
        self.put::<A>(Self::ERROR, |p| p.error = e);
    }
}

/// This CPU's pending slot of family `A`, for `apply`.
#[inline(always)]
pub fn pending<A: Family>() -> Option<&'static Pending<A>> {
    // SAFETY: this CPU's slot, read after the rules wrote it.
    A::pending().map(|p| unsafe { &*p })
}

/// Whether the flow cache (`crate::flow`) may keep a decision for the flow's later packets,
/// and what of the rules' per-flow state a cached packet must check.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// Not kept: the decision read state that may change under it (a fragment's datagram,
    /// a draining member's connection), or is not the flow's, or it was made where the
    /// cache does not run (IPv6, TC egress).
    No,
    /// Kept: the decision read only what user space writes and the packet's own fields (on
    /// the external side, only its destination: kept for the service).
    Plain,
    /// Kept: a member-opened flow's SNAT, whose replies' conntrack entry each packet makes
    /// sure of.
    Refresh,
    /// Kept while the pass-through flow's conntrack entry exists.
    Require,
}

/// A rule's decision: the action and the reason it is counted under, the rewrite, what it
/// counts toward, the link it leaves by, and which [`Pending`] parts it carries.
///
/// A flat struct of scalars rather than an enum with payloads: every field is always
/// defined (blank when the action does not use it), so LLVM keeps it in registers instead of
/// spilling whole copies of it, and never reuses an absent payload's stack slot for a
/// pointer (which the verifier rejects).
#[derive(Clone, Copy)]
pub struct Decision<A = u32> {
    pub action: Action,
    pub reason: Reason,
    pub rewrite: Rewrite<A>,
    pub account: Account,
    /// Due when the datapath sends the packet itself: `link_due`.
    pub link: Link,
    pub link_due: bool,
    pub record: Record,
    /// A translated or forwarded packet whose next hop is still to be found, and how it is
    /// to leave: the rules set it, [`route::resolve`] completes the decision once.
    pub route: Option<route::Via>,
    /// Whether the flow cache may keep it.
    pub cache: Cache,
}

impl<A: Family> Decision<A> {
    /// Nothing decided: stopped without a reason of its own.
    pub const BLANK: Self = Decision {
        action: Action::Stop,
        reason: Reason::PassFib,
        rewrite: Rewrite {
            side: Side::Src,
            addr: A::ZERO,
            port: SAME_PORT,
        },
        account: Account {
            vip_id: 0,
            dir: Dir::In,
            service: u32::MAX,
            slot: u32::MAX,
        },
        link: Link {
            ifindex: 0,
            dmac: [0; 6],
            smac: [0; 6],
        },
        link_due: false,
        record: Record::NONE,
        route: None,
        cache: Cache::No,
    };

    /// Counted under `reason`, passed or dropped, with state left behind.
    #[inline(always)]
    pub fn stop(reason: Reason, record: Record) -> Self {
        Decision {
            reason,
            record,
            ..Self::BLANK
        }
    }
}

// The IPv4 shapes keep their 4-byte addresses (an IPv4 flow key stays 16 bytes: see
// sipvip-common).
const _: () =
    assert!(core::mem::size_of::<Decision<Ipv6Be>>() > core::mem::size_of::<Decision<u32>>());
