//! Per-CPU counters: one slot per reason, and packets/bytes per VIP, service and member
//! (one cell per direction, service and member: `VipCells`).

use sipvip_common::{vip_cell, Reason};

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
    let Some(c) = VIP_STATS.get_ptr_mut(a.vip_id) else {
        return;
    };
    // SAFETY: a per-CPU slot, written only by this CPU with preemption disabled.
    let c = unsafe { &mut *c };
    let row = match a.dir {
        Dir::In => &mut c.cells[0],
        Dir::Out => &mut c.cells[1],
    };
    if let Some(cell) = row.get_mut(vip_cell(a.service, a.slot)) {
        cell.packets += 1;
        cell.bytes += u64::from(bytes);
    }
}
