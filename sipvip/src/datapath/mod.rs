//! The datapath: loading the kernel programs, attaching them, and writing their maps.
//!
//! Everything that can be decided once lives here, in user space: the datapath only reads
//! what these functions write.
//!
//! One file per job: `spec` (what a VIP is, as map records), `load` (load, pin, adopt; the
//! list of maps and their layouts, declared once), `attach` (XDP links), `write` (map
//! writes: VIPs, members, exclusions, interfaces, settings, flows), `vips` (the VIP index
//! and its records) and `read` (counters and state). See docs/architecture.md, "Maps".

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, DevMap, DevMapHash, HashMap, LpmTrie, MapData, PerCpuArray},
    programs::Xdp,
    Ebpf,
};
use sipvip_common::{
    default_sizes, CtKey, CtValue, FragKey, FragKey6, FragValue, Iface, Ipv6Be, Settings, VipCells,
};

mod attach;
mod counts;
mod load;
mod read;
mod spec;
mod vips;
mod write;

pub use attach::{link_pin, TcAttach, CLSACT_PRIORITY};
pub use load::mount_bpffs;
pub use spec::{MemberReach, MemberSpec, ServiceSpec, VipSpec};

/// The kernel object, built by build.rs from sipvip-ebpf.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sipvip.bpf.o"));
/// The same programs with per-packet debug logs (aya-log), for `--datapath-debug` only.
pub static OBJECT_DEBUG: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sipvip-debug.bpf.o"));

/// Benchmark-only programs (generator, sink, floor, empty); see sipvip-ebpf/src/bench.rs.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench.bpf.o"));

/// Reads the datapath's debug log records (debug object only).
pub type DebugLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the object")]
    MissingMap(&'static str),
    #[error("map {name}: memory-mapping it: {source}")]
    Mmap {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("VIP {0} is not installed")]
    UnknownVip(Ipv4Addr),
    #[error("{member} is not a member of VIP {vip}")]
    UnknownMember { vip: String, member: Ipv4Addr },
    #[error("VIP {vip}: {what}")]
    Invalid { vip: String, what: String },
    /// A VIP or member address the datapath's index has no room for (`what`: "VIP",
    /// "member"), or no free record slot.
    #[error("{what} {addr}: {why}")]
    NoRoom {
        what: &'static str,
        addr: String,
        why: String,
    },
    #[error("egress interface {ifindex}: {what}")]
    Egress { ifindex: u32, what: String },
    #[error("the datapath pinned in {dir} does not match this build: {what}; run `sipvip down` first, or start with --replace")]
    Layout { dir: PathBuf, what: String },
    #[error("bpffs at {path}: {what}")]
    Pin { path: PathBuf, what: String },
    #[error("map sizes: {0}")]
    Sizes(String),
    #[error("the trace: {0}")]
    Trace(String),
}

/// How to attach XDP (`interfaces.xdp_mode`: `"auto"`, `"native"`, `"generic"`).
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native, falling back to generic with a warning where native is unsupported.
    #[default]
    Auto,
    Native,
    Generic,
}

fn pin_err(path: &Path, e: impl std::fmt::Display) -> DatapathError {
    DatapathError::Pin {
        path: path.to_path_buf(),
        what: e.to_string(),
    }
}

type Result<T> = std::result::Result<T, DatapathError>;

/// Map sizes, settable at load time. The defaults are production sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSizes {
    pub vips: u32,
    pub members: u32,
    pub conntrack: u32,
    pub frags: u32,
    pub exclusions: u32,
    pub devmap: u32,
    /// The flow cache's slots per CPU (`SV_FLOWS_V4`), a power of two.
    pub flows: u32,
}

impl Default for MapSizes {
    fn default() -> Self {
        MapSizes {
            vips: default_sizes::VIPS,
            members: default_sizes::MEMBERS,
            conntrack: default_sizes::CONNTRACK,
            frags: default_sizes::FRAGS,
            exclusions: default_sizes::EXCLUSIONS,
            devmap: default_sizes::DEVMAP,
            flows: default_sizes::FLOWS,
        }
    }
}

