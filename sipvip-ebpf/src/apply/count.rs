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
    if let Some(slot) = REASONS.get_ptr_mut(u32::from(reason)) {
        // SAFETY: a per-CPU slot, written only by this CPU with preemption disabled.
        unsafe { *slot += 1 };
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
    cell(a.vip_id, c as u16, bytes, reason);
}

/// [`traffic`] in a VIP's cell `cell` (`flow_cell`: its rows taken flat), which a cached
/// decision found once. A VIP beyond the map counts the reason alone.
#[inline(always)]
pub fn cell(vip_id: u32, cell: u16, bytes: u32, reason: u8) {
    let Some(c) = VIP_STATS.get_ptr_mut(vip_id) else {
        bump_slot(reason);
        return;
    };
    // SAFETY: a per-CPU slot, written only by this CPU with preemption disabled.
    let c = unsafe { &mut *c };
    if let Some(cell) = c.cells.as_flattened_mut().get_mut(usize::from(cell)) {
        cell.packets += 1;
        cell.bytes += u64::from(bytes);
    }
    if let Some(r) = c.reasons.get_mut(usize::from(reason)) {
        *r += 1;
    }
}
