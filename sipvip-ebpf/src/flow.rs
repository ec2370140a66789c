//! The flow cache (`SV_FLOWS_V4`): the rules' decision for a flow's first packet, kept
//! complete (rewrite, checksum deltas, link, counters) so that the flow's later packets take
//! one lookup and the rewrite ([`crate::apply::cached`]) instead of every rule. A memo of the
//! rules, like the next-hop cache is of the FIB: it decides nothing the rules would not.
//!
//! How it is kept: per CPU, in buckets of two ways. A flow's own slot is `flow_slot(key)`
//! under the mask user space writes (`FlowControl::mask`), in the running CPU's block of
//! the array; its bucket's other way is the slot beside it (`sipvip_common::flow_way`). A
//! slot holds a flow's entry with its key, which a lookup compares whole. A lookup is then
//! a hash and inlined array reads, not a hash-map helper call (which costs this machine
//! kind about 25 ns, more than the rules it saves on most paths): the own slot first, then,
//! on the internal side, the other way ([`neighbour_lane`], out of line so that the own
//! slot's hit pays nothing for it). A miss's decision goes to the way that holds the flow
//! already, else to one that holds no entry of the current generation, else to the own
//! slot; so two flows whose own slots are one are both kept, and a third takes turns with
//! the first (a flow that finds both ways taken goes through the rules and takes its own
//! slot back). Direct-mapped, 4,096 flows in 65,536 slots left about 6% of them taking
//! turns in a slot, every packet of theirs through the rules; in buckets of two, about
//! 0.7% (`sipvip_common`'s test `flows_taking_turns_direct_mapped_and_in_two_ways`). A service's entry on the external side (one per service,
//! few to a cache) has its own slot only.
//!
//! What it holds: plain IPv4 TCP/UDP frames (`packet::plain`) that an XDP program
//! translates or forwards to a next hop itself. On the internal side, a member's flows
//! (SNAT, exclusions, pass-through ports and flows, a member without SNAT), one slot per
//! flow. On the external side, a service's steering, one slot
//! per service (`FLOW_HOOK_EXT`: the VIP, port, protocol and ingress interface, with no
//! source): steering decides by the destination alone, so every phone's packets to a
//! service share the entry, and 1,048,576 phones' flows cost no more memory traffic than
//! one (a per-flow entry there had cost more than it saved: README, "The flow cache").
//! Never fragments, ICMP, IPv6, tagged frames or IPv4 options, a TC hook's packets, a
//! draining member's TCP connections (which read per-connection state), or a decision that
//! read or wrote state the rules keep per flow other than the two kinds below.
//!
//! Where: [`lane`], first: a hit is a frame addressed to the MAC the flow's first packet
//! was (`FlowEntry::own_mac`), which the L2 acceptance rule passed then; anything else
//! takes that rule, then the rules' parse.
//!
//! When an entry is valid: while both generations it was decided under are current. User
//! space bumps its own (`FlowControl::gen`) after every change the rules read
//! (VIPs, members, exclusions, interfaces, a synced pass-through flow, the next-hop
//! generation), never giving one twice; the datapath bumps its own (`SV_FLOWGEN`) when it
//! records a pass-through flow, which turns a member's SNATed replies on it into
//! pass-through, or gives a member-opened flow's conntrack entry to another member (a service's steering reads no such record: its entries hold kernel
//! generation 0). The lane reads user space's generation and the slot mask in one load of
//! a global (`SV_FLOWCTL`), whose generation is 0 while the cache is off or a trace runs;
//! the datapath's is a global apart. The generations are read
//! before the rules run, so an entry never carries a generation newer than what its
//! decision saw. Two kinds of decision depend on a conntrack entry, and a cached packet
//! checks it: a member-opened flow's SNAT makes sure the entry for its replies exists
//! (`FLOW_STATE_REFRESH`, as the rules do) every `FLOW_REFRESH_EVERY` cached packets, and a
//! pass-through flow's packet needs its entry still there (`FLOW_STATE_REQUIRE`, every
//! packet), else the rules decide again.

use sipvip_common::{
    flow_cell, flow_slot, flow_way, FlowControl, FlowEntry, FlowKey, FlowSlot, Reason,
    FLOW_FORWARD, FLOW_HOOK_EXT, FLOW_HOOK_INT, FLOW_SIDE_DST, FLOW_SIDE_SRC, FLOW_STATE_NONE,
    FLOW_STATE_REFRESH, FLOW_STATE_REQUIRE, FLOW_TRANSLATE, TRACE_SIDE_EXT, TRACE_SIDE_INT,
};

