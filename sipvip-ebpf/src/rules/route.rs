//! The next hop, and how a packet leaves: the next hop is found (from the per-CPU cache,
//! else a FIB lookup whose answer is cached) for the addresses the packet will carry, before
//! anything is written, so that a packet the kernel must see as it arrived, or must be
//! answered about, is left intact. The cache is a memo of the FIB lookup, so filling it is
//! part of the lookup, not state a packet leaves behind.

use aya_ebpf::helpers::generated::bpf_fib_lookup;
use sipvip_common::{nexthop_slot, NextHop, Reason, VIP_F_LOCAL, VIP_F_REDIRECT};

use super::{
    screen::error_source, Account, Action, Decision, Dir, IcmpError, Link, Record, Rewrite, Side,
};
use crate::{
    hook::Frame,
    maps::{NEXTHOPS, NEXTHOP_GEN},
    packet::ipv4::Ipv4,
};

/// ICMP destination unreachable, and its code "fragmentation needed and DF set" (RFC 1191).
pub const DEST_UNREACH: u8 = 3;
pub const FRAG_NEEDED: u8 = 4;
pub const TIME_EXCEEDED: u8 = 11;

const AF_INET: u8 = 2;
const FIB_SUCCESS: i64 = 0;
const FIB_BLACKHOLE: i64 = 1;
const FIB_UNREACHABLE: i64 = 2;
const FIB_PROHIBIT: i64 = 3;
const FIB_NOT_FWDED: i64 = 4;
const FIB_FWD_DISABLED: i64 = 6;
const FIB_NO_NEIGH: i64 = 7;
const FIB_FRAG_NEEDED: i64 = 8;

/// `struct bpf_fib_lookup` (uapi/linux/bpf.h), IPv4 view; 64 bytes.
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
    Send(NextHop),
    /// The kernel forwards it, translated (the neighbour is not resolved yet, 802.1Q, a
    /// packet it must fragment, ...), or drops it for this reason.
    Kernel(Reason),
    /// The kernel would not forward it at all (a local, broadcast or unroutable
    /// destination): it gets the packet as it arrived, untranslated.
    Untranslated(Reason),
    /// Longer than the egress MTU (the MTU, host order).
    TooBig(u16),
}

/// The decision for a packet translated by `rewrite` (and its quote, for an ICMP error,
/// when `record` carries one):
/// - too big for the egress MTU with DF set: ICMP "fragmentation needed" from the gateway
///   (`fallback_src_be` when the interface has no address), quoting the packet as the
///   sender sent it;
/// - not forwardable (local, broadcast, no route): to the kernel untranslated;
/// - otherwise rewritten, counted toward `account`, and sent (`handled`) or handed to the
///   kernel translated.
///
/// A packet the kernel has routed already (TC egress), or one `via` the kernel, skips the
/// FIB: it is rewritten and goes on (`handled`).
///
/// An ICMP error is never answered with one, and as its quote is translated it always goes
/// on translated.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rewrite_and_send<F: Frame>(
    f: &F,
    p: &Ipv4,
    rewrite: Rewrite,
    account: Account,
    handled: Reason,
    fallback_src_be: u32,
    mut record: Record,
    via: Via,
) -> Decision {
    if F::ROUTED || via == Via::Kernel {
        // Routed already, or for the kernel to route: rewritten in place and passed on.
        return Decision {
            action: Action::Translate,
            reason: handled,
            rewrite,
            account,
            record,
            ..Decision::BLANK
        };
    }
    let (src_be, dst_be) = match rewrite.side {
        Side::Src => (rewrite.addr, p.dst_be),
        Side::Dst => (p.src_be, rewrite.addr),
    };
    let mut d = Decision {
        action: Action::Translate,
        rewrite,
        account,
        record,
        ..Decision::BLANK
    };
    let answerable = !record.has(Record::QUOTE);
    d.reason = match route(f, p, src_be, dst_be) {
        // On-node mode: a member on the node's own address is reached through the kernel.
        Hop::Untranslated(_) if via == Via::Redirect => handled,
        Hop::Untranslated(r) if answerable => return Decision::stop(r, record),
        Hop::TooBig(mtu) if p.df && p.frag_offset == 0 && answerable => {
            record.error(IcmpError {
                ty: DEST_UNREACH,
                code: FRAG_NEEDED,
                mtu,
                src: error_source(f, fallback_src_be),
            });
            return Decision {
                action: Action::Error,
                reason: Reason::FragNeeded,
                record,
                ..Decision::BLANK
            };
        }
        Hop::Send(nh) => {
            d.link = Link::of(&nh);
            d.link_due = true;
            handled
        }
        Hop::Kernel(r) | Hop::Untranslated(r) => r,
        Hop::TooBig(_) => Reason::PassFib,
    };
    d
}

/// The decision for a translated packet of VIP `vip_id`, counted toward its `service` and
/// member `slot`: toward a member (`Dir::In`) the destination becomes `addr` (the member),
/// from a member (`Dir::Out`) the source becomes `addr` (the VIP); the port on that side
/// changes as `port` says. Errors the gateway sends about it come from the VIP when the
/// interface has no address.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn translate<F: Frame>(
    f: &F,
    p: &Ipv4,
    dir: Dir,
    vip_id: u32,
    (addr, slot): (u32, u32),
    service: u32,
    port: (u16, u16),
    handled: Reason,
    record: Record,
    via: Via,
) -> Decision {
    let (side, vip_be) = match dir {
        Dir::In => (Side::Dst, p.dst_be),
        Dir::Out => (Side::Src, addr),
    };
    let rewrite = Rewrite { side, addr, port };
    let account = Account {
        vip_id,
        dir,
        service,
        slot,
    };
    rewrite_and_send(f, p, rewrite, account, handled, vip_be, record, via)
}

