//! Per-CPU counters: one slot per reason, and packets/bytes per VIP, service and member.

use sipvip_common::{Reason, MAX_MEMBERS, MAX_SERVICES};

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

/// Adds one packet of `bytes` to the VIP, the service (if `service < MAX_SERVICES`) and the
/// member slot (if `< MAX_MEMBERS`).
#[inline(always)]
pub fn traffic(a: Account, bytes: u32) {
    let (service, member_slot) = (a.service, a.slot);
    let Some(c) = VIP_STATS.get_ptr_mut(a.vip_id) else {
        return;
    };
    let bytes = u64::from(bytes);
    // SAFETY: a per-CPU slot, written only by this CPU with preemption disabled; indexes are
    // bounds-checked below.
    let c = unsafe { &mut *c };
    let (vip, svc, mem) = match a.dir {
        Dir::In => (&mut c.vip_in, &mut c.service_in, &mut c.member_in),
        Dir::Out => (&mut c.vip_out, &mut c.service_out, &mut c.member_out),
    };
    vip.packets += 1;
    vip.bytes += bytes;
    if (service as usize) < MAX_SERVICES {
        let s = &mut svc[service as usize];
        s.packets += 1;
        s.bytes += bytes;
    }
    if (member_slot as usize) < MAX_MEMBERS {
        let m = &mut mem[member_slot as usize];
        m.packets += 1;
        m.bytes += bytes;
    }
}
