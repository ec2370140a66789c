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
mod egress;
mod forward;
mod frag;
mod icmp;
mod ingress;
mod maps;
mod parse;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn sipvip_ext(ctx: XdpContext) -> u32 {
    match ingress::try_external(&ctx) {
        Ok(action) => action,
        Err(reason) => stats::count(reason),
    }
}

#[xdp]
pub fn sipvip_int(ctx: XdpContext) -> u32 {
    match egress::try_internal(&ctx) {
        Ok(action) => action,
        Err(reason) => stats::count(reason),
    }
}

#[xdp]
pub fn sipvip_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
