//! The datapath: loading the kernel programs, attaching them, and writing their maps.
//!
//! Everything that can be decided once lives here, in user space: the datapath only reads
//! what these functions write.

use std::{
    collections::BTreeMap,
    mem::size_of,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{lpm_trie::Key, Array, DevMapHash, HashMap, LpmTrie, MapData, PerCpuArray},
    programs::{links::PinnedLink, xdp::XdpLinkId, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use sipvip_common::{
    default_sizes, map_names, program_names, time_units, CtKey, CtValue, FragKey, FragValue, Iface,
    MemberRecord, NextHop, Reason, Service, Settings, VipCounters, VipRecord, MAX_MEMBERS,
    MAX_PASSTHROUGH_PORTS, MAX_SERVICES, MEMBER_F_SNAT,
};

/// The kernel object, built by build.rs from sipvip-ebpf.
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
const BPF_MAP_TYPE_DEVMAP_HASH: u32 = 25;

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
    #[error("program {0} is missing from the object")]
    MissingProgram(&'static str),
    #[error("VIP {0} is not installed")]
    UnknownVip(Ipv4Addr),
    #[error("{member} is not a member of VIP {vip}")]
    UnknownMember { vip: Ipv4Addr, member: Ipv4Addr },
    #[error("VIP {vip}: {what}")]
    Invalid { vip: Ipv4Addr, what: String },
    #[error("egress interface {ifindex}: {what}")]
    Egress { ifindex: u32, what: String },
    #[error("the datapath pinned in {dir} does not match this build: {what}; run `sipvip down` first, or start with --replace")]
    Layout { dir: PathBuf, what: String },
    #[error("bpffs at {path}: {what}")]
    Pin { path: PathBuf, what: String },
}

/// How to attach XDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native, falling back to generic with a warning.
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

/// Mounts bpffs on /sys/fs/bpf when `dir` lies below it and nothing is mounted there yet.
pub fn mount_bpffs(dir: &Path) -> Result<()> {
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
        return Err(pin_err(root, std::io::Error::last_os_error()));
    }
    Ok(())
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

/// One service of a VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `sipvip_common::IPPROTO_UDP` or `IPPROTO_TCP`.
    pub proto: u8,
    pub port: u16,
    /// The port on the member; usually the same as `port`.
    pub member_port: u16,
    pub enabled: bool,
}

/// One pool member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpec {
    pub addr: Ipv4Addr,
    /// Source ports never SNATed (T-Server listening ports and the like).
    pub passthrough_ports: Vec<u16>,
}

/// Everything the datapath needs to know about one VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipSpec {
    pub addr: Ipv4Addr,
    /// Index of the VIP's counters; unique per VIP, below `MapSizes::vips`.
    pub id: u32,
    pub services: Vec<ServiceSpec>,
    /// In slot order: members[i] counts in slot i.
    pub members: Vec<MemberSpec>,
    /// Index into `members` of the active member, or None (traffic dropped).
    pub active: Option<usize>,
    /// Whether members' outbound traffic is SNATed to the VIP.
    pub snat: bool,
}

impl VipSpec {
    fn check(&self) -> Result<()> {
        let bad = |what: String| DatapathError::Invalid {
            vip: self.addr,
            what,
        };
        if self.services.len() > MAX_SERVICES {
            return Err(bad(format!(
                "{} services, at most {MAX_SERVICES}",
                self.services.len()
            )));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(bad(format!(
                "{} members, at most {MAX_MEMBERS}",
                self.members.len()
            )));
        }
        // The datapath stops at the first unused slot: services and pass-through ports must be
        // packed, with no protocol 0 or port 0 among them.
        if let Some(sv) = self
            .services
            .iter()
            .find(|sv| sv.proto == 0 || sv.port == 0)
        {
            return Err(bad(format!(
                "service {}/{}: protocol and port must be non-zero",
                sv.proto, sv.port
            )));
        }
        for m in &self.members {
            if m.passthrough_ports.contains(&0) {
                return Err(bad(format!("member {}: pass-through port 0", m.addr)));
            }
            if m.passthrough_ports.len() > MAX_PASSTHROUGH_PORTS {
                return Err(bad(format!(
                    "member {}: {} pass-through ports, at most {MAX_PASSTHROUGH_PORTS}",
                    m.addr,
                    m.passthrough_ports.len()
                )));
            }
        }
        if let Some(a) = self.active {
            if a >= self.members.len() {
                return Err(bad(format!("active member index {a} out of range")));
            }
        }
        Ok(())
    }