/// Network-order `u32` as the datapath stores addresses.
pub fn be32(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// Network-order `u16` as the datapath stores ports.
pub fn be16(p: u16) -> u16 {
    p.to_be()
}

/// The loaded datapath.
/// The loaded datapath.
pub struct Datapath {
    /// None when the programs were adopted from pins (they are not ours to load).
    ebpf: Option<Ebpf>,
    vips: vips::Vips<u32>,
    members: vips::Members<u32>,
    conntrack: HashMap<MapData, CtKey, CtValue>,
    frags: HashMap<MapData, FragKey, FragValue>,
    exclusions: LpmTrie<MapData, u32, u8>,
    devmap: DevMapHash<MapData>,
    vip_stats: Option<PerCpuArray<MapData, VipCells>>,
    reasons: PerCpuArray<MapData, u64>,
    nexthop_gen: Array<MapData, u32>,
    /// Member ports with pass-through flows (`SV_PTPORTS_V1`).
    pt_ports: Array<MapData, sipvip_common::PassthroughPorts>,
    ifaces: Array<MapData, Iface>,
    /// The interfaces' IPv6 addresses (None for an object from before them).
    ifaces6: Option<Array<MapData, Ipv6Be>>,
    settings: Array<MapData, Settings>,
    /// Behind ECMP, the gateway a packet without flow state is handed to (None for an
    /// object from before it).
    return_path: Option<HashMap<MapData, u32, sipvip_common::ReturnPath>>,
    /// The flow trace's maps (None for an object from before it).
    trace: Option<TraceMaps>,
    /// The flow cache and its generations (None for an object from before it).
    flows: Option<Array<MapData, sipvip_common::FlowSlot>>,
    /// The flow cache mapped read-only, for its slots' counts (None with `flows`).
    slot_view: Option<counts::SlotView>,
    /// The counters as last reported, which a read never goes below (`counts`).
    reported: std::sync::Mutex<counts::Reported>,
    /// The entries of an earlier build's flow cache (`SV_FLOWS_V3`, a bench's baseline
    /// object), whose slot mask user space still writes; None in this build's object.
    legacy_flow_entries: Option<u32>,
    /// The datapath's generation (`SV_FLOWGEN_V3`, one value); None in an earlier build's
    /// object.
    flow_gen: Option<Array<MapData, u32>>,
    /// An earlier build's generations, in slots (`SV_FLOWGEN_V2` or `SV_FLOWGEN_V1`: a
    /// bench's baseline object); None in this build's object.
    flow_gen_legacy: Option<Array<MapData, u32>>,
    /// What the lane reads (`SV_FLOWCTL_V2`, or `SV_FLOWCTL_V1` in an earlier build's
    /// object); None in a build before it.
    flow_ctl: Option<Array<MapData, sipvip_common::FlowControl>>,
    /// The flow cache's redirect targets (`SV_DEVSLOT_V1`), by interface slot.
    devmap_slots: Option<DevMap<MapData>>,
    /// Whether the flow cache is to run (`forwarding.flow_cache`); it runs only while the
    /// next-hop cache does (`nexthops_on`), whose answers its entries hold.
    flow_cache: bool,
    nexthops_on: bool,
    /// The IPv6 twins (None for another build's object from before IPv6).
    v6: Option<Maps6>,
    /// The program arrays of the IPv6 programs, held so their entries stay.
    #[allow(dead_code)]
    prog_arrays: Vec<aya::maps::Map>,
    logger: Option<DebugLogger>,
    /// On-node mode: the addresses of the VIPs another node answers for (`VIP_F_SILENT` in
    /// their records).
    silent: std::collections::BTreeSet<std::net::IpAddr>,
}

/// The flow trace's filter, counters and ring buffer (the daemon takes the ring buffer).
struct TraceMaps {
    filter: Array<MapData, sipvip_common::TraceFilter>,
    cpu: PerCpuArray<MapData, sipvip_common::TraceCpu>,
    events: Option<aya::maps::RingBuf<MapData>>,
}

/// The IPv6 twins of the address-keyed maps.
struct Maps6 {
    vips: vips::Vips<Ipv6Be>,
    members: vips::Members<Ipv6Be>,
    conntrack: HashMap<MapData, CtKey<Ipv6Be>, CtValue<Ipv6Be>>,
    frags: HashMap<MapData, FragKey6, FragValue<Ipv6Be>>,
    exclusions: LpmTrie<MapData, Ipv6Be, u8>,
}

/// A program of a loaded object, as XDP.
fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::MissingProgram(name))?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}