/// The decision for an untranslated packet (excluded, pass-through): sent with TTL and MACs
/// only (`handled`), or to the kernel as it arrived, which also answers it (PMTU,
/// unreachable) correctly. A routed packet (TC egress) goes on as it is.
#[inline(always)]
pub fn forward<F: Frame>(f: &F, p: &Ipv4, handled: Reason, record: Record) -> Decision {
    if F::ROUTED {
        // Routed already: it goes on as it is.
        return Decision::stop(handled, record);
    }
    match route(f, p, p.src_be, p.dst_be) {
        Hop::Send(nh) => Decision {
            action: Action::Forward,
            reason: handled,
            link: Link::of(&nh),
            link_due: true,
            record,
            ..Decision::BLANK
        },
        Hop::Kernel(r) | Hop::Untranslated(r) => Decision::stop(r, record),
        Hop::TooBig(_) => Decision::stop(Reason::PassFib, record),
    }
}

/// The decision to answer a packet that would be forwarded with TTL 1 (or 0): ICMP "time
/// exceeded" from the gateway, as a router does, so that traceroute sees it.
#[inline(always)]
pub fn time_exceeded<F: Frame>(f: &F, fallback_src_be: u32, mut record: Record) -> Decision {
    record.error(IcmpError {
        ty: TIME_EXCEEDED,
        code: 0,
        mtu: 0,
        src: error_source(f, fallback_src_be),
    });
    Decision {
        action: Action::Error,
        reason: Reason::TimeExceeded,
        record,
        ..Decision::BLANK
    }
}

/// Where the datapath sends a packet to `dst_be`: the next hop, cached, else from the FIB.
#[inline(always)]
fn route<F: Frame>(f: &F, p: &Ipv4, src_be: u32, dst_be: u32) -> Hop {
    if p.vlan {
        // The kernel's VLAN device forwards tagged frames (and decrements the TTL).
        return Hop::Kernel(Reason::PassVlan);
    }
    let ingress_ifindex = f.ingress_ifindex();
    let generation = NEXTHOP_GEN.get(0).copied().unwrap_or(0);
    let slot = NEXTHOPS.get_ptr_mut(nexthop_slot(dst_be, ingress_ifindex));
    let nh = match cached(slot, dst_be, ingress_ifindex, generation, p.tot_len) {
        Some(nh) => nh,
        None => match fib_lookup(f, p, src_be, dst_be, ingress_ifindex, generation) {
            Hop::Send(nh) => {
                if let (Some(slot), true) = (slot, generation != 0) {
                    // SAFETY: this CPU's slot; preemption is off while the program runs.
                    unsafe { *slot = nh };
                }
                nh
            }
            other => return other,
        },
    };
    Hop::Send(nh)
}

/// This CPU's cached answer in `slot`, if it is for this destination and ingress device, of
/// the current generation, and has been good for packets at least `tot_len` long.
#[inline(always)]
fn cached(
    slot: Option<*mut NextHop>,
    dst_be: u32,
    ingress_ifindex: u32,
    generation: u32,
    tot_len: u16,
) -> Option<NextHop> {
    if generation == 0 {
        return None;
    }
    // SAFETY: this CPU's slot, copied out; only this CPU writes it.
    let nh = unsafe { *slot? };
    if nh.generation != generation
        || nh.dst_be != dst_be
        || nh.ingress_ifindex != ingress_ifindex
        || tot_len > nh.max_len
    {
        return None;
    }
    Some(nh)
}

/// Asks the kernel's FIB where `dst_be` goes (checking `p.tot_len` against the egress MTU).
#[inline(always)]
fn fib_lookup<F: Frame>(
    f: &F,
    p: &Ipv4,
    src_be: u32,
    dst_be: u32,
    ingress_ifindex: u32,
    generation: u32,
) -> Hop {
    let mut fib = FibParams {
        family: AF_INET,
        l4_protocol: p.proto,
        sport: 0,
        dport: 0,
        tot_len: p.tot_len,
        ifindex: ingress_ifindex,
        tos: u32::from(p.tos),
        src: [src_be, 0, 0, 0],
        dst: [dst_be, 0, 0, 0],
        vlan_proto: 0,
        vlan_tci: 0,
        smac: [0; 6],
        dmac: [0; 6],
    };
    // SAFETY: fib points to a properly sized bpf_fib_lookup on our stack.
    let rc = unsafe {
        bpf_fib_lookup(
            f.raw(),
            &mut fib as *mut FibParams as *mut _,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match rc {
        FIB_SUCCESS => Hop::Send(NextHop {
            dst_be,
            ingress_ifindex,
            generation,
            ifindex: fib.ifindex,
            max_len: p.tot_len,
            dmac: fib.dmac,
            smac: fib.smac,
            _pad: 0,
        }),
        FIB_NO_NEIGH => Hop::Kernel(Reason::PassNoNeigh),
        FIB_BLACKHOLE | FIB_UNREACHABLE | FIB_PROHIBIT => Hop::Kernel(Reason::DropFib),
        // The kernel fills in the MTU where the total length was.
        FIB_FRAG_NEEDED => Hop::TooBig(fib.tot_len),
        FIB_NOT_FWDED | FIB_FWD_DISABLED => Hop::Untranslated(Reason::PassFib),
        _ => Hop::Kernel(Reason::PassFib),
    }
}