    fn services(&self) -> [Service; MAX_SERVICES] {
        let mut out = [Service::default(); MAX_SERVICES];
        for (o, s) in out.iter_mut().zip(&self.services) {
            *o = Service {
                proto: s.proto,
                enabled: u8::from(s.enabled),
                _pad: 0,
                port_be: be16(s.port),
                member_port_be: be16(s.member_port),
            };
        }
        out
    }

    /// The VIP record with `active` as the active member.
    /// The VIP's record with `active` steered to and `draining` keeping the TCP connections
    /// it had (both member slots).
    pub fn record(&self, active: Option<usize>, draining: Option<usize>) -> VipRecord {
        let member = |m: Option<usize>| match m {
            Some(i) => (be32(self.members[i].addr), i as u32),
            None => (0, 0),
        };
        let (active_be, active_slot) = member(active);
        let (draining_be, draining_slot) = member(draining.filter(|d| Some(*d) != active));
        VipRecord {
            vip_id: self.id,
            active_be,
            active_slot,
            flags: 0,
            draining_be,
            draining_slot,
            services: self.services(),
        }
    }

    pub fn member_record(&self, slot: usize) -> MemberRecord {
        let m = &self.members[slot];
        let mut pt = [0u16; MAX_PASSTHROUGH_PORTS];
        for (o, p) in pt.iter_mut().zip(&m.passthrough_ports) {
            *o = be16(*p);
        }
        MemberRecord {
            vip_be: be32(self.addr),
            vip_id: self.id,
            slot: slot as u32,
            flags: if self.snat { MEMBER_F_SNAT } else { 0 },
            services: self.services(),
            passthrough_ports_be: pt,
        }
    }
}

/// The loaded datapath.
pub struct Datapath {
    /// None when the programs were adopted from pins (they are not ours to load).
    ebpf: Option<Ebpf>,
    vips: HashMap<MapData, u32, VipRecord>,
    members: HashMap<MapData, u32, MemberRecord>,
    conntrack: HashMap<MapData, CtKey, CtValue>,
    frags: HashMap<MapData, FragKey, FragValue>,
    exclusions: LpmTrie<MapData, u32, u8>,
    devmap: DevMapHash<MapData>,
    vip_stats: PerCpuArray<MapData, VipCounters>,
    reasons: PerCpuArray<MapData, u64>,
    nexthop_gen: Array<MapData, u32>,
    ifaces: Array<MapData, Iface>,
    settings: Array<MapData, Settings>,
    logger: Option<DebugLogger>,
}

/// A program of a loaded object, as XDP.
fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::MissingProgram(name))?
        .try_into()
        .map_err(|source| DatapathError::Program { name, source })
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))?;
    T::try_from(map).map_err(|source| DatapathError::Map { name, source })
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

