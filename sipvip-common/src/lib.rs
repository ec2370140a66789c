//! Map layouts shared by the sipvip kernel programs (`sipvip-ebpf`) and user space.
//!
//! Every type here is `#[repr(C)]` and defined once, so the two sides cannot disagree on a
//! layout. With the `user` feature each type implements `aya::Pod`.
//!
//! Byte order: fields ending in `_be` hold network-order bytes exactly as they appear in a
//! packet, loaded as a native integer (`u32::from_ne_bytes(octets)`). The datapath never
//! swaps bytes; user space converts once when it writes a map.
//!
//! Map names carry a layout version (`_V1`). Change the suffix whenever a layout changes, so
//! a daemon never adopts a pinned map whose layout it does not understand.
#![no_std]

/// Services (protocol and port) per VIP. The seed's defaults are udp/5060, tcp/5060, tcp/5061.
pub const MAX_SERVICES: usize = 8;
/// Pool members per VIP (a hot-standby pair needs 2).
pub const MAX_MEMBERS: usize = 8;
/// Pass-through source ports per member (T-Server listening ports and the like).
pub const MAX_PASSTHROUGH_PORTS: usize = 16;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Map names. Kernel map names are limited to 15 bytes.
pub mod map_names {
    /// The VIP records (`VipSlot`, an array) and the index that finds them by address
    /// (`vip_index_slot`, an array of record slots + 1). See `VipSlot`.
    pub const VIPS: &str = "SV_VIPS_V3";
    pub const VIP_INDEX: &str = "SV_VIPIDX_V1";
    /// The VIP records as hash map keyed by address, before `SV_VIPS_V3` (an older build's
    /// object, which the bench drives beside this one).
    pub const VIPS_HASH: &str = "SV_VIPS_V2";
    /// The member records (`MemberSlot`, an array) and their index, as the VIPs'.
    pub const MEMBERS: &str = "SV_MEMBERS_V2";
    pub const MEMBER_INDEX: &str = "SV_MEMIDX_V1";
    /// Before `SV_MEMBERS_V2`, as `VIPS_HASH`.
    pub const MEMBERS_HASH: &str = "SV_MEMBERS_V1";
    pub const CONNTRACK: &str = "SV_CT_V1";
    pub const FRAGS: &str = "SV_FRAGS_V2";
    pub const EXCLUSIONS: &str = "SV_EXCL_V1";
    pub const DEVMAP: &str = "SV_DEVMAP_V1";
    pub const VIP_STATS: &str = "SV_VSTATS_V3";
    pub const REASONS: &str = "SV_REASONS_V1";
    pub const NEXTHOPS: &str = "SV_NEXTHOP_V2";
    pub const NEXTHOP_GEN: &str = "SV_NHGEN_V1";
    pub const PT_PORTS: &str = "SV_PTPORTS_V1";
    pub const IFACES: &str = "SV_IFACES_V1";
    pub const SETTINGS: &str = "SV_SETTINGS_V1";
    /// Kernel-private per-CPU scratch (the parts of a decision only some packets need); user
    /// space never reads it, and its layout is the kernel crate's own.
    pub const PENDING: &str = "SV_PENDING_V1";
    /// The IPv6 twins of the address-keyed maps: the same records with 16-byte addresses
    /// (`VipRecord<Ipv6Be>`, ...). Counters, reasons, interfaces, pass-through port marks and
    /// settings are shared by both families.
    pub const VIPS6: &str = "SV_VIPS6_V2";
    pub const VIP_INDEX6: &str = "SV_VIPIDX6_V1";
    /// Before `SV_VIPS6_V2`, as `VIPS_HASH`.
    pub const VIPS6_HASH: &str = "SV_VIPS6_V1";
    pub const MEMBERS6: &str = "SV_MEMBERS6_V2";
    pub const MEMBER_INDEX6: &str = "SV_MEMIDX6_V1";
    /// Before `SV_MEMBERS6_V2`, as `VIPS_HASH`.
    pub const MEMBERS6_HASH: &str = "SV_MEMBERS6_V1";
    pub const CONNTRACK6: &str = "SV_CT6_V1";
    pub const FRAGS6: &str = "SV_FRAGS6_V1";
    pub const EXCLUSIONS6: &str = "SV_EXCL6_V1";
    pub const NEXTHOPS6: &str = "SV_NEXTHOP6_V2";
    pub const PENDING6: &str = "SV_PENDING6_V1";
    /// Kernel-private per-CPU scratch for the FIB lookup's parameters (kept off the BPF
    /// stack).
    pub const FIB_ARGS: &str = "SV_FIBARGS_V1";
    /// The IPv6 programs, by slot (`program_names::SLOT6_*`).
    pub const XDP6: &str = "SV_XDP6_V1";
    pub const TC6: &str = "SV_TC6_V1";
    /// Kernel-private per-CPU slot for the parsed IPv6 packet.
    pub const PACKET6: &str = "SV_PACKET6_V1";
    /// Each interface's own IPv6 address, by `iface_slot` (beside `SV_IFACES_V1`).
    pub const IFACES6: &str = "SV_IFACES6_V1";
    /// Behind ECMP: the gateway carrying the members' return path, which a packet without
    /// flow state here is handed to (`ReturnPath`).
    pub const RETURN_PATH: &str = "SV_RETPATH_V1";
    /// The flow trace (`sipvip trace`): its filter (`TraceFilter`), its events (a ring
    /// buffer of `TraceEvent`), each CPU's counters and rate window (`TraceCpu`), and each
    /// CPU's event under construction (kernel-private).
    pub const TRACE: &str = "SV_TRACE_V1";
    pub const TRACE_EVENTS: &str = "SV_TRACE_RB_V1";
    pub const TRACE_CPU: &str = "SV_TRACE_CPU_V1";
    pub const TRACE_SCRATCH: &str = "SV_TRACE_EVT_V1";
    /// The trace programs, slot 0 (`program_names::TRACE_XDP`, `TRACE_TC`).
    pub const TRACE_XDP: &str = "SV_TRACEX_V1";
    pub const TRACE_TC: &str = "SV_TRACET_V1";
    /// The flow cache (a per-CPU array of `FlowSlot`, in buckets of two ways: `flow_slot`,
    /// `flow_way`), the
    /// datapath's generation, and user space's generation and the slot mask
    /// (`FlowControl`). V4: a slot counts its entry's cached packets
    /// (`FlowSlot::packets`), and the array is memory-mapped (`BPF_F_MMAPABLE`) for the
    /// counters' readers.
    pub const FLOWS: &str = "SV_FLOWS_V4";
    /// Since V3 a global of the eBPF object in its own data section (`FLOW_GEN_SECTION`),
    /// one value: the datapath's generation.
    pub const FLOW_GEN: &str = "SV_FLOWGEN_V3";
    /// The section that holds the datapath's generation in the eBPF object.
    pub const FLOW_GEN_SECTION: &str = ".data.flowgen";
    /// The generations as a map of three slots (`FLOW_GEN_USER`, `FLOW_GEN_KERNEL`,
    /// `FLOW_SLOT_MASK`), in builds before `FLOW_GEN` was a global (a bench's baseline
    /// object).
    pub const FLOW_GEN_V2: &str = "SV_FLOWGEN_V2";
    /// Since V2 a global of the eBPF object in its own data section (`FLOW_CTL_SECTION`),
    /// which the loader takes as an array of one value and pins under this name.
    pub const FLOW_CTL: &str = "SV_FLOWCTL_V2";
    /// The section that holds the control value in the eBPF object.
    pub const FLOW_CTL_SECTION: &str = ".data.flowctl";
    /// The control value as a map, in builds before `FLOW_CTL` was a global (a bench's
    /// baseline object).
    pub const FLOW_CTL_V1: &str = "SV_FLOWCTL_V1";
    /// The flow cache's redirect targets: an array devmap indexed by `iface_slot`, which
    /// `add_egress` fills beside `DEVMAP` (a devmap hash keyed by ifindex, the rules' path's).
    pub const DEVMAP_SLOTS: &str = "SV_DEVSLOT_V1";
    /// The generations of builds before the per-CPU flow cache (two slots; their cache was
    /// an LRU hash, `SV_FLOWS_V1`): the bench drives such builds as baselines.
    pub const FLOW_GEN_V1: &str = "SV_FLOWGEN_V1";
    /// Every map, in a fixed order (for pinning and layout checks).
    pub const ALL: [&str; 41] = [
        VIPS,
        VIP_INDEX,
        MEMBERS,
        MEMBER_INDEX,
        CONNTRACK,
        FRAGS,
        EXCLUSIONS,
        DEVMAP,
        VIP_STATS,
        REASONS,
        NEXTHOPS,
        NEXTHOP_GEN,
        PT_PORTS,
        IFACES,
        SETTINGS,
        PENDING,
        VIPS6,
        VIP_INDEX6,
        MEMBERS6,
        MEMBER_INDEX6,
        CONNTRACK6,
        FRAGS6,
        EXCLUSIONS6,
        NEXTHOPS6,
        PENDING6,
        FIB_ARGS,
        XDP6,
        TC6,
        PACKET6,
        IFACES6,
        RETURN_PATH,
        TRACE,
        TRACE_EVENTS,
        TRACE_CPU,
        TRACE_SCRATCH,
        TRACE_XDP,
        TRACE_TC,
        FLOWS,
        FLOW_GEN,
        FLOW_CTL,
        DEVMAP_SLOTS,
    ];
}

