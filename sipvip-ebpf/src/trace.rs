//! The flow trace (`sipvip trace`): while a trace runs (`SV_TRACE_V1`'s `on`), each packet
//! that passes its filters leaves one event in the ring buffer `SV_TRACE_RB_V1`: the frame as
//! it arrived and as it left, the side, the verdict and the reason counted, the VIP and member
//! of a translated packet. The filters run here, in the kernel, so that user space sees only
//! the packets it asked for; each CPU emits at most `per_window` events per `TRACE_WINDOW_NS`
//! (the rest counted as rate-limited), and an event the ring buffer has no room for is
//! counted as lost. When no trace runs, a packet pays two reads of the filter's slot.
//!
//! Three steps, so that a gateway without a trace pays nearly nothing, and none adds to the
//! stack of the rules (the IPv6 programs use most of their 512 bytes there):
//! - [`begin`], in the side's entry program before anything is parsed: the side filter, the
//!   rate window, and the frame as it arrived, copied into this CPU's slot
//!   (`SV_TRACE_EVT_V1`), in a function of its own (a BPF-to-BPF call);
//! - [`outcome`], after `apply`: the verdict and the reason counted, into the same slot; the
//!   program then tail-calls the trace program of its hook (`SV_TRACEX_V1`/`SV_TRACET_V1`,
//!   slot 0);
//! - [`finish`], the trace program: the frame as it left, the filters on both frames
//!   (addresses, ports, protocol, reason), the event to the ring buffer; it returns the
//!   verdict `outcome` kept. Were the tail call refused, the program returns that verdict
//!   itself, untraced.
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

use crate::hook::Frame;

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

/// This CPU's traced packet, from `begin` to `finish` (kernel-private).
#[repr(C)]
pub struct Scratch {
    pub event: TraceEvent,
    state: u8,
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
    if !running() {
        return;
    }
    begin_tracing::<F>(f.raw(), side);
}

/// Whether a trace runs.
#[inline(always)]
fn running() -> bool {
    matches!(TRACE.get(0), Some(t) if t.on != 0)
}

/// A function of its own (a BPF-to-BPF call): its helper calls then cost the program's hot
/// path no registers while no trace runs.
#[inline(never)]
fn begin_tracing<F: Frame>(raw: *mut core::ffi::c_void, side: u8) {
    // SAFETY: the running program's context, from `Frame::raw`.
    let f = unsafe { F::from_raw(raw) };
    let f = &f;
    let Some(t) = TRACE.get(0) else {
        return;
    };
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
    let over = cpu.used >= u64::from(t.per_window);
    let e = &mut s.event;
    e.ts_ns = now;
    e.ifindex = f.ingress_ifindex();
    e.side = side;
    // Past the window's budget, only the headers the filters read: the packet is counted,
    // not sent.
    let snap = if over && t.snap > HEADERS {
        HEADERS
    } else {
        t.snap
    };
    let (len, cap) = copy(f, &mut e.before, snap);
    e.len = len;
    e.cap = cap;
    s.state = if over { OVER } else { YES };
}

/// Bytes that hold every header the filters read: Ethernet, 802.1Q, IPv4 with options or
/// IPv6's fixed header, and the ports.
const HEADERS: u32 = 96;

/// Whether `begin` took this packet (a trace runs, and wants its side).
#[inline(always)]
fn due() -> bool {
    running() && matches!(scratch(), Some(s) if s.state != NO)
}

/// After `apply`: the verdict and the reason counted, for a packet `begin` took. Whether the
/// program is to tail-call its trace program.
#[inline(always)]
pub fn outcome(verdict: u32, reason: Reason) -> bool {
    if !due() {
        return false;
    }
    let Some(s) = scratch() else {
        return false;
    };
    s.event.verdict = verdict;
    s.event.reason = reason as u8;
    true
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
    // The headers of the frame as it left, then the filters on both frames' addresses and
    // ports: a packet no filter wants costs two header copies.
    let headers = if t.snap > HEADERS { HEADERS } else { t.snap };
    let (len, cap) = copy(f, &mut s.event.after, headers);
    s.event.len_after = len;
    s.event.cap_after = cap;
    if !matches(s, t) {
        return Some(verdict);
    }
    let cpu = TRACE_CPU.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, as above.
    let cpu = unsafe { &mut *cpu };
    cpu.matched += 1;
    if state == OVER {
        cpu.rate_limited += 1;
        return Some(verdict);
    }
    if t.snap > HEADERS {
        let (_, cap) = copy(f, &mut s.event.after, t.snap);
        s.event.cap_after = cap;
    }
    cpu.used += 1;
    if TRACE_EVENTS.output::<TraceEvent>(&s.event, 0).is_ok() {
        cpu.emitted += 1;
    } else {
        cpu.lost += 1;
    }
    Some(verdict)
}