use crate::{
    apply::count,
    csum::{fold, Delta},
    family::Family,
    hook::Frame,
    maps::{cpu_block, Aligned8, FLOWS, SV_FLOWCTL, SV_FLOWGEN},
    packet::{
        plain::{plain, Plain},
        Ip,
    },
    rules::{screen::screen_src, Action, Cache, Decision, Dir, Side, PENDING},
};

/// The TTL decrement's change to the IPv4 header checksum: the word holding the TTL loses
/// one (`~w + (w - 1)`), whatever the TTL and the byte order.
const TTL_DELTA: u32 = 0xfffe;

/// A packet the cache may hold: its key, the generations read before the rules ran, and its
/// slot's index (found once: `remember` writes the slot `lane` read).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Probe {
    pub key: FlowKey,
    pub gen_user: u32,
    pub gen_kernel: u32,
    pub slot: u32,
    /// The frame's destination MAC, as its three 16-bit words lie in memory.
    pub own_mac: [u16; 3],
}

/// What the flow cache's lane made of a frame.
pub enum Lane {
    /// Not a frame the cache holds, or the cache is off: the rules decide, and keep nothing.
    Off,
    /// Not cached (or stale, or the entry did not fit the packet): the rules decide, and may
    /// leave their decision for the flow's (or service's) next packets. The probe waits in
    /// this CPU's pending slot.
    Miss,
    /// Carried out from the cache: the program's verdict and the reason counted.
    Done(u32, Reason),
}

impl Lane {
    /// As one word, which a BPF-to-BPF call returns in a register: 0 off, 1 a miss, else
    /// the verdict above the low byte (2) and the reason's byte above it.
    #[inline(always)]
    fn word(self) -> u64 {
        match self {
            Lane::Off => 0,
            Lane::Miss => 1,
            Lane::Done(verdict, reason) => {
                2 | u64::from(verdict) << 8 | u64::from(reason as u8) << 40
            }
        }
    }

    /// The lane a [`Lane::word`] was.
    #[inline(always)]
    fn from_word(w: u64) -> Lane {
        match w & 0xff {
            0 => Lane::Off,
            1 => Lane::Miss,
            _ => Lane::Done(
                (w >> 8) as u32,
                reason((w >> 40) as u8).unwrap_or(Reason::Steered),
            ),
        }
    }
}

/// The flow cache's lane, in front of everything an XDP program does to a frame on `side`
/// (an XDP frame that arrived on `ifindex`; `entry` never calls it for a routed one), the
/// L2 acceptance rule too (a hit's frame is addressed to the MAC the entry's first packet
/// was, which passed the rule: see [`holds`]): a plain frame (`packet::plain`: untagged
/// IPv4 without options, TCP or UDP, not a fragment, its L4 header whole) is parsed in a
/// few loads and looked up in the cache: a flow's slot on the internal side, a service's
/// on the external side (steering decides by the destination alone, so every phone's packets to a service
/// share one entry, whatever the source: see [`service_key`]). A hit is carried out by
/// `apply::cached` before the rules' parse, screens and rules run; a miss leaves the probe
/// for `remember`. What the rules' path checks before a decision is checked here too: a
/// running trace (whose packets all take the rules' path, where the trace sees them: user
/// space turns the lane off, generation 0, while one runs), and on the external side the
/// source's address screen (the source is not in a service's key; the destination is, and
/// on the internal side both addresses are in the flow's, whose entry the screen passed).
/// The internal side looks every member flow up, whatever the rules will make of it: a
/// pass-through port's flow and a member's without SNAT are kept too, forwarded from the
/// cache in fewer instructions than their rules take.
#[inline(always)]
pub fn lane<F: Frame>(f: &F, side: u8, ifindex: u32) -> Lane {
    let Some(h) = plain(f) else {
        return Lane::Off;
    };
    let Some((key, gen_user, gen_kernel, mask)) = look(&h, side, ifindex) else {
        return Lane::Off;
    };
    // The flow's own slot first: a hit there is the whole lane.
    let slot = cache_slot(&key, mask);
    let Some(s) = FLOWS.get_ptr_mut(slot) else {
        return Lane::Off;
    };
    // SAFETY: this CPU's slot of the cache, in place; only this CPU writes it, and nothing
    // else runs on this CPU until the program returns (`apply::cached` counts in it).
    let s = unsafe { &mut *s };
    // On the external side the source is not in the key: its screen is asked here (the
    // destination's is in the key, whose entry the rules' screen passed).
    let own_mac = own_mac(&h);
    if holds(s, &key, gen_user, gen_kernel, own_mac)
        && (side != TRACE_SIDE_EXT || screen_src(h.src_be).is_ok())
    {
        let lane_key = (side == TRACE_SIDE_EXT).then_some(&key);
        if let Some((verdict, reason)) = crate::apply::cached(f, &h, s, lane_key) {
            return Lane::Done(verdict, reason);
        }
    }
    if side == TRACE_SIDE_EXT {
        // A service's entry has one way: one entry per service, few to a cache. (With its
        // miss in a function of its own, as the internal side's, the external program
        // took the verifier past its million instructions.)
        return miss(key, (gen_user, gen_kernel), slot, own_mac);
    }
    // Then its neighbour, the other way of the flow's bucket, in functions of their own.
    match neighbour_lane::<F>(f.raw(), ifindex) {
        NEIGHBOUR_OFF => Lane::Off,
        NEIGHBOUR_MISS => Lane::Miss,
        slot => match Lane::from_word(cached_at::<F>(f.raw(), slot as u32)) {
            done @ Lane::Done(..) => done,
            // The entry did not fit the packet: the probe is pending.
            _ => Lane::Miss,
        },
    }
}