impl Datapath {
    /// Loads the object with `sizes` and loads (but does not attach) every program.
    pub fn load(sizes: &MapSizes) -> Result<Self> {
        Self::load_inner(sizes, None, false)
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
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(map_names::VIPS, sizes.vips)
            .map_max_entries(map_names::VIP_STATS, sizes.vips)
            .map_max_entries(map_names::MEMBERS, sizes.members)
            .map_max_entries(map_names::CONNTRACK, sizes.conntrack)
            .map_max_entries(map_names::FRAGS, sizes.frags)
            .map_max_entries(map_names::EXCLUSIONS, sizes.exclusions)
            .map_max_entries(map_names::DEVMAP, sizes.devmap)
            .map_max_entries(map_names::PT_PORTS, sizes.vips * MAX_MEMBERS as u32);
        let mut ebpf = loader.load(if debug { OBJECT_DEBUG } else { OBJECT })?;
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
        if let Some(dir) = pin_dir {
            for name in map_names::ALL {
                let path = dir.join(name);
                ebpf.map(name)
                    .ok_or(DatapathError::MissingMap(name))?
                    .pin(&path)
                    .map_err(|e| pin_err(&path, e))?;
            }
        }
        let mut dp = Datapath {
            vips: take(&mut ebpf, map_names::VIPS)?,
            members: take(&mut ebpf, map_names::MEMBERS)?,
            conntrack: take(&mut ebpf, map_names::CONNTRACK)?,
            frags: take(&mut ebpf, map_names::FRAGS)?,
            exclusions: take(&mut ebpf, map_names::EXCLUSIONS)?,
            devmap: take(&mut ebpf, map_names::DEVMAP)?,
            vip_stats: take(&mut ebpf, map_names::VIP_STATS)?,
            reasons: take(&mut ebpf, map_names::REASONS)?,
            nexthop_gen: take(&mut ebpf, map_names::NEXTHOP_GEN)?,
            ifaces: take(&mut ebpf, map_names::IFACES)?,
            settings: take(&mut ebpf, map_names::SETTINGS)?,
            ebpf: Some(ebpf),
            logger,
        };
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
            return Ok(None);
        }
        let expect: [(&'static str, u32, usize, usize, u32); 13] = [
            (
                map_names::VIPS,
                BPF_MAP_TYPE_HASH,
                4,
                size_of::<VipRecord>(),
                sizes.vips,
            ),
            (
                map_names::MEMBERS,
                BPF_MAP_TYPE_HASH,
                4,
                size_of::<MemberRecord>(),
                sizes.members,
            ),
            (
                map_names::CONNTRACK,
                BPF_MAP_TYPE_LRU_HASH,
                size_of::<CtKey>(),
                size_of::<CtValue>(),
                sizes.conntrack,
            ),
            (
                map_names::FRAGS,
                BPF_MAP_TYPE_LRU_HASH,
                size_of::<FragKey>(),
                size_of::<FragValue>(),
                sizes.frags,
            ),
            (
                map_names::EXCLUSIONS,
                BPF_MAP_TYPE_LPM_TRIE,
                8,
                1,
                sizes.exclusions,
            ),
            (
                map_names::DEVMAP,
                BPF_MAP_TYPE_DEVMAP_HASH,
                4,
                0,
                sizes.devmap,
            ),
            (
                map_names::VIP_STATS,
                BPF_MAP_TYPE_PERCPU_ARRAY,
                4,
                size_of::<VipCounters>(),
                sizes.vips,
            ),
            (
                map_names::REASONS,
                BPF_MAP_TYPE_PERCPU_ARRAY,
                4,
                8,
                sipvip_common::REASON_SLOTS,
            ),
            (
                map_names::NEXTHOPS,
                BPF_MAP_TYPE_PERCPU_ARRAY,
                4,
                size_of::<NextHop>(),
                sipvip_common::NEXTHOP_SLOTS,
            ),
            (map_names::NEXTHOP_GEN, BPF_MAP_TYPE_ARRAY, 4, 4, 1),
            (
                map_names::PT_PORTS,
                BPF_MAP_TYPE_ARRAY,
                4,
                size_of::<sipvip_common::PassthroughPorts>(),
                sizes.vips * MAX_MEMBERS as u32,
            ),
            (
                map_names::IFACES,
                BPF_MAP_TYPE_ARRAY,
                4,
                size_of::<Iface>(),
                sipvip_common::IFACE_SLOTS,
            ),
            (
                map_names::SETTINGS,
                BPF_MAP_TYPE_ARRAY,
                4,
                size_of::<Settings>(),
                1,
            ),
        ];
        let mut maps = std::collections::HashMap::new();
        for (name, ty, key, value, max) in expect {
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
        let mut get = |name: &'static str| maps.remove(name).ok_or(DatapathError::MissingMap(name));
        fn typed<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            name: &'static str,
            m: aya::maps::Map,
        ) -> Result<T> {
            T::try_from(m).map_err(|source| DatapathError::Map { name, source })
        }
        Ok(Some(Datapath {
            vips: typed(map_names::VIPS, get(map_names::VIPS)?)?,
            members: typed(map_names::MEMBERS, get(map_names::MEMBERS)?)?,
            conntrack: typed(map_names::CONNTRACK, get(map_names::CONNTRACK)?)?,
            frags: typed(map_names::FRAGS, get(map_names::FRAGS)?)?,
            exclusions: typed(map_names::EXCLUSIONS, get(map_names::EXCLUSIONS)?)?,
            devmap: typed(map_names::DEVMAP, get(map_names::DEVMAP)?)?,
            vip_stats: typed(map_names::VIP_STATS, get(map_names::VIP_STATS)?)?,
            reasons: typed(map_names::REASONS, get(map_names::REASONS)?)?,
            nexthop_gen: typed(map_names::NEXTHOP_GEN, get(map_names::NEXTHOP_GEN)?)?,
            ifaces: typed(map_names::IFACES, get(map_names::IFACES)?)?,
            settings: typed(map_names::SETTINGS, get(map_names::SETTINGS)?)?,
            ebpf: None,
            logger: None,
        }))
    }