/// Program names in the object file.
pub mod program_names {
    /// Attached to the external interface (phones, gateways, T-Lib clients).
    pub const EXTERNAL: &str = "sipvip_ext";
    /// Attached to the internal interface (the SIP server hosts).
    pub const INTERNAL: &str = "sipvip_int";
    /// TC egress on the uplink in on-node mode: SNAT of what the node sends.
    pub const NODE_OUT: &str = "sipvip_node_out";
    /// Returns XDP_PASS; attached to a veth peer so it accepts redirected frames.
    pub const PASS: &str = "sipvip_pass";
    /// The IPv6 programs each of the above tail-calls (never attached): in `SV_XDP6_V1` at
    /// `SLOT6_EXT` and `SLOT6_INT`, and in `SV_TC6_V1` at `SLOT6_NODE_OUT`.
    pub const EXTERNAL6: &str = "sipvip_ext6";
    pub const INTERNAL6: &str = "sipvip_int6";
    pub const NODE_OUT6: &str = "sipvip_node_out6";
    pub const SLOT6_EXT: u32 = 0;
    pub const SLOT6_INT: u32 = 1;
    pub const SLOT6_NODE_OUT: u32 = 0;
    /// The trace's last step, tail-called by the XDP programs (`SV_TRACEX_V1`) and the TC
    /// programs (`SV_TRACET_V1`) for a packet a running trace took.
    pub const TRACE_XDP: &str = "sipvip_trace_xdp";
    pub const TRACE_TC: &str = "sipvip_trace_tc";
}

/// Default map sizes (production sizes; each can be overridden at load time).
pub mod default_sizes {
    pub const VIPS: u32 = 256;
    pub const MEMBERS: u32 = 1024;
    pub const CONNTRACK: u32 = 1 << 20;
    pub const FRAGS: u32 = 65_536;
    pub const EXCLUSIONS: u32 = 65_536;
    pub const DEVMAP: u32 = 64;
    /// Flow cache slots per CPU (a power of two).
    pub const FLOWS: u32 = 1 << 16;
}

/// One service of a VIP: traffic to `VIP:port_be` over `proto` goes to the active member at
/// `member_port_be`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// IPPROTO_UDP or IPPROTO_TCP; 0 marks an unused slot.
    pub proto: u8,
    /// 1 when enabled. A disabled service's traffic is dropped (TLS-only mode).
    pub enabled: u8,
    pub _pad: u16,
    pub port_be: u16,
    pub member_port_be: u16,
}

/// A VIP's record, in a `VipSlot` of `SV_VIPS_V3` (IPv4) or `SV_VIPS6_V2`
/// (`VipRecord<Ipv6Be>`). A dual-stack VIP has one record in each, with the same `vip_id`
/// and the same active member (its address in each family).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipRecord<A = u32> {
    /// Index into `SV_VSTATS_V3`.
    pub vip_id: u32,
    /// Physical address of the active member; 0 when no member is active (traffic dropped).
    pub active_be: A,
    /// Slot of the active member within this VIP (0..MAX_MEMBERS), for counters.
    pub active_slot: u32,
    /// `VIP_F_*`.
    pub flags: u32,
    /// A healthy member the VIP was moved away from by an operator (BIG-IP "Forced
    /// Offline"): TCP connections to the services that were open before the move stay on
    /// it, new ones (a SYN) go to the active member and are tracked as `CT_STEER` flows. 0
    /// when nothing drains; the datapath then keeps no per-connection state.
    pub draining_be: A,
    pub draining_slot: u32,
    pub services: [Service; MAX_SERVICES],
}

/// A member's record, in a `MemberSlot` of `SV_MEMBERS_V2` found by its physical address;
/// `MemberRecord<Ipv6Be>` in `SV_MEMBERS6_V2`, by its IPv6 address, translated to the VIP's
/// IPv6 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberRecord<A = u32> {
    /// The VIP this member's outbound traffic is translated to.
    pub vip_be: A,
    pub vip_id: u32,
    /// Slot of this member within its VIP (0..MAX_MEMBERS), for counters.
    pub slot: u32,
    /// `MEMBER_F_*`.
    pub flags: u32,
    /// A copy of the VIP's services, so outbound traffic needs no second lookup.
    pub services: [Service; MAX_SERVICES],
    /// Source ports that are never SNATed (0 = unused).
    pub passthrough_ports_be: [u16; MAX_PASSTHROUGH_PORTS],
}

/// Outbound traffic from this member is SNATed to its VIP (the `snat.enabled` setting).
pub const MEMBER_F_SNAT: u32 = 1;
/// The member is a process on the node's own address (on-node mode, `port`s of its own):
/// only its service traffic is its own. Traffic from its other ports (the node's SSH, the
/// kubelet, anything else) is never translated, and flows to them are not tracked.
pub const MEMBER_F_SERVICE_ONLY: u32 = 2;

/// The VIP's members are on this node (on-node mode): packets toward them are rewritten
/// and handed to the kernel, which delivers them to a local process or routes them into
/// the member's veth, instead of being sent to a next hop by the datapath.
pub const VIP_F_LOCAL: u32 = 1;
/// On-node mode, the VIP's active member is on another node, which answers for the VIP:
/// what arrives here for it (a stale ARP entry's traffic) goes to the kernel untranslated,
/// which forwards it to the node that answers.
pub const VIP_F_SILENT: u32 = 2;
/// On-node mode, `interfaces.node_steering = "xdp-redirect"`: packets toward the members are
/// sent by the datapath into the member's veth (XDP redirect, as the gateway sends them to
/// its next hop); a member on the node's own address still goes to the kernel, translated.
pub const VIP_F_REDIRECT: u32 = 4;

/// Conntrack key kinds.
pub const CT_SNAT: u8 = 1;
pub const CT_PASSTHROUGH: u8 = 2;
pub const CT_STEER: u8 = 3;

/// Key of `SV_CT_V1` (an LRU hash).
///
/// - `CT_SNAT`: a flow a member opened through its VIP. `addr_a:port_a` is `VIP:port`,
///   `addr_b:port_b` the remote. Replies to `VIP:port` from the remote go to the member.
///   For ICMP echo, `port_a` is the echo identifier and `port_b` is 0.
/// - `CT_PASSTHROUGH`: a flow opened from outside to a member's physical address.
///   `addr_a:port_a` is the member, `addr_b:port_b` the remote. The member's packets in this
///   flow leave untouched.
/// - `CT_STEER`: a TCP connection to a VIP service opened while another member drains.
///   `addr_a:port_a` is `VIP:port`, `addr_b:port_b` the client. Its packets go to the member.
///
/// Generic over the address (`u32` for IPv4, the default and the only layout in a map today;
/// [`Ipv6Be`] for IPv6): one shape per family, so an IPv4 key stays 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey<A = u32> {
    pub addr_a_be: A,
    pub addr_b_be: A,
    pub port_a_be: u16,
    pub port_b_be: u16,
    pub proto: u8,
    pub kind: u8,
    pub _pad: u16,
}

/// Value of `SV_CT_V1`; generic over the address like [`CtKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtValue<A = u32> {
    pub member_be: A,
    /// Slot of the member within its VIP, for counters.
    pub slot: u32,
}

/// An IPv6 address in network order, as it lies in a packet: four 32-bit words in memory
/// order (not bytes, so that the datapath's compiler can keep one in registers). Convert with
/// [`ipv6_be`] and [`ipv6_octets`].
pub type Ipv6Be = [u32; 4];

/// The datapath's form of an address's octets.
#[inline(always)]
pub const fn ipv6_be(o: [u8; 16]) -> Ipv6Be {
    [
        u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
        u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
        u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
        u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
    ]
}

/// An address's octets from the datapath's form.
#[inline(always)]
pub const fn ipv6_octets(a: Ipv6Be) -> [u8; 16] {
    let (w0, w1, w2, w3) = (
        a[0].to_ne_bytes(),
        a[1].to_ne_bytes(),
        a[2].to_ne_bytes(),
        a[3].to_ne_bytes(),
    );
    [
        w0[0], w0[1], w0[2], w0[3], w1[0], w1[1], w1[2], w1[3], w2[0], w2[1], w2[2], w2[3], w3[0],
        w3[1], w3[2], w3[3],
    ]
}

const _: () = assert!(core::mem::size_of::<CtKey>() == 16);
const _: () = assert!(core::mem::size_of::<CtKey<Ipv6Be>>() == 40);

/// Fragment directions.
pub const FRAG_IN: u8 = 1;
pub const FRAG_OUT: u8 = 2;

/// Key of `SV_FRAGS_V2`: one IPv4 datagram being fragmented (RFC 791 identity).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src_be: u32,
    pub dst_be: u32,
    pub id_be: u16,
    pub proto: u8,
    pub dir: u8,
}