/// [`neighbour_lane`]'s answer when the cache is off.
const NEIGHBOUR_OFF: u64 = u64::MAX;
/// [`neighbour_lane`]'s answer for a miss whose probe is pending.
const NEIGHBOUR_MISS: u64 = u64::MAX - 1;

/// The internal side's lane after the flow's own slot missed: its neighbour, the other way
/// of its bucket. Leaves the probe pending for `remember`, naming the slot the rules'
/// decision will take, and returns the neighbour's index if it holds the flow's
/// entry (`cached_at` then carries it out), else `NEIGHBOUR_MISS` (`NEIGHBOUR_OFF`: the
/// cache is off). A function of its own (a BPF-to-BPF call) that derives everything again
/// from the frame and the cache's control, so that the own slot's hit path keeps nothing
/// alive for a miss: inlined, this and the neighbour's copy of the rewrite cost that hit
/// registers (it measured 1-3% slower, its slot's pointer kept on the stack), and the
/// probe's fields, kept from the first look, went to the stack on every hit. The
/// generations are still read before the rules run, and the entry `remember` writes
/// carries these.
// Inlined in the debug-log build, whose program's own stack leaves a call too little.
#[cfg_attr(not(feature = "debug-log"), inline(never))]
#[cfg_attr(feature = "debug-log", inline(always))]
fn neighbour_lane<F: Frame>(raw: *mut core::ffi::c_void, ifindex: u32) -> u64 {
    // SAFETY: the running program's context, from `Frame::raw`.
    let f = unsafe { F::from_raw(raw) };
    let Some(h) = plain(&f) else {
        return NEIGHBOUR_OFF;
    };
    let Some((key, gen_user, gen_kernel, mask)) = look(&h, TRACE_SIDE_INT, ifindex) else {
        return NEIGHBOUR_OFF;
    };
    let (first, second) = cache_ways(&key, mask);
    let (Some(s), Some(n), Some(pending)) = (
        FLOWS.get_ptr(first),
        FLOWS.get_ptr(second),
        PENDING.get_ptr_mut(0),
    ) else {
        return NEIGHBOUR_OFF;
    };
    // SAFETY: this CPU's slots, as in `lane`, only read here; and this CPU's pending slot,
    // whose probe is written here first and compared from there (the key then needs no
    // copy on this function's stack: the program's and its calls' stacks share 512 bytes).
    let (s, n, probe) = unsafe { (&*s, &*n, &mut (*pending).flow_probe) };
    *probe = Probe {
        key,
        gen_user,
        gen_kernel,
        slot: first,
        own_mac: own_mac(&h),
    };
    let held = holds(n, &probe.key, gen_user, gen_kernel, probe.own_mac);
    // The slot the rules' decision will take: the one that holds this flow already (an
    // entry of an older generation, or one a packet did not fit), else one whose entry is
    // not of the current generation (or empty), else the flow's own.
    let vacant = |x: &FlowSlot| x.key == probe.key || x.entry.gen_user != gen_user;
    if !vacant(s) && vacant(n) {
        probe.slot = second;
    }
    if held {
        u64::from(second)
    } else {
        NEIGHBOUR_MISS
    }
}

