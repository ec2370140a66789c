//! The flow trace (`sipvip trace`): while a trace runs (`SV_TRACE_V1`'s `on`), each packet
//! that passes its filters leaves one event in the ring buffer `SV_TRACE_RB_V1`: the frame as
//! it arrived and as it left, the side, the verdict and the reason counted, the VIP and member
//! of a translated packet. The filters run here, in the kernel, so that user space sees only
//! the packets it asked for; each CPU emits at most `per_window` events per `TRACE_WINDOW_NS`
//! (the rest counted as rate-limited), and an event the ring buffer has no room for is
//! counted as lost. When no trace runs, a packet pays two reads of the filter's slot.
//!
//! Three steps, so that none adds to the stack of the rules (the IPv6 programs use most of
//! their 512 bytes there):
//! - [`begin`], in the side's entry program before anything is parsed: the side filter, the
//!   rate window, and the frame as it arrived, copied into this CPU's slot
//!   (`SV_TRACE_EVT_V1`);
//! - [`stash`], after `apply`: what the filters need (addresses before and after the rewrite,
//!   protocol, where the ports are, the rewritten port), the verdict and the reason, into the
//!   same slot; then the program tail-calls the trace program of its hook
//!   (`SV_TRACEX_V1`/`SV_TRACET_V1`, slot 0);
//! - [`finish`], the trace program: the filters, the frame as it left, the event to the ring
//!   buffer; it returns the verdict `stash` kept. Were the tail call refused, the program
//!   returns that verdict itself, untraced.
//!
//! A packet that fails a filter in `finish` was copied for nothing: the price of a running
//! trace's narrow filter, never of a gateway without a trace.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray, ProgramArray, RingBuf},
};
use sipvip_common::{
    Reason, TraceCpu, TraceEvent, TraceFilter, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
    TRACE_F_HOST, TRACE_F_MEMBER, TRACE_F_PORT, TRACE_F_PROTO, TRACE_F_VIP, TRACE_RING_BYTES,
    TRACE_SNAP_MAX, TRACE_WINDOW_NS,
};

use crate::{
    family::Family,
    hook::Frame,
    packet::Ip,
    rules::{Action, Decision},
};

#[map(name = "SV_TRACE_V1")]
pub static TRACE: Array<TraceFilter> = Array::with_max_entries(1, 0);

#[map(name = "SV_TRACE_RB_V1")]
pub static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(TRACE_RING_BYTES, 0);

#[map(name = "SV_TRACE_CPU_V1")]
pub static TRACE_CPU: PerCpuArray<TraceCpu> = PerCpuArray::with_max_entries(1, 0);

/// The trace programs, slot 0: `sipvip_trace_xdp` and `sipvip_trace_tc`.
#[map(name = "SV_TRACEX_V1")]
pub static TRACE_XDP: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map(name = "SV_TRACET_V1")]
pub static TRACE_TC: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// `Scratch::state`.
const NO: u8 = 0;
const OVER: u8 = 1;
const YES: u8 = 2;

/// This CPU's traced packet, from `begin` to `finish` (kernel-private): the event, and what
/// the filters read.
#[repr(C)]
pub struct Scratch {
    pub event: TraceEvent,
    src: [u32; 4],
    dst: [u32; 4],
    /// The translated address (the member's, or the VIP's), when `translated`.
    xlat: [u32; 4],
    /// Where the ports lie in the frame as it arrived (0: no ports).
    l4: u32,
    port_new_be: u16,
    state: u8,
    proto: u8,
    translated: u8,
    _pad: [u8; 7],
}

#[map(name = "SV_TRACE_EVT_V1")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: this CPU's slot; nothing else runs on this CPU until the program (and the
    // programs it tail-calls) return.
    SCRATCH.get_ptr_mut(0).map(|s| unsafe { &mut *s })
}

/// First step, in the entry program: whether a trace wants packets of this side, and the
/// frame as it arrived when this CPU's window has room.
#[inline(always)]
pub fn begin<F: Frame>(f: &F, side: u8) {
    let Some(t) = TRACE.get(0) else {
        return;
    };
    if t.on == 0 {
        return;
    }
    begin_tracing(f, side, t);
}

#[inline(always)]
fn begin_tracing<F: Frame>(f: &F, side: u8, t: &TraceFilter) {
    let Some(s) = scratch() else {
        return;
    };
    s.state = NO;
    if t.sides & (1 << side) == 0 {
        return;
    }
    let Some(cpu) = TRACE_CPU.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot, as above.
    let cpu = unsafe { &mut *cpu };
    // SAFETY: no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let window = now / TRACE_WINDOW_NS;
    if cpu.window != window {
        cpu.window = window;
        cpu.used = 0;
    }
    if cpu.used >= u64::from(t.per_window) {
        s.state = OVER;
        return;
    }
    let e = &mut s.event;
    e.ts_ns = now;
    e.ifindex = f.ingress_ifindex();
    e.side = side;
    let (len, cap) = copy(f, &mut e.before, t.snap);
    e.len = len;
    e.cap = cap;
    s.state = YES;
}

/// Whether `begin` took this packet (a trace runs, and wants its side).
#[inline(always)]
pub fn due() -> bool {
    match TRACE.get(0) {
        Some(t) if t.on != 0 => matches!(scratch(), Some(s) if s.state != NO),
        _ => false,
    }
}

