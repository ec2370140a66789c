//! Loading the object, pinning it, and adopting a pinned datapath.

use std::{
    mem::size_of,
    path::{Path, PathBuf},
};

use aya::{
    maps::MapData,
    programs::{links::PinnedLink, SchedClassifier},
    EbpfLoader,
};
use sipvip_common::{
    map_names, program_names, CtKey, CtValue, FragKey, FragKey6, FragValue, Iface, Ipv6Be,
    MemberSlot, NextHop, Settings, VipCells, VipSlot, MAX_MEMBERS,
};

use super::{
    pin_err,
    vips::{AddrTable, Records},
    xdp_mut, Datapath, DatapathError, DebugLogger, MapSizes, Result, OBJECT, OBJECT_DEBUG,
};

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
const BPF_MAP_TYPE_DEVMAP: u32 = 14;
const BPF_MAP_TYPE_DEVMAP_HASH: u32 = 25;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;

/// One map as this build lays it out.
struct Layout {
    name: &'static str,
    ty: u32,
    key: usize,
    /// 0: not checked (a devmap's value size depends on the kernel).
    value: usize,
    max_entries: u32,
    /// Whether `MapSizes` sets its size at load time.
    sized: bool,
}

/// The entries of an array holding a block of `slots` for each possible CPU (the flow and
/// next-hop caches: the datapath indexes them by the running CPU's number, below the
/// possible CPUs' count). Loading checks that the flow cache's fit.
/// The flow cache of the builds before `SV_FLOWS_V4` (a bench's baseline object) and its
/// slot's size, without the slot's counts: sized as this build's, and otherwise only the
/// slot mask it reads is written (`Datapath::flow_slots`).
const LEGACY_FLOWS: &str = "SV_FLOWS_V3";
const LEGACY_FLOW_SLOT_BYTES: usize = 80;

fn cpu_blocks(slots: u32, cpus: u32) -> u32 {
    slots.saturating_mul(cpus)
}

/// The flow cache's slots per CPU are a power of two, and all CPUs' fit one array.
fn check_flow_cache(slots: u32, cpus: u32) -> Result<()> {
    if !slots.is_power_of_two() {
        return Err(DatapathError::Sizes(format!(
            "the flow cache's slots per CPU are a power of two, not {slots}"
        )));
    }
    if slots
        .checked_mul(cpus)
        .is_none_or(|n| n > MAX_FLOW_CACHE_ENTRIES)
    {
        return Err(DatapathError::Sizes(format!(
            "the flow cache's {slots} slots per CPU for {cpus} CPUs pass {MAX_FLOW_CACHE_ENTRIES} in all"
        )));
    }
    Ok(())
}

/// The most flow cache slots of all CPUs together (an array's entries are 32-bit indexes;
/// 2^28 slots of 96 bytes are 24 GiB).
const MAX_FLOW_CACHE_ENTRIES: u32 = 1 << 28;

/// The count of possible CPUs (`/sys/devices/system/cpu/possible`).
pub(super) fn possible_cpus() -> Result<u32> {
    aya::util::nr_cpus()
        .map(|n| n as u32)
        .map_err(|(_, e)| DatapathError::Sizes(format!("count the possible CPUs: {e}")))
}

