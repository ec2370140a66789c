//! The flow cache slots' counts (`FlowSlot::packets`, `bytes`), which the counters' readers
//! add to the VIPs' cells and the reasons' slots; and what the readers reported last, which
//! they never go back below.
//!
//! A cached packet counts in its slot, and the datapath moves a slot's counts to its entry's
//! VIP cell and reason when another entry takes the slot, zeroing the slot's first
//! (`flow::remember` in the eBPF crate). A reader reads the VIPs' and reasons' values, then
//! the slots, through a read-only mapping of the array (`BPF_F_MMAPABLE`; a lookup per slot
//! would be a system call per slot). A count that moves between the two reads is missed by
//! that read and never counted twice; a slot whose entry changes while it is read is left
//! out of that read. So a read may come out lower than the one before it, for an instant:
//! [`Reported`] keeps each counter at the highest value reported, as a counter must never
//! go back (a metrics scraper reads a drop as a reset).

use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd},
};

use aya::maps::{Array, IterableMap, MapData};
use sipvip_common::{map_names, FlowEntry, FlowKey, FlowSlot, VipCells, VipCounters};

use super::{DatapathError, Result};

/// A read-only mapping of the flow cache (`SV_FLOWS_V4`).
pub(super) struct SlotView {
    base: *const FlowSlot,
    slots: usize,
    len: usize,
}

// SAFETY: a read-only shared mapping, read with volatile loads only; the mapping lives
// until drop.
unsafe impl Send for SlotView {}
unsafe impl Sync for SlotView {}