/// Key of `SV_FRAGS6_V1`: one IPv6 datagram being fragmented (RFC 8200, 4.5: source,
/// destination and the fragment header's 32-bit identification), as `FragKey` for IPv4.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey6 {
    pub src_be: Ipv6Be,
    pub dst_be: Ipv6Be,
    pub id_be: u32,
    pub proto: u8,
    pub dir: u8,
    pub _pad: u16,
}

/// What to do with every fragment of a datagram.
pub const FRAG_ACT_TRANSLATE: u8 = 1;
pub const FRAG_ACT_UNTOUCHED: u8 = 2;

/// Value of `SV_FRAGS_V2`: the decision a datagram's first fragment (offset 0) took. Only a
/// first fragment writes an entry, and it always replaces what is there: an entry that
/// exists when a first fragment arrives belongs to an older datagram with the same identity
/// (or is a duplicate). A later fragment follows the entry only while it is younger than
/// `Settings::frag_lifetime`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragValue<A = u32> {
    /// Inbound: the member's address (new destination). Outbound: the VIP (new source).
    pub addr_be: A,
    pub action: u8,
    /// Member slot for counters.
    pub slot: u8,
    /// Service slot for counters, or NO_SERVICE.
    pub service: u8,
    pub _pad: u8,
    /// When the first fragment passed, in `TIME_UNIT_SHIFT` units of
    /// bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC_COARSE).
    pub stamp: u32,
}

/// Coarse datapath time: `bpf_ktime_get_coarse_ns() >> TIME_UNIT_SHIFT` (CLOCK_MONOTONIC at
/// tick resolution, in units of 1.048576 ms, wrapping after about 52 days; ages are
/// compared with wrapping subtraction). The coarse clock reads no hardware clock.
pub const TIME_UNIT_SHIFT: u32 = 20;

/// Converts a duration in nanoseconds to datapath time units, rounding up.
#[inline(always)]
pub const fn time_units(ns: u64) -> u32 {
    let u = ns.div_ceil(1 << TIME_UNIT_SHIFT);
    if u > u32::MAX as u64 / 2 {
        u32::MAX / 2
    } else {
        u as u32
    }
}

/// The default fragment lifetime: 2 s. Reassembly takes milliseconds; Linux gives up after
/// 30 s (net.ipv4.ipfrag_time), but a datagram whose fragments are seconds apart is all but
/// lost anyway, and a short bound keeps a reused identity from inheriting an old decision.
pub const DEFAULT_FRAG_LIFETIME_NS: u64 = 2_000_000_000;

/// Value of `SV_SETTINGS_V1` (an array with one slot): datapath-wide settings user space
/// writes once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// How long a first fragment's decision holds for the later fragments, in
    /// `TIME_UNIT_SHIFT` units; 0 means the default (`DEFAULT_FRAG_LIFETIME_NS`).
    pub frag_lifetime: u32,
    pub _pad: u32,
}

/// The most other gateways a `ReturnPath` names (`ha.sync` lists at most one more).
pub const MAX_PEERS: usize = 15;

/// Value of `SV_RETPATH_V1` (a hash map with the one key 0, replaced whole by user space, so
/// the datapath never reads half of an update): behind ECMP the replies of a member-opened
/// flow, and a flow from outside to a member's own address, may reach a gateway before the
/// flow's conntrack entry does (`ha.sync`). Such a packet arriving on `ifindex` is handed,
/// untranslated, to the gateway that carries the members' return path (whose datapath saw
/// the flow's first packet from the member, or sees this one first): out of the same
/// interface (XDP_TX), from `smac` (this gateway's MAC there) to `dmac` (the other's). A
/// frame from one of `peers` (the other gateways' MACs on that link; unused slots zero,
/// packed) was handed over already and is never handed on. No key, or `ifindex` 0: this
/// gateway carries the return path itself, or none is known; the packet is dropped as
/// without the hand-over.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReturnPath {
    pub ifindex: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub peers: [[u8; 6]; MAX_PEERS],
    pub _pad: [u8; 2],
}

/// The most bytes of a frame a trace event carries, before and after the rewrite each.
pub const TRACE_SNAP_MAX: usize = 512;
/// Size of the trace's ring buffer (a power of two, a multiple of the page size).
pub const TRACE_RING_BYTES: u32 = 4 << 20;
/// The rate limit's window: a CPU emits at most `TraceFilter::per_window` events in each.
pub const TRACE_WINDOW_NS: u64 = 100_000_000;

/// `TraceFilter::flags`: which matches apply (all that are set must hold).
pub const TRACE_F_VIP: u32 = 1;
pub const TRACE_F_MEMBER: u32 = 2;
pub const TRACE_F_HOST: u32 = 4;
pub const TRACE_F_PORT: u32 = 8;
pub const TRACE_F_PROTO: u32 = 16;

/// `TraceEvent::side` and the bits of `TraceFilter::sides`.
pub const TRACE_SIDE_EXT: u8 = 0;
pub const TRACE_SIDE_INT: u8 = 1;
pub const TRACE_SIDE_NODE_OUT: u8 = 2;

/// Value of `SV_TRACE_V1` (an array with one slot): what a running trace wants to see; `on`
/// 0 when none runs (the only per-packet cost then: this slot's read). Addresses are in the
/// datapath's 16-byte form for both families (IPv4 in word 0, the rest 0), indexed by family
/// (0 IPv4, 1 IPv6); a packet matches an address match when its source, destination or
/// translated address, masked, equals one of the family's. An unused family has mask
/// all-ones and address 0, which no packet carries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceFilter {
    pub on: u32,
    pub flags: u32,
    /// Bytes of each frame copied, 1 to `TRACE_SNAP_MAX`.
    pub snap: u32,
    /// Events each CPU may emit per `TRACE_WINDOW_NS`.
    pub per_window: u32,
    /// Reasons traced: bit `Reason as u8`.
    pub reasons: u64,
    /// `TRACE_F_PORT`: a source or destination port, before or after (network order).
    pub port_be: u16,
    /// `TRACE_F_PROTO`: the L4 protocol (1 stands for ICMP and ICMPv6).
    pub proto: u8,
    /// Sides traced: bit `TRACE_SIDE_*`.
    pub sides: u8,
    pub _pad: u32,
    pub vip: [[u32; 4]; 2],
    pub member: [[u32; 4]; 2],
    pub host: [[u32; 4]; 2],
    pub host_mask: [[u32; 4]; 2],
}

/// Value of `SV_TRACE_CPU_V1` (a per-CPU array with one slot): the rate window and what the
/// trace saw on this CPU since user space zeroed it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceCpu {
    /// The current window (`ktime / TRACE_WINDOW_NS`) and the events emitted in it.
    pub window: u64,
    pub used: u64,
    /// Packets that passed every filter.
    pub matched: u64,
    pub emitted: u64,
    /// Matched, but past the window's budget.
    pub rate_limited: u64,
    /// Matched and within budget, but the ring buffer was full.
    pub lost: u64,
}

/// One traced packet, as the ring buffer carries it: when (`bpf_ktime_get_ns`), where (the
/// interface it arrived on, the side), what became of it (the program's return code and the
/// reason counted), and the frame's first bytes as it arrived (`before`) and as it left
/// (`after`: rewritten, or the answer the datapath built in its place; as it arrived when it
/// went to the kernel untouched or was dropped). User space reads the addresses and ports
/// out of the frames.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TraceEvent {
    pub ts_ns: u64,
    pub ifindex: u32,
    pub side: u8,
    pub reason: u8,
    pub _pad: u16,
    pub verdict: u32,
    /// Frame lengths, and the bytes captured of each.
    pub len: u32,
    pub len_after: u32,
    pub cap: u32,
    pub cap_after: u32,
    pub _pad2: u32,
    pub before: [u8; TRACE_SNAP_MAX],
    pub after: [u8; TRACE_SNAP_MAX],
}

/// A slot of the VIP records (`SV_VIPS_V3`, `SV_VIPS6_V2`; `VipSlot`), and likewise of the
/// member records (`MemberSlot`, see below): an array, so that finding a
/// VIP costs inlined array reads instead of a hash lookup's helper calls (the per-packet
/// cost of steering fell by about a fifth, see docs/architecture.md).
///
/// The index (`SV_VIPIDX_V1`, `SV_VIPIDX6_V1`, `VIP_INDEX_SLOTS` entries) holds, at the
/// VIP address's home slot (`vip_index_slot`) or one of the `VIP_PROBES - 1` after it, the
/// record's slot + 1 (0: empty). A lookup reads every probe slot (removal leaves holes) and
/// takes a record only when its `addr_be` is the address looked up.
///
/// User space changes a VIP by writing a whole new record into a slot no index entry names,
/// then pointing the VIP's index entry at it: one map-value write of one word, so a packet
/// sees the old record or the new one, never a mix. Even a torn read of that word can only
/// name a record whose address differs (another VIP's, or a free slot), which the address
/// check refuses. Freed slots are reused round-robin, so a record is rewritten only long
/// after the last packet that could have read it through an older index entry.
///
/// The member records (`SV_MEMBERS_V2`, `SV_MEMBERS6_V2`, `MemberSlot`) are kept the same way,
/// with their own indexes (`SV_MEMIDX_V1`, `SV_MEMIDX6_V1`, `MEMBER_INDEX_SLOTS` entries).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrSlot<A, R> {
    pub addr_be: A,
    pub rec: R,
}