/// Every map of the datapath, declared once: what loading sizes, what adoption checks.
/// `cpus`: the possible CPUs' count.
fn layouts(sizes: &MapSizes, cpus: u32) -> [Layout; 41] {
    let nexthop_entries = cpu_blocks(sipvip_common::NEXTHOP_SLOTS, cpus);
    let l = |name, ty, key, value, max_entries, sized| Layout {
        name,
        ty,
        key,
        value,
        max_entries,
        sized,
    };
    [
        // Two record slots per VIP (see `VipSlot`).
        l(
            map_names::VIPS,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<VipSlot>(),
            2 * sizes.vips,
            true,
        ),
        l(
            map_names::VIP_INDEX,
            BPF_MAP_TYPE_ARRAY,
            4,
            4,
            sipvip_common::VIP_INDEX_SLOTS,
            false,
        ),
        // As the VIPs'.
        l(
            map_names::MEMBERS,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<MemberSlot>(),
            2 * sizes.members,
            true,
        ),
        l(
            map_names::MEMBER_INDEX,
            BPF_MAP_TYPE_ARRAY,
            4,
            4,
            sipvip_common::MEMBER_INDEX_SLOTS,
            false,
        ),
        l(
            map_names::CONNTRACK,
            BPF_MAP_TYPE_LRU_HASH,
            size_of::<CtKey>(),
            size_of::<CtValue>(),
            sizes.conntrack,
            true,
        ),
        l(
            map_names::FRAGS,
            BPF_MAP_TYPE_LRU_HASH,
            size_of::<FragKey>(),
            size_of::<FragValue>(),
            sizes.frags,
            true,
        ),
        l(
            map_names::EXCLUSIONS,
            BPF_MAP_TYPE_LPM_TRIE,
            8,
            1,
            sizes.exclusions,
            true,
        ),
        l(
            map_names::DEVMAP,
            BPF_MAP_TYPE_DEVMAP_HASH,
            4,
            0,
            sizes.devmap,
            true,
        ),
        l(
            map_names::VIP_STATS,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            size_of::<VipCells>(),
            sizes.vips,
            true,
        ),
        l(
            map_names::REASONS,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            8,
            sipvip_common::REASON_SLOTS,
            false,
        ),
        // Each CPU's block of slots, as the flow cache's.
        l(
            map_names::NEXTHOPS,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<NextHop>(),
            nexthop_entries,
            true,
        ),
        l(map_names::NEXTHOP_GEN, BPF_MAP_TYPE_ARRAY, 4, 4, 1, false),
        l(
            map_names::PT_PORTS,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<sipvip_common::PassthroughPorts>(),
            sizes.vips * MAX_MEMBERS as u32,
            true,
        ),
        l(
            map_names::IFACES,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<Iface>(),
            sipvip_common::IFACE_SLOTS,
            false,
        ),
        l(
            map_names::SETTINGS,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<Settings>(),
            1,
            false,
        ),
        l(
            map_names::TRACE,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<sipvip_common::TraceFilter>(),
            1,
            false,
        ),
        l(
            map_names::TRACE_EVENTS,
            BPF_MAP_TYPE_RINGBUF,
            0,
            0,
            sipvip_common::TRACE_RING_BYTES,
            false,
        ),
        l(
            map_names::TRACE_CPU,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            size_of::<sipvip_common::TraceCpu>(),
            1,
            false,
        ),
        // Kernel-private: the event under construction and what the filters read.
        l(
            map_names::TRACE_SCRATCH,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            0,
            1,
            false,
        ),
        l(
            map_names::TRACE_XDP,
            BPF_MAP_TYPE_PROG_ARRAY,
            4,
            4,
            1,
            false,
        ),
        l(map_names::TRACE_TC, BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 1, false),
        l(
            map_names::RETURN_PATH,
            BPF_MAP_TYPE_HASH,
            4,
            size_of::<sipvip_common::ReturnPath>(),
            1,
            false,
        ),
        // Each CPU's block of slots (see `cpu_blocks`).
        l(
            map_names::FLOWS,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<sipvip_common::FlowSlot>(),
            cpu_blocks(sizes.flows, cpus),
            true,
        ),
        l(map_names::FLOW_GEN, BPF_MAP_TYPE_ARRAY, 4, 4, 1, false),
        l(
            map_names::FLOW_CTL,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<sipvip_common::FlowControl>(),
            1,
            false,
        ),
        l(
            map_names::DEVMAP_SLOTS,
            BPF_MAP_TYPE_DEVMAP,
            4,
            0,
            sipvip_common::IFACE_SLOTS,
            false,
        ),
        // Kernel-private scratch: its value layout belongs to the kernel crate (0: not
        // checked).
        l(
            map_names::PENDING,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            0,
            1,
            false,
        ),
        l(
            map_names::PENDING6,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            0,
            1,
            false,
        ),
        l(
            map_names::FIB_ARGS,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            64,
            1,
            false,
        ),
        l(
            map_names::PACKET6,
            BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            0,
            1,
            false,
        ),
        l(
            map_names::IFACES6,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<Ipv6Be>(),
            sipvip_common::IFACE_SLOTS,
            false,
        ),
        // The IPv6 programs, tail-called by slot.
        l(map_names::XDP6, BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 2, false),
        l(map_names::TC6, BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 1, false),
        // The IPv6 twins, sized as their IPv4 maps.
        l(
            map_names::VIPS6,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<VipSlot<Ipv6Be>>(),
            2 * sizes.vips,
            true,
        ),
        l(
            map_names::VIP_INDEX6,
            BPF_MAP_TYPE_ARRAY,
            4,
            4,
            sipvip_common::VIP_INDEX_SLOTS,
            false,
        ),
        l(
            map_names::MEMBERS6,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<MemberSlot<Ipv6Be>>(),
            2 * sizes.members,
            true,
        ),
        l(
            map_names::MEMBER_INDEX6,
            BPF_MAP_TYPE_ARRAY,
            4,
            4,
            sipvip_common::MEMBER_INDEX_SLOTS,
            false,
        ),
        l(
            map_names::CONNTRACK6,
            BPF_MAP_TYPE_LRU_HASH,
            size_of::<CtKey<Ipv6Be>>(),
            size_of::<CtValue<Ipv6Be>>(),
            sizes.conntrack,
            true,
        ),
        l(
            map_names::FRAGS6,
            BPF_MAP_TYPE_LRU_HASH,
            size_of::<FragKey6>(),
            size_of::<FragValue<Ipv6Be>>(),
            sizes.frags,
            true,
        ),
        l(
            map_names::EXCLUSIONS6,
            BPF_MAP_TYPE_LPM_TRIE,
            4 + size_of::<Ipv6Be>(),
            1,
            sizes.exclusions,
            true,
        ),
        l(
            map_names::NEXTHOPS6,
            BPF_MAP_TYPE_ARRAY,
            4,
            size_of::<NextHop<Ipv6Be>>(),
            nexthop_entries,
            true,
        ),
    ]
}