/// A hit in the neighbour slot `slot` (its entry held the flow), carried out by
/// `apply::cached` in a function of its own (a BPF-to-BPF call): inlined, its copy of the
/// rewrite had cost the own slot's hits registers (they measured 1-3% slower, their slot's
/// pointer kept on the stack). Returns a [`Lane`] as [`Lane::word`].
// Inlined in the debug-log build, whose program's own stack leaves a call too little.
#[cfg_attr(not(feature = "debug-log"), inline(never))]
#[cfg_attr(feature = "debug-log", inline(always))]
fn cached_at<F: Frame>(raw: *mut core::ffi::c_void, slot: u32) -> u64 {
    // SAFETY: the running program's context, from `Frame::raw`.
    let f = unsafe { F::from_raw(raw) };
    let (Some(h), Some(s)) = (plain(&f), FLOWS.get_ptr_mut(slot)) else {
        return Lane::Off.word();
    };
    // SAFETY: this CPU's slot, as in `lane`.
    let s = unsafe { &mut *s };
    match crate::apply::cached(&f, &h, s, None) {
        Some((verdict, reason)) => Lane::Done(verdict, reason).word(),
        None => Lane::Miss.word(),
    }
}

/// A miss: the probe waits in this CPU's pending slot for `remember`, which writes `slot`.
#[inline(always)]
fn miss(key: FlowKey, (gen_user, gen_kernel): (u32, u32), slot: u32, own_mac: [u16; 3]) -> Lane {
    let Some(pending) = PENDING.get_ptr_mut(0) else {
        return Lane::Off;
    };
    // SAFETY: this CPU's pending slot; nothing else runs on this CPU until the program
    // returns, and the rules write other fields of it.
    unsafe {
        (*pending).flow_probe = Probe {
            key,
            gen_user,
            gen_kernel,
            slot,
            own_mac,
        }
    };
    Lane::Miss
}

/// The frame's destination MAC, as its three 16-bit words lie in memory.
#[inline(always)]
fn own_mac(h: &Plain) -> [u16; 3] {
    [h.word(0), h.word(1), h.word(2)]
}

/// A plain frame's key on `side`, with the generations and the slot mask it is looked up
/// under; None while the cache is off (user space's generation is 0 while the cache is off
/// or a trace runs).
#[inline(always)]
fn look(h: &Plain, side: u8, ifindex: u32) -> Option<(FlowKey, u32, u32, u32)> {
    // The cache's generation and slot mask, in one value.
    let (gen_user, mask) = control();
    if gen_user == 0 {
        return None;
    }
    let (key, gen_kernel) = if side == TRACE_SIDE_EXT {
        // A service's steering reads nothing the datapath records: its entries hold
        // kernel generation 0, and the datapath's bumps leave them be.
        (service_key(h.dst_be, h.dport_be, h.proto, ifindex), 0)
    } else {
        // SAFETY: a plain aligned global, written only by `bump_kernel`'s atomic add.
        let gen_kernel = unsafe { core::ptr::read_volatile(&raw const SV_FLOWGEN) };
        let key = FlowKey {
            src_be: h.src_be,
            dst_be: h.dst_be,
            sport_be: h.sport_be,
            dport_be: h.dport_be,
            proto: h.proto,
            hook: FLOW_HOOK_INT,
            _pad: 0,
            ifindex,
        };
        (key, gen_kernel)
    };
    Some((key, gen_user, gen_kernel, mask))
}

/// A service's key on the external side (`FLOW_HOOK_EXT`): the VIP, port and protocol, and
/// the interface, with no source (0).
#[inline(always)]
fn service_key(dst_be: u32, dport_be: u16, proto: u8, ifindex: u32) -> FlowKey {
    FlowKey {
        src_be: 0,
        dst_be,
        sport_be: 0,
        dport_be,
        proto,
        hook: FLOW_HOOK_EXT,
        _pad: 0,
        ifindex,
    }
}

