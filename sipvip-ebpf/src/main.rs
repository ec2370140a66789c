//! sipvip kernel programs. See docs/architecture.md, "The code", for the map of this crate.
//!
//! - `sipvip_ext` runs on the external interface: it steers VIP service traffic to the active
//!   member, returns replies of member-opened flows, answers ICMP echo to a VIP and translates
//!   ICMP errors about translated flows.
//! - `sipvip_int` runs on the internal interface: it SNATs member traffic to the member's VIP,
//!   except toward excluded destinations and on pass-through ports and flows.
//! - `sipvip_node_out` runs at TC egress on the uplink in on-node mode: the internal side's
//!   rules for what the node sends, its own processes' traffic or routed from a member's veth,
//!   after the kernel has routed it (rewritten in place, never redirected).
//! - `sipvip_pass` only passes; attach it to a veth peer so that it accepts redirected frames.
//!
//! Each entry point wraps its context in a [`hook::Frame`], asks its side's rules for a
//! decision, and has [`apply`] carry it out.
#![no_std]
#![no_main]
// `core::intrinsics::atomic_xadd` (`flow::bump_kernel`): the BPF target has no atomic types.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod apply;
mod csum;
mod family;
mod flow;
mod hook;
mod maps;
mod object;
mod packet;
mod rules;
mod trace;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use sipvip_common::Reason;

use core::ffi::c_void;

use sipvip_common::{program_names, Ipv6Be};

use crate::{
    family::Family,
    flow::Lane,
    hook::{tc::TcEgress, xdp::Xdp, Frame, Verdict},
    rules::{Decision, External, Internal, SideRules},
};

// The IPv4 XDP programs' bodies are `inline(always)`, in the program's own function (the
// macro wraps them in another): left to LLVM, the external side's body became a second
// function, and every packet paid a BPF-to-BPF call and a second prologue. (The IPv6 and
// TC programs' bodies are left to LLVM: inlined by hand, IPv6's stack frames together
// pass the verifier's 512 bytes.)
#[xdp]
#[inline(always)]
pub fn sipvip_ext(ctx: XdpContext) -> u32 {
    let (verdict, reason) = entry::<Xdp, External>(ctx.ctx as *mut c_void, || {
        // SAFETY: the program's own context; returns only if the slot is empty.
        unsafe { maps::XDP6.tail_call(&ctx, program_names::SLOT6_EXT) }
    });
    debug_log(&ctx, "ext", verdict, reason)
}

#[xdp]
#[inline(always)]
pub fn sipvip_int(ctx: XdpContext) -> u32 {
    let (verdict, reason) = entry::<Xdp, Internal>(ctx.ctx as *mut c_void, || {
        // SAFETY: as above.
        unsafe { maps::XDP6.tail_call(&ctx, program_names::SLOT6_INT) }
    });
    debug_log(&ctx, "int", verdict, reason)
}

#[classifier]
pub fn sipvip_node_out(ctx: TcContext) -> i32 {
    TcEgress::pull_headers(&ctx);
    let (verdict, reason) = entry::<TcEgress, Internal>(ctx.skb.skb as *mut c_void, || {
        // SAFETY: as above.
        unsafe { maps::TC6.tail_call(&ctx, program_names::SLOT6_NODE_OUT) }
    });
    debug_log(&ctx, "node_out", verdict, reason) as i32
}

/// The IPv6 side of `sipvip_ext`, reached by tail call. (Not logged in a `debug-log` build:
/// the logger's stack frame and this program's together pass the verifier's 512 bytes; its
/// verdicts are in the counters.)
#[xdp]
pub fn sipvip_ext6(ctx: XdpContext) -> u32 {
    ipv6::<Xdp, External>(ctx.ctx as *mut c_void).0
}

/// The IPv6 side of `sipvip_int`, reached by tail call.
#[xdp]
pub fn sipvip_int6(ctx: XdpContext) -> u32 {
    let (verdict, reason) = ipv6::<Xdp, Internal>(ctx.ctx as *mut c_void);
    debug_log(&ctx, "int6", verdict, reason)
}

/// The IPv6 side of `sipvip_node_out`, reached by tail call (the headers are pulled
/// already).
#[classifier]
pub fn sipvip_node_out6(ctx: TcContext) -> i32 {
    let (verdict, reason) = ipv6::<TcEgress, Internal>(ctx.skb.skb as *mut c_void);
    debug_log(&ctx, "node_out6", verdict, reason) as i32
}