impl SlotView {
    /// Maps the whole array: its values start at the mapping's first byte, each
    /// `size_of::<FlowSlot>()` (a multiple of 8, as the kernel lays them out).
    pub(super) fn map(flows: &Array<MapData, FlowSlot>) -> Result<Self> {
        const { assert!(std::mem::size_of::<FlowSlot>().is_multiple_of(8)) };
        let slots = flows.len() as usize;
        let len = slots * std::mem::size_of::<FlowSlot>();
        let fd = flows.map().fd().as_fd().as_raw_fd();
        // SAFETY: a new shared read-only mapping of the map's fd at offset 0, no longer than
        // its values; nothing else is mapped at the address the kernel picks.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len.max(1),
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(DatapathError::Mmap {
                name: map_names::FLOWS,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(SlotView {
            base: p as *const FlowSlot,
            slots,
            len: len.max(1),
        })
    }

    /// Calls `f` with each slot's counts and the entry they are counts of, for the slots
    /// that hold counts. A slot whose entry changed while it was read is left out.
    pub(super) fn each(&self, mut f: impl FnMut(&FlowEntry, u64, u64)) {
        for i in 0..self.slots {
            // SAFETY: slot `i` of the mapping (`i < slots`), 8-byte aligned; the datapath
            // writes it meanwhile, so every read is volatile and copies.
            let s = unsafe { self.base.add(i) };
            let packets = unsafe { std::ptr::read_volatile(&raw const (*s).packets) };
            if packets == 0 {
                continue;
            }
            let before = unsafe { identity(s) };
            let packets = unsafe { std::ptr::read_volatile(&raw const (*s).packets) };
            let bytes = unsafe { std::ptr::read_volatile(&raw const (*s).bytes) };
            let after = unsafe { identity(s) };
            if before == after {
                f(&before.1, packets, bytes);
            }
        }
    }
}

/// A slot's key and entry, read with volatile loads. (Which entry the counts are of: the
/// datapath zeroes the counts before it writes another entry, and the key after it.)
///
/// # Safety
/// `s` points at a slot of a live mapping.
unsafe fn identity(s: *const FlowSlot) -> (FlowKey, FlowEntry) {
    // SAFETY: as the caller promises.
    unsafe {
        (
            std::ptr::read_volatile(&raw const (*s).key),
            std::ptr::read_volatile(&raw const (*s).entry),
        )
    }
}

impl Drop for SlotView {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

/// The slots' counts: each reason's, and the VIPs' cells (a `VipCells` per VIP, whose
/// reasons are left at zero: they are in `reasons`).
#[derive(Default)]
pub(super) struct SlotCounts {
    pub reasons: Vec<u64>,
    pub vips: HashMap<u32, Box<VipCells>>,
}

impl SlotCounts {
    /// Adds up every slot's counts: every reason's, and the cells of the VIPs in `vips`.
    pub(super) fn read(view: &SlotView, vips: std::ops::Range<u32>) -> SlotCounts {
        let mut c = SlotCounts {
            reasons: vec![0; sipvip_common::REASON_SLOTS as usize],
            vips: HashMap::new(),
        };
        view.each(|e, packets, bytes| {
            if let Some(r) = c.reasons.get_mut(usize::from(e.reason)) {
                *r += packets;
            }
            if e.action != sipvip_common::FLOW_TRANSLATE || !vips.contains(&e.vip_id) {
                return;
            }
            let cells = c.vips.entry(e.vip_id).or_default();
            if let Some(cell) = cells.cells.as_flattened_mut().get_mut(usize::from(e.cell)) {
                cell.packets += packets;
                cell.bytes += bytes;
            }
        });
        c
    }
}

/// The counters as last reported, per reason slot and per VIP: a read reports at least
/// these.
#[derive(Default)]
pub(super) struct Reported {
    reasons: Vec<u64>,
    vips: HashMap<u32, VipCounters>,
}

impl Reported {
    /// The reasons' counts, none below what was reported last (and recorded as reported).
    pub(super) fn reasons(&mut self, now: &mut [u64]) {
        if self.reasons.len() < now.len() {
            self.reasons.resize(now.len(), 0);
        }
        for (n, r) in now.iter_mut().zip(self.reasons.iter_mut()) {
            *n = (*n).max(*r);
            *r = *n;
        }
    }

    /// A VIP's counters, none below what was reported last (and recorded as reported).
    pub(super) fn vip(&mut self, vip_id: u32, now: &mut VipCounters) {
        let last = self.vips.entry(vip_id).or_default();
        let pairs = [
            (&mut now.vip_in, &mut last.vip_in),
            (&mut now.vip_out, &mut last.vip_out),
        ];
        for (n, l) in pairs.into_iter().chain(
            now.service_in
                .iter_mut()
                .zip(last.service_in.iter_mut())
                .chain(now.service_out.iter_mut().zip(last.service_out.iter_mut()))
                .chain(now.member_in.iter_mut().zip(last.member_in.iter_mut()))
                .chain(now.member_out.iter_mut().zip(last.member_out.iter_mut())),
        ) {
            n.packets = n.packets.max(l.packets);
            n.bytes = n.bytes.max(l.bytes);
            *l = *n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_never_goes_back() {
        let mut r = Reported::default();
        let mut first = [5, 0, 7];
        r.reasons(&mut first);
        assert_eq!(first, [5, 0, 7]);
        // A read that missed counts on their way from a slot to a VIP's value.
        let mut second = [4, 1, 7];
        r.reasons(&mut second);
        assert_eq!(second, [5, 1, 7]);
        let mut third = [9, 1, 8];
        r.reasons(&mut third);
        assert_eq!(third, [9, 1, 8]);

        let mut c = VipCounters::default();
        c.vip_in.packets = 10;
        c.member_out[1].bytes = 500;
        r.vip(3, &mut c);
        let mut lower = VipCounters::default();
        lower.vip_in.packets = 9;
        lower.member_out[1].bytes = 600;
        r.vip(3, &mut lower);
        assert_eq!(lower.vip_in.packets, 10);
        assert_eq!(lower.member_out[1].bytes, 600);
        // Another VIP's report is its own.
        let mut other = VipCounters::default();
        r.vip(4, &mut other);
        assert_eq!(other, VipCounters::default());
    }
}
