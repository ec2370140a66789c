//! Writes to packet memory. Private to `apply`: nothing else writes a packet.

use crate::hook::Frame;

/// Stores a `T` into the frame; the alignment rules of [`Frame::load`] apply.
#[inline(always)]
pub fn store<F: Frame, T: Copy>(f: &F, off: usize, v: T) -> Result<(), ()> {
    const { assert!(core::mem::align_of::<T>() <= 2) };
    // SAFETY: ptr_at checked that the whole T is inside the packet; see `Frame::load` for
    // alignment.
    unsafe { core::ptr::write_volatile(f.ptr_at::<T>(off)?, v) };
    Ok(())
}

/// Stores an IPv4 address (network order, as parsed) as two 16-bit words.
#[inline(always)]
pub fn store_addr<F: Frame>(f: &F, off: usize, addr_be: u32) -> Result<(), ()> {
    store(f, off, addr_words(addr_be))
}

/// An IPv4 address (network order) as the two 16-bit words it lies in memory as.
#[inline(always)]
pub fn addr_words(addr_be: u32) -> [u16; 2] {
    let b = addr_be.to_ne_bytes();
    [
        u16::from_ne_bytes([b[0], b[1]]),
        u16::from_ne_bytes([b[2], b[3]]),
    ]
}

/// Stores the destination and source MACs together (one bounds check), as six 16-bit words.
#[inline(always)]
pub fn store_macs<F: Frame>(f: &F, dmac: [u8; 6], smac: [u8; 6]) -> Result<(), ()> {
    store(f, 0, mac_words(dmac, smac))
}

/// The destination and source MACs as the six 16-bit words that start a frame.
#[inline(always)]
pub fn mac_words(dmac: [u8; 6], smac: [u8; 6]) -> [u16; 6] {
    let w = |m: [u8; 6], i: usize| u16::from_ne_bytes([m[i], m[i + 1]]);
    [
        w(dmac, 0),
        w(dmac, 2),
        w(dmac, 4),
        w(smac, 0),
        w(smac, 2),
        w(smac, 4),
    ]
}
