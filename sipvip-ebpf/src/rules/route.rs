//! The next hop, and how a packet leaves: the next hop is found (from the per-CPU cache,
//! else a FIB lookup whose answer is cached) for the addresses the packet will carry, before
//! anything is written, so that a packet the kernel must see as it arrived, or must be
//! answered about, is left intact. The cache is a memo of the FIB lookup, so filling it is
//! part of the lookup, not state a packet leaves behind.

use aya_ebpf::{helpers::generated::bpf_fib_lookup, macros::map, maps::PerCpuArray};
use sipvip_common::{NextHop, Reason, VIP_F_LOCAL, VIP_F_REDIRECT};

use super::{Account, Action, Decision, Dir, Family, IcmpError, Link, Record, Rewrite, Side};
use crate::{
    hook::Frame,
    maps::{NEXTHOP_GEN, RETURN_PATH},
    packet::Ip,
};

/// ICMP destination unreachable, and its code "fragmentation needed and DF set" (RFC 1191).
pub const DEST_UNREACH: u8 = 3;
pub const FRAG_NEEDED: u8 = 4;
pub const TIME_EXCEEDED: u8 = 11;

const FIB_SUCCESS: i64 = 0;
const FIB_BLACKHOLE: i64 = 1;
const FIB_UNREACHABLE: i64 = 2;
const FIB_PROHIBIT: i64 = 3;
const FIB_NOT_FWDED: i64 = 4;
const FIB_FWD_DISABLED: i64 = 6;
const FIB_NO_NEIGH: i64 = 7;
const FIB_FRAG_NEEDED: i64 = 8;

/// `struct bpf_fib_lookup` (uapi/linux/bpf.h); 64 bytes. For IPv6, `tos` is the flow info
/// and the addresses take all four words.
#[repr(C)]
struct FibParams {
    family: u8,
    l4_protocol: u8,
    sport: u16,
    dport: u16,
    tot_len: u16,
    ifindex: u32,
    tos: u32,
    src: [u32; 4],
    dst: [u32; 4],
    vlan_proto: u16,
    vlan_tci: u16,
    smac: [u8; 6],
    dmac: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<FibParams>() == 64);

/// This CPU's FIB lookup parameters: scratch kept off the BPF stack (512 bytes), which an
/// IPv6 packet's addresses fill up.
#[map(name = "SV_FIBARGS_V1")]
static FIB_PARAMS: PerCpuArray<FibParams> = PerCpuArray::with_max_entries(1, 0);

/// How a translated packet leaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// To the next hop the FIB names, sent by the datapath where it can (the gateway).
    Fib,
    /// To the kernel, translated: toward a member on this node (on-node mode), which the
    /// kernel delivers to a local process or routes into the member's veth.
    Kernel,
    /// As `Fib`, redirected into the member's veth (on-node mode with XDP redirect); a
    /// destination the FIB calls local (a process on the node) goes to the kernel translated.
    Redirect,
}

impl Via {
    /// How packets toward the members of a VIP with these record flags leave.
    #[inline(always)]
    pub fn toward_members(vip_flags: u32) -> Via {
        if vip_flags & VIP_F_REDIRECT != 0 {
            Via::Redirect
        } else if vip_flags & VIP_F_LOCAL != 0 {
            Via::Kernel
        } else {
            Via::Fib
        }
    }
}

/// Where the FIB says a packet goes.
#[derive(Clone, Copy)]
enum Hop {
    /// The datapath sends it to this next hop itself.
    Send(Link),
    /// The kernel forwards it, translated (the neighbour is not resolved yet, 802.1Q, a
    /// packet it must fragment, ...), or drops it for this reason.
    Kernel(Reason),
    /// The kernel would not forward it at all (a local, broadcast or unroutable
    /// destination): it gets the packet as it arrived, untranslated.
    Untranslated(Reason),
    /// Longer than the egress MTU (the MTU, host order).
    TooBig(u16),
}

