//! The TC egress frame (clsact or tcx egress on the uplink, on-node mode): packets the node
//! sends, its own or routed from a member's veth, after the kernel has routed them.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_skb_load_bytes,
    programs::TcContext,
};

use super::{Frame, Verdict};
use crate::csum::Delta;

pub struct TcEgress(TcContext);

/// The headers the rules read lie within this many bytes (Ethernet, 802.1Q, IPv4 with
/// options, and the deepest L4 field read: an ICMP error's quoted ports).
const HEADERS: u32 = 128;

impl TcEgress {
    /// Makes a TC egress context's headers direct-readable, once, before its frame is used:
    /// an skb's linear part (what data..data_end covers) may end before them, its payload in
    /// page frags (a TCP segment the stack built with scatter-gather).
    #[inline(always)]
    pub fn pull_headers(ctx: &TcContext) {
        // SAFETY: reading the __sk_buff fields the kernel provides.
        let (start, end) = unsafe {
            (
                core::ptr::read_volatile(&(*ctx.skb.skb).data) as usize,
                core::ptr::read_volatile(&(*ctx.skb.skb).data_end) as usize,
            )
        };
        let want = ctx.len().min(HEADERS);
        if ((end - start) as u32) < want {
            // On failure the rules find the headers short and count the packet.
            let _ = ctx.pull_data(want);
        }
    }
}

impl Frame for TcEgress {
    const ROUTED: bool = true;

    #[inline(always)]
    unsafe fn from_raw(raw: *mut c_void) -> Self {
        TcEgress(TcContext::new(raw as *mut _))
    }

    /// The whole packet's length (skb->len), linear part and frags: what the IPv4 total
    /// length is checked against.
    #[inline(always)]
    fn len(&self) -> u32 {
        self.0.len()
    }

    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        // SAFETY: reading the __sk_buff fields the kernel provides; volatile for the same
        // reason as in the XDP frame.
        unsafe {
            let skb = self.0.skb.skb;
            (
                core::ptr::read_volatile(&(*skb).data) as usize,
                core::ptr::read_volatile(&(*skb).data_end) as usize,
            )
        }
    }

    /// The device the packet leaves by (an egress hook has no ingress device; the rules use
    /// this only to look up the interface the frame is on).
    #[inline(always)]
    #[allow(clippy::misnamed_getters)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: reading the context's ifindex.
        unsafe { (*self.0.skb.skb).ifindex }
    }

    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.0.skb.skb as *mut c_void
    }

    // A routed packet is only rewritten in place: it is never grown, cut or redirected.
    #[inline(always)]
    fn adjust_head(&self, _delta: i32) -> bool {
        false
    }

    #[inline(always)]
    fn adjust_tail(&self, _delta: i32) -> bool {
        false
    }

    #[inline(always)]
    fn load_bytes(&self, off: u32, buf: *mut u8, len: u32) -> bool {
        // SAFETY: the helper checks the skb's bounds (paged data included); `buf` holds at
        // least `len` bytes.
        unsafe {
            bpf_skb_load_bytes(
                self.0.skb.skb as *const c_void,
                off,
                buf as *mut c_void,
                len,
            ) == 0
        }
    }

    #[inline(always)]
    fn trace(&self) {
        // SAFETY: the program's own context; returns only if the slot is empty.
        unsafe { crate::trace::TRACE_TC.tail_call(&self.0, 0) };
    }

    #[inline(always)]
    fn redirect(&self, _ifindex: u32) -> bool {
        false
    }

    #[inline(always)]
    fn redirect_cached(&self, _ifindex: u32) -> bool {
        false
    }

    #[inline(always)]
    fn verdict(&self, v: Verdict) -> u32 {
        match v {
            Verdict::Drop => TC_ACT_SHOT as u32,
            // A routed packet goes on; Bounce and Redirect are never decided for one.
            Verdict::Pass | Verdict::Bounce | Verdict::Redirect => TC_ACT_OK as u32,
        }
    }

    /// The skb helper (bpf_l4_csum_replace) with a precomputed difference: it knows whether
    /// the checksum is partial (CHECKSUM_PARTIAL: GSO, checksum offload, where the field holds
    /// the pseudo-header sum and the rest is filled in on transmit) or complete, and updates
    /// the field (and skb->csum) to match; the ports are not in the pseudo-header, so their
    /// change is applied only to a complete checksum. Packet pointers are re-read after it.
    #[inline(always)]
    fn update_l4_csum(&self, off: usize, udp: bool, pseudo: Delta, rest: Delta) -> Result<(), ()> {
        let zero_stays = if udp { BPF_F_MARK_MANGLED_0 } else { 0 } as u64;
        if !pseudo.is_empty() {
            self.0
                .l4_csum_replace(
                    off,
                    0,
                    u64::from(pseudo.wsum()),
                    BPF_F_PSEUDO_HDR as u64 | zero_stays,
                )
                .map_err(|_| ())?;
        }
        if !rest.is_empty() {
            self.0
                .l4_csum_replace(off, 0, u64::from(rest.wsum()), zero_stays)
                .map_err(|_| ())?;
        }
        Ok(())
    }
}
