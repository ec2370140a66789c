//! Forwarding a (possibly rewritten) packet: the next hop (from the per-CPU cache, else a FIB
//! lookup whose answer is cached) is found first, then the packet is rewritten and sent with
//! XDP_REDIRECT through the devmap (TTL decremented, MACs set), handed to the kernel, or
//! answered with ICMP "fragmentation needed" when the FIB says so.

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_fib_lookup, programs::XdpContext};
use sipvip_common::{nexthop_slot, NextHop, Reason};

use crate::{
    csum::{rewrite, Delta, Side},
    maps::{DEVMAP, NEXTHOPS, NEXTHOP_GEN},
    parse::{load, store, store_mac, Packet, IP_CSUM, IP_TTL},
    reply,
    stats::{self, Dir},
};

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

/// Where the FIB says a packet goes.
#[derive(Clone, Copy)]
pub enum Hop {
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

/// What a translated packet counts toward, and how it may be answered.
#[derive(Clone, Copy)]
pub struct Out {
    /// The reason counted when the datapath sends the packet itself.
    pub reason: Reason,
    pub vip_id: u32,
    pub dir: Dir,
    pub service: u32,
    pub slot: u32,
    /// The address ICMP errors come from when the interface has no IPv4 address.
    pub fallback_src_be: u32,
    /// False for ICMP errors: no ICMP error is sent about them, and as their quote is
    /// already translated they are never handed to the kernel untranslated.
    pub answerable: bool,
}

/// Translates the packet (one address, and the port on that side) and forwards it.
///
/// The next hop is found for the translated addresses before the packet is touched, so that
/// a packet the kernel must see as it arrived, or must be answered about, is left intact:
/// - too big for the egress MTU with DF set (and answerable): ICMP "fragmentation needed"
///   quoting the packet as the sender sent it, from the gateway;
/// - not forwardable (local, broadcast, no route): to the kernel untranslated;
/// - otherwise it is rewritten, counted, and sent (or handed to the kernel translated).
#[inline(always)]
pub fn translate(
    ctx: &XdpContext,
    p: &Packet,
    side: Side,
    new_addr: u32,
    port: (u16, u16),
    out: Out,
) -> Result<u32, Reason> {
    let (src_be, dst_be) = match side {
        Side::Src => (new_addr, p.dst_be),
        Side::Dst => (p.src_be, new_addr),
    };
    let hop = route(ctx, p, src_be, dst_be);
    match hop {
        // An ICMP error's quote is translated before this point, so it goes on translated.
        Hop::Untranslated(r) if out.answerable => return Err(r),
        Hop::TooBig(mtu) if p.df && p.frag_offset == 0 && out.answerable => {
            return reply::send_error(
                ctx,
                p,
                reply::DEST_UNREACH,
                reply::FRAG_NEEDED,
                mtu,
                out.fallback_src_be,
                Reason::FragNeeded,
            );
        }
        _ => {}
    }
    let ip = rewrite(ctx, p, side, new_addr, port)?;
    stats::traffic(out.vip_id, out.dir, out.service, out.slot, p.len);
    send(ctx, p, hop, out.reason, ip)
}

/// Forwards an untranslated packet (excluded, pass-through): TTL and MACs only. What the
/// datapath does not send itself goes to the kernel as it arrived, which also answers
/// it (PMTU, unreachable) correctly.
#[inline(always)]
pub fn forward(ctx: &XdpContext, p: &Packet, handled: Reason) -> Result<u32, Reason> {
    match route(ctx, p, p.src_be, p.dst_be) {
        Hop::Send(nh) => send(ctx, p, Hop::Send(nh), handled, Delta::new()),
        Hop::Kernel(r) | Hop::Untranslated(r) => Err(r),
        Hop::TooBig(_) => Err(Reason::PassFib),
    }
}

/// Sends the (possibly rewritten) packet along `hop`; `ip` is the IPv4 header checksum
/// delta of the rewrite, from `rewrite`, or `Delta::new()`. The header checksum is written
/// once here: with the TTL decrement when the datapath sends the packet itself (counted as
/// `handled`), alone when it goes to the kernel.
#[inline(always)]
fn send(ctx: &XdpContext, p: &Packet, hop: Hop, handled: Reason, ip: Delta) -> Result<u32, Reason> {
    let e = |_| Reason::DropMalformedIp;
    let l3 = p.l3;
    let c: u16 = load(ctx, l3 + IP_CSUM).map_err(e)?;
    let nh = match hop {
        Hop::Send(nh) => nh,
        other => {
            // To the kernel (or dropped) as translated, without the TTL and MAC edits.
            store(ctx, l3 + IP_CSUM, ip.apply(c)).map_err(e)?;
            return Err(match other {
                Hop::Kernel(r) | Hop::Untranslated(r) => r,
                _ => Reason::PassFib,
            });
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

/// Where the datapath sends a packet to `dst_be`: the next hop (cached, else from the FIB)
/// with the redirect to its egress device requested. The redirect only takes effect when
/// the program returns XDP_REDIRECT.
#[inline(always)]
fn route(ctx: &XdpContext, p: &Packet, src_be: u32, dst_be: u32) -> Hop {
    if p.vlan {
        // The kernel's VLAN device forwards tagged frames (and decrements the TTL).
        return Hop::Kernel(Reason::PassVlan);
    }
    // SAFETY: reading the context's ingress ifindex.
    let ingress_ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let generation = NEXTHOP_GEN.get(0).copied().unwrap_or(0);
    let slot = NEXTHOPS.get_ptr_mut(nexthop_slot(dst_be, ingress_ifindex));
    let nh = match cached(slot, dst_be, ingress_ifindex, generation, p.tot_len) {
        Some(nh) => nh,
        None => match fib_lookup(ctx, p, src_be, dst_be, ingress_ifindex, generation) {
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
    if DEVMAP.redirect(nh.ifindex, 0).is_err() {
        return Hop::Kernel(Reason::PassFib);
    }
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
fn fib_lookup(
    ctx: &XdpContext,
    p: &Packet,
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
            ctx.ctx as *mut _,
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