/// Where a decided packet leaves, decided once for every rule, after them (`rules::decide`):
/// the rules only say that a packet is to be translated or forwarded and how
/// ([`Decision::route`]); here the next hop is found, once per packet, for the addresses the
/// packet will carry, and the decision completed:
/// - a translated packet too big for the egress MTU with DF set: ICMP "fragmentation
///   needed" from the gateway (the interface's address, else the VIP), quoting the packet
///   as the sender sent it (where the datapath builds the family's errors);
/// - not forwardable (local, broadcast, no route): to the kernel untranslated (an ICMP error
///   whose quote is translated always goes on translated);
/// - otherwise sent (`link_due`) or handed to the kernel, translated or as it arrived.
///
/// A packet the kernel has routed already (TC egress), or one `via` the kernel, needs no
/// next hop: it is rewritten and goes on.
#[inline(always)]
pub fn resolve<F: Frame, A: Family>(f: &F, p: &Ip<A>, d: &mut Decision<A>) {
    let Some(via) = d.route else {
        return;
    };
    d.route = None;
    let translate = d.action == Action::Translate;
    if F::ROUTED || via == Via::Kernel {
        if !translate {
            // Routed already: it goes on as it is.
            d.action = Action::Stop;
        }
        return;
    }
    let (src_be, dst_be) = match (translate, d.rewrite.side) {
        (true, Side::Src) => (d.rewrite.addr, p.dst()),
        (true, Side::Dst) => (p.src(), d.rewrite.addr),
        (false, _) => (p.src(), p.dst()),
    };
    let answerable = translate && !d.record.has(Record::QUOTE) && A::ANSWERS;
    match route(f, p, src_be, dst_be) {
        Hop::Send(link) => {
            d.link = link;
            d.link_due = true;
        }
        // On-node mode: a member on the node's own address is reached through the kernel.
        Hop::Untranslated(_) if translate && via == Via::Redirect => {}
        Hop::Untranslated(r) if answerable || !translate => {
            *d = Decision::stop(r, d.record);
        }
        Hop::TooBig(mtu) if p.df && p.frag_offset == 0 && answerable => {
            // Errors about a packet toward a member come from the VIP it was sent to, about
            // one from a member from the VIP it was translated to.
            let vip_be = match d.account.dir {
                Dir::In => p.dst(),
                Dir::Out => d.rewrite.addr,
            };
            let mut record = d.record;
            record.error(IcmpError {
                ty: DEST_UNREACH,
                code: FRAG_NEEDED,
                mtu,
                src: A::error_source(f, vip_be),
            });
            *d = Decision {
                action: Action::Error,
                reason: Reason::FragNeeded,
                record,
                ..Decision::BLANK
            };
        }
        Hop::Kernel(r) | Hop::Untranslated(r) if !translate => {
            *d = Decision::stop(r, d.record);
        }
        Hop::TooBig(_) if !translate => {
            *d = Decision::stop(Reason::PassFib, d.record);
        }
        Hop::Kernel(r) | Hop::Untranslated(r) => d.reason = r,
        Hop::TooBig(_) => d.reason = Reason::PassFib,
    }
}

/// The decision for a translated packet of VIP `vip_id`, counted toward its `service` and
/// member `slot`: toward a member (`Dir::In`) the destination becomes `addr` (the member),
/// from a member (`Dir::Out`) the source becomes `addr` (the VIP); the port on that side
/// changes as `port` says. It leaves `via` the next hop [`resolve`] finds (`handled`), or
/// through the kernel.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn translate<F: Frame, A: Family>(
    _f: &F,
    _p: &Ip<A>,
    dir: Dir,
    vip_id: u32,
    (addr, slot): (A, u32),
    service: u32,
    port: (u16, u16),
    handled: Reason,
    record: Record,
    via: Via,
) -> Decision<A> {
    let side = match dir {
        Dir::In => Side::Dst,
        Dir::Out => Side::Src,
    };
    Decision {
        action: Action::Translate,
        reason: handled,
        rewrite: Rewrite { side, addr, port },
        account: Account {
            vip_id,
            dir,
            service,
            slot,
        },
        record,
        route: Some(via),
        ..Decision::BLANK
    }
}