/// Whether a slot holds `key`'s entry under the current generations, for a frame addressed
/// to the MAC its first packet was (`own_mac`, the frame's first three 16-bit words): the
/// key, both generations and that MAC, the slot's first 34 bytes, compared as the four
/// 64-bit words and the 16-bit word they lie in, where a field-by-field compare of the key
/// and generations alone took nine loads and compares.
#[inline(always)]
fn holds(s: &FlowSlot, key: &FlowKey, gen_user: u32, gen_kernel: u32, own_mac: [u16; 3]) -> bool {
    const {
        assert!(cfg!(target_endian = "little"));
        assert!(core::mem::size_of::<FlowKey>() == 20);
        assert!(core::mem::offset_of!(FlowSlot, entry) == 20);
        assert!(core::mem::offset_of!(FlowEntry, gen_user) == 0);
        assert!(core::mem::offset_of!(FlowEntry, gen_kernel) == 4);
        assert!(core::mem::offset_of!(FlowEntry, own_mac) == 8);
        assert!(core::mem::size_of::<FlowSlot>().is_multiple_of(8));
    };
    let want = [
        u64::from(key.src_be) | u64::from(key.dst_be) << 32,
        u64::from(key.sport_be)
            | u64::from(key.dport_be) << 16
            | u64::from(key.proto) << 32
            | u64::from(key.hook) << 40
            | u64::from(key._pad) << 48,
        u64::from(key.ifindex) | u64::from(gen_user) << 32,
        u64::from(gen_kernel) | u64::from(own_mac[0]) << 32 | u64::from(own_mac[1]) << 48,
    ];
    let base = s as *const FlowSlot;
    // SAFETY (both reads): the slot's first 34 bytes, as laid out above (little-endian).
    // Its address is 8-byte aligned: the array's values are, and a slot's size is a
    // multiple of 8.
    let word = |i: usize| unsafe { core::ptr::read((base as *const u64).add(i)) };
    let last = unsafe { core::ptr::read((base as *const u16).add(16)) };
    word(0) == want[0]
        && word(1) == want[1]
        && word(2) == want[2]
        && word(3) == want[3]
        && last == own_mac[2]
}

/// The index of this CPU's cache slot for a flow: `flow_slot` under the mask user space
/// wrote, in this CPU's block of slots (the mask is 0 until user space has written it: every
/// flow then shares one slot, which stays correct; a CPU beyond the array has none, and the
/// lookup of its index fails).
#[inline(always)]
fn cache_slot(k: &FlowKey, mask: u32) -> u32 {
    cpu_block(mask.wrapping_add(1)) + (flow_slot(k) & mask)
}

/// Both ways of a flow's bucket, its own slot ([`cache_slot`]) and the one beside it
/// (`sipvip_common::flow_way`), in the running CPU's block (the own slot twice while the
/// mask is 0): one hash and one read of the CPU's number.
#[inline(always)]
fn cache_ways(k: &FlowKey, mask: u32) -> (u32, u32) {
    let (block, hash) = (cpu_block(mask.wrapping_add(1)), flow_slot(k));
    (
        block + flow_way(hash, mask, 0),
        block + flow_way(hash, mask, 1),
    )
}

/// The reasons a cached decision is counted under, from the entry's byte (any other byte:
/// not a cached decision).
#[inline(always)]
pub fn reason(r: u8) -> Option<Reason> {
    [
        Reason::Steered,
        Reason::Snat,
        Reason::Passthrough,
        Reason::Excluded,
        Reason::PassNotService,
    ]
    .into_iter()
    .find(|x| *x as u8 == r)
}

