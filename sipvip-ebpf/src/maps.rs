//! Map definitions. Layouts live in sipvip-common; sizes are production defaults that user
//! space may override at load time.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use sipvip_common::{
    default_sizes, CtKey, CtValue, ExclusionAddr, FragKey, FragValue, Iface, MemberRecord, NextHop,
    PassthroughPorts, Settings, VipCounters, VipRecord, IFACE_SLOTS, MAX_MEMBERS, NEXTHOP_SLOTS,
    REASON_SLOTS,
};

/// VIP address -> record. No preallocation, so a user-space update swaps the whole value in
/// atomically (RCU): the active-member flip is a single map write.
#[map(name = "SV_VIPS_V2")]
pub static VIPS: HashMap<u32, VipRecord> =
    HashMap::with_max_entries(default_sizes::VIPS, BPF_F_NO_PREALLOC);

/// Member physical address -> record.
#[map(name = "SV_MEMBERS_V1")]
pub static MEMBERS: HashMap<u32, MemberRecord> =
    HashMap::with_max_entries(default_sizes::MEMBERS, BPF_F_NO_PREALLOC);

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

#[map(name = "SV_VSTATS_V1")]
pub static VIP_STATS: PerCpuArray<VipCounters> =
    PerCpuArray::with_max_entries(default_sizes::VIPS, 0);

#[map(name = "SV_REASONS_V1")]
pub static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_SLOTS, 0);

/// Cached FIB answers, direct-mapped, per CPU (no locking, no torn reads); see `NextHop`.
#[map(name = "SV_NEXTHOP_V1")]
pub static NEXTHOPS: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(NEXTHOP_SLOTS, 0);

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

/// Slot 0: datapath-wide settings; see `Settings`.
#[map(name = "SV_SETTINGS_V1")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);