pub type VipSlot<A = u32> = AddrSlot<A, VipRecord<A>>;
pub type MemberSlot<A = u32> = AddrSlot<A, MemberRecord<A>>;

/// Entries of each VIP index (a power of two; 16 per default VIP, so probe chains stay
/// short).
pub const VIP_INDEX_SLOTS: u32 = 4096;
/// Entries of each member index (16 per default member).
pub const MEMBER_INDEX_SLOTS: u32 = 16_384;
/// Index slots an address may lie in, from its home slot on.
pub const VIP_PROBES: u32 = 4;

/// An address's home slot in an index of `slots` entries (a power of two): a multiplicative
/// hash of the address (network order, as loaded; `fold6` for IPv6), the same in the kernel
/// and in user space.
#[inline(always)]
pub const fn index_slot(addr_be: u32, slots: u32) -> u32 {
    addr_be.wrapping_mul(0x9e37_79b1) >> (32 - slots.trailing_zeros())
}

/// An IPv6 address's four words folded into one, for `index_slot`.
#[inline(always)]
pub const fn fold6(addr_be: &Ipv6Be) -> u32 {
    addr_be[0] ^ addr_be[1].rotate_left(8) ^ addr_be[2].rotate_left(16) ^ addr_be[3].rotate_left(24)
}

/// The home slot of an IPv4 VIP in `SV_VIPIDX_V1`.
#[inline(always)]
pub const fn vip_index_slot(addr_be: u32) -> u32 {
    index_slot(addr_be, VIP_INDEX_SLOTS)
}

/// Slots of `SV_IFACES_V1` (a power of two).
pub const IFACE_SLOTS: u32 = 1024;

/// The `SV_IFACES_V1` slot of an interface: direct-mapped, so the per-packet lookup is an
/// inlined array access. User space refuses two interfaces in one slot.
#[inline(always)]
pub const fn iface_slot(ifindex: u32) -> u32 {
    ifindex & (IFACE_SLOTS - 1)
}

/// Value of `SV_IFACES_V1` (an array indexed by `iface_slot(ifindex)`): an interface the
/// programs are attached to, valid when `ifindex` matches. A frame is translated only when
/// its destination MAC is `mac`; ICMP errors the datapath sends as the gateway
/// (fragmentation needed, time exceeded) come from `addr_be` (0 when the interface has no
/// IPv4 address: the VIP is used instead).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Iface {
    pub mac: [u8; 6],
    pub _pad: u16,
    pub addr_be: u32,
    pub ifindex: u32,
}

/// Value of `SV_IFACES6_V1` (an array indexed like `SV_IFACES_V1`): the interface's own IPv6
/// address, which the datapath's ICMPv6 errors come from (0: none, the VIP's is used); valid
/// while the `SV_IFACES_V1` slot names the interface.
pub type Iface6 = Ipv6Be;

/// Buckets of member ports in `PassthroughPorts`.
pub const PT_PORT_BUCKETS: usize = 64;

/// Value of `SV_PTPORTS_V1` (an array indexed by `vip_id * MAX_MEMBERS + slot`): byte
/// `port % PT_PORT_BUCKETS` (host order) is set by the datapath before it records a
/// `CT_PASSTHROUGH` flow to that member port. The outbound side looks conntrack up for
/// pass-through flows only when the byte of its source port is set, so members whose service
/// ports never see flows to their physical address skip that lookup. Bytes are never cleared
/// while the datapath is loaded: a stale one only costs the lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassthroughPorts {
    pub seen: [u8; PT_PORT_BUCKETS],
}

/// The `SV_PTPORTS_V1` index and byte of a member port (network order).
#[inline(always)]
pub const fn pt_port_slot(vip_id: u32, member_slot: u32, port_be: u16) -> (u32, usize) {
    (
        vip_id * MAX_MEMBERS as u32 + member_slot,
        u16::from_be(port_be) as usize % PT_PORT_BUCKETS,
    )
}

/// Slots of `SV_NEXTHOP_V2` per CPU (a power of two).
pub const NEXTHOP_SLOTS: u32 = 1 << 14;

/// The slot of `SV_NEXTHOP6_V2` for an IPv6 destination: its four words folded into one,
/// then as `nexthop_slot`.
#[inline(always)]
pub const fn nexthop_slot6(dst_be: &Ipv6Be, ingress_ifindex: u32) -> u32 {
    let folded = dst_be[0] ^ dst_be[1].rotate_left(8) ^ dst_be[2].rotate_left(16) ^ dst_be[3];
    nexthop_slot(folded, ingress_ifindex)
}

/// The slot of `SV_NEXTHOP_V2` for a destination (network order) arriving on an ingress
/// device: Fibonacci hashing of the address in host order, so that consecutive addresses (a
/// subnet's hosts) land in distinct slots.
#[inline(always)]
pub const fn nexthop_slot(dst_be: u32, ingress_ifindex: u32) -> u32 {
    (u32::from_be(dst_be) ^ ingress_ifindex.wrapping_mul(0x85eb_ca6b)).wrapping_mul(0x9e37_79b1)
        >> (32 - NEXTHOP_SLOTS.trailing_zeros())
}

/// Value of `SV_NEXTHOP_V2` (and, with IPv6 destinations, of `SV_NEXTHOP6_V2`), a
/// direct-mapped per-CPU cache of the kernel FIB's answers (an array holding each CPU's
/// block of `NEXTHOP_SLOTS`, so a lookup is a few instructions, not a hash-map walk): the
/// entry at `nexthop_slot(dst, ingress)` of the running CPU's block holds the answer for `(dst_be, ingress_ifindex)`, valid while
/// `generation` equals the one in `SV_NHGEN_V1`. Another destination with the same slot
/// replaces it. User space bumps the generation on a timer (`forwarding.nexthop_refresh`),
/// so a route or neighbour change is picked up within one period; generation 0 turns the
/// cache off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop<A = u32> {
    pub dst_be: A,
    pub ingress_ifindex: u32,
    pub generation: u32,
    /// The egress device.
    pub ifindex: u32,
    /// The largest IP total length the FIB has accepted for this destination (host order):
    /// longer packets ask the FIB again, which checks them against the egress MTU.
    pub max_len: u16,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub _pad: u16,
}

/// Key of a flow cache slot (`FlowSlot`): an IPv4 TCP/UDP packet as it arrives at a hook
/// (`FLOW_HOOK_*`) on an interface. Addresses and ports in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_be: u32,
    pub dst_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub hook: u8,
    pub _pad: u16,
    pub ifindex: u32,
}

/// `FlowKey::hook`: the internal XDP program's packets, one slot per flow.
pub const FLOW_HOOK_INT: u8 = 1;
/// `FlowKey::hook`: the external XDP program's packets to a VIP's service, one slot per
/// service (the key's source address and port are 0): steering decides by the destination
/// alone, so every flow to a service shares its decision, however many phones send.
pub const FLOW_HOOK_EXT: u8 = 2;

/// `FlowEntry::action`: rewritten (`side`'s address to `addr_be`, its port to `port_be`),
/// then sent to the link.
pub const FLOW_TRANSLATE: u8 = 1;
/// Sent to the link untranslated (TTL and MACs only).
pub const FLOW_FORWARD: u8 = 2;
/// `FlowEntry::side`: the source address (and port) is rewritten.
pub const FLOW_SIDE_SRC: u8 = 0;
/// The destination address (and port) is rewritten.
pub const FLOW_SIDE_DST: u8 = 1;
/// `FlowEntry::state`: the decision read no flow state.
pub const FLOW_STATE_NONE: u8 = 0;
/// A member-opened flow's SNAT: the flow's conntrack entry (the replies' way back) is made
/// sure of, as the rules do, every `FLOW_REFRESH_EVERY` cached packets.
pub const FLOW_STATE_REFRESH: u8 = 1;
/// A pass-through flow (opened from outside to the member's own address): valid while its
/// conntrack entry exists.
pub const FLOW_STATE_REQUIRE: u8 = 2;

/// A flow cache entry (`FlowSlot`): a decision the rules made for a flow's first packet, complete
/// (rewrite, checksum deltas, link, counters), valid while both generations are the ones it
/// was decided under: user space's (`SV_FLOWCTL_V2`) and the datapath's (`SV_FLOWGEN_V3`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    pub gen_user: u32,
    pub gen_kernel: u32,
    /// The MAC the flow's first packet was addressed to: the ingress interface's, which the
    /// L2 acceptance rule checked then. A later packet addressed to it passes that rule
    /// (user space bumps the generation when an interface changes), so a hit takes the
    /// place of the rule's interface lookup. Compared with the key, as the word after it.
    pub own_mac: [u8; 6],
    /// The counters' cell (`FLOW_TRANSLATE`): the direction's row and the service's and
    /// member's cell in it, `flow_cell`, an index into the VIP's `VipCells::cells` taken
    /// flat (found once, where the rules decided).
    pub cell: u16,
    /// The new address (`FLOW_TRANSLATE`).
    pub addr_be: u32,
    /// The egress device.
    pub ifindex: u32,
    /// The counters' VIP (`FLOW_TRANSLATE`).
    pub vip_id: u32,
    /// The IPv4 header checksum's change (the address and the TTL decrement), as a folded
    /// one's-complement sum of `~old + new` words.
    pub ip_delta: u32,
    /// The TCP/UDP checksum's change (the address and the port).
    pub l4_delta: u32,
    /// The largest IP total length the next hop was found for (host order).
    pub max_len: u16,
    /// The new port on `side` (equal to the packet's when it does not change).
    pub port_be: u16,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub action: u8,
    pub side: u8,
    /// The `Reason` counted.
    pub reason: u8,
    pub state: u8,
    pub _pad: [u8; 4],
}

