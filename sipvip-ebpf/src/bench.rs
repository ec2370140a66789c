//! Benchmark-only XDP programs (never loaded by the daemon):
//!
//! - `bench_gen`: a traffic generator for BPF_PROG_TEST_RUN live frames. Every frame is
//!   rewritten from the template in `BENCH_GEN` (recycled pages come back modified by the
//!   receiver), with the source address and port cycling over many flows, then redirected
//!   out of the devmap's slot 0.
//! - `bench_sink`: counts and drops what arrives: apart, what lacks the rewrite the case
//!   expects (`BENCH_EXPECT`, `BENCH_BAD`).
//! - `bench_floor`: the floor: rewrites the destination address and MACs and redirects,
//!   nothing else (`BENCH_FLOOR` and `BENCH_DEV` slot 0: steering's direction).
//! - `bench_floor_out`: the same for SNAT's direction: rewrites the source address instead
//!   (slot 1 of both maps).
//! - `bench_empty`: returns XDP_PASS, the per-packet cost baseline.
//! - `bench_reset`: the per-packet cost harness for BPF_PROG_TEST_RUN with a repeat count:
//!   writes the headers of `BENCH_TMPL` back into the frame (each run would otherwise see the
//!   previous run's rewrite), then tail-calls the program under test in `BENCH_PROGS[0]`.
//! - `bench_reset_flows`: the same harness for many flows in turn: after the template, the
//!   UDP source port's low bits are the run's count under the mask of `BENCH_FLOWS` (a power
//!   of two), the UDP checksum updated to match, so each run is the next of that many flows
//!   (the flow cache's slots, which one flow keeps in the CPU's cache, are then read as they
//!   are under live traffic).
//! - `bench_reset_tc` and `bench_empty_tc`: the same harness and baseline for TC programs
//!   (skb), with their own program array (`BENCH_PROGS_TC`: a program array holds one
//!   program type).
#![no_std]
#![no_main]

mod object;

use sipvip_common::bench::{
    Expect, FloorCfg, GenCfg, Template, EXPECT_DST, EXPECT_SRC, TEMPLATE_BYTES,
};
use sipvip_common::csum_update_folded;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    macros::{classifier, map, xdp},
    maps::{Array, DevMap, PerCpuArray, ProgramArray},
    programs::{TcContext, XdpContext},
};

#[map(name = "BENCH_GEN")]
static GEN: Array<GenCfg> = Array::with_max_entries(1, 0);
#[map(name = "BENCH_FLOOR")]
static FLOOR: Array<FloorCfg> = Array::with_max_entries(2, 0);
#[map(name = "BENCH_DEV")]
static DEV: DevMap = DevMap::with_max_entries(2, 0);
#[map(name = "BENCH_SEQ")]
static SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "BENCH_TMPL")]
static TMPL: Array<Template> = Array::with_max_entries(1, 0);
#[map(name = "BENCH_PROGS")]
static PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map(name = "BENCH_PROGS_TC")]
static PROGS_TC: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map(name = "BENCH_COUNT")]
static COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "BENCH_EXPECT")]
static EXPECT: Array<Expect> = Array::with_max_entries(1, 0);
#[map(name = "BENCH_BAD")]
static BAD: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "BENCH_FLOWS")]
static FLOWS: Array<u32> = Array::with_max_entries(1, 0);
#[map(name = "BENCH_FLOWSEQ")]
static FLOWSEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

const HDR: usize = 14 + 20 + 8;