/// The decision for an untranslated packet (excluded, pass-through): sent with TTL and MACs
/// only (`handled`) to the next hop [`resolve`] finds, or to the kernel as it arrived, which
/// also answers it (PMTU, unreachable) correctly. A routed packet (TC egress) goes on as it
/// is.
#[inline(always)]
pub fn forward<F: Frame, A: Family>(
    _f: &F,
    _p: &Ip<A>,
    handled: Reason,
    record: Record,
) -> Decision<A> {
    Decision {
        action: Action::Forward,
        reason: handled,
        record,
        route: Some(Via::Fib),
        ..Decision::BLANK
    }
}

/// A packet of a flow this gateway has no state for (`miss`, the reason it is dropped
/// under otherwise): behind ECMP, handed untranslated to the gateway carrying the members'
/// return path (`SV_RETPATH_V1`), out of the interface it arrived on, unless it came from
/// another gateway already (handed over once at most) or would not survive another hop.
#[inline(always)]
pub fn hand_over<F: Frame, A: Family>(
    f: &F,
    p: &Ip<A>,
    miss: Reason,
) -> Result<Decision<A>, Reason> {
    // SAFETY: a read of the one value, which user space replaces whole (no preallocation).
    let Some(rp) = (unsafe { RETURN_PATH.get(0) }) else {
        return Err(miss);
    };
    if rp.ifindex == 0 || rp.ifindex != f.ingress_ifindex() || p.ttl <= 1 || p.vlan {
        return Err(miss);
    }
    let smac: [u16; 3] = f.load(6).map_err(|_| miss)?;
    let mut i = 0;
    while i < sipvip_common::MAX_PEERS {
        let m = rp.peers[i];
        if m == [0; 6] {
            break;
        }
        let peer = [
            u16::from_ne_bytes([m[0], m[1]]),
            u16::from_ne_bytes([m[2], m[3]]),
            u16::from_ne_bytes([m[4], m[5]]),
        ];
        if smac == peer {
            return Err(miss);
        }
        i += 1;
    }
    Ok(Decision {
        action: Action::HandOver,
        reason: Reason::HandedOver,
        link: Link {
            ifindex: rp.ifindex,
            dmac: rp.dmac,
            smac: rp.smac,
        },
        link_due: true,
        ..Decision::BLANK
    })
}

/// The decision to answer a packet that would be forwarded with TTL 1 (or 0): ICMP "time
/// exceeded" from the gateway, as a router does, so that traceroute sees it.
#[inline(always)]
pub fn time_exceeded<F: Frame, A: Family>(
    f: &F,
    fallback_src_be: A,
    mut record: Record,
) -> Decision<A> {
    record.error(IcmpError {
        ty: TIME_EXCEEDED,
        code: 0,
        mtu: 0,
        src: A::error_source(f, fallback_src_be),
    });
    Decision {
        action: Action::Error,
        reason: Reason::TimeExceeded,
        record,
        ..Decision::BLANK
    }
}

/// Where the datapath sends a packet to `dst_be`: the next hop, cached, else from the FIB
/// (whose answer this CPU's cache slot then keeps, when the cache is on).
#[inline(always)]
fn route<F: Frame, A: Family>(f: &F, p: &Ip<A>, src_be: A, dst_be: A) -> Hop {
    if p.vlan {
        // The kernel's VLAN device forwards tagged frames (and decrements the TTL).
        return Hop::Kernel(Reason::PassVlan);
    }
    let ingress_ifindex = f.ingress_ifindex();
    let generation = NEXTHOP_GEN.get(0).copied().unwrap_or(0);
    let slot = A::nexthop(&dst_be, ingress_ifindex);
    if let Some(link) = cached(slot, dst_be, ingress_ifindex, generation, p.tot_len) {
        return Hop::Send(link);
    }
    let slot = if generation != 0 { slot } else { None };
    fib_lookup(f, p, src_be, dst_be, ingress_ifindex, generation, slot)
}