/// How often a member-opened flow's cached packets make sure of its replies' conntrack
/// entry (`FLOW_STATE_REFRESH`): every this many. The rules do it for the flow's first
/// packet of each flow cache generation, and a generation lasts at most
/// `forwarding.nexthop_refresh`; so an entry the conntrack LRU evicted is back within this
/// many of the flow's packets or that period, whichever comes first, where a lookup on every
/// packet cost the cached path a quarter of its time, and one on every 32nd (until
/// 2026-12-04) about 3% (README, "Performance"). A flow that sends fewer packets than this a
/// period gets the entry back with the period either way; a faster one within 256 packets
/// where it was 32. A power of two: told by the slot's count of the entry's cached packets
/// (`FlowSlot::packets`).
pub const FLOW_REFRESH_EVERY: u16 = 256;

/// One slot of `SV_FLOWS_V4`, the flow cache: an array holding each CPU's block of slots,
/// in buckets of two ways (a flow's own slot is `flow_slot(key) & mask` in the running
/// CPU's block, the mask in `SV_FLOWCTL_V2`, `FlowControl::mask`; the other way is the slot
/// beside it, `flow_way`), so a lookup is a few inlined instructions rather than a
/// hash-map helper call. A slot holds the entry of a flow that hashed to its bucket on
/// this CPU; its key tells which. Only its own CPU writes it, while the program runs with
/// preemption off.
///
/// A slot also counts its entry's cached packets (`packets`, `bytes`), where a cached packet
/// counted in its VIP's cell (`SV_VSTATS_V3`) or its reason's slot (`SV_REASONS_V1`) took a second
/// lookup: a hit's counting is then two adds in the slot the lane holds. The counts are
/// the entry's: its VIP's cell and its reason (`FLOW_TRANSLATE`), or its reason alone
/// (`FLOW_FORWARD`, whose `bytes` are not read). When another entry takes the slot, the
/// datapath moves the counts there first, zeroing the slot's before it adds (`flow::remember`).
/// Readers add every slot's counts to those (`Datapath::reasons`, `vip_counters`), reading
/// the VIPs' and reasons' values before the slots: a count moving meanwhile is then missed
/// by that read, never counted twice, and user space keeps what it reports from going back.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    pub key: FlowKey,
    pub entry: FlowEntry,
    /// Cached packets of the entry not yet moved into its VIP's cell or reason's slot.
    pub packets: u64,
    /// Their bytes (frame lengths, as the rules count), for a `FLOW_TRANSLATE` entry.
    pub bytes: u64,
}

/// A flow's slot in the flow cache before the mask. The key's fields as they lie (network
/// order, no byte swaps), in two 64-bit words: the addresses, and the ports, protocol and
/// interface, multiplied to spread; their xor folded (`x ^ x >> 32`, so that the upper
/// half, the destination's, reaches the low bits), multiplied again, and the product's
/// upper half taken. On the datapath that is a handful of 64-bit operations and two
/// multiplies, where mixing 32-bit words in host order took byte swaps and rotates (which
/// BPF has no instruction for).
#[inline(always)]
pub const fn flow_slot(k: &FlowKey) -> u32 {
    let addrs = k.src_be as u64 | (k.dst_be as u64) << 32;
    let rest = k.sport_be as u64
        | (k.dport_be as u64) << 16
        | (k.proto as u64) << 32
        | (k.ifindex as u64) << 40;
    let mut x = addrs ^ rest.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 32;
    (x.wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 32) as u32
}

/// Way `way` (0 or 1) of a flow's bucket in a CPU's block of the flow cache, from its
/// `flow_slot` and the block's mask: way 0 is the flow's own slot (`flow_slot & mask`), way 1
/// the slot beside it (the last bit flipped, under the mask: the own slot again while the
/// mask is 0). A bucket is the pair of slots whose indexes differ in the last bit; a flow is
/// looked up in its own slot, then in its neighbour.
#[inline(always)]
pub const fn flow_way(slot: u32, mask: u32, way: u32) -> u32 {
    ((slot & mask) ^ (way & 1)) & mask
}

/// A checksum field updated by a difference already folded to 16 bits (the flow cache
/// keeps its deltas so): `!csum` plus the difference is at most 0x1fffe, so one end-around
/// carry (the sum's upper half added back) folds it, where a raw sum takes two folds
/// (RFC 1624, eqn. 3: HC' = ~(~HC + m)). The same checksum as the two folds
/// (`folded_checksum_update_matches_two_folds`).
#[inline(always)]
pub const fn csum_update_folded(csum: u16, delta: u16) -> u16 {
    let s = (!csum) as u32 + delta as u32;
    !((s + (s >> 16)) as u16)
}

/// `SV_FLOWGEN_V2` slot of user space's generation in builds before `SV_FLOWCTL_V1` (a
/// bench's baseline object); this build keeps it in `FlowControl::gen`.
pub const FLOW_GEN_USER: u32 = 0;
/// The `SV_FLOWGEN_V2` slot the datapath bumps when it records a pass-through flow (the
/// member's replies on it are no longer SNATed), in builds before `SV_FLOWGEN_V3`; this
/// build's is that map's one value.
pub const FLOW_GEN_KERNEL: u32 = 1;
/// The slot of the flow cache's slot mask in builds before `SV_FLOWCTL_V1`; this build keeps
/// it in `FlowControl::mask`.
pub const FLOW_SLOT_MASK: u32 = 2;

/// Value of `SV_FLOWCTL_V1` (an array of one): what the flow cache's lane reads before a
/// lookup, in one value, written by user space only (the datapath's own generation,
/// `FLOW_GEN_KERNEL`, stays apart, so that no write of this value can undo a bump of it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowControl {
    /// The generation the lane compares an entry's `gen_user` with; 0 turns the lane off:
    /// the cache is off, or a trace runs (whose packets all take the rules' path).
    pub gen: u32,
    /// The slot mask (slots per CPU less one).
    pub mask: u32,
    /// The last generation given, which the next one follows, whatever `gen` was since
    /// (so that a generation is never given twice, and an entry decided under an old one
    /// never counts again after the cache was off). Only user space reads it.
    pub given: u32,
    /// The same for the next-hop cache's generation (`SV_NHGEN_V1`, 0 while that cache is
    /// off), whose entries the flow cache's hold copies of.
    pub nexthops_given: u32,
}

/// `FragValue::service` when the datagram is not service traffic.
pub const NO_SERVICE: u8 = 0xff;

/// Key of `SV_EXCL_V1` (an LPM trie): the address in network order.
pub type ExclusionAddr = u32;
/// Key of `SV_EXCL6_V1` (an LPM trie): the IPv6 address in network order.
pub type ExclusionAddr6 = Ipv6Be;

/// Packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// A VIP's cells of one direction: one per service and member pair, a service slot's row
/// and a member slot's column each with one more for "none" (see [`vip_cell`]).
pub const VIP_CELLS: usize = (MAX_SERVICES + 1) * (MAX_MEMBERS + 1);

/// The cell of a service slot and a member slot (anything from `MAX_SERVICES`, or
/// `MAX_MEMBERS`, up: none) in a direction's row of [`VipCells`].
#[inline(always)]
pub const fn vip_cell(service: u32, slot: u32) -> usize {
    let s = if (service as usize) < MAX_SERVICES {
        service as usize
    } else {
        MAX_SERVICES
    };
    let m = if (slot as usize) < MAX_MEMBERS {
        slot as usize
    } else {
        MAX_MEMBERS
    };
    s * (MAX_MEMBERS + 1) + m
}

/// A packet's counter cell in its VIP's `VipCells`, its rows taken flat: the direction's
/// row (0 in, toward a member; 1 out, from a member) and the service's and member's cell
/// in it (`vip_cell`).
#[inline(always)]
pub const fn flow_cell(out: bool, service: u32, slot: u32) -> usize {
    (out as usize) * VIP_CELLS + vip_cell(service, slot)
}

/// The member slot of a `flow_cell` (`MAX_MEMBERS`: none).
#[inline(always)]
pub const fn cell_member(cell: usize) -> usize {
    cell % VIP_CELLS % (MAX_MEMBERS + 1)
}