/// Makes sure `dir` can hold pins: mounts bpffs on /sys/fs/bpf when `dir` lies below it and
/// nothing is mounted there yet, then refuses a `dir` that is not on a bpf filesystem.
pub fn mount_bpffs(dir: &Path) -> Result<()> {
    mount_sys_fs_bpf(dir)?;
    on_bpffs(dir)
}

/// `BPF_FS_MAGIC` (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Refuses a pin directory that is not on a bpf filesystem (its nearest existing ancestor,
/// when it does not exist yet): pins elsewhere fail, or would not outlive the daemon.
fn on_bpffs(dir: &Path) -> Result<()> {
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
        .map_err(|e| pin_err(dir, e))?;
    // SAFETY: statfs(2) with a NUL-terminated path and a zeroed struct to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(pin_err(dir, std::io::Error::last_os_error()));
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(pin_err(
            dir,
            format!(
                "{} is not on a bpf filesystem, so the datapath cannot be pinned there \
                 (in a container, mount the host's /sys/fs/bpf as a hostPath volume)",
                existing.display()
            ),
        ));
    }
    Ok(())
}

/// Mounts bpffs on /sys/fs/bpf when `dir` lies below it and nothing is mounted there yet.
fn mount_sys_fs_bpf(dir: &Path) -> Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if !dir.starts_with(root) {
        return Ok(());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    let (src, target, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
    // SAFETY: mount(2) with valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(pin_err(
            root,
            format!(
                "nothing is mounted there and mounting bpffs failed ({e}); in a container, \
                 mount the host's /sys/fs/bpf as a hostPath volume"
            ),
        ));
    }
    Ok(())
}