#[inline(always)]
fn csum(words: &[u16; 10]) -> u16 {
    let mut s: u32 = 0;
    let mut i = 0;
    while i < 10 {
        s += u32::from(words[i]);
        i += 1;
    }
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + HDR > end {
        return xdp_action::XDP_ABORTED;
    }
    let Some(cfg) = GEN.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(seq) = SEQ.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a per-CPU slot.
    let n = unsafe {
        *seq = (*seq).wrapping_add(1);
        *seq
    };
    let src = u32::from_be(cfg.src_be).wrapping_add(n % cfg.n_src.max(1));
    let dst = u32::from_be(cfg.dst_be).wrapping_add(n % cfg.n_dst.max(1));
    let sport = cfg.sport_base.wrapping_add((n % cfg.n_ports.max(1)) as u16);
    let p = start as *mut u8;
    // SAFETY: HDR bytes are inside the frame (checked above).
    unsafe {
        core::ptr::copy_nonoverlapping(cfg.dmac.as_ptr(), p, 6);
        core::ptr::copy_nonoverlapping(cfg.smac.as_ptr(), p.add(6), 6);
        *p.add(12) = 0x08;
        *p.add(13) = 0x00;
        let ip = p.add(14);
        let len = cfg.ip_len.to_be_bytes();
        let srcb = src.to_be_bytes();
        let dstb = dst.to_be_bytes();
        let frag = if cfg.frag_be == 0 {
            [0x40, 0]
        } else {
            cfg.frag_be.to_ne_bytes()
        };
        let hdr: [u8; 20] = [
            0x45, 0, len[0], len[1], 0, 0, frag[0], frag[1], 64, 17, 0, 0, srcb[0], srcb[1],
            srcb[2], srcb[3], dstb[0], dstb[1], dstb[2], dstb[3],
        ];
        let mut words = [0u16; 10];
        let mut i = 0;
        while i < 10 {
            words[i] = u16::from_be_bytes([hdr[2 * i], hdr[2 * i + 1]]);
            i += 1;
        }
        let c = csum(&words).to_be_bytes();
        core::ptr::copy_nonoverlapping(hdr.as_ptr(), ip, 20);
        *ip.add(10) = c[0];
        *ip.add(11) = c[1];
        let udp = ip.add(20);
        let sp = sport.to_be_bytes();
        let ulen = (cfg.ip_len - 20).to_be_bytes();
        let dp = cfg.dport_be.to_ne_bytes();
        let u: [u8; 8] = [sp[0], sp[1], dp[0], dp[1], ulen[0], ulen[1], 0, 0];
        core::ptr::copy_nonoverlapping(u.as_ptr(), udp, 8);
    }
    DEV.redirect(0, 0).unwrap_or(xdp_action::XDP_ABORTED)
}

#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    let counter = match rewritten(&ctx) {
        Some(true) => &COUNT,
        Some(false) => &BAD,
        // Not the generator's (ARP, neighbour discovery): not counted.
        None => return xdp_action::XDP_DROP,
    };
    if let Some(c) = counter.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}