/// A frame on side `S`: the flow cache's lane (`flow::lane`), the L2 acceptance rule, then
/// the link layer, then IPv6 goes on in the side's IPv6 program (`to_ipv6`, a tail call: a
/// program of its own, with its own 512 bytes of stack and its own verification budget, so
/// IPv4 pays one branch for IPv6's existence) and IPv4 here.
#[inline(always)]
fn entry<F: Frame, S: SideRules>(raw: *mut c_void, to_ipv6: impl FnOnce()) -> (u32, Reason) {
    // SAFETY: the program's own context.
    let f = unsafe { F::from_raw(raw) };
    // A routed packet (TC egress) is the node's own: its MACs are the next hop's, and the
    // flow cache holds none of its decisions.
    // The lane answers a frame addressed to the MAC its flow's first packet was, which the
    // L2 acceptance rule passed then; any other frame takes that rule here.
    let cacheable = if F::ROUTED {
        false
    } else {
        let ifindex = f.ingress_ifindex();
        let cacheable = match flow::lane(&f, S::SIDE, ifindex) {
            Lane::Done(verdict, reason) => return (verdict, reason),
            Lane::Miss => true,
            Lane::Off => false,
        };
        if let Err(r) = rules::screen::accept(&f, ifindex) {
            return apply::stopped(&f, r);
        }
        cacheable
    };
    let l3 = match packet::l3(&f) {
        Ok(l3) => l3,
        Err(r) => return apply::stopped(&f, r),
    };
    // A routed packet is the node's own (TC egress).
    let side = if F::ROUTED {
        sipvip_common::TRACE_SIDE_NODE_OUT
    } else {
        S::SIDE
    };
    trace::begin(&f, side);
    if l3.v6 {
        to_ipv6();
        // The IPv6 program is not installed: the kernel has the packet, counted.
        return apply::stopped(&f, Reason::PassIpv6);
    }
    family::<F, S, u32>(&f, l3, cacheable)
}

/// An IPv6 program's frame on side `S` (accepted by the program that tail-called this one).
#[inline(always)]
fn ipv6<F: Frame, S: SideRules>(raw: *mut c_void) -> (u32, Reason) {
    // SAFETY: the program's own context.
    let f = unsafe { F::from_raw(raw) };
    match packet::l3(&f) {
        Ok(l3) => family::<F, S, Ipv6Be>(&f, l3, false),
        Err(r) => apply::stopped(&f, r),
    }
}

/// A packet of family `A` at `l3` on side `S`: parsed, decided by the side's rules, carried
/// out by `apply`; the decision kept in the flow cache when the lane missed it
/// (`cacheable`) and it is one the cache holds.
#[inline(always)]
fn family<F: Frame, S: SideRules, A: Family>(
    f: &F,
    l3: packet::L3,
    cacheable: bool,
) -> (u32, Reason) {
    let p = match A::parse(f, l3.off, l3.vlan) {
        Ok(p) => p,
        Err(r) => return apply::stopped(f, r),
    };
    let Some(p) = A::settle(&p) else {
        return apply::stopped(f, Reason::PassIpv6);
    };
    let (verdict, reason) = decide_and_apply::<F, S, A>(f, p, cacheable);
    if trace::outcome(verdict, reason) {
        // Returns only if the trace program is not installed.
        f.trace();
    }
    (verdict, reason)
}

/// The rules' decision for a packet the flow cache did not answer, carried out; kept in
/// the cache when the packet is one it holds (`cacheable`) and went out as decided.
#[inline(always)]
fn decide_and_apply<F: Frame, S: SideRules, A: Family>(
    f: &F,
    p: &packet::Ip<A>,
    cacheable: bool,
) -> (u32, Reason) {
    let mut d = Decision::BLANK;
    let decided = rules::decide::<F, A, S>(f, p, &mut d);
    let (verdict, reason) = apply::run(f, p, decided, &d);
    if cacheable && decided.is_ok() && reason == d.reason && verdict == f.verdict(Verdict::Redirect)
    {
        flow::remember(p, &d);
    }
    (verdict, reason)
}

/// In a `debug-log` build, logs each verdict with the reason counted; otherwise compiles to
/// nothing.
#[inline(always)]
fn debug_log<C: EbpfContext>(_ctx: &C, _side: &str, verdict: u32, _reason: Reason) -> u32 {
    #[cfg(feature = "debug-log")]
    aya_log_ebpf::debug!(
        _ctx,
        "sipvip {}: verdict {} reason {}",
        _side,
        verdict,
        _reason as u32
    );
    verdict
}

/// The trace's last step (`trace::finish`), tail-called by the XDP programs for a packet a
/// running trace took; returns the packet's verdict.
#[xdp]
pub fn sipvip_trace_xdp(ctx: XdpContext) -> u32 {
    // SAFETY: the program's own context.
    let f = unsafe { Xdp::from_raw(ctx.ctx as *mut c_void) };
    trace::finish(&f).unwrap_or(xdp_action::XDP_PASS)
}

/// The same for the TC egress programs.
#[classifier]
pub fn sipvip_trace_tc(ctx: TcContext) -> i32 {
    // SAFETY: the program's own context.
    let f = unsafe { TcEgress::from_raw(ctx.skb.skb as *mut c_void) };
    trace::finish(&f).unwrap_or(aya_ebpf::bindings::TC_ACT_OK as u32) as i32
}

#[xdp]
pub fn sipvip_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