/// The maps every build's object has had (another build's object may lack the rest).
/// (And the VIP and member records, as hash maps before they were arrays: see `from_maps`.)
const BASE_MAPS: [&str; 9] = [
    map_names::CONNTRACK,
    map_names::FRAGS,
    map_names::EXCLUSIONS,
    map_names::DEVMAP,
    map_names::REASONS,
    map_names::NEXTHOP_GEN,
    map_names::PT_PORTS,
    map_names::IFACES,
    map_names::SETTINGS,
];

/// Puts a program's fd in slot `slot` of the program array `array`.
fn set_slot(
    ebpf: &mut aya::Ebpf,
    array: &'static str,
    slot: u32,
    fd: &aya::programs::ProgramFd,
) -> Result<()> {
    let map = ebpf
        .map_mut(array)
        .ok_or(DatapathError::MissingMap(array))?;
    let mut pa = aya::maps::ProgramArray::try_from(map).map_err(|source| DatapathError::Map {
        name: array,
        source,
    })?;
    pa.set(slot, fd, 0).map_err(|source| DatapathError::Map {
        name: array,
        source,
    })
}

impl Datapath {
    /// The typed maps, from every map of `layouts` by name.
    fn from_maps(
        mut maps: std::collections::HashMap<&'static str, aya::maps::Map>,
        ebpf: Option<aya::Ebpf>,
        logger: Option<DebugLogger>,
    ) -> Result<Self> {
        let mut get = |name: &'static str| {
            let m = maps.remove(name).ok_or(DatapathError::MissingMap(name))?;
            Ok::<_, DatapathError>((name, m))
        };
        fn typed<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            (name, m): (&'static str, aya::maps::Map),
        ) -> Result<T> {
            T::try_from(m).map_err(|source| DatapathError::Map { name, source })
        }
        // The records of each kind: an array and its index, or an earlier build's hash map.
        macro_rules! records {
            ($records:expr, $index:expr, $hash:expr) => {
                match (get($records), get($index)) {
                    (Ok(records), Ok(index)) => Some(Records::Table(AddrTable::open(
                        typed(index)?,
                        typed(records)?,
                    )?)),
                    _ => match get($hash) {
                        Ok(m) => Some(Records::Hash(typed(m)?)),
                        Err(_) => None,
                    },
                }
            };
        }
        let vips = records!(map_names::VIPS, map_names::VIP_INDEX, map_names::VIPS_HASH)
            .ok_or(DatapathError::MissingMap(map_names::VIPS))?;
        let members = records!(
            map_names::MEMBERS,
            map_names::MEMBER_INDEX,
            map_names::MEMBERS_HASH
        )
        .ok_or(DatapathError::MissingMap(map_names::MEMBERS))?;
        let vips6 = records!(
            map_names::VIPS6,
            map_names::VIP_INDEX6,
            map_names::VIPS6_HASH
        );
        let members6 = records!(
            map_names::MEMBERS6,
            map_names::MEMBER_INDEX6,
            map_names::MEMBERS6_HASH
        );
        let mut dp = Datapath {
            vips,
            members,
            conntrack: typed(get(map_names::CONNTRACK)?)?,
            frags: typed(get(map_names::FRAGS)?)?,
            exclusions: typed(get(map_names::EXCLUSIONS)?)?,
            devmap: typed(get(map_names::DEVMAP)?)?,
            // None only in an earlier build's object (`SV_VSTATS_V1`, `_V2`), a bench's baseline.
            vip_stats: match get(map_names::VIP_STATS) {
                Ok(m) => Some(typed(m)?),
                Err(_) => None,
            },
            reasons: typed(get(map_names::REASONS)?)?,
            nexthop_gen: typed(get(map_names::NEXTHOP_GEN)?)?,
            pt_ports: typed(get(map_names::PT_PORTS)?)?,
            ifaces: typed(get(map_names::IFACES)?)?,
            ifaces6: match get(map_names::IFACES6) {
                Ok(m) => Some(typed(m)?),
                Err(_) => None,
            },
            settings: typed(get(map_names::SETTINGS)?)?,
            trace: match (
                get(map_names::TRACE),
                get(map_names::TRACE_CPU),
                get(map_names::TRACE_EVENTS),
            ) {
                (Ok(filter), Ok(cpu), Ok(events)) => Some(super::TraceMaps {
                    filter: typed(filter)?,
                    cpu: typed(cpu)?,
                    events: Some(typed(events)?),
                }),
                _ => None,
            },
            return_path: match get(map_names::RETURN_PATH) {
                Ok(m) => Some(typed(m)?),
                Err(_) => None,
            },
            flows: match get(map_names::FLOWS) {
                Ok(m) => Some(typed(m)?),
                Err(_) => None,
            },
            // Only in an earlier build's object (this build's is `flows`).
            legacy_flow_entries: match get(LEGACY_FLOWS) {
                Ok(m) => {
                    let a: aya::maps::Array<MapData, [u8; LEGACY_FLOW_SLOT_BYTES]> = typed(m)?;
                    Some(a.len())
                }
                Err(_) => None,
            },
            flow_gen: match get(map_names::FLOW_GEN) {
                Ok(m) => Some(typed(m)?),
                Err(_) => None,
            },
            flow_gen_legacy: match get(map_names::FLOW_GEN_V2) {
                Ok(m) => Some(typed(m)?),
                Err(_) => None,
            },
            flow_ctl: match get(map_names::FLOW_CTL) {
                Ok(m) => Some(typed(m)?),
                Err(_) => None,
            },
            // None only in an earlier build's object, a bench's baseline.
            devmap_slots: match get(map_names::DEVMAP_SLOTS) {
                Ok(m) => Some(typed(m)?),
                Err(_) => None,
            },
            flow_cache: true,
            nexthops_on: false,
            // Held: a program array's entries go when its last user reference does.
            prog_arrays: [
                map_names::XDP6,
                map_names::TC6,
                map_names::TRACE_XDP,
                map_names::TRACE_TC,
            ]
            .into_iter()
            .filter_map(|n| get(n).ok().map(|(_, m)| m))
            .collect(),
            v6: match (
                vips6,
                members6,
                get(map_names::CONNTRACK6),
                get(map_names::FRAGS6),
                get(map_names::EXCLUSIONS6),
            ) {
                (Some(vips), Some(members), Ok(conntrack), Ok(frags), Ok(exclusions)) => {
                    Some(super::Maps6 {
                        vips,
                        members,
                        conntrack: typed(conntrack)?,
                        frags: typed(frags)?,
                        exclusions: typed(exclusions)?,
                    })
                }
                _ => None,
            },
            ebpf,
            logger,
            silent: Default::default(),
            slot_view: None,
            reported: Default::default(),
        };
        dp.slot_view = dp
            .flows
            .as_ref()
            .map(super::counts::SlotView::map)
            .transpose()?;
        dp.write_flow_slot_mask()?;
        Ok(dp)
    }

    /// Loads the object with `sizes` and loads (but does not attach) every program.
    pub fn load(sizes: &MapSizes) -> Result<Self> {
        Self::load_inner(sizes, None, false)
    }

    /// Loads another build's object (the bench compares an earlier build against this one).
    /// An object from before a kernel-private map existed may lack it.
    pub fn load_object(sizes: &MapSizes, object: &[u8]) -> Result<Self> {
        Self::load_bytes(sizes, None, object, None)
    }

    /// The debug-log build of the programs, with its logger (see [`Datapath::take_logger`]).
    pub fn load_debug(sizes: &MapSizes) -> Result<Self> {
        Self::load_inner(sizes, None, true)
    }

    /// The debug logger, for the caller to drive (debug object only).
    pub fn take_logger(&mut self) -> Option<DebugLogger> {
        self.logger.take()
    }

    fn load_inner(sizes: &MapSizes, pin_dir: Option<&Path>, debug: bool) -> Result<Self> {
        let object = if debug { OBJECT_DEBUG } else { OBJECT };
        Self::load_bytes(sizes, pin_dir, object, Some(debug))
    }

    /// `debug`: None for another build's object (no logger, kernel-private maps optional).
    fn load_bytes(
        sizes: &MapSizes,
        pin_dir: Option<&Path>,
        object: &[u8],
        debug: Option<bool>,
    ) -> Result<Self> {
        let cpus = possible_cpus()?;
        check_flow_cache(sizes.flows, cpus)?;
        let other_build = debug.is_none();
        let debug = debug.unwrap_or(false);
        let mut loader = EbpfLoader::new();
        for m in layouts(sizes, cpus).iter().filter(|m| m.sized) {
            loader.map_max_entries(m.name, m.max_entries);
        }
        if other_build {
            loader.map_max_entries(LEGACY_FLOWS, cpu_blocks(sizes.flows, cpus));
        }
        let mut ebpf = loader.load(object)?;
        // Globals the object keeps in data sections, each an array of one value that the
        // loader made: taken here under their map names, for the pins and layouts below. An
        // earlier build's object (a bench's baseline) has the control value as a map.
        let mut globals = std::collections::HashMap::new();
        for (section, name) in [
            (map_names::FLOW_CTL_SECTION, map_names::FLOW_CTL),
            (map_names::FLOW_GEN_SECTION, map_names::FLOW_GEN),
            (map_names::FLOW_CTL_V1, map_names::FLOW_CTL),
        ] {
            if let Some(map) = ebpf.take_map(section) {
                globals.insert(name, map);
            }
        }
        let logger = if debug {
            Some(
                DebugLogger::init(&mut ebpf).map_err(|e| DatapathError::Pin {
                    path: PathBuf::from("AYA_LOGS"),
                    what: format!("debug logger: {e}"),
                })?,
            )
        } else {
            None
        };
        for name in [
            program_names::EXTERNAL,
            program_names::INTERNAL,
            program_names::PASS,
        ] {
            let prog = xdp_mut(&mut ebpf, name)?;
            prog.load()
                .map_err(|source| DatapathError::Program { name, source })?;
            if let Some(dir) = pin_dir {
                let path = dir.join(format!("prog_{name}"));
                prog.pin(&path).map_err(|e| pin_err(&path, e))?;
            }
        }
        // The IPv6 programs, each in its slot of a program array: the IPv4 programs
        // tail-call them for IPv6 frames; and the trace's last step, which every program
        // tail-calls for a packet a running trace took. Another build's object (a baseline in
        // the bench) may not have them.
        for (name, array, slot) in [
            (
                program_names::EXTERNAL6,
                map_names::XDP6,
                program_names::SLOT6_EXT,
            ),
            (
                program_names::INTERNAL6,
                map_names::XDP6,
                program_names::SLOT6_INT,
            ),
            (program_names::TRACE_XDP, map_names::TRACE_XDP, 0),
        ] {
            let Some(p) = ebpf.program_mut(name) else {
                if other_build {
                    continue;
                }
                return Err(DatapathError::MissingProgram(name));
            };
            let prog: &mut aya::programs::Xdp = p
                .try_into()
                .map_err(|source| DatapathError::Program { name, source })?;
            prog.load()
                .map_err(|source| DatapathError::Program { name, source })?;
            if let Some(dir) = pin_dir {
                let path = dir.join(format!("prog_{name}"));
                prog.pin(&path).map_err(|e| pin_err(&path, e))?;
            }
            let fd = prog
                .fd()
                .map_err(|source| DatapathError::Program { name, source })?
                .try_clone()
                .map_err(|e| pin_err(Path::new(name), e))?;
            set_slot(&mut ebpf, array, slot, &fd)?;
        }
        // The TC egress programs (on-node mode), likewise.
        for (name, slot) in [
            (program_names::NODE_OUT, None),
            (
                program_names::NODE_OUT6,
                Some((map_names::TC6, program_names::SLOT6_NODE_OUT)),
            ),
            (program_names::TRACE_TC, Some((map_names::TRACE_TC, 0))),
        ] {
            let Some(p) = ebpf.program_mut(name) else {
                if other_build {
                    continue;
                }
                return Err(DatapathError::MissingProgram(name));
            };
            let prog: &mut SchedClassifier = p
                .try_into()
                .map_err(|source| DatapathError::Program { name, source })?;
            prog.load()
                .map_err(|source| DatapathError::Program { name, source })?;
            if let Some(dir) = pin_dir {
                let path = dir.join(format!("prog_{name}"));
                prog.pin(&path).map_err(|e| pin_err(&path, e))?;
            }
            if let Some((array, slot)) = slot {
                let fd = prog
                    .fd()
                    .map_err(|source| DatapathError::Program { name, source })?
                    .try_clone()
                    .map_err(|e| pin_err(Path::new(name), e))?;
                set_slot(&mut ebpf, array, slot, &fd)?;
            }
        }
        if let Some(dir) = pin_dir {
            for Layout { name, .. } in layouts(sizes, cpus) {
                let path = dir.join(name);
                globals
                    .get(name)
                    .or_else(|| ebpf.map(name))
                    .ok_or(DatapathError::MissingMap(name))?
                    .pin(&path)
                    .map_err(|e| pin_err(&path, e))?;
            }
        }
        let mut maps = std::collections::HashMap::new();
        for m in layouts(sizes, cpus) {
            let Some(map) = globals.remove(m.name).or_else(|| ebpf.take_map(m.name)) else {
                // An earlier build's object: before its kernel-private scratch, IPv6, or the
                // VIPs' counter cells.
                if other_build && !BASE_MAPS.contains(&m.name) {
                    continue;
                }
                return Err(DatapathError::MissingMap(m.name));
            };
            maps.insert(m.name, map);
        }
        if other_build {
            // Before the datapath's generation was a global: the generations in three slots
            // (`SV_FLOWGEN_V2`); before the per-CPU flow cache, in two (`SV_FLOWGEN_V1`),
            // which drive the build's own cache (an LRU hash, not read here).
            let legacy = ebpf
                .take_map(map_names::FLOW_GEN_V2)
                .or_else(|| ebpf.take_map(map_names::FLOW_GEN_V1));
            if let Some(map) = legacy {
                maps.insert(map_names::FLOW_GEN_V2, map);
            }
            // Before the slots counted their packets (`SV_FLOWS_V3`).
            if let Some(map) = ebpf.take_map(LEGACY_FLOWS) {
                maps.insert(LEGACY_FLOWS, map);
            }
        }
        if other_build {
            // Before the VIP and member records were arrays (`SV_VIPS_V3`, `SV_MEMBERS_V2`).
            for name in [
                map_names::VIPS_HASH,
                map_names::VIPS6_HASH,
                map_names::MEMBERS_HASH,
                map_names::MEMBERS6_HASH,
            ] {
                if let Some(map) = ebpf.take_map(name) {
                    maps.insert(name, map);
                }
            }
        }
        let mut dp = Datapath::from_maps(maps, Some(ebpf), logger)?;
        dp.refresh_nexthops(true)?;
        Ok(dp)
    }

    /// Loads the datapath and pins its maps and programs under `dir` (a bpffs directory),
    /// so that forwarding outlives this process.
    pub fn load_pinned(sizes: &MapSizes, dir: &Path, debug: bool) -> Result<Self> {
        mount_bpffs(dir)?;
        std::fs::create_dir_all(dir).map_err(|e| pin_err(dir, e))?;
        Self::load_inner(sizes, Some(dir), debug)
    }

    /// Adopts a datapath pinned under `dir` by an earlier run, if there is one. Every map must
    /// be there with the type, key size, value size and size this build expects; otherwise
    /// this refuses with the first difference.
    pub fn adopt(sizes: &MapSizes, dir: &Path) -> Result<Option<Self>> {
        if !dir.join(map_names::VIPS).exists() {
            // An earlier build's pins (its VIP records were a hash map) are not this build's
            // to adopt, nor can this build pin beside them.
            if dir.join(map_names::VIPS_HASH).exists() {
                return Err(DatapathError::Layout {
                    dir: dir.to_path_buf(),
                    what: format!(
                        "map {} is missing (an earlier build pinned {})",
                        map_names::VIPS,
                        map_names::VIPS_HASH
                    ),
                });
            }
            return Ok(None);
        }
        let cpus = possible_cpus()?;
        let mut maps = std::collections::HashMap::new();
        for Layout {
            name,
            ty,
            key,
            value,
            max_entries: max,
            ..
        } in layouts(sizes, cpus)
        {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|_| DatapathError::Layout {
                dir: dir.to_path_buf(),
                what: format!("map {name} is missing"),
            })?;
            let info = data
                .info()
                .map_err(|source| DatapathError::Map { name, source })?;
            let got_ty = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
            let checks = [
                ("type", u64::from(got_ty), u64::from(ty)),
                ("key size", u64::from(info.key_size()), key as u64),
                ("max entries", u64::from(info.max_entries()), u64::from(max)),
            ];
            for (what, got, want) in checks {
                if got != want {
                    return Err(DatapathError::Layout {
                        dir: dir.to_path_buf(),
                        what: format!("map {name}: {what} is {got}, this build expects {want}"),
                    });
                }
            }
            // A devmap's value size depends on the kernel (4 or 8 bytes).
            if value != 0 && info.value_size() as usize != value {
                return Err(DatapathError::Layout {
                    dir: dir.to_path_buf(),
                    what: format!(
                        "map {name}: value size is {}, this build expects {value}",
                        info.value_size()
                    ),
                });
            }
            let map = aya::maps::Map::from_map_data(data)
                .map_err(|source| DatapathError::Map { name, source })?;
            maps.insert(name, map);
        }
        Ok(Some(Datapath::from_maps(maps, None, None)?))
    }

    /// Detaches every pinned link under `dir` and removes every pin. Returns what it removed.
    pub fn remove_pins(dir: &Path) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(removed);
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // On-node mode on clsact: the TC egress filter sits on the external interface.
            if let Some(ifname) = name.strip_prefix(&format!("link_{}_", program_names::EXTERNAL)) {
                super::attach::detach_clsact(ifname);
            }
            if name.starts_with("link_") {
                if let Ok(l) = PinnedLink::from_pin(e.path()) {
                    // Unpinning and dropping the last reference detaches the program.
                    let _ = l.unpin();
                }
            }
            let _ = std::fs::remove_file(e.path());
            removed.push(name);
        }
        let _ = std::fs::remove_dir(dir);
        removed.sort();
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts name every map of `map_names::ALL`, each once.
    #[test]
    fn every_map_has_one_layout() {
        let mut names: Vec<&str> = layouts(&MapSizes::default(), 1)
            .iter()
            .map(|l| l.name)
            .collect();
        let mut all = map_names::ALL.to_vec();
        names.sort();
        all.sort();
        assert_eq!(names, all);
    }
}
