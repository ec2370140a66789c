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

mod apply;
mod csum;
mod hook;
mod maps;
mod object;
mod packet;
mod rules;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use sipvip_common::Reason;

use crate::{
    hook::{tc::TcEgress, xdp::Xdp},
    rules::Decision,
};

#[xdp]
pub fn sipvip_ext(ctx: XdpContext) -> u32 {
    let f = Xdp(&ctx);
    let mut d = Decision::BLANK;
    let decided = rules::decide(&f, &mut d, rules::external::ipv4);
    let (verdict, reason) = apply::run(&f, decided, &d);
    debug_log(&ctx, "ext", verdict, reason)
}

#[xdp]
pub fn sipvip_int(ctx: XdpContext) -> u32 {
    let f = Xdp(&ctx);
    let mut d = Decision::BLANK;
    let decided = rules::decide(&f, &mut d, rules::internal::ipv4);
    let (verdict, reason) = apply::run(&f, decided, &d);
    debug_log(&ctx, "int", verdict, reason)
}

#[classifier]
pub fn sipvip_node_out(ctx: TcContext) -> i32 {
    let f = TcEgress::new(&ctx);
    let mut d = Decision::BLANK;
    let decided = rules::decide(&f, &mut d, rules::internal::ipv4);
    let (verdict, reason) = apply::run(&f, decided, &d);
    debug_log(&ctx, "node_out", verdict, reason) as i32
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

#[xdp]
pub fn sipvip_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