/// Value of `SV_VSTATS_V3` (a per-CPU array indexed by `vip_id`): a VIP's traffic, one
/// packet and byte counter per direction, service and member (`cells[0]` in, toward the
/// members; `cells[1]` out, from them), and the reasons of the packets counted in them
/// (`reasons`, by `Reason as u8`), so that a packet the datapath translates updates one
/// value, found in one lookup, for its traffic and its reason (a packet counted in no cell
/// counts its reason in `SV_REASONS_V1`). User space sums the cells into a VIP's, its
/// services' and its members' counters ([`VipCells::add_to`]) and adds `reasons` to the
/// datapath's reason counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipCells {
    pub cells: [[Counter; VIP_CELLS]; 2],
    pub reasons: [u64; REASON_SLOTS as usize],
}

impl Default for VipCells {
    fn default() -> Self {
        Self {
            cells: [[Counter::default(); VIP_CELLS]; 2],
            reasons: [0; REASON_SLOTS as usize],
        }
    }
}

impl VipCells {
    /// Adds the cells to the VIP's, the services' and the members' counters in `t`.
    pub fn add_to(&self, t: &mut VipCounters) {
        let add = |a: &mut Counter, b: &Counter| {
            a.packets += b.packets;
            a.bytes += b.bytes;
        };
        for (dir, row) in self.cells.iter().enumerate() {
            let (vip, services, members) = if dir == 0 {
                (&mut t.vip_in, &mut t.service_in, &mut t.member_in)
            } else {
                (&mut t.vip_out, &mut t.service_out, &mut t.member_out)
            };
            for (i, c) in row.iter().enumerate() {
                add(vip, c);
                if let Some(s) = services.get_mut(i / (MAX_MEMBERS + 1)) {
                    add(s, c);
                }
                if let Some(m) = members.get_mut(i % (MAX_MEMBERS + 1)) {
                    add(m, c);
                }
            }
        }
    }
}

/// A VIP's traffic counters, summed from its cells ([`VipCells`]): `in` is toward the
/// members, `out` is from them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipCounters {
    pub vip_in: Counter,
    pub vip_out: Counter,
    pub service_in: [Counter; MAX_SERVICES],
    pub service_out: [Counter; MAX_SERVICES],
    pub member_in: [Counter; MAX_MEMBERS],
    pub member_out: [Counter; MAX_MEMBERS],
}

/// What XDP does with a packet for a given reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Handed to the kernel.
    Pass,
    /// Dropped.
    Drop,
    /// Handled by the datapath (forwarded, translated or answered).
    Handled,
}