/// A frame's addresses (the datapath's 16-byte form), protocol and ports, read from its
/// copy: Ethernet, one 802.1Q tag, IPv4 with options or IPv6's fixed header (a packet behind
/// IPv6 extension headers shows no ports, and a later fragment none).
struct Parsed {
    v6: bool,
    src: [u32; 4],
    dst: [u32; 4],
    proto: u8,
    sport: u16,
    dport: u16,
}

#[inline(always)]
fn parse(b: &[u8; TRACE_SNAP_MAX], cap: u32) -> Option<Parsed> {
    let cap = (cap as usize).min(TRACE_SNAP_MAX);
    let at = |i: usize| -> Option<u8> {
        if i < cap {
            b.get(i).copied()
        } else {
            None
        }
    };
    let word = |i: usize| -> Option<u32> {
        Some(u32::from_ne_bytes([
            at(i)?,
            at(i + 1)?,
            at(i + 2)?,
            at(i + 3)?,
        ]))
    };
    let half = |i: usize| -> Option<u16> { Some(u16::from_ne_bytes([at(i)?, at(i + 1)?])) };
    let mut l3 = 14;
    let mut ty = [at(12)?, at(13)?];
    if ty == [0x81, 0x00] {
        ty = [at(16)?, at(17)?];
        l3 = 18;
    }
    let (v6, src, dst, proto, l4, later) = match ty {
        [0x08, 0x00] => {
            let ihl = usize::from(at(l3)? & 0x0f) * 4;
            let frag = u16::from_be_bytes([at(l3 + 6)?, at(l3 + 7)?]) & 0x1fff;
            (
                false,
                [word(l3 + 12)?, 0, 0, 0],
                [word(l3 + 16)?, 0, 0, 0],
                at(l3 + 9)?,
                l3 + ihl,
                frag != 0,
            )
        }
        [0x86, 0xdd] => (
            true,
            [
                word(l3 + 8)?,
                word(l3 + 12)?,
                word(l3 + 16)?,
                word(l3 + 20)?,
            ],
            [
                word(l3 + 24)?,
                word(l3 + 28)?,
                word(l3 + 32)?,
                word(l3 + 36)?,
            ],
            at(l3 + 6)?,
            l3 + 40,
            false,
        ),
        _ => return None,
    };
    let (mut sport, mut dport) = (0, 0);
    if !later && (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
        sport = half(l4).unwrap_or(0);
        dport = half(l4 + 2).unwrap_or(0);
    }
    Some(Parsed {
        v6,
        src,
        dst,
        proto,
        sport,
        dport,
    })
}

/// Whether the packet passes the filters: its reason, and the addresses, ports and protocol
/// of the frame as it arrived and as it left (the translated address is in the latter).
#[inline(always)]
fn matches(s: &Scratch, t: &TraceFilter) -> bool {
    let reason = u32::from(s.event.reason);
    if t.reasons & (1u64 << (reason & 63)) == 0 {
        return false;
    }
    let Some(b) = parse(&s.event.before, s.event.cap) else {
        // Not IP: only a trace without address, port or protocol filters shows it.
        return t.flags == 0;
    };
    let a = parse(&s.event.after, s.event.cap_after);
    if t.flags & TRACE_F_PROTO != 0
        && b.proto != t.proto
        && !(t.proto == IPPROTO_ICMP && b.v6 && b.proto == 58)
    {
        return false;
    }
    let fam = usize::from(b.v6);
    let any_in = |net: &[u32; 4], mask: Option<&[u32; 4]>| {
        in_net(&b.src, net, mask)
            || in_net(&b.dst, net, mask)
            || a.as_ref().is_some_and(|a| {
                a.v6 == b.v6 && (in_net(&a.src, net, mask) || in_net(&a.dst, net, mask))
            })
    };
    if t.flags & TRACE_F_VIP != 0 && !any_in(&t.vip[fam], None) {
        return false;
    }
    if t.flags & TRACE_F_MEMBER != 0 && !any_in(&t.member[fam], None) {
        return false;
    }
    if t.flags & TRACE_F_HOST != 0 && !any_in(&t.host[fam], Some(&t.host_mask[fam])) {
        return false;
    }
    if t.flags & TRACE_F_PORT != 0 {
        let p = t.port_be;
        let after = a.as_ref().is_some_and(|a| a.sport == p || a.dport == p);
        if b.sport != p && b.dport != p && !after {
            return false;
        }
    }
    true
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
