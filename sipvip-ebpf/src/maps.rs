//! Map definitions. Layouts live in sipvip-common; sizes are production defaults that user
//! space may override at load time.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, DevMap, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray},
};
use sipvip_common::{
    default_sizes, fold6, index_slot, vip_index_slot, AddrSlot, CtKey, CtValue, ExclusionAddr,
    ExclusionAddr6, FlowControl, FlowSlot, FragKey, FragKey6, FragValue, Iface, Ipv6Be,
    MemberRecord, MemberSlot, NextHop, PassthroughPorts, ReturnPath, Settings, VipCells, VipRecord,
    VipSlot, IFACE_SLOTS, MAX_MEMBERS, MEMBER_INDEX_SLOTS, NEXTHOP_SLOTS, REASON_SLOTS,
    VIP_INDEX_SLOTS, VIP_PROBES,
};

/// The VIP records, two slots per VIP (a record is written into a free slot, then its index
/// entry flipped to it); see `sipvip_common::VipSlot`.
#[map(name = "SV_VIPS_V3")]
pub static VIPS: Array<VipSlot> = Array::with_max_entries(2 * default_sizes::VIPS, 0);

/// VIP address (by `vip_index_slot` and the probes after it) -> record slot + 1.
#[map(name = "SV_VIPIDX_V1")]
pub static VIP_INDEX: Array<u32> = Array::with_max_entries(VIP_INDEX_SLOTS, 0);

/// The member records, two slots per member, found by physical address through their index
/// (as the VIPs').
#[map(name = "SV_MEMBERS_V2")]
pub static MEMBERS: Array<MemberSlot> = Array::with_max_entries(2 * default_sizes::MEMBERS, 0);

#[map(name = "SV_MEMIDX_V1")]
pub static MEMBER_INDEX: Array<u32> = Array::with_max_entries(MEMBER_INDEX_SLOTS, 0);

#[map(name = "SV_CT_V1")]
pub static CONNTRACK: LruHashMap<CtKey, CtValue> =
    LruHashMap::with_max_entries(default_sizes::CONNTRACK, 0);

#[map(name = "SV_FRAGS_V2")]
pub static FRAGS: LruHashMap<FragKey, FragValue> =
    LruHashMap::with_max_entries(default_sizes::FRAGS, 0);

/// SNAT exclusions: hosts and CIDRs. The value is unused.
#[map(name = "SV_EXCL_V1")]
pub static EXCLUSIONS: LpmTrie<ExclusionAddr, u8> =
    LpmTrie::with_max_entries(default_sizes::EXCLUSIONS, BPF_F_NO_PREALLOC);

/// Egress ifindex -> device, for XDP_REDIRECT.
#[map(name = "SV_DEVMAP_V1")]
pub static DEVMAP: DevMapHash = DevMapHash::with_max_entries(default_sizes::DEVMAP, 0);

/// The flow cache's redirect targets, indexed by `iface_slot(ifindex)` (an array devmap's
/// lookup is an index, the hash's a bucket walk). User space fills a slot with the
/// interface `SV_IFACES_V1`'s slot holds, and starts a new flow cache generation before it
/// points a slot at another interface, so an entry (decided under the generation) always
/// finds its own interface there, or none.
#[map(name = "SV_DEVSLOT_V1")]
pub static DEVMAP_SLOTS: DevMap = DevMap::with_max_entries(IFACE_SLOTS, 0);

/// VIP id -> its traffic, one cell per direction, service and member (`VipCells`).
#[map(name = "SV_VSTATS_V3")]
pub static VIP_STATS: PerCpuArray<VipCells> = PerCpuArray::with_max_entries(default_sizes::VIPS, 0);

#[map(name = "SV_REASONS_V1")]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_SLOTS, 0);

/// Cached FIB answers, direct-mapped, per CPU (no locking, no torn reads); see `NextHop`.
/// One array holding each CPU's block of `NEXTHOP_SLOTS` (CPU `c`'s slot `i` at
/// `c * NEXTHOP_SLOTS + i`; user space sizes it for the possible CPUs), not a per-CPU array,
/// which finds each value through a pointer per index (a second dependent memory access).
#[map(name = "SV_NEXTHOP_V2")]
pub static NEXTHOPS: Array<NextHop> = Array::with_max_entries(NEXTHOP_SLOTS, 0);

/// Slot 0: the current next-hop generation (0: cache off).
#[map(name = "SV_NHGEN_V1")]
pub static NEXTHOP_GEN: Array<u32> = Array::with_max_entries(1, 0);