    /// Attaches `program` to `ifname` unless a pinned link already does, and pins the link
    /// under `dir`. `native_only` false falls back to generic XDP with a warning. Returns
    /// whether it attached now (false: adopted).
    pub fn attach_pinned(
        &mut self,
        program: &'static str,
        ifname: &str,
        mode: AttachMode,
        dir: &Path,
    ) -> Result<bool> {
        let link_path = dir.join(format!("link_{program}_{ifname}"));
        if PinnedLink::from_pin(&link_path).is_ok() {
            return Ok(false);
        }
        let prog_path = dir.join(format!("prog_{program}"));
        let mut pinned;
        let prog: &mut Xdp = match self.ebpf.as_mut() {
            Some(ebpf) => xdp_mut(ebpf, program)?,
            None => {
                pinned = Xdp::from_pin(&prog_path, aya_obj::programs::XdpAttachType::Interface)
                    .map_err(|source| DatapathError::Program {
                        name: program,
                        source,
                    })?;
                &mut pinned
            }
        };
        let first = match mode {
            AttachMode::Generic => XdpMode::Skb,
            _ => XdpMode::Driver,
        };
        let id = match prog.attach(ifname, first) {
            Ok(id) => id,
            Err(e) if mode == AttachMode::Auto => {
                tracing::warn!(interface = ifname, program, error = %e, "native XDP unsupported here; falling back to generic XDP");
                prog.attach(ifname, XdpMode::Skb)
                    .map_err(|source| DatapathError::Program {
                        name: program,
                        source,
                    })?
            }
            Err(source) => {
                return Err(DatapathError::Program {
                    name: program,
                    source,
                })
            }
        };
        let link = prog
            .take_link(id)
            .map_err(|source| DatapathError::Program {
                name: program,
                source,
            })?;
        let fd_link =
            aya::programs::links::FdLink::try_from(link).map_err(|e| DatapathError::Layout {
                dir: dir.to_path_buf(),
                what: format!("{program} on {ifname} is not a bpf_link and cannot be pinned: {e}"),
            })?;
        fd_link
            .pin(&link_path)
            .map_err(|e| pin_err(&link_path, e))?;
        Ok(true)
    }

    /// Detaches every pinned link under `dir` and removes every pin. Returns what it removed.
    pub fn remove_pins(dir: &Path) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(removed);
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
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

