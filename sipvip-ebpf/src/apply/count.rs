//! Per-CPU counters: one slot per reason, and packets/bytes per VIP, service and member
//! (one cell per direction, service and member: `VipCells`), where a packet counted in a
//! cell counts its reason too.

use sipvip_common::{flow_cell, Reason};

use crate::{
    maps::{REASONS, VIP_STATS},
    rules::{Account, Dir},
};

#[inline(always)]
pub fn bump(reason: Reason) {
    bump_slot(reason as u8);
}

/// Counts a reason by its slot, as a flow cache entry keeps it (`FlowEntry::reason`).
#[inline(always)]
pub fn bump_slot(reason: u8) {
    bump_slot_n(reason, 1);
}

/// Counts `n` packets of a reason by its slot.
#[inline(always)]
pub fn bump_slot_n(reason: u8, n: u64) {
    if let Some(slot) = REASONS.get_ptr_mut(u32::from(reason)) {
        // SAFETY: a per-CPU slot, written only by this CPU with preemption disabled.
        unsafe { *slot += n };
    }
}

/// Adds one packet of `bytes` to the VIP's cell of its direction, service and member (a
/// service from `MAX_SERVICES` up, or a member from `MAX_MEMBERS` up, is none), and counts
/// its reason (`Reason as u8`) in the VIP's value too: one lookup for both, which user space
/// sums into the VIP's, the service's and the member's counters (`VipCells::add_to`) and
/// the reason's.
#[inline(always)]
pub fn traffic(a: Account, bytes: u32, reason: u8) {
    let c = flow_cell(a.dir == Dir::Out, a.service, a.slot);
    cell_n(a.vip_id, c as u16, 1, u64::from(bytes), reason);
}

/// `packets` packets of `bytes` in all in a VIP's cell (`flow_cell`: its rows taken flat),
/// and their reason: a packet's, or a
/// flow cache slot's counts (`FlowSlot::packets`), which a cached decision found the cell
/// of once. A VIP beyond the map counts the reason alone.
#[inline(always)]
pub fn cell_n(vip_id: u32, cell: u16, packets: u64, bytes: u64, reason: u8) {
    let Some(c) = VIP_STATS.get_ptr_mut(vip_id) else {
        bump_slot_n(reason, packets);
        return;
    };
    // SAFETY: a per-CPU slot, written only by this CPU with preemption disabled.
    let c = unsafe { &mut *c };
    if let Some(cell) = c.cells.as_flattened_mut().get_mut(usize::from(cell)) {
        cell.packets += packets;
        cell.bytes += bytes;
    }
    if let Some(r) = c.reasons.get_mut(usize::from(reason)) {
        *r += packets;
    }
}
