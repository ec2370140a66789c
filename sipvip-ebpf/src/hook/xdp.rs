//! The XDP frame.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail, generated::bpf_xdp_load_bytes},
    programs::XdpContext,
};

use super::{Frame, Verdict};
use crate::maps::{DEVMAP, DEVMAP_SLOTS};

pub struct Xdp(pub XdpContext);

impl Frame for Xdp {
    #[inline(always)]
    unsafe fn from_raw(raw: *mut c_void) -> Self {
        Xdp(XdpContext::new(raw as *mut _))
    }

    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        // Volatile context reads give every access its own packet pointer and its own
        // check: LLVM cannot then drop a check it deems implied by another one, which the
        // verifier (tracking ranges per register) would reject.
        // SAFETY: reading the xdp_md fields the kernel provides.
        unsafe {
            (
                core::ptr::read_volatile(&(*self.0.ctx).data) as usize,
                core::ptr::read_volatile(&(*self.0.ctx).data_end) as usize,
            )
        }
    }

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: reading the context's ingress ifindex.
        unsafe { (*self.0.ctx).ingress_ifindex }
    }

    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.0.ctx as *mut c_void
    }

    #[inline(always)]
    fn adjust_head(&self, delta: i32) -> bool {
        // SAFETY: the helper checks its arguments; callers re-derive every packet pointer.
        unsafe { bpf_xdp_adjust_head(self.0.ctx, delta) == 0 }
    }

    #[inline(always)]
    fn adjust_tail(&self, delta: i32) -> bool {
        // SAFETY: as above.
        unsafe { bpf_xdp_adjust_tail(self.0.ctx, delta) == 0 }
    }

    #[inline(always)]
    fn load_bytes(&self, off: u32, buf: *mut u8, len: u32) -> bool {
        // SAFETY: the helper checks the frame's bounds; `buf` holds at least `len` bytes.
        unsafe { bpf_xdp_load_bytes(self.0.ctx, off, buf as *mut c_void, len) == 0 }
    }

    #[inline(always)]
    fn trace(&self) {
        // SAFETY: the program's own context; returns only if the slot is empty.
        unsafe { crate::trace::TRACE_XDP.tail_call(&self.0, 0) };
    }

    #[inline(always)]
    fn redirect(&self, ifindex: u32) -> bool {
        DEVMAP.redirect(ifindex, 0).is_ok()
    }

    #[inline(always)]
    fn redirect_cached(&self, ifindex: u32) -> bool {
        DEVMAP_SLOTS
            .redirect(sipvip_common::iface_slot(ifindex), 0)
            .is_ok()
    }

    #[inline(always)]
    fn verdict(&self, v: Verdict) -> u32 {
        match v {
            Verdict::Pass => xdp_action::XDP_PASS,
            Verdict::Drop => xdp_action::XDP_DROP,
            Verdict::Bounce => xdp_action::XDP_TX,
            Verdict::Redirect => xdp_action::XDP_REDIRECT,
        }
    }
}
