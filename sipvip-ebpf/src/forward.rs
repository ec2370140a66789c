//! Forwarding a (possibly rewritten) packet: the next hop (from the per-CPU cache, else a FIB
//! lookup whose answer is cached), then XDP_REDIRECT through the devmap with TTL decremented
//! and MACs set, or a hand-off to the kernel when the FIB says so.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_fib_lookup, programs::XdpContext};
use sipvip_common::{nexthop_slot, NextHop, Reason};

use crate::{
    csum::Delta,
    maps::{DEVMAP, NEXTHOPS, NEXTHOP_GEN},
    parse::{load, store, store_mac, Packet, IP_CSUM, IP_TTL},
    stats,
};

const AF_INET: u8 = 2;
const FIB_SUCCESS: i64 = 0;
const FIB_BLACKHOLE: i64 = 1;
const FIB_UNREACHABLE: i64 = 2;
const FIB_PROHIBIT: i64 = 3;
const FIB_NO_NEIGH: i64 = 7;

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

/// Forwards the packet whose addresses are already translated (`src_be`/`dst_be` are the new
/// ones; `ip` is the IPv4 header checksum delta of that translation, from `rewrite`, or
/// `Delta::new()`). The header checksum is written once here: with the TTL decrement when
/// the datapath sends the packet itself (counted as `handled`), alone when it goes to the
/// kernel.
#[inline(always)]
pub fn forward(
    ctx: &XdpContext,
    p: &Packet,
    src_be: u32,
    dst_be: u32,
    handled: Reason,
    ip: Delta,
) -> Result<u32, Reason> {
    let e = |_| Reason::DropMalformedIp;
    let l3 = p.l3;
    let c: u16 = load(ctx, l3 + IP_CSUM).map_err(e)?;
    let nh = match next_hop(ctx, p, src_be, dst_be) {
        Ok(nh) => nh,
        Err(reason) => {
            // To the kernel (or dropped) as translated, without the TTL and MAC edits.
            store(ctx, l3 + IP_CSUM, ip.apply(c)).map_err(e)?;
            return Err(reason);
        }
    };
    let ttl_word: u16 = load(ctx, l3 + IP_TTL).map_err(e)?;
    let mut b = ttl_word.to_ne_bytes();
    b[0] = b[0].wrapping_sub(1);
    let new_word = u16::from_ne_bytes(b);
    let mut d = ip;
    d.word(ttl_word, new_word);
    store(ctx, l3 + IP_TTL, new_word).map_err(e)?;
    store(ctx, l3 + IP_CSUM, d.apply(c)).map_err(e)?;
    store_mac(ctx, 0, nh.dmac).map_err(e)?;
    store_mac(ctx, 6, nh.smac).map_err(e)?;
    stats::bump(handled);
    Ok(xdp_action::XDP_REDIRECT)
}

/// Where the datapath sends a packet to `dst_be` itself: the next hop (cached, else from the
/// FIB) with the redirect to its egress device requested. The redirect only takes effect
/// when the program returns XDP_REDIRECT, so an error here leaves the packet to the kernel.
#[inline(always)]
fn next_hop(ctx: &XdpContext, p: &Packet, src_be: u32, dst_be: u32) -> Result<NextHop, Reason> {
    if p.vlan {
        // The kernel's VLAN device forwards tagged frames (and decrements the TTL).
        return Err(Reason::PassVlan);
    }
    // SAFETY: reading the context's ingress ifindex.
    let ingress_ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let generation = NEXTHOP_GEN.get(0).copied().unwrap_or(0);
    let slot = NEXTHOPS.get_ptr_mut(nexthop_slot(dst_be, ingress_ifindex));
    let nh = match cached(slot, dst_be, ingress_ifindex, generation, p.tot_len) {
        Some(nh) => nh,
        None => {
            let nh = fib_lookup(ctx, p, src_be, dst_be, ingress_ifindex, generation)?;
            if let (Some(slot), true) = (slot, generation != 0) {
                // SAFETY: this CPU's slot; preemption is off while the program runs.
                unsafe { *slot = nh };
            }
            nh
        }
    };
    if DEVMAP.redirect(nh.ifindex, 0).is_err() {
        return Err(Reason::PassFib);
    }
    Ok(nh)
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
fn fib_lookup(
    ctx: &XdpContext,
    p: &Packet,
    src_be: u32,
    dst_be: u32,
    ingress_ifindex: u32,
    generation: u32,
) -> Result<NextHop, Reason> {
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
            ctx.ctx as *mut _,
            &mut fib as *mut FibParams as *mut _,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match rc {
        FIB_SUCCESS => Ok(NextHop {
            dst_be,
            ingress_ifindex,
            generation,
            ifindex: fib.ifindex,
            max_len: p.tot_len,
            dmac: fib.dmac,
            smac: fib.smac,
            _pad: 0,
        }),
        FIB_NO_NEIGH => Err(Reason::PassNoNeigh),
        FIB_BLACKHOLE | FIB_UNREACHABLE | FIB_PROHIBIT => Err(Reason::DropFib),
        _ => Err(Reason::PassFib),
    }
}