/// Second step, after `apply`: what the filters read, and the outcome.
#[inline(always)]
pub fn stash<A: Family>(p: &Ip<A>, d: &Decision<A>, verdict: u32, reason: Reason) {
    let Some(s) = scratch() else {
        return;
    };
    s.src = A::fib(p.src());
    s.dst = A::fib(p.dst());
    s.proto = p.proto;
    s.l4 = if p.frag_offset == 0 && (p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP) {
        p.l4 as u32
    } else {
        0
    };
    let translated = d.action == Action::Translate;
    s.translated = translated as u8;
    s.xlat = A::fib(d.rewrite.addr);
    s.port_new_be = d.rewrite.port.1;
    let e = &mut s.event;
    e.family = if A::V6 { 6 } else { 4 };
    e.verdict = verdict;
    e.reason = reason as u8;
    if translated {
        e.vip_id = d.account.vip_id;
        e.slot = d.account.slot;
    } else {
        e.vip_id = u32::MAX;
        e.slot = u32::MAX;
    }
}

/// Third step, the trace program: the filters, the frame as it left, the event to the ring
/// buffer (or the rate-limited count). Returns the verdict `stash` kept (None: no slot).
#[inline(always)]
pub fn finish<F: Frame>(f: &F) -> Option<u32> {
    let s = scratch()?;
    let verdict = s.event.verdict;
    let state = s.state;
    s.state = NO;
    let t = TRACE.get(0)?;
    if state == NO || t.on == 0 {
        return Some(verdict);
    }
    if matches(s, t) {
        let cpu = TRACE_CPU.get_ptr_mut(0)?;
        // SAFETY: this CPU's slot, as above.
        let cpu = unsafe { &mut *cpu };
        cpu.matched += 1;
        if state == OVER {
            cpu.rate_limited += 1;
        } else {
            let (len, cap) = copy(f, &mut s.event.after, t.snap);
            s.event.len_after = len;
            s.event.cap_after = cap;
            cpu.used += 1;
            if TRACE_EVENTS.output::<TraceEvent>(&s.event, 0).is_ok() {
                cpu.emitted += 1;
            } else {
                cpu.lost += 1;
            }
        }
    }
    Some(verdict)
}

/// Whether the stashed packet passes the filters.
#[inline(always)]
fn matches(s: &mut Scratch, t: &TraceFilter) -> bool {
    let reason = u32::from(s.event.reason);
    if t.reasons & (1u64 << (reason & 63)) == 0 {
        return false;
    }
    if t.flags & TRACE_F_PROTO != 0
        && s.proto != t.proto
        && !(t.proto == IPPROTO_ICMP && (s.proto == 58))
    {
        return false;
    }
    let fam = usize::from(s.event.family == 6);
    if t.flags & TRACE_F_VIP != 0 && !any_in(s, &t.vip[fam], None) {
        return false;
    }
    if t.flags & TRACE_F_MEMBER != 0 && !any_in(s, &t.member[fam], None) {
        return false;
    }
    if t.flags & TRACE_F_HOST != 0 && !any_in(s, &t.host[fam], Some(&t.host_mask[fam])) {
        return false;
    }
    if t.flags & TRACE_F_PORT != 0 {
        let moved = s.translated != 0 && s.port_new_be != 0 && s.port_new_be == t.port_be;
        let (sport, dport) = ports_before(s);
        s.event.sport_be = sport;
        s.event.dport_be = dport;
        if sport != t.port_be && dport != t.port_be && !moved {
            return false;
        }
    }
    true
}

/// The ports as the packet arrived, read from the copy `begin` made (0 when they are not
/// in it).
#[inline(always)]
fn ports_before(s: &Scratch) -> (u16, u16) {
    let l4 = s.l4 as usize;
    if l4 == 0 || l4 + 4 > s.event.cap as usize || l4 + 4 > TRACE_SNAP_MAX {
        return (0, 0);
    }
    let b = &s.event.before;
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    (
        u16::from_ne_bytes([at(l4), at(l4 + 1)]),
        u16::from_ne_bytes([at(l4 + 2), at(l4 + 3)]),
    )
}

/// Whether the packet's source, destination or translated address is `net` (masked with
/// `mask`, else exactly).
#[inline(always)]
fn any_in(s: &Scratch, net: &[u32; 4], mask: Option<&[u32; 4]>) -> bool {
    in_net(&s.src, net, mask)
        || in_net(&s.dst, net, mask)
        || (s.translated != 0 && in_net(&s.xlat, net, mask))
}

#[inline(always)]
fn in_net(a: &[u32; 4], net: &[u32; 4], mask: Option<&[u32; 4]>) -> bool {
    match mask {
        Some(m) => {
            a[0] & m[0] == net[0]
                && a[1] & m[1] == net[1]
                && a[2] & m[2] == net[2]
                && a[3] & m[3] == net[3]
        }
        None => a[0] == net[0] && a[1] == net[1] && a[2] == net[2] && a[3] == net[3],
    }
}

/// Copies the frame's first bytes (at most `snap`) into `buf`: the frame's length and the
/// bytes copied.
#[inline(always)]
fn copy<F: Frame>(f: &F, buf: &mut [u8; TRACE_SNAP_MAX], snap: u32) -> (u32, u32) {
    let len = f.len();
    let mut n = if len < snap { len } else { snap };
    if n > TRACE_SNAP_MAX as u32 {
        n = TRACE_SNAP_MAX as u32;
    }
    // Checked on the very value the helper gets (it refuses a length that may be 0): the
    // volatile read keeps LLVM from checking one copy and passing another.
    // SAFETY: a read of a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    if n == 0 || n > TRACE_SNAP_MAX as u32 {
        return (len, 0);
    }
    if !f.load_bytes(0, buf.as_mut_ptr(), n) {
        return (len, 0);
    }
    (len, n)
}