macro_rules! reasons {
    ($( $(#[$doc:meta])* $name:ident = $idx:literal, $label:literal, $disp:ident; )*) => {
        /// Every outcome the datapath counts, index into `SV_REASONS_V1` (a per-CPU array).
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            $( $(#[$doc])* $name = $idx, )*
        }

        impl Reason {
            pub const ALL: &'static [Reason] = &[ $( Reason::$name, )* ];

            /// The metric label.
            pub const fn label(self) -> &'static str {
                match self { $( Reason::$name => $label, )* }
            }

            pub const fn disposition(self) -> Disposition {
                match self { $( Reason::$name => Disposition::$disp, )* }
            }
        }
    };
}

reasons! {
    // ---- handled ----
    /// Service traffic to a VIP forwarded to the active member.
    Steered = 0, "steered", Handled;
    /// A reply to a member-opened flow forwarded from the VIP to the member (conntrack).
    ConntrackReply = 1, "conntrack_reply", Handled;
    /// Member traffic leaving with the VIP as source.
    Snat = 2, "snat", Handled;
    /// Member traffic to an excluded destination, forwarded untouched.
    Excluded = 3, "excluded", Handled;
    /// Member traffic on a pass-through port or pass-through flow, forwarded untouched.
    Passthrough = 4, "passthrough", Handled;
    /// ICMP echo to a VIP answered.
    EchoReply = 5, "echo_reply", Handled;
    /// ICMP error arriving for a VIP, translated and sent to the member.
    IcmpErrorIn = 6, "icmp_error_in", Handled;
    /// ICMP error from a member, translated to come from the VIP.
    IcmpErrorOut = 7, "icmp_error_out", Handled;
    /// A non-first fragment to a VIP forwarded along its datagram.
    FragIn = 8, "frag_in", Handled;
    /// A non-first fragment from a member forwarded along its datagram.
    FragOut = 9, "frag_out", Handled;
    /// A DF packet too big for the next hop's MTU: ICMP "fragmentation needed" sent back as
    /// the gateway, quoting the packet as it arrived.
    FragNeeded = 10, "frag_needed", Handled;
    /// A packet to a VIP with TTL <= 1 that would have been forwarded: ICMP time exceeded
    /// sent back as the gateway, quoting the packet as it arrived.
    TimeExceeded = 11, "time_exceeded", Handled;
    /// Behind ECMP: a packet of a flow this gateway has no state for (a reply to a
    /// member-opened flow, the first packets of a flow to a member's own address, an ICMP
    /// error about a member-opened flow), handed untranslated to the gateway carrying the
    /// members' return path (`SV_RETPATH_V1`), which has the state or records it.
    HandedOver = 15, "handed_over", Handled;
    // ---- IPv6 left to the kernel (slots 12-14 were free) ----
    /// An IPv6 packet the IPv6 programs do not take: they are not installed (an object
    /// loaded without them), or its datagram is longer than 65,535 octets. To the kernel
    /// untouched.
    PassIpv6 = 12, "pass_ipv6", Pass;
    /// ICMPv6 Neighbor Discovery or router traffic (RFC 4861: types 133-137): always the
    /// kernel's.
    PassNd = 13, "pass_nd", Pass;
    /// An IPv6 packet with more extension headers than the datapath walks
    /// (`MAX_IPV6_EXT_HEADERS`), or one it cannot read past (ESP, an unknown header): to the
    /// kernel untouched, never steered.
    PassIpv6Ext = 14, "pass_ipv6_ext", Pass;
    // ---- passed to the kernel ----
    /// Neither IPv4 nor IPv6 (ARP, ...).
    PassNotIpv4 = 16, "pass_not_ipv4", Pass;
    /// External side: not for a VIP (transit, the gateway itself).
    PassNotVip = 17, "pass_not_vip", Pass;
    /// External side: to a member's physical address (T-Lib, management); untouched.
    PassToMember = 18, "pass_to_member", Pass;
    /// Internal side: not from a member.
    PassNotMember = 19, "pass_not_member", Pass;
    /// Translated, but the next hop's neighbour is not resolved yet: the kernel forwards it.
    PassNoNeigh = 20, "pass_no_neigh", Pass;
    /// Translated, but the FIB says the kernel must handle it (too big, local, no route).
    PassFib = 21, "pass_fib", Pass;
    /// Translated 802.1Q frame: the kernel's VLAN device forwards it.
    PassVlan = 22, "pass_vlan", Pass;
    /// From a member with TTL <= 1: the kernel answers time exceeded.
    PassTtl = 23, "pass_ttl", Pass;
    /// From a member: a protocol the datapath leaves alone (not TCP, UDP or ICMP).
    PassOtherProto = 24, "pass_other_proto", Pass;
    /// From a member to one of the VIPs (hairpin), left to the kernel.
    PassToVip = 25, "pass_to_vip", Pass;
    /// ICMP from a member that is neither an echo request nor an error of a known flow.
    PassIcmp = 26, "pass_icmp", Pass;
    /// The destination MAC is another host's (flooding, a mirror port), or the interface is
    /// not known to the datapath: untouched, the kernel drops it as PACKET_OTHERHOST.
    PassOtherHost = 27, "pass_other_host", Pass;
    /// A broadcast or multicast frame: never translated.
    PassL2Multicast = 28, "pass_l2_multicast", Pass;
    /// To an IPv4 broadcast or multicast address (255.255.255.255, 224.0.0.0/4, a subnet's
    /// broadcast address): never translated, never forwarded as if routed.
    PassBroadcast = 29, "pass_broadcast", Pass;
    /// From a member on the node's own address, not from one of its service ports: the
    /// node's own traffic, never translated.
    PassNotService = 30, "pass_not_service", Pass;
    /// On-node mode: for a VIP another node answers for; the kernel forwards it there.
    PassNotOwner = 31, "pass_not_owner", Pass;
    // ---- dropped ----
    /// Frame shorter than its Ethernet/802.1Q header.
    DropMalformedEth = 32, "drop_malformed_eth", Drop;
    /// Bad IPv4 header: version, IHL, total length.
    DropMalformedIp = 33, "drop_malformed_ip", Drop;
    /// L4 header truncated.
    DropTruncatedL4 = 34, "drop_truncated_l4", Drop;
    /// To a VIP port that is no enabled service and no known flow.
    DropVipClosed = 35, "drop_vip_closed", Drop;
    /// To a VIP with a protocol it does not serve.
    DropVipProto = 36, "drop_vip_proto", Drop;
    /// The VIP has no active member (all down, drop policy).
    DropNoActive = 37, "drop_no_active", Drop;
    /// To a VIP with TTL <= 1.
    DropTtl = 38, "drop_ttl", Drop;
    /// The FIB has no usable route (blackhole, unreachable, prohibited).
    DropFib = 39, "drop_fib", Drop;
    /// ICMP error for a VIP about no known flow, or an unsupported ICMP type to a VIP.
    DropIcmp = 40, "drop_icmp", Drop;
    /// A martian address: a source in 0.0.0.0/8, 127.0.0.0/8 or 224.0.0.0/3 (multicast,
    /// reserved, broadcast), or a destination in 0.0.0.0/8 or 127.0.0.0/8.
    DropMartian = 41, "drop_martian", Drop;
    /// A later fragment to a VIP whose first fragment has not passed within the fragment
    /// lifetime: its ports are unknown, so it never reaches a member.
    DropFragOrphan = 42, "drop_frag_orphan", Drop;
    /// A malformed IPv6 packet: a truncated fixed header or extension header chain, a payload
    /// length past the frame, a jumbogram (payload length 0), or a non-final fragment whose
    /// length is not a multiple of 8 octets (RFC 8200, 4.5).
    DropMalformedIpv6 = 43, "drop_malformed_ipv6", Drop;
    /// A UDP datagram over IPv6 with checksum 0, which IPv6 does not allow (RFC 8200, 8.1):
    /// never translated or forwarded.
    DropUdpNoCsum = 44, "drop_udp_no_csum", Drop;
}

/// How many IPv6 extension headers the datapath walks before it leaves a packet to the kernel.
pub const MAX_IPV6_EXT_HEADERS: usize = 4;

/// Size of `SV_REASONS_V1`, and of `VipCells::reasons`.
pub const REASON_SLOTS: u32 = 48;
const _: () = {
    let mut i = 0;
    while i < Reason::ALL.len() {
        assert!((Reason::ALL[i] as u32) < REASON_SLOTS);
        i += 1;
    }
};

/// Layouts of the benchmark-only programs (sipvip-ebpf/src/bench.rs).
pub mod bench {
    /// The generator's template (addresses and ports in network order, as in the frame).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct GenCfg {
        pub dmac: [u8; 6],
        pub smac: [u8; 6],
        pub src_be: u32,
        pub dst_be: u32,
        /// Host order: how many consecutive source addresses, destination addresses and
        /// source ports to cycle through.
        pub n_src: u32,
        pub n_dst: u32,
        pub n_ports: u32,
        pub sport_base: u16,
        pub dport_be: u16,
        /// The frame's IP total length (host order).
        pub ip_len: u16,
        /// Flags and fragment offset as in the IP header (network order); 0 means DF.
        pub frag_be: u16,
    }

    /// What the sink (`bench_sink`) counts as a frame with the expected rewrite
    /// (`BENCH_EXPECT`); the rest it counts apart (`BENCH_BAD`), so a fast wrong path cannot
    /// look like a fast right one. `mode`: `EXPECT_ANY` (count everything), `EXPECT_DST` (the
    /// destination is `addr_be`: steering), `EXPECT_SRC` (the source is `addr_be` and the
    /// source port in `port_lo..port_hi`, host order: SNAT with the port kept).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Expect {
        pub mode: u32,
        pub addr_be: u32,
        pub port_lo: u16,
        pub port_hi: u16,
        pub _pad: u32,
    }
    pub const EXPECT_ANY: u32 = 0;
    pub const EXPECT_DST: u32 = 1;
    pub const EXPECT_SRC: u32 = 2;

    /// The floor's rewrite: the MACs, and the address it writes (the destination for
    /// `bench_floor`, the source for `bench_floor_out`).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct FloorCfg {
        pub dmac: [u8; 6],
        pub smac: [u8; 6],
        pub addr_be: u32,
    }

    /// How many leading bytes of a frame the cost harness restores before every run: enough
    /// for Ethernet, an IPv4 header with up to 8 bytes of options and a TCP/UDP header.
    pub const TEMPLATE_BYTES: usize = 64;

    /// The frame headers the cost harness writes back before every run (BPF_PROG_TEST_RUN
    /// with a repeat count runs the program again on its own rewritten output).
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct Template {
        pub bytes: [u8; TEMPLATE_BYTES],
    }

    const _: () = assert!(core::mem::size_of::<GenCfg>() == 40);
    const _: () = assert!(core::mem::size_of::<FloorCfg>() == 16);
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are #[repr(C)], Copy, contain no pointers, and every bit pattern is
    // valid; explicit padding fields leave no implicit holes.
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for VipRecord {}
    unsafe impl aya::Pod for VipSlot {}
    unsafe impl aya::Pod for VipSlot<super::Ipv6Be> {}
    unsafe impl aya::Pod for MemberSlot {}
    unsafe impl aya::Pod for MemberSlot<super::Ipv6Be> {}
    unsafe impl aya::Pod for MemberRecord {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowEntry {}
    unsafe impl aya::Pod for FlowSlot {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for CtKey<super::Ipv6Be> {}
    unsafe impl aya::Pod for CtValue<super::Ipv6Be> {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for FragValue {}
    unsafe impl aya::Pod for FragKey6 {}
    unsafe impl aya::Pod for FragValue<super::Ipv6Be> {}
    unsafe impl aya::Pod for VipRecord<super::Ipv6Be> {}
    unsafe impl aya::Pod for MemberRecord<super::Ipv6Be> {}
    unsafe impl aya::Pod for NextHop<super::Ipv6Be> {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for VipCells {}
    unsafe impl aya::Pod for FlowControl {}
    unsafe impl aya::Pod for NextHop {}
    unsafe impl aya::Pod for PassthroughPorts {}
    unsafe impl aya::Pod for Iface {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for ReturnPath {}
    unsafe impl aya::Pod for TraceFilter {}
    unsafe impl aya::Pod for TraceCpu {}
    unsafe impl aya::Pod for TraceEvent {}
    unsafe impl aya::Pod for bench::GenCfg {}
    unsafe impl aya::Pod for bench::FloorCfg {}
    unsafe impl aya::Pod for bench::Expect {}
    unsafe impl aya::Pod for bench::Template {}
}

// Layout guards: the kernel and user space compile these same assertions.
const _: () = assert!(core::mem::size_of::<ReturnPath>() == 16 + 6 * MAX_PEERS + 2);
const _: () = assert!(core::mem::size_of::<TraceFilter>() == 32 + 4 * 32);
const _: () = assert!(core::mem::size_of::<TraceEvent>() == 40 + 2 * TRACE_SNAP_MAX);
const _: () = assert!(core::mem::size_of::<Service>() == 8);
const _: () = assert!(core::mem::size_of::<VipRecord>() == 24 + 8 * MAX_SERVICES);
const _: () = assert!(
    core::mem::size_of::<MemberRecord>() == 16 + 8 * MAX_SERVICES + 2 * MAX_PASSTHROUGH_PORTS
);
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 20);
const _: () = assert!(core::mem::size_of::<FlowEntry>() == 60);
const _: () = assert!(core::mem::size_of::<FlowSlot>() == 96);
const _: () = assert!(core::mem::offset_of!(FlowSlot, packets) == 80);
const _: () = assert!(core::mem::size_of::<FlowControl>() == 16);
const _: () = assert!(default_sizes::FLOWS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<NextHop>() == 32);
const _: () = assert!(NEXTHOP_SLOTS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<CtValue>() == 8);
const _: () = assert!(core::mem::size_of::<FragKey>() == 12);
const _: () = assert!(core::mem::size_of::<FragValue>() == 12);
const _: () = assert!(core::mem::size_of::<Iface>() == 16);
const _: () = assert!(IFACE_SLOTS.is_power_of_two());
const _: () = assert!(VIP_INDEX_SLOTS.is_power_of_two());
const _: () = assert!(MEMBER_INDEX_SLOTS.is_power_of_two());
const _: () =
    assert!(core::mem::size_of::<MemberSlot>() == 4 + core::mem::size_of::<MemberRecord>());
const _: () = assert!(core::mem::size_of::<VipSlot>() == 4 + core::mem::size_of::<VipRecord>());
const _: () = assert!(core::mem::size_of::<VipSlot<Ipv6Be>>() == 16 + 48 + 8 * MAX_SERVICES);
const _: () = assert!(core::mem::size_of::<Settings>() == 8);
// The IPv6 twins: no implicit padding either.
const _: () = assert!(core::mem::size_of::<VipRecord<Ipv6Be>>() == 48 + 8 * MAX_SERVICES);
const _: () = assert!(
    core::mem::size_of::<MemberRecord<Ipv6Be>>()
        == 28 + 8 * MAX_SERVICES + 2 * MAX_PASSTHROUGH_PORTS
);
const _: () = assert!(core::mem::size_of::<FragKey6>() == 40);
const _: () = assert!(core::mem::size_of::<FragValue<Ipv6Be>>() == 24);
const _: () = assert!(core::mem::size_of::<NextHop<Ipv6Be>>() == 44);
const _: () = assert!(core::mem::size_of::<CtValue<Ipv6Be>>() == 20);
const _: () =
    assert!(core::mem::size_of::<VipCounters>() == 16 * (2 + 2 * MAX_SERVICES + 2 * MAX_MEMBERS));
const _: () =
    assert!(core::mem::size_of::<VipCells>() == 16 * 2 * VIP_CELLS + 8 * REASON_SLOTS as usize);

#[cfg(test)]
mod nexthop_tests {
    use super::*;

    #[test]
    fn consecutive_addresses_get_distinct_slots() {
        let base = u32::from_be_bytes([198, 18, 128, 0]);
        let mut seen = [false; NEXTHOP_SLOTS as usize];
        let mut distinct = 0;
        for n in 0..4096u32 {
            let slot = nexthop_slot((base + n).to_be(), 7) as usize;
            distinct += usize::from(!seen[slot]);
            seen[slot] = true;
        }
        assert_eq!(distinct, 4096);
    }

    /// A bucket's two ways are a slot and the one beside it, in the block under the mask
    /// (both the one slot when the mask is 0), whatever the hash's bits above the mask.
    #[test]
    fn a_flows_two_ways_are_its_slot_and_the_one_beside_it() {
        for mask in [0u32, 1, 3, 0xffff] {
            for hash in [0u32, 1, 2, 0x1234_5677, 0xffff_fffe, u32::MAX] {
                let (own, other) = (flow_way(hash, mask, 0), flow_way(hash, mask, 1));
                assert_eq!(own, hash & mask);
                assert!(other <= mask, "{hash:#x} under {mask:#x}: {other}");
                if mask == 0 {
                    assert_eq!(other, own);
                } else {
                    assert_eq!(
                        (own ^ other, own / 2),
                        (1, other / 2),
                        "{hash:#x}, {mask:#x}"
                    );
                }
                assert_eq!(
                    flow_way(other, mask, 1),
                    own,
                    "each is the other's other way"
                );
            }
        }
    }

    /// How many of the per-packet bench's 4,096 flows in turn (one member to one peer, the
    /// source port's low 12 bits varied) find no slot of their own in a CPU's 65,536:
    /// direct-mapped, those sharing their slot with another; in buckets of two ways, those
    /// in a bucket that more than two of them hash to. Printed for interface indexes
    /// 2-50 (`cargo test -p sipvip-common flows_taking_turns -- --nocapture`); two ways
    /// leave fewer than a quarter as many.
    #[test]
    fn flows_taking_turns_direct_mapped_and_in_two_ways() {
        const SLOTS: u32 = default_sizes::FLOWS;
        let (mut direct, mut two_ways, mut flows) = (0usize, 0usize, 0usize);
        for ifindex in 2..=50u32 {
            let mut per_slot = [0usize; SLOTS as usize];
            let mut per_bucket = [0usize; SLOTS as usize / 2];
            for port in 0..4096u16 {
                let k = FlowKey {
                    src_be: u32::from_be_bytes([198, 18, 1, 10]).to_be(),
                    dst_be: u32::from_be_bytes([198, 19, 2, 20]).to_be(),
                    sport_be: (0x9000 | port).to_be(),
                    dport_be: 5070u16.to_be(),
                    proto: IPPROTO_UDP,
                    hook: FLOW_HOOK_INT,
                    _pad: 0,
                    ifindex,
                };
                let own = flow_way(flow_slot(&k), SLOTS - 1, 0);
                per_slot[own as usize] += 1;
                per_bucket[own as usize / 2] += 1;
            }
            direct += per_slot.iter().filter(|n| **n > 1).sum::<usize>();
            two_ways += per_bucket.iter().filter(|n| **n > 2).sum::<usize>();
            flows += 4096;
        }
        // The crate is no_std; its tests may print through std.
        extern crate std;
        let pct = |n: usize| 100.0 * n as f64 / flows as f64;
        std::println!(
            "4,096 flows in {SLOTS} slots, interface indexes 2-50: {:.2}% share a slot \
             direct-mapped, {:.2}% find both ways of their bucket taken by others",
            pct(direct),
            pct(two_ways)
        );
        assert!(direct > 0 && two_ways * 4 < direct, "{direct} {two_ways}");
    }

    /// The bench's many-flows case: source addresses and ports of one subnet, to one VIP
    /// port. Direct-mapped, a flow cache of 65,536 slots holds most of 65,536 such flows.
    #[test]
    fn flows_of_one_subnet_spread_over_the_flow_slots() {
        const SLOTS: usize = default_sizes::FLOWS as usize;
        let slots = SLOTS as u32;
        let mut seen = [false; SLOTS];
        let mut distinct = 0;
        for n in 0..slots {
            let k = FlowKey {
                src_be: (u32::from_be_bytes([198, 18, 0, 0]) + n % 4096).to_be(),
                dst_be: u32::from_be_bytes([198, 19, 0, 10]).to_be(),
                sport_be: (10_000 + (n / 4096) as u16).to_be(),
                dport_be: 5060u16.to_be(),
                proto: IPPROTO_UDP,
                hook: FLOW_HOOK_INT,
                _pad: 0,
                ifindex: 7,
            };
            let slot = (flow_slot(&k) & (slots - 1)) as usize;
            distinct += usize::from(!seen[slot]);
            seen[slot] = true;
        }
        // A uniform hash fills 1 - 1/e of the slots (63%).
        assert!(
            distinct > slots as usize * 55 / 100,
            "{distinct} of {slots}"
        );
    }
}

#[cfg(test)]
mod vip_cell_tests {
    use super::*;

    /// Every pair of a service slot (or none) and a member slot (or none) has its own
    /// cell, and a cell's traffic is summed into the VIP, its service and its member only.
    #[test]
    fn a_flow_cell_names_its_member_slot() {
        for out in [false, true] {
            for service in 0..=MAX_SERVICES as u32 {
                for member in 0..MAX_MEMBERS as u32 {
                    let cell = flow_cell(out, service, member);
                    assert!(cell < 2 * VIP_CELLS);
                    assert_eq!(cell_member(cell), member as usize);
                }
                assert_eq!(cell_member(flow_cell(out, service, 0xff)), MAX_MEMBERS);
            }
        }
    }

    #[test]
    fn each_cell_counts_once_toward_its_vip_service_and_member() {
        let slots = |max: usize| (0..max as u32).chain([max as u32, 0xff, u32::MAX]);
        let mut seen = [false; VIP_CELLS];
        for service in slots(MAX_SERVICES) {
            for member in slots(MAX_MEMBERS) {
                let i = vip_cell(service, member);
                assert!(i < VIP_CELLS);
                let named = (service as usize) < MAX_SERVICES && (member as usize) < MAX_MEMBERS;
                if named {
                    assert!(!seen[i], "two pairs share cell {i}");
                }
                seen[i] = true;
                for dir in 0..2 {
                    let mut v = VipCells::default();
                    v.cells[dir][i] = Counter {
                        packets: 3,
                        bytes: 700,
                    };
                    let mut t = VipCounters::default();
                    v.add_to(&mut t);
                    v.add_to(&mut t);
                    let c = Counter {
                        packets: 6,
                        bytes: 1400,
                    };
                    let (vip, services, members, other) = if dir == 0 {
                        (t.vip_in, t.service_in, t.member_in, t.vip_out)
                    } else {
                        (t.vip_out, t.service_out, t.member_out, t.vip_in)
                    };
                    assert_eq!(vip, c);
                    assert_eq!(other, Counter::default());
                    for (s, got) in services.iter().enumerate() {
                        let want = if s as u32 == service {
                            c
                        } else {
                            Counter::default()
                        };
                        assert_eq!(*got, want, "service {s} of cell ({service}, {member})");
                    }
                    for (m, got) in members.iter().enumerate() {
                        let want = if m as u32 == member {
                            c
                        } else {
                            Counter::default()
                        };
                        assert_eq!(*got, want, "member {m} of cell ({service}, {member})");
                    }
                }
            }
        }
        assert!(seen.iter().all(|s| *s), "every cell is some pair's");
    }
}

#[cfg(test)]
mod csum_tests {
    use super::csum_update_folded;

    /// Two folds of `!csum + raw`, then the complement: the rules' path's update.
    fn two_folds(csum: u16, raw: u32) -> u16 {
        let mut s = u32::from(!csum) + raw;
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        !(s as u16)
    }

    fn fold(raw: u32) -> u16 {
        let mut s = (raw & 0xffff) + (raw >> 16);
        s = (s & 0xffff) + (s >> 16);
        s as u16
    }

    /// Every checksum, with the raw differences of up to six rewritten words (each `~old +
    /// new`, at most 0x1fffe) at and around their edges and spread between.
    #[test]
    fn folded_checksum_update_matches_two_folds() {
        let edges = [
            0,
            1,
            0xfffe,
            0xffff,
            0x1_0000,
            0x1_fffe,
            0x2_fffd,
            6 * 0x1_fffe,
        ];
        let mut x: u32 = 0x9e37_79b9;
        let spread = core::iter::repeat_with(move || {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            x % (6 * 0x1_fffe + 1)
        });
        for raw in edges.into_iter().chain(spread.take(200)) {
            for csum in 0..=u16::MAX {
                assert_eq!(
                    csum_update_folded(csum, fold(raw)),
                    two_folds(csum, raw),
                    "csum {csum:#x}, raw {raw:#x}"
                );
            }
        }
    }
}