/// This CPU's cached answer in `slot`, if it is for this destination and ingress device, of
/// the current generation, and has been good for packets at least `tot_len` long.
#[inline(always)]
fn cached<A: Family>(
    slot: Option<*mut NextHop<A>>,
    dst_be: A,
    ingress_ifindex: u32,
    generation: u32,
    tot_len: u16,
) -> Option<Link> {
    if generation == 0 {
        return None;
    }
    // SAFETY: this CPU's slot, read in place; only this CPU writes it.
    let nh = unsafe { &*slot? };
    if nh.generation != generation
        || nh.dst_be != dst_be
        || nh.ingress_ifindex != ingress_ifindex
        || tot_len > nh.max_len
    {
        return None;
    }
    Some(Link::of(nh))
}

/// Asks the kernel's FIB where `dst_be` goes (checking `p.tot_len` against the egress MTU),
/// and keeps a usable answer in `cache`.
#[inline(always)]
fn fib_lookup<F: Frame, A: Family>(
    f: &F,
    p: &Ip<A>,
    src_be: A,
    dst_be: A,
    ingress_ifindex: u32,
    generation: u32,
    cache: Option<*mut NextHop<A>>,
) -> Hop {
    let Some(slot) = FIB_PARAMS.get_ptr_mut(0) else {
        return Hop::Kernel(Reason::PassFib);
    };
    // SAFETY: this CPU's scratch slot; nothing else runs on this CPU until the program
    // returns.
    let fib = unsafe { &mut *slot };
    *fib = FibParams {
        family: A::AF,
        l4_protocol: p.proto,
        sport: 0,
        dport: 0,
        tot_len: p.tot_len,
        ifindex: ingress_ifindex,
        // IPv6: the flow info (traffic class and flow label), left 0.
        tos: if A::V6 { 0 } else { u32::from(p.tos) },
        src: A::fib(src_be),
        dst: A::fib(dst_be),
        vlan_proto: 0,
        vlan_tci: 0,
        smac: [0; 6],
        dmac: [0; 6],
    };
    // SAFETY: fib points to a properly sized bpf_fib_lookup on our stack.
    let rc = unsafe {
        bpf_fib_lookup(
            f.raw(),
            slot as *mut _,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match rc {
        FIB_SUCCESS => {
            let link = Link {
                ifindex: fib.ifindex,
                dmac: fib.dmac,
                smac: fib.smac,
            };
            if let Some(nh) = cache {
                // SAFETY: this CPU's slot; preemption is off while the program runs.
                unsafe {
                    (*nh).dst_be = dst_be;
                    (*nh).ingress_ifindex = ingress_ifindex;
                    (*nh).generation = generation;
                    (*nh).ifindex = fib.ifindex;
                    (*nh).max_len = p.tot_len;
                    (*nh).dmac = fib.dmac;
                    (*nh).smac = fib.smac;
                }
            }
            Hop::Send(link)
        }
        FIB_NO_NEIGH => Hop::Kernel(Reason::PassNoNeigh),
        FIB_BLACKHOLE | FIB_UNREACHABLE | FIB_PROHIBIT => Hop::Kernel(Reason::DropFib),
        // The kernel fills in the MTU where the total length was.
        FIB_FRAG_NEEDED => Hop::TooBig(fib.tot_len),
        FIB_NOT_FWDED | FIB_FWD_DISABLED => Hop::Untranslated(Reason::PassFib),
        _ => Hop::Kernel(Reason::PassFib),
    }
}