/// Member ports that have seen flows to the member's physical address; see
/// `PassthroughPorts`.
#[map(name = "SV_PTPORTS_V1")]
pub static PT_PORTS: Array<PassthroughPorts> =
    Array::with_max_entries(default_sizes::VIPS * MAX_MEMBERS as u32, 0);

/// The interfaces the programs run on, direct-mapped by ifindex; see `Iface`.
#[map(name = "SV_IFACES_V1")]
pub static IFACES: Array<Iface> = Array::with_max_entries(IFACE_SLOTS, 0);

/// Key 0: the gateway a packet without flow state here is handed to (ECMP); see
/// `ReturnPath`. A hash map without preallocation, so an update replaces the value whole.
#[map(name = "SV_RETPATH_V1")]
pub static RETURN_PATH: HashMap<u32, ReturnPath> = HashMap::with_max_entries(1, BPF_F_NO_PREALLOC);

/// Slot 0: datapath-wide settings; see `Settings`.
#[map(name = "SV_SETTINGS_V1")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

// ---- The IPv6 twins of the address-keyed maps (same sizes, 16-byte addresses) ----

#[map(name = "SV_VIPS6_V2")]
pub static VIPS6: Array<VipSlot<Ipv6Be>> = Array::with_max_entries(2 * default_sizes::VIPS, 0);

#[map(name = "SV_VIPIDX6_V1")]
pub static VIP_INDEX6: Array<u32> = Array::with_max_entries(VIP_INDEX_SLOTS, 0);

#[map(name = "SV_MEMBERS6_V2")]
pub static MEMBERS6: Array<MemberSlot<Ipv6Be>> =
    Array::with_max_entries(2 * default_sizes::MEMBERS, 0);

#[map(name = "SV_MEMIDX6_V1")]
pub static MEMBER_INDEX6: Array<u32> = Array::with_max_entries(MEMBER_INDEX_SLOTS, 0);

#[map(name = "SV_CT6_V1")]
pub static CONNTRACK6: LruHashMap<CtKey<Ipv6Be>, CtValue<Ipv6Be>> =
    LruHashMap::with_max_entries(default_sizes::CONNTRACK, 0);

#[map(name = "SV_FRAGS6_V1")]
pub static FRAGS6: LruHashMap<FragKey6, FragValue<Ipv6Be>> =
    LruHashMap::with_max_entries(default_sizes::FRAGS, 0);

#[map(name = "SV_EXCL6_V1")]
pub static EXCLUSIONS6: LpmTrie<ExclusionAddr6, u8> =
    LpmTrie::with_max_entries(default_sizes::EXCLUSIONS, BPF_F_NO_PREALLOC);

/// As `NEXTHOPS`.
#[map(name = "SV_NEXTHOP6_V2")]
pub static NEXTHOPS6: Array<NextHop<Ipv6Be>> = Array::with_max_entries(NEXTHOP_SLOTS, 0);

/// The IPv6 XDP programs, by `program_names::SLOT6_*`: each side's program tail-calls its
/// IPv6 program, so that IPv6 is verified (and given its stack) as a program of its own.
#[map(name = "SV_XDP6_V1")]
pub static XDP6: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// The IPv6 TC program (`program_names::SLOT6_NODE_OUT`).
#[map(name = "SV_TC6_V1")]
pub static TC6: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Slot 0: this CPU's parsed IPv6 packet (see `Family::settle`); kernel-private.
#[map(name = "SV_PACKET6_V1")]
pub static PACKET6: PerCpuArray<crate::packet::Ip<Ipv6Be>> = PerCpuArray::with_max_entries(1, 0);

/// Each interface's own IPv6 address, by the slot of `IFACES`; see `Iface6`.
#[map(name = "SV_IFACES6_V1")]
pub static IFACES6: Array<Ipv6Be> = Array::with_max_entries(IFACE_SLOTS, 0);

/// The flow cache: each TCP/UDP flow's decision, taken by its later packets in one lookup;
/// see `FlowSlot` and `crate::flow`. One array holding each CPU's slots in a block of its
/// own (CPU `c`'s slot `i` at `c * slots + i`), in buckets of two ways (a flow's own slot
/// and the one beside it): user space never writes it; a slot holds the entry of a flow
/// that hashed to its bucket on its CPU, a stale entry is told by its generations and
/// replaced by a later miss. (Not a per-CPU array: that finds a
/// value through a pointer per index, a second dependent memory access per lookup.)
/// Memory-mapped for user space, which reads the slots' counts (`FlowSlot::packets`) with
/// the counters.
#[map(name = "SV_FLOWS_V4")]
pub static FLOWS: Array<FlowSlot> = Array::with_max_entries(default_sizes::FLOWS, BPF_F_MMAPABLE);

