//! Per-CPU counters: one slot per reason, and packets/bytes per VIP, service and member
//! (one cell per direction, service and member: `VipCells`).

use sipvip_common::{flow_cell, Reason};

use crate::{
    maps::{REASONS, VIP_STATS},
    rules::{Account, Dir},
};

#[inline(always)]
pub fn bump(reason: Reason) {
    if let Some(slot) = REASONS.get_ptr_mut(reason as u32) {
        // SAFETY: a per-CPU slot, written only by this CPU with preemption disabled.
        unsafe { *slot += 1 };
    }
}

/// Adds one packet of `bytes` to the VIP's cell of its direction, service and member (a
/// service from `MAX_SERVICES` up, or a member from `MAX_MEMBERS` up, is none): one
/// counter per packet, which user space sums into the VIP's, the service's and the
/// member's (`VipCells::add_to`).
#[inline(always)]
pub fn traffic(a: Account, bytes: u32) {
    let c = flow_cell(a.dir == Dir::Out, a.service, a.slot);
    cell(a.vip_id, c as u16, bytes);
}

/// Adds one packet of `bytes` to a VIP's cell `cell` (`flow_cell`: its rows taken flat),
/// which a cached decision found once.
#[inline(always)]
pub fn cell(vip_id: u32, cell: u16, bytes: u32) {
    let Some(c) = VIP_STATS.get_ptr_mut(vip_id) else {
        return;
    };
    // SAFETY: a per-CPU slot, written only by this CPU with preemption disabled.
    let c = unsafe { &mut *c };
    if let Some(cell) = c.cells.as_flattened_mut().get_mut(usize::from(cell)) {
        cell.packets += 1;
        cell.bytes += u64::from(bytes);
    }
}