/// Keeps the decision the rules made for a missed packet, when it is one the cache can
/// hold: translated or forwarded to a next hop the datapath sends to itself.
#[inline(always)]
pub fn remember<A: Family>(p: &Ip<A>, d: &Decision<A>) {
    let state = match d.cache {
        Cache::No => return,
        Cache::Plain => FLOW_STATE_NONE,
        Cache::Refresh => FLOW_STATE_REFRESH,
        Cache::Require => FLOW_STATE_REQUIRE,
    };
    if !d.link_due || reason(d.reason as u8).is_none() {
        return;
    }
    let Some(pending) = PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's pending slot, as in `lane`.
    let probe = unsafe { &(*pending).flow_probe };
    let k = &probe.key;
    let Some(s) = FLOWS.get_ptr_mut(probe.slot) else {
        return;
    };
    // SAFETY: this CPU's cache slot (see `lane`), replaced whole: the entry built in place,
    // then the key, last, so that a return before the entry is written leaves the slot to
    // the flow it held.
    let s = unsafe { &mut *s };
    move_counts(s);
    let e = &mut s.entry;
    let mut ip = Delta::new();
    let mut l4 = Delta::new();
    let (action, side, addr_be, port_be) = match d.action {
        Action::Translate => {
            let new = A::fib(d.rewrite.addr)[0];
            let (side, old, old_port) = match d.rewrite.side {
                Side::Src => (FLOW_SIDE_SRC, k.src_be, k.sport_be),
                Side::Dst => (FLOW_SIDE_DST, k.dst_be, k.dport_be),
            };
            ip.addr(old, new);
            l4.addr(old, new);
            let (from, to) = d.rewrite.port;
            let port = if from != to { to } else { old_port };
            l4.word(old_port, port);
            (FLOW_TRANSLATE, side, new, port)
        }
        Action::Forward => (FLOW_FORWARD, FLOW_SIDE_SRC, 0, 0),
        _ => return,
    };
    let [m0, m1, m2] = probe.own_mac.map(u16::to_ne_bytes);
    *e = FlowEntry {
        gen_user: probe.gen_user,
        gen_kernel: probe.gen_kernel,
        own_mac: [m0[0], m0[1], m1[0], m1[1], m2[0], m2[1]],
        cell: flow_cell(d.account.dir == Dir::Out, d.account.service, d.account.slot) as u16,
        addr_be,
        ifindex: d.link.ifindex,
        vip_id: d.account.vip_id,
        ip_delta: u32::from(fold(ip.raw() + TTL_DELTA)),
        l4_delta: u32::from(fold(l4.raw())),
        max_len: p.tot_len,
        port_be,
        dmac: d.link.dmac,
        smac: d.link.smac,
        action,
        side,
        reason: d.reason as u8,
        state,
        _pad: [0; 4],
    };
    s.key = *k;
}

/// Moves a slot's counts (`FlowSlot::packets`, `bytes`) to its entry's VIP cell and reason,
/// or its reason alone, before another entry takes the slot: the slot's are zeroed first
/// (volatile stores, which the compiler keeps in order and before the entry's), so that a
/// reader who read the VIPs' values before the slots can miss them, never count them twice.
#[inline(always)]
fn move_counts(s: &mut FlowSlot) {
    let (packets, bytes) = (s.packets, s.bytes);
    if packets == 0 {
        return;
    }
    // SAFETY: fields of this CPU's slot, which only this CPU writes (see `lane`).
    unsafe {
        core::ptr::write_volatile(&raw mut s.packets, 0);
        core::ptr::write_volatile(&raw mut s.bytes, 0);
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
    let e = &s.entry;
    if e.action == FLOW_TRANSLATE {
        count::cell_n(e.vip_id, e.cell, packets, bytes, e.reason);
    } else {
        count::bump_slot_n(e.reason, packets);
    }
}

/// Invalidates every cached decision of the internal side: the datapath recorded a
/// pass-through flow (before this call), whose member's replies a cached SNAT decision
/// would otherwise still translate, or gave a member-opened flow's conntrack entry to
/// another member, whose previous owner's cached SNAT would otherwise not take it back
/// (`Record::TAKEOVER`). An atomic add (BPF's `lock add`): with a load and a store, a CPU whose two
/// steps straddled other CPUs' bumps could write back an older generation, under which
/// entries decided before those bumps would count again.
#[inline(always)]
pub fn bump_kernel() {
    // SAFETY: a plain aligned global. (The BPF target has no `AtomicU32`; the intrinsic is
    // what it would call.)
    unsafe {
        core::intrinsics::atomic_xadd::<u32, u32, { core::intrinsics::AtomicOrdering::Relaxed }>(
            &raw mut SV_FLOWGEN,
            1,
        )
    };
}

/// The lane's part of the flow cache's control value (`SV_FLOWCTL`) as user space last wrote
/// it: the generation and the slot mask, in one load (the fields only user space reads are
/// not loaded).
#[inline(always)]
fn control() -> (u32, u32) {
    const {
        assert!(cfg!(target_endian = "little"));
        assert!(core::mem::offset_of!(FlowControl, gen) == 0);
        assert!(core::mem::offset_of!(FlowControl, mask) == 4);
        assert!(core::mem::size_of::<Aligned8<FlowControl>>() == 16);
    };
    // SAFETY: the global's first 8 bytes, `gen` then `mask`, 8-byte aligned. User space
    // writes the value whole with a map update; the program only reads it. A read that
    // races an update may pair one write's generation with another's mask: the lane
    // compares a slot's whole key and generation, so that only misses.
    let both = unsafe { core::ptr::read_volatile(&raw const SV_FLOWCTL as *const u64) };
    (both as u32, (both >> 32) as u32)
}