/// The flow cache's datapath generation: bumped when the datapath records a pass-through
/// flow or a conntrack entry's takeover (`flow::bump_kernel`). A global in its own data
/// section (named as `map_names::FLOW_GEN_SECTION`, which the loader looks for), which the
/// loader makes an array of one value (`SV_FLOWGEN_V3` once pinned): the program reads it at an address
/// the kernel fills in, a plain load, where a map's lookup is a helper call in the object
/// (inlined by the verifier, but LLVM spills the registers a call clobbers around it). Apart
/// from the control value below: user space writes that whole, and only reads this one, so
/// no write of user space's can undo a bump.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.flowgen")]
pub static mut SV_FLOWGEN: u32 = 0;

/// What the flow cache's lane reads before a lookup, in one value (`FlowControl`: user
/// space's generation, 0 while the cache is off or a trace runs, and the slot mask), written
/// by user space only. A global in its own data section (`map_names::FLOW_CTL_SECTION`),
/// as the one above (`SV_FLOWCTL_V2` once pinned); read with `flow::control`.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.flowctl")]
pub static mut SV_FLOWCTL: Aligned8<FlowControl> = Aligned8(FlowControl {
    gen: 0,
    mask: 0,
    given: 0,
    nexthops_given: 0,
});

/// A value aligned for 8-byte loads.
#[repr(C, align(8))]
pub struct Aligned8<T>(pub T);

// ---- Finding a VIP or member record by address (see `sipvip_common::AddrSlot`) ----

/// The record of the address `addr` in `records`, if `index` (of `slots` entries) names
/// one: the probe slots from the address's home slot on, each an inlined array read (a hash
/// lookup is several helper calls), every one read since removal leaves holes. See
/// `sipvip_common::AddrSlot`.
#[inline(always)]
pub fn find<A: Copy + PartialEq, R>(
    index: &Array<u32>,
    records: &'static Array<AddrSlot<A, R>>,
    slots: u32,
    home: u32,
    addr: &A,
) -> Option<&'static R> {
    let mut i = 0;
    while i < VIP_PROBES {
        let r = match index.get((home + i) & (slots - 1)) {
            Some(&r) => r,
            None => 0,
        };
        if r != 0 {
            if let Some(v) = records.get(r - 1) {
                if v.addr_be == *addr {
                    return Some(&v.rec);
                }
            }
        }
        i += 1;
    }
    None
}

#[inline(always)]
pub fn find_vip(addr: &u32) -> Option<&'static VipRecord> {
    let home = vip_index_slot(*addr);
    find(&VIP_INDEX, &VIPS, VIP_INDEX_SLOTS, home, addr)
}

#[inline(always)]
pub fn find_member(addr: &u32) -> Option<&'static MemberRecord> {
    let home = index_slot(*addr, MEMBER_INDEX_SLOTS);
    find(&MEMBER_INDEX, &MEMBERS, MEMBER_INDEX_SLOTS, home, addr)
}

/// `find` for an IPv6 VIP, in a function of its own (a BPF-to-BPF call): inlined, the
/// probes' state would push the IPv6 external program's frame past 512 bytes.
#[inline(never)]
pub fn find_vip6(addr: &Ipv6Be) -> Option<&'static VipRecord<Ipv6Be>> {
    let home = index_slot(fold6(addr), VIP_INDEX_SLOTS);
    find(&VIP_INDEX6, &VIPS6, VIP_INDEX_SLOTS, home, addr)
}

/// `find` for an IPv6 member, likewise.
#[inline(never)]
pub fn find_member6(addr: &Ipv6Be) -> Option<&'static MemberRecord<Ipv6Be>> {
    let home = index_slot(fold6(addr), MEMBER_INDEX_SLOTS);
    find(&MEMBER_INDEX6, &MEMBERS6, MEMBER_INDEX_SLOTS, home, addr)
}

/// The first index of the running CPU's block in an array that holds a block of `slots` for
/// each CPU (the next-hop and flow caches): a cache per CPU, each CPU's values contiguous.
#[inline(always)]
pub fn cpu_block(slots: u32) -> u32 {
    // SAFETY: no arguments (the verifier inlines it as a per-CPU read).
    let cpu = unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() };
    cpu.wrapping_mul(slots)
}