    /// A loaded program, e.g. for BPF_PROG_TEST_RUN.
    pub fn program(&self, name: &'static str) -> Result<&Xdp> {
        self.ebpf
            .as_ref()
            .ok_or(DatapathError::MissingProgram(name))?
            .program(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })
    }

    /// Attaches a program to an interface.
    pub fn attach(
        &mut self,
        program: &'static str,
        ifname: &str,
        mode: XdpMode,
    ) -> Result<XdpLinkId> {
        let ebpf = self
            .ebpf
            .as_mut()
            .ok_or(DatapathError::MissingProgram(program))?;
        xdp_mut(ebpf, program)?
            .attach(ifname, mode)
            .map_err(|source| DatapathError::Program {
                name: program,
                source,
            })
    }

    /// Detaches what [`Datapath::attach`] attached.
    pub fn detach(&mut self, program: &'static str, link: XdpLinkId) -> Result<()> {
        let ebpf = self
            .ebpf
            .as_mut()
            .ok_or(DatapathError::MissingProgram(program))?;
        xdp_mut(ebpf, program)?
            .detach(link)
            .map_err(|source| DatapathError::Program {
                name: program,
                source,
            })
    }

    /// Registers an interface the datapath runs on and may send by: the devmap entry for
    /// XDP_REDIRECT, and its MAC and first IPv4 address (read from the current network
    /// namespace) for the L2 acceptance rule and the ICMP errors it sends as the gateway.
    /// Call it again after the interface's MAC or address changes.
    pub fn add_egress(&mut self, ifindex: u32) -> Result<()> {
        let err = |what: String| DatapathError::Egress { ifindex, what };
        self.devmap
            .insert(ifindex, ifindex, None, 0)
            .map_err(|e| err(e.to_string()))?;
        let (mac, addr) = crate::netif::mac_and_ipv4(ifindex).map_err(|e| err(e.to_string()))?;
        let slot = sipvip_common::iface_slot(ifindex);
        let held = self
            .ifaces
            .get(&slot, 0)
            .map_err(map_err(map_names::IFACES))?;
        // The slot may hold this interface, nothing, or one that no longer exists.
        if held.ifindex != 0 && held.ifindex != ifindex && crate::netif::name(held.ifindex).is_ok()
        {
            return Err(err(format!(
                "shares datapath interface slot {slot} with ifindex {}; the datapath serves \
                 interfaces whose ifindex differs modulo {}: recreate one of them",
                held.ifindex,
                sipvip_common::IFACE_SLOTS
            )));
        }
        let rec = Iface {
            mac,
            _pad: 0,
            addr_be: addr.map(be32).unwrap_or(0),
            ifindex,
        };
        self.ifaces
            .set(slot, rec, 0)
            .map_err(map_err(map_names::IFACES))
    }

    /// The interface records in use.
    pub fn interfaces(&self) -> Result<Vec<Iface>> {
        Ok(self
            .ifaces
            .iter()
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(map_err(map_names::IFACES))?
            .into_iter()
            .filter(|i| i.ifindex != 0)
            .collect())
    }

    /// How long a first fragment's decision holds for its later fragments.
    pub fn set_frag_lifetime(&mut self, lifetime: std::time::Duration) -> Result<()> {
        let s = Settings {
            frag_lifetime: time_units(lifetime.as_nanos().min(u128::from(u64::MAX)) as u64).max(1),
            _pad: 0,
        };
        self.settings
            .set(0, s, 0)
            .map_err(map_err(map_names::SETTINGS))
    }

    /// The fragment table's entry for one datagram, if any.
    pub fn frag_entry(&self, key: &FragKey) -> Result<Option<FragValue>> {
        match self.frags.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(map_names::FRAGS)(e)),
        }
    }

    /// Starts a new next-hop generation: the datapath asks the kernel's FIB again for each
    /// destination on its next packet (a route or neighbour change takes effect). With
    /// `enabled` false, the datapath asks the FIB for every packet. Returns the generation.
    pub fn refresh_nexthops(&mut self, enabled: bool) -> Result<u32> {
        let current = self
            .nexthop_gen
            .get(&0, 0)
            .map_err(map_err(map_names::NEXTHOP_GEN))?;
        let next = if enabled {
            current.wrapping_add(1).max(1)
        } else {
            0
        };
        self.nexthop_gen
            .set(0, next, 0)
            .map_err(map_err(map_names::NEXTHOP_GEN))?;
        Ok(next)
    }

    /// Installs or replaces a VIP and its members.
    pub fn install_vip(&mut self, spec: &VipSpec) -> Result<()> {
        spec.check()?;
        for slot in 0..spec.members.len() {
            let key = be32(spec.members[slot].addr);
            self.members
                .insert(key, spec.member_record(slot), 0)
                .map_err(map_err(map_names::MEMBERS))?;
        }
        self.vips
            .insert(be32(spec.addr), spec.record(spec.active, None), 0)
            .map_err(map_err(map_names::VIPS))
    }

    /// Removes a VIP and its members.
    pub fn remove_vip(&mut self, spec: &VipSpec) -> Result<()> {
        self.vips
            .remove(&be32(spec.addr))
            .map_err(map_err(map_names::VIPS))?;
        for m in &spec.members {
            self.members
                .remove(&be32(m.addr))
                .map_err(map_err(map_names::MEMBERS))?;
        }
        Ok(())
    }

    /// The VIP's record as the datapath sees it.
    pub fn vip_record(&self, vip: Ipv4Addr) -> Result<VipRecord> {
        self.vips
            .get(&be32(vip), 0)
            .map_err(|_| DatapathError::UnknownVip(vip))
    }

    /// Makes `member` (an address with a slot in `spec`) the active member of the VIP, or
    /// none. One map-value write: the datapath sees the old or the new record, never a mix.
    pub fn set_active(&mut self, spec: &VipSpec, member: Option<Ipv4Addr>) -> Result<()> {
        self.set_active_draining(spec, member, None)
    }

    /// Sets the active member, with `draining` (a healthy member the VIP moves away from)
    /// keeping the TCP service connections it had; see `VipRecord::draining_be`.
    pub fn set_active_draining(
        &mut self,
        spec: &VipSpec,
        member: Option<Ipv4Addr>,
        draining: Option<Ipv4Addr>,
    ) -> Result<()> {
        let slot = |member: Option<Ipv4Addr>| match member {
            Some(addr) => spec
                .members
                .iter()
                .position(|m| m.addr == addr)
                .map(Some)
                .ok_or(DatapathError::UnknownMember {
                    vip: spec.addr,
                    member: addr,
                }),
            None => Ok(None),
        };
        let record = spec.record(slot(member)?, slot(draining)?);
        self.vips
            .insert(be32(spec.addr), record, 0)
            .map_err(map_err(map_names::VIPS))
    }

    /// Adds a host (`prefix` 32) or CIDR to the SNAT exclusions.
    pub fn add_exclusion(&mut self, net: Ipv4Addr, prefix: u8) -> Result<()> {
        let key = Key::new(u32::from(prefix), be32(net));
        self.exclusions
            .insert(&key, 1, 0)
            .map_err(map_err(map_names::EXCLUSIONS))
    }

    pub fn remove_exclusion(&mut self, net: Ipv4Addr, prefix: u8) -> Result<()> {
        let key = Key::new(u32::from(prefix), be32(net));
        self.exclusions
            .remove(&key)
            .map_err(map_err(map_names::EXCLUSIONS))
    }

    /// Every conntrack entry.
    pub fn conntrack(&self) -> Result<Vec<(CtKey, CtValue)>> {
        self.conntrack
            .iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(map_err(map_names::CONNTRACK))
    }

    /// Removes every conntrack entry (as a daemon restart with fresh maps would).
    pub fn flush_conntrack(&mut self) -> Result<usize> {
        let keys: Vec<CtKey> = self.conntrack.keys().filter_map(|k| k.ok()).collect();
        for k in &keys {
            let _ = self.conntrack.remove(k);
        }
        Ok(keys.len())
    }

    /// Removes the conntrack entries that send traffic to `member`: replies of the flows it
    /// opened, and service connections tracked while another member drained (BIG-IP
    /// "Reselect" after a failover). Returns how many were removed.
    pub fn forget_member_flows(&mut self, member: Ipv4Addr) -> Result<usize> {
        let target = be32(member);
        let doomed: Vec<CtKey> = self
            .conntrack
            .iter()
            .filter_map(|e| e.ok())
            .filter(|(k, v)| {
                v.member_be == target
                    && (k.kind == sipvip_common::CT_SNAT || k.kind == sipvip_common::CT_STEER)
            })
            .map(|(k, _)| k)
            .collect();
        for k in &doomed {
            // An entry the LRU evicted meanwhile is already gone.
            let _ = self.conntrack.remove(k);
        }
        Ok(doomed.len())
    }

    /// Every fragment-tracking entry.
    pub fn frags(&self) -> Result<Vec<(FragKey, FragValue)>> {
        self.frags
            .iter()
            .collect::<std::result::Result<_, _>>()
            .map_err(map_err(map_names::FRAGS))
    }

    /// Per-reason counters summed over CPUs (only reasons with a non-zero count).
    pub fn reasons(&self) -> Result<BTreeMap<&'static str, u64>> {
        let mut out = BTreeMap::new();
        for r in Reason::ALL {
            let v: u64 = self
                .reasons
                .get(&(*r as u32), 0)
                .map_err(map_err(map_names::REASONS))?
                .iter()
                .sum();
            if v != 0 {
                out.insert(r.label(), v);
            }
        }
        Ok(out)
    }

    /// A VIP's traffic counters summed over CPUs.
    pub fn vip_counters(&self, vip_id: u32) -> Result<VipCounters> {
        let mut total = VipCounters::default();
        for c in self
            .vip_stats
            .get(&vip_id, 0)
            .map_err(map_err(map_names::VIP_STATS))?
            .iter()
        {
            add(&mut total, c);
        }
        Ok(total)
    }
}

fn add(t: &mut VipCounters, c: &VipCounters) {
    let sum = |a: &mut sipvip_common::Counter, b: &sipvip_common::Counter| {
        a.packets += b.packets;
        a.bytes += b.bytes;
    };
    sum(&mut t.vip_in, &c.vip_in);
    sum(&mut t.vip_out, &c.vip_out);
    for i in 0..MAX_SERVICES {
        sum(&mut t.service_in[i], &c.service_in[i]);
        sum(&mut t.service_out[i], &c.service_out[i]);
    }
    for i in 0..MAX_MEMBERS {
        sum(&mut t.member_in[i], &c.member_in[i]);
        sum(&mut t.member_out[i], &c.member_out[i]);
    }
}
