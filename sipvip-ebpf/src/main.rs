//! sipvip kernel programs.
//!
//! - `sipvip_ext` runs on the external interface: it steers VIP service traffic to the active
//!   member, returns replies of member-opened flows, answers ICMP echo to a VIP and translates
//!   ICMP errors about translated flows.
//! - `sipvip_int` runs on the internal interface: it SNATs member traffic to the member's VIP,
//!   except toward excluded destinations and on pass-through ports and flows.
//! - `sipvip_pass` only passes; attach it to a veth peer so that it accepts redirected frames.
//!
//! Entry points are thin: each calls `try_*` and turns an `Err(reason)` into a counted verdict.
#![no_std]
#![no_main]

mod csum;
mod external;
mod forward;
mod frag;
mod icmp;
mod internal;
mod lookup;
mod maps;
mod object;
mod parse;
mod reply;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn sipvip_ext(ctx: XdpContext) -> u32 {
    match external::try_external(&ctx) {
        Ok(action) => debug_log(&ctx, "ext", action, u32::MAX),
        Err(reason) => debug_log(&ctx, "ext", stats::count(reason), reason as u32),
    }
}

#[xdp]
pub fn sipvip_int(ctx: XdpContext) -> u32 {
    match internal::try_internal(&ctx) {
        Ok(action) => debug_log(&ctx, "int", action, u32::MAX),
        Err(reason) => debug_log(&ctx, "int", stats::count(reason), reason as u32),
    }
}

/// In a `debug-log` build, logs each verdict with its reason (u32::MAX: forwarded or
/// answered); otherwise compiles to nothing.
#[inline(always)]
fn debug_log(_ctx: &XdpContext, _side: &str, action: u32, _reason: u32) -> u32 {
    #[cfg(feature = "debug-log")]
    aya_log_ebpf::debug!(
        _ctx,
        "sipvip {}: action {} reason {}",
        _side,
        action,
        _reason
    );
    action
}

#[xdp]
pub fn sipvip_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