/// Whether a frame carries the rewrite `BENCH_EXPECT` names (the generator's frames: Ethernet,
/// a 20-byte IPv4 header, UDP); None for a frame of another kind while a rewrite is
/// expected.
#[inline(always)]
fn rewritten(ctx: &XdpContext) -> Option<bool> {
    let Some(e) = EXPECT.get(0) else {
        return Some(true);
    };
    if e.mode != EXPECT_DST && e.mode != EXPECT_SRC {
        return Some(true);
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + HDR > end {
        return None;
    }
    let p = start as *const u8;
    // SAFETY: HDR bytes (Ethernet, IPv4, UDP) are inside the frame; unaligned reads.
    let (ethertype, proto, src, dst, sport) = unsafe {
        (
            core::ptr::read_unaligned(p.add(12) as *const u16),
            *p.add(23),
            core::ptr::read_unaligned(p.add(26) as *const u32),
            core::ptr::read_unaligned(p.add(30) as *const u32),
            u16::from_be(core::ptr::read_unaligned(p.add(34) as *const u16)),
        )
    };
    if ethertype != 0x0800u16.to_be() || proto != 17 {
        return None;
    }
    Some(if e.mode == EXPECT_DST {
        dst == e.addr_be
    } else {
        src == e.addr_be && sport >= e.port_lo && sport < e.port_hi
    })
}

#[xdp]
pub fn bench_floor(ctx: XdpContext) -> u32 {
    floor::<0, 16>(&ctx)
}

#[xdp]
pub fn bench_floor_out(ctx: XdpContext) -> u32 {
    floor::<1, 12>(&ctx)
}

/// The floor in one direction: slot `SLOT` of the floor's maps, the IPv4 address at byte
/// `ADDR` of the header (16 the destination, 12 the source) rewritten. Both are constants,
/// so either program is the same few instructions.
#[inline(always)]
fn floor<const SLOT: u32, const ADDR: usize>(ctx: &XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 34 > end {
        return xdp_action::XDP_PASS;
    }
    let Some(cfg) = FLOOR.get(SLOT) else {
        return xdp_action::XDP_PASS;
    };
    let p = start as *mut u8;
    // SAFETY: 34 bytes (Ethernet + IPv4 header) are inside the frame.
    unsafe {
        let ip = p.add(14);
        let old = [
            *ip.add(ADDR),
            *ip.add(ADDR + 1),
            *ip.add(ADDR + 2),
            *ip.add(ADDR + 3),
        ];
        let new = cfg.addr_be.to_ne_bytes();
        // Incremental checksum update for the new address.
        let c = u16::from_be_bytes([*ip.add(10), *ip.add(11)]);
        let mut s = u32::from(!c);
        s += u32::from(!u16::from_be_bytes([old[0], old[1]]))
            + u32::from(u16::from_be_bytes([new[0], new[1]]));
        s += u32::from(!u16::from_be_bytes([old[2], old[3]]))
            + u32::from(u16::from_be_bytes([new[2], new[3]]));
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        let c = (!(s as u16)).to_be_bytes();
        core::ptr::copy_nonoverlapping(new.as_ptr(), ip.add(ADDR), 4);
        *ip.add(10) = c[0];
        *ip.add(11) = c[1];
        core::ptr::copy_nonoverlapping(cfg.dmac.as_ptr(), p, 6);
        core::ptr::copy_nonoverlapping(cfg.smac.as_ptr(), p.add(6), 6);
    }
    DEV.redirect(SLOT, 0).unwrap_or(xdp_action::XDP_ABORTED)
}

#[xdp]
pub fn bench_reset(ctx: XdpContext) -> u32 {
    if restore(&ctx).is_none() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: the context is this program's own.
    unsafe { PROGS.tail_call(&ctx, 0) };
    xdp_action::XDP_ABORTED
}

/// The UDP source port and checksum of an untagged IPv4 frame without options.
const UDP_SPORT: usize = 14 + 20;
const UDP_CSUM: usize = 14 + 20 + 6;

#[xdp]
pub fn bench_reset_flows(ctx: XdpContext) -> u32 {
    let Some(start) = restore(&ctx) else {
        return xdp_action::XDP_ABORTED;
    };
    let mask = FLOWS.get(0).map_or(0, |n| n.wrapping_sub(1));
    let Some(seq) = FLOWSEQ.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a per-CPU slot.
    let n = unsafe {
        *seq = (*seq).wrapping_add(1);
        *seq
    } & mask;
    let p = start as *mut u8;
    // SAFETY: TEMPLATE_BYTES (64) bytes are inside the frame (`restore` checked), which
    // holds the protocol (23), the source port (34) and the UDP checksum (40); frames are
    // 2-byte aligned at least (see `restore`).
    unsafe {
        if *p.add(23) != 17 {
            return xdp_action::XDP_ABORTED;
        }
        let sport = p.add(UDP_SPORT) as *mut u16;
        let old = sport.read();
        let new = (u16::from_be(old) ^ n as u16).to_be();
        sport.write(new);
        let csum = p.add(UDP_CSUM) as *mut u16;
        let c = csum.read();
        // A UDP checksum of 0 is none; otherwise updated by the word's change `~m + m'`
        // (at most 0x1fffe, folded once), and a result of 0 is sent as 0xffff.
        if c != 0 {
            let d = u32::from(!old) + u32::from(new);
            let r = csum_update_folded(c, (d + (d >> 16)) as u16);
            csum.write(if r == 0 { 0xffff } else { r });
        }
    }
    // SAFETY: the context is this program's own.
    unsafe { PROGS.tail_call(&ctx, 0) };
    xdp_action::XDP_ABORTED
}

/// Writes the template's headers (`BENCH_TMPL`) back into the frame; its start, or None
/// when the frame is shorter than the template.
#[inline(always)]
fn restore(ctx: &XdpContext) -> Option<usize> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + TEMPLATE_BYTES > end {
        return None;
    }
    let t = TMPL.get(0)?;
    let src = t.bytes.as_ptr() as *const u64;
    let dst = start as *mut u64;
    let mut i = 0;
    while i < TEMPLATE_BYTES / 8 {
        // SAFETY: TEMPLATE_BYTES are inside the frame (checked above) and inside the value;
        // both are 8-byte aligned (map values are; frames start after the aligned headroom).
        unsafe { dst.add(i).write(src.add(i).read()) };
        i += 1;
    }
    Some(start)
}

#[xdp]
pub fn bench_empty(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[classifier]
pub fn bench_reset_tc(ctx: TcContext) -> i32 {
    let Some(t) = TMPL.get(0) else {
        return TC_ACT_SHOT;
    };
    if ctx.len() < TEMPLATE_BYTES as u32 || ctx.store(0, &t.bytes, 0).is_err() {
        return TC_ACT_SHOT;
    }
    // SAFETY: the context is this program's own.
    unsafe { PROGS_TC.tail_call(&ctx, 0) };
    TC_ACT_SHOT
}

#[classifier]
pub fn bench_empty_tc(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}
