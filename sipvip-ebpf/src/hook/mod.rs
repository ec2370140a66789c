//! The seam between the rules and the program type they run in. Everything the rules and
//! `apply` need from a packet context goes through [`Frame`]: the packet bytes, the ingress
//! device, growing and shrinking the frame, the FIB, the redirect and the verdict codes. An
//! XDP frame ([`xdp::Xdp`]) and a TC egress frame ([`tc::TcEgress`], the on-node mode)
//! implement it; the TC frame overrides the checksum step (see [`Frame::update_l4_csum`])
//! and says that the kernel has routed the packet ([`Frame::ROUTED`]). See
//! docs/architecture.md, "The code".

pub mod tc;
pub mod xdp;

use core::ffi::c_void;

use crate::csum::Delta;

/// The verdicts the datapath gives, whatever the hook.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// To the kernel's stack as it is now.
    Pass,
    Drop,
    /// Back out of the interface it arrived on.
    Bounce,
    /// Out of the device `Frame::redirect` chose.
    Redirect,
}

/// A mask no header offset we use exceeds (the deepest is a quoted TCP checksum, < 200).
pub const MAX_OFFSET: usize = 0x3ff;

/// A packet in a program's context.
pub trait Frame {
    /// The frame of a context pointer (what [`Frame::raw`] gives): how a program's frame is
    /// passed to a function of its own (a BPF-to-BPF call takes the context in a register).
    ///
    /// # Safety
    /// `raw` must be the running program's context.
    unsafe fn from_raw(raw: *mut c_void) -> Self;
    /// The start and end of the packet bytes, read afresh on every call: a helper that
    /// moves the packet (adjusting head or tail) invalidates earlier pointers.
    fn bounds(&self) -> (usize, usize);
    /// The device the packet arrived on.
    fn ingress_ifindex(&self) -> u32;
    /// The context pointer helpers take (`struct xdp_md *` or `struct __sk_buff *`).
    fn raw(&self) -> *mut c_void;
    /// Moves the start of the packet by `delta` bytes (negative: grows the head).
    fn adjust_head(&self, delta: i32) -> bool;
    /// Moves the end of the packet by `delta` bytes (negative: cuts the tail).
    fn adjust_tail(&self, delta: i32) -> bool;
    /// Copies `len` bytes from `off` into `buf` (the trace's copies), whatever the frame's
    /// layout.
    fn load_bytes(&self, off: u32, buf: *mut u8, len: u32) -> bool;
    /// Tail-calls the hook's trace program (`trace::finish`), which returns the verdict;
    /// returns only if it is not installed.
    fn trace(&self);
    /// Asks for the packet to go out of `ifindex`; takes effect with `Verdict::Redirect`.
    fn redirect(&self, ifindex: u32) -> bool;
    /// The same for a flow cache entry's interface, through the devmap indexed by its slot
    /// (`SV_DEVSLOT_V1`), which holds the entry's interface or none while the entry's
    /// generation is current.
    fn redirect_cached(&self, ifindex: u32) -> bool;
    /// The program's return code for a verdict.
    fn verdict(&self, v: Verdict) -> u32;

    /// The frame length (the IPv4 total length is checked against it; byte counters).
    #[inline(always)]
    fn len(&self) -> u32 {
        let (start, end) = self.bounds();
        (end - start) as u32
    }

    /// A pointer to a `T` at `off` bytes into the frame, if it lies wholly inside it.
    #[inline(always)]
    fn ptr_at<T>(&self, off: usize) -> Result<*mut T, ()> {
        let (start, end) = self.bounds();
        // Bounds the offset for the verifier, which may have lost track of it across
        // spills. Every header we touch starts within the first MAX_OFFSET bytes.
        let off = off & MAX_OFFSET;
        if start + off + core::mem::size_of::<T>() > end {
            return Err(());
        }
        Ok((start + off) as *mut T)
    }

    /// Loads a `T` from the frame.
    ///
    /// The read is volatile so that it happens right after its bounds check: otherwise LLVM
    /// may re-read packet memory later through a register the verifier has not
    /// bounds-checked. Every `T` loaded is at most 2-byte aligned and every offset is even
    /// (headers start at 14, 18 or an IHL multiple of 4 beyond), so the pointer is suitably
    /// aligned.
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Result<T, ()> {
        const { assert!(core::mem::align_of::<T>() <= 2) };
        // SAFETY: ptr_at checked that the whole T is inside the packet; see above for
        // alignment.
        Ok(unsafe { core::ptr::read_volatile(self.ptr_at::<T>(off)?) })
    }

    /// Updates a TCP/UDP checksum at `off` for a rewrite: `pseudo` is the change to
    /// pseudo-header fields (addresses), `rest` the change to the rest (ports); a UDP
    /// checksum of 0 ("none", RFC 768) stays 0 and a computed 0 is sent as 0xffff. In XDP
    /// the packet's checksum is final, so this is a load and a store; a TC frame uses the
    /// skb helper instead, which also handles a partial checksum (CHECKSUM_PARTIAL, where
    /// only the pseudo-header part may change) and keeps the skb's own checksum state true.
    #[inline(always)]
    fn update_l4_csum(&self, off: usize, udp: bool, pseudo: Delta, rest: Delta) -> Result<(), ()> {
        let c: u16 = self.load(off)?;
        let d = pseudo + rest;
        let n = d.apply_l4(udp, c);
        // SAFETY: ptr_at checked that the field is inside the packet.
        unsafe { core::ptr::write_volatile(self.ptr_at::<u16>(off)?, n) };
        Ok(())
    }

    /// Whether the kernel has already routed the packet (a TC egress hook): the rules then
    /// only rewrite, and the packet goes on where the kernel sends it. An XDP frame arrives
    /// unrouted, and the datapath finds its next hop itself.
    const ROUTED: bool = false;
}
