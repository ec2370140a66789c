//! The configuration file (TOML), mirroring BIG-IP objects: interfaces (VLANs), monitors,
//! VIPs with their services (virtual servers) and members (pool members / nodes), SNAT with
//! exclusions (SNAT pool, iRule and data groups), pass-through ports and the admin endpoints.
//!
//! `Config::parse` reports every problem at once, each with its location and what was
//! expected. Unknown keys are errors.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

pub use crate::{datapath::AttachMode, proto::Protocol};

mod diagnose;

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: `line L, column C`, followed for semantic problems by the key path, such as
    /// `line 52, column 11, vip[0] (vsVipHa01).member[1] (nodeHa01Backup).address`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found in a config file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {} problem(s)", self.file, self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// A duration written as "250ms", "1s", "1.5s" or "2m".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("duration {s:?} needs a unit: ms, s or m (e.g. \"1s\")"))?;
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("duration {s:?}: {num:?} is not a number"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("duration {s:?}: unit must be ms, s or m")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Interfaces {
    /// Phones, SIP devices, T-Lib clients (BIG-IP VLAN dc1ext).
    pub external: String,
    /// Toward the SIP server hosts (BIG-IP VLAN dc2sip); one or more.
    /// Gateway mode: one or more. Node mode: usually none (members' traffic leaves by the
    /// external interface, where TC egress translates it).
    #[serde(default)]
    pub internal: Vec<String>,
    #[serde(default)]
    pub xdp_mode: AttachMode,
    #[serde(default)]
    pub mode: Mode,
    /// Node mode: how VIP traffic reaches a member in a pod.
    #[serde(default)]
    pub node_steering: NodeSteering,
    /// Node mode: how the TC egress program is attached (`auto`: tcx where the kernel has
    /// it, Linux 6.6+, else clsact).
    #[serde(default)]
    pub tc_attach: crate::datapath::TcAttach,
}

/// Node mode: how VIP traffic reaches a member behind a veth (`interfaces.node_steering`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NodeSteering {
    /// Rewritten in XDP, then handed to the kernel, which routes it into the veth: works
    /// whatever runs on the pod's side.
    #[default]
    Kernel,
    /// Rewritten and redirected by XDP straight into the member's veth, skipping the kernel's
    /// forwarding. The pod's side of the veth must accept redirected frames (an XDP program
    /// or GRO on it, the CNI's settings); otherwise they are lost. Members on the node's own
    /// address still go through the kernel.
    XdpRedirect,
}

/// Where the members are (`interfaces.mode`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A gateway in front of the SIP server hosts (in place of a BIG-IP): XDP on the
    /// external and internal interfaces, the datapath forwarding between them.
    #[default]
    Gateway,
    /// The members are on this node (a Kubernetes DaemonSet, or the seed's two SIP Server
    /// instances on one host): XDP on the external interface (the uplink) steers VIP
    /// traffic to the active member and hands it to the kernel, which delivers it to a local
    /// process or routes it into the member's veth; TC egress on the same interface SNATs
    /// what the members send.
    Node,
}

/// What a monitor probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MonitorKind {
    /// SIP OPTIONS (BIG-IP `ltm monitor sip`).
    Sip {
        transport: Protocol,
        /// Default: the member's first service port for this transport, else 5060.
        port: Option<u16>,
        /// Default: `sip:<member address>:<port>`.
        request_uri: Option<String>,
        /// Default: `<sip:sipvip@<gateway address>>`.
        from: Option<String>,
        headers: Vec<String>,
        /// Status codes that mean up; empty (the default) means any response is up, as
        /// the seed configures ("Additional Accepted Status Codes: Any").
        accept: Vec<u16>,
        /// Status codes that mean down (checked first).
        reject: Vec<u16>,
    },
    /// TCP connect (BIG-IP `ltm monitor tcp`, monSipTls): connected means up, RST down.
    Tcp { port: u16 },
    /// ICMP echo (BIG-IP `icmp`, `gateway-icmp`).
    Icmp,
}

fn default_transport() -> Protocol {
    Protocol::Udp
}

/// A health monitor (BIG-IP `ltm monitor`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(from = "MonitorDef")]
pub struct Monitor {
    pub name: String,
    pub interval: Dur,
    pub timeout: Dur,
    /// Consecutive valid replies before a down member comes up (BIG-IP time-until-up);
    /// default 1.
    pub rise: Option<u32>,
    /// Consecutive unanswered probes that take a member down before `timeout` expires.
    pub fall: Option<u32>,
    pub kind: MonitorKind,
    /// Also probe the IPv6 address of a dual-stack VIP's members: a member is then up only
    /// while it answers on both.
    pub ipv6: bool,
}

/// The file form of a monitor: `type = "sip" | "tcp" | "icmp"` with that type's keys.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum MonitorDef {
    Sip {
        name: String,
        interval: Dur,
        timeout: Dur,
        rise: Option<u32>,
        fall: Option<u32>,
        #[serde(default = "default_transport")]
        transport: Protocol,
        port: Option<u16>,
        request_uri: Option<String>,
        from: Option<String>,
        #[serde(default)]
        headers: Vec<String>,
        #[serde(default)]
        accept: Vec<u16>,
        #[serde(default)]
        reject: Vec<u16>,
        #[serde(default)]
        ipv6: bool,
    },
    Tcp {
        name: String,
        interval: Dur,
        timeout: Dur,
        rise: Option<u32>,
        fall: Option<u32>,
        port: u16,
        #[serde(default)]
        ipv6: bool,
    },
    Icmp {
        name: String,
        interval: Dur,
        timeout: Dur,
        rise: Option<u32>,
        fall: Option<u32>,
        #[serde(default)]
        ipv6: bool,
    },
}

impl From<MonitorDef> for Monitor {
    fn from(d: MonitorDef) -> Self {
        match d {
            MonitorDef::Sip {
                name,
                interval,
                timeout,
                rise,
                fall,
                transport,
                port,
                request_uri,
                from,
                headers,
                accept,
                reject,
                ipv6,
            } => Monitor {
                name,
                interval,
                timeout,
                rise,
                fall,
                ipv6,
                kind: MonitorKind::Sip {
                    transport,
                    port,
                    request_uri,
                    from,
                    headers,
                    accept,
                    reject,
                },
            },
            MonitorDef::Tcp {
                name,
                interval,
                timeout,
                rise,
                fall,
                port,
                ipv6,
            } => Monitor {
                name,
                interval,
                timeout,
                rise,
                fall,
                ipv6,
                kind: MonitorKind::Tcp { port },
            },
            MonitorDef::Icmp {
                name,
                interval,
                timeout,
                rise,
                fall,
                ipv6,
            } => Monitor {
                name,
                interval,
                timeout,
                rise,
                fall,
                ipv6,
                kind: MonitorKind::Icmp,
            },
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub protocol: Protocol,
    pub port: u16,
    /// Default: the same port.
    pub member_port: Option<u16>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Service {
    /// How a member's `ports` names this service: `"udp/5060"`.
    pub fn key(&self) -> String {
        let proto = match self.protocol {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        };
        format!("{proto}/{}", self.port)
    }
}

fn yes() -> bool {
    true
}

/// How members named by `host` are resolved.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// The DNS servers to ask (`address:port`); empty: the system's (/etc/resolv.conf).
    #[serde(default)]
    pub servers: Vec<std::net::SocketAddr>,
    /// How often every `host` is resolved again (an address that changed reloads the
    /// configuration; a name that no longer resolves keeps its last address).
    #[serde(default = "default_dns_refresh")]
    pub refresh: Dur,
}

fn default_dns_refresh() -> Dur {
    Dur(Duration::from_secs(5))
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            servers: Vec::new(),
            refresh: default_dns_refresh(),
        }
    }
}

/// Whether `name` is a DNS name a member can be given by: dot-separated labels of letters,
/// digits and hyphens (not at a label's ends), at most 63 bytes each and 253 in all.
pub fn valid_host(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub name: String,
    /// The member's IPv4 address, on a VIP with an `address` (required there); or give
    /// `host` instead. None until a `host` or a local member's node address is resolved.
    pub address: Option<Ipv4Addr>,
    /// The member's IPv6 address, on a VIP with an `address6` (required there).
    pub address6: Option<Ipv6Addr>,
    /// A DNS name resolving to the member's one IPv4 address (a StatefulSet pod's name,
    /// `sip-0.sip.contact.svc.cluster.local`), instead of `address`: resolved at start and
    /// reload, and again every `dns.refresh`; an address change reloads the configuration.
    pub host: Option<String>,
    /// Higher is preferred when choosing a new active member (BIG-IP priority group).
    #[serde(default)]
    pub priority: i32,
    /// Overrides the VIP's monitors for this member.
    pub monitors: Option<Vec<String>>,
    /// Node mode: the member is a process on this node's own address (the seed's two SIP
    /// Server instances on one host). Without `address`, the external interface's address.
    /// Only its service ports are its own: the node's other traffic is never translated.
    #[serde(default)]
    pub local: bool,
    /// The member's own port for a VIP service, keyed `"udp/5060"`, where it differs from
    /// the service's `member_port` (a backup instance on 5070 beside a primary on 5060).
    #[serde(default)]
    pub ports: std::collections::BTreeMap<String, u16>,
}

impl Member {
    /// The member's port for service `s` of its VIP.
    pub fn port_for(&self, s: &Service) -> u16 {
        self.ports
            .get(&s.key())
            .copied()
            .unwrap_or(s.member_port.unwrap_or(s.port))
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AllDownPolicy {
    /// Keep steering to the last active member (BIG-IP keeps its last choice).
    #[default]
    KeepLast,
    /// Drop the VIP's service traffic.
    Drop,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    pub name: String,
    /// The VIP's IPv4 address. A VIP has `address`, `address6` or both; each member then
    /// has an address in each of the VIP's families.
    pub address: Option<Ipv4Addr>,
    /// The VIP's IPv6 address (an IPv6-only or dual-stack VIP): the same services and the
    /// same active member, reached over IPv6. Every member then needs an `address6`.
    pub address6: Option<Ipv6Addr>,
    /// Default: udp/5060, tcp/5060, tcp/5061.
    #[serde(default = "default_services", rename = "service")]
    pub services: Vec<Service>,
    #[serde(rename = "member")]
    pub members: Vec<Member>,
    /// Monitors every member must pass (BIG-IP pool monitors).
    #[serde(default)]
    pub monitors: Vec<String>,
    #[serde(default)]
    pub when_all_down: AllDownPolicy,
}

fn default_services() -> Vec<Service> {
    vec![
        Service {
            protocol: Protocol::Udp,
            port: 5060,
            member_port: None,
            enabled: true,
        },
        Service {
            protocol: Protocol::Tcp,
            port: 5060,
            member_port: None,
            enabled: true,
        },
        Service {
            protocol: Protocol::Tcp,
            port: 5061,
            member_port: None,
            enabled: true,
        },
    ]
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Snat {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Hosts ("198.18.1.50") and CIDRs ("198.18.100.0/24") never SNATed.
    #[serde(default)]
    pub exclusions: Vec<String>,
}

impl Default for Snat {
    fn default() -> Self {
        Snat {
            enabled: true,
            exclusions: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Passthrough {
    /// Members' source ports never SNATed (T-Server listening ports and the like).
    #[serde(default)]
    pub ports: Vec<u16>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Garp {
    /// Gratuitous ARPs sent for a VIP when it moves.
    #[serde(default = "default_garp_burst")]
    pub burst: u32,
    /// Spacing of the burst.
    #[serde(default = "default_garp_spacing")]
    pub spacing: Dur,
    /// Periodic refresh; none by default.
    pub refresh: Option<Dur>,
}

fn default_garp_burst() -> u32 {
    4
}
fn default_garp_spacing() -> Dur {
    Dur(Duration::from_millis(1000))
}

impl Default for Garp {
    fn default() -> Self {
        Garp {
            burst: default_garp_burst(),
            spacing: default_garp_spacing(),
            refresh: None,
        }
    }
}

/// How the datapath forwards.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Forwarding {
    /// How long the datapath reuses the kernel FIB's answer for a destination (egress
    /// device and MACs) before asking again; a route or neighbour change takes effect within
    /// this period. "0s" asks the FIB for every packet.
    #[serde(default = "default_nexthop_refresh")]
    pub nexthop_refresh: Dur,
    /// How long a fragmented datagram's first fragment decides for its later fragments. A
    /// later fragment that comes after this, or before its first fragment, is an orphan:
    /// dropped inbound, SNATed by default outbound (docs/architecture.md, "Fragments").
    #[serde(default = "default_fragment_lifetime")]
    pub fragment_lifetime: Dur,
    /// The flow cache: a member's flow's later packets take its first packet's decision in
    /// one lookup (docs/architecture.md, "Flow cache"). It runs while the next-hop cache does
    /// (`nexthop_refresh` above 0s); `false` turns it off, for comparison.
    #[serde(default = "default_flow_cache")]
    pub flow_cache: bool,
}

fn default_flow_cache() -> bool {
    true
}

fn default_nexthop_refresh() -> Dur {
    Dur(Duration::from_secs(1))
}

fn default_fragment_lifetime() -> Dur {
    Dur(Duration::from_nanos(
        sipvip_common::DEFAULT_FRAG_LIFETIME_NS,
    ))
}

impl Default for Forwarding {
    fn default() -> Self {
        Forwarding {
            nexthop_refresh: default_nexthop_refresh(),
            fragment_lifetime: default_fragment_lifetime(),
            flow_cache: default_flow_cache(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Prometheus metrics; loopback by default. "off" disables.
    #[serde(default = "default_metrics")]
    pub metrics: String,
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
}

pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/sipvip/sipvip.sock")
}
fn default_metrics() -> String {
    "127.0.0.1:9360".into()
}
pub fn default_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/sipvip")
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            socket: default_socket(),
            metrics: default_metrics(),
            pin_dir: default_pin_dir(),
        }
    }
}

/// Map sizes (production defaults).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    pub conntrack: Option<u32>,
    pub fragments: Option<u32>,
    pub exclusions: Option<u32>,
    /// The flow cache's slots per CPU, a power of two (default 65,536: 6 MiB per CPU, 96 bytes a slot).
    pub flows: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub interfaces: Interfaces,
    #[serde(default, rename = "monitor")]
    pub monitors: Vec<Monitor>,
    #[serde(rename = "vip")]
    pub vips: Vec<Vip>,
    #[serde(default)]
    pub snat: Snat,
    #[serde(default)]
    pub passthrough: Passthrough,
    #[serde(default)]
    pub garp: Garp,
    #[serde(default)]
    pub forwarding: Forwarding,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub sizes: Sizes,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub ownership: Ownership,
    #[serde(default)]
    pub ha: Ha,
    #[serde(default)]
    pub bgp: Bgp,
}

/// Scale-out behind ECMP (`sipvip::bgp`): the routes file a BIRD 2 routing daemon includes.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bgp {
    /// Where the announced VIP routes are written; none: no announcements.
    pub routes_file: Option<PathBuf>,
    /// The command run after the file changed (program and arguments).
    #[serde(default = "default_bgp_reload")]
    pub reload: Vec<String>,
    /// The members' own subnets (CIDR), announced while the datapath is healthy, so that
    /// traffic to the servers' own addresses (T-Lib, management) reaches them only through
    /// gateways that can track its flows.
    #[serde(default)]
    pub member_subnets: Vec<String>,
}

fn default_bgp_reload() -> Vec<String> {
    vec!["birdc".into(), "configure".into()]
}

impl Default for Bgp {
    fn default() -> Self {
        Bgp {
            routes_file: None,
            reload: default_bgp_reload(),
            member_subnets: Vec::new(),
        }
    }
}

/// Gateway high availability: who owns the VIPs' addresses.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Ha {
    #[serde(default)]
    pub mode: HaMode,
    /// Flow-state sync (`sipvip::sync`): every gateway's `address:port` on the gateways'
    /// own link, the same list on each; a gateway listens on its own (the one that is a
    /// local address) and sends its conntrack entries to the others. Empty: no sync (a
    /// member-opened or pass-through flow's first packet on the new gateway after a
    /// takeover must then come from the member).
    #[serde(default)]
    pub sync: Vec<String>,
    /// How often the new conntrack entries are sent (every entry again every 20 of them).
    #[serde(default = "default_sync_interval")]
    pub sync_interval: Dur,
    /// The floating addresses keepalived moves, `IFACE=ADDR/LEN`: `sipvip keepalived-config`
    /// writes them (with any `--floating`). Behind ECMP, the gateway holding an internal one
    /// (the members' default gateway) carries the members' return path: the others hand it
    /// the packets of flows they have no state for yet (`ha.sync` tells them which gateway
    /// that is).
    #[serde(default)]
    pub floating: Vec<String>,
}

fn default_sync_interval() -> Dur {
    Dur(Duration::from_millis(200))
}

impl Default for Ha {
    fn default() -> Self {
        Ha {
            mode: HaMode::default(),
            sync: Vec::new(),
            sync_interval: default_sync_interval(),
            floating: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HaMode {
    /// One gateway: the daemon adds the VIPs to the external interface and announces them.
    #[default]
    Single,
    /// A pair (or more) of gateways with this configuration, keepalived (VRRP) moving the
    /// VIPs' addresses between them: the daemon never adds them, and announces them
    /// (gratuitous ARP, unsolicited Neighbor Advertisements) only while keepalived says this
    /// gateway is the master (`sipvip ha-state`, from keepalived's notify hooks). Every
    /// gateway keeps its datapath attached, its maps current and its monitors running.
    Keepalived,
    /// Several gateways with this configuration, all active behind a router's ECMP: each
    /// announces the VIPs with BGP (`[bgp]`), so the daemon neither adds the VIPs' addresses
    /// to an interface nor announces them with ARP or NA.
    Ecmp,
}

/// On-node mode: which node answers for a VIP (see `sipvip::ownership`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Ownership {
    /// How long this node's member must have been the active one, without a break, before
    /// the node claims the VIP (it gives the VIP up at once). At least one monitor timeout
    /// plus one interval, so that no two nodes answer together.
    #[serde(default = "default_claim_after")]
    pub claim_after: Dur,
}

fn default_claim_after() -> Dur {
    Dur(Duration::from_secs(1))
}

impl Default for Ownership {
    fn default() -> Self {
        Ownership {
            claim_after: default_claim_after(),
        }
    }
}

/// A parsed exclusion, of either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

pub fn parse_prefix(s: &str) -> Result<Prefix, String> {
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a.trim().parse().map_err(|_| {
        format!(
            "{s:?} is not an address or CIDR (e.g. 198.18.1.50, 198.18.100.0/24 or \
             2001:db8:100::/48)"
        )
    })?;
    let bits: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let len = match l {
        None => bits,
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0-{bits}"))?,
    };
    let masked = match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    };
    if masked != addr {
        return Err(format!(
            "{s:?} has host bits set; did you mean {masked}/{len}?"
        ));
    }
    Ok(Prefix { addr, len })
}

/// Why an IPv6 address cannot be a VIP's or a member's, if it cannot: the datapath
/// translates unicast global (or unique local) addresses only.
pub fn unusable_ipv6(a: Ipv6Addr) -> Option<&'static str> {
    let seg = a.segments();
    if a.is_unspecified() {
        Some("the unspecified address (::) is not an address")
    } else if a.is_loopback() {
        Some("the loopback address (::1) never leaves the host")
    } else if a.is_multicast() {
        Some("a multicast address (ff00::/8) cannot be a unicast VIP or member")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some(
            "a link-local address (fe80::/10) is only valid on one link and is never routed; \
             use a global or unique local address",
        )
    } else if a.to_ipv4_mapped().is_some() {
        Some("an IPv4-mapped address (::ffff:0:0/96): give the IPv4 address as `address`")
    } else {
        None
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            problems: vec![Problem {
                location: "file".into(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `file` names it in messages. Every problem is
    /// reported, each with its line and column (see `diagnose`).
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        match diagnose::diagnose(text) {
            (Some(cfg), problems) if problems.is_empty() => Ok(cfg),
            (_, problems) => Err(ConfigError {
                file: file.to_string(),
                problems,
            }),
        }
    }

    /// Every semantic problem.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut p = |location: String, message: String| out.push(Problem { location, message });

        if self.interfaces.external.is_empty() {
            p(
                "interfaces.external".into(),
                "an interface name is required".into(),
            );
        }
        if self.interfaces.internal.is_empty() && self.interfaces.mode == Mode::Gateway {
            p(
                "interfaces.internal".into(),
                "at least one internal interface is required in gateway mode (members on this node: interfaces.mode = \"node\")".into(),
            );
        }
        if self.interfaces.node_steering != NodeSteering::Kernel
            && self.interfaces.mode != Mode::Node
        {
            p(
                "interfaces.node_steering".into(),
                "applies to interfaces.mode = \"node\" only".into(),
            );
        }
        for (i, name) in self.interfaces.internal.iter().enumerate() {
            if *name == self.interfaces.external {
                p(
                    format!("interfaces.internal[{i}]"),
                    format!("{name:?} is also the external interface"),
                );
            }
        }

        let lifetime = self.forwarding.fragment_lifetime.0;
        if lifetime < Duration::from_millis(10) || lifetime > Duration::from_secs(30) {
            p(
                "forwarding.fragment_lifetime".into(),
                format!(
                    "{} ms: use 10ms to 30s (Linux gives up reassembly after 30s)",
                    lifetime.as_millis()
                ),
            );
        }
        if self.ownership.claim_after.0 > Duration::from_secs(60) {
            p(
                "ownership.claim_after".into(),
                format!(
                    "{} ms: use 0s to 60s",
                    self.ownership.claim_after.0.as_millis()
                ),
            );
        }
        for (i, s) in self.ha.sync.iter().enumerate() {
            if s.parse::<SocketAddr>().is_err() {
                p(
                    format!("ha.sync[{i}]"),
                    format!("{s:?} is not an address:port (e.g. 198.18.2.2:9361)"),
                );
            }
        }
        if !self.ha.sync.is_empty() && self.ha.sync.len() < 2 {
            p(
                "ha.sync".into(),
                "list every gateway of the pair (at least two address:port)".into(),
            );
        }
        if !self.ha.sync.is_empty() && self.ha.mode == HaMode::Single {
            p(
                "ha.sync".into(),
                "flow-state sync is for several gateways: set ha.mode = \"keepalived\" or \"ecmp\""
                    .into(),
            );
        }
        if self.ha.sync.len() > sipvip_common::MAX_PEERS + 1 {
            p(
                "ha.sync".into(),
                format!(
                    "{} gateways: the datapath knows at most {} others",
                    self.ha.sync.len(),
                    sipvip_common::MAX_PEERS
                ),
            );
        }
        for (i, f) in self.ha.floating.iter().enumerate() {
            let at = format!("ha.floating[{i}]");
            match crate::keepalived::parse_floating(f) {
                Err(e) => p(at, e),
                Ok(_) if self.ha.mode == HaMode::Single => {
                    p(at, "floating addresses are keepalived's: set ha.mode = \"keepalived\" or \"ecmp\"".into())
                }
                Ok((ifc, _)) if self.ha.mode == HaMode::Ecmp && ifc == self.interfaces.external => {
                    p(at, format!("{ifc:?} is the external interface: with ha.mode = \"ecmp\" it is routed (BGP), and keepalived moves the internal floating addresses only"))
                }
                Ok((ifc, _))
                    if ifc != self.interfaces.external && !self.interfaces.internal.contains(&ifc) =>
                {
                    p(at, format!("{ifc:?} is not one of the configured interfaces"))
                }
                Ok(_) => {}
            }
        }
        if self.ha.mode == HaMode::Ecmp && self.bgp.routes_file.is_none() {
            p(
                "bgp.routes_file".into(),
                "ha.mode = \"ecmp\" announces the VIPs with BGP: name the routes file the routing daemon includes".into(),
            );
        }
        let si = self.ha.sync_interval.0;
        if si < Duration::from_millis(10) || si > Duration::from_secs(60) {
            p(
                "ha.sync_interval".into(),
                format!("{} ms: use 10ms to 60s", si.as_millis()),
            );
        }
        for (i, m) in self.bgp.member_subnets.iter().enumerate() {
            let at = format!("bgp.member_subnets[{i}]");
            match parse_prefix(m) {
                Err(e) => p(at, e),
                Ok(_) if self.bgp.routes_file.is_none() => {
                    p(at, "announced with the VIPs: set bgp.routes_file".into())
                }
                Ok(_) => {}
            }
        }
        if self.bgp.routes_file.is_some() && self.bgp.reload.is_empty() {
            p(
                "bgp.reload".into(),
                "the command that makes the routing daemon read the routes file again (e.g. [\"birdc\", \"configure\"])".into(),
            );
        }
        if self.bgp.routes_file.is_some() && self.interfaces.mode == Mode::Node {
            p(
                "bgp.routes_file".into(),
                "announcing VIPs with BGP is for gateways; in node mode the node hosting the active member answers for the VIP".into(),
            );
        }
        if self.ha.mode != HaMode::Single && self.interfaces.mode == Mode::Node {
            p(
                "ha.mode".into(),
                "\"keepalived\" and \"ecmp\" are for gateways; in node mode the node hosting \
                 the active member answers for the VIP (see [ownership])"
                    .into(),
            );
        }
        let dns = self.dns.refresh.0;
        if dns < Duration::from_millis(100) || dns > Duration::from_secs(3600) {
            p(
                "dns.refresh".into(),
                format!("{} ms: use 100ms to 60m", dns.as_millis()),
            );
        }
        let refresh = self.forwarding.nexthop_refresh.0;
        if refresh > Duration::from_secs(60)
            || (!refresh.is_zero() && refresh < Duration::from_millis(10))
        {
            p(
                "forwarding.nexthop_refresh".into(),
                format!(
                    "{} ms: use 10ms to 60s, or \"0s\" to ask the FIB for every packet",
                    refresh.as_millis()
                ),
            );
        }
        for (name, size) in [
            ("conntrack", self.sizes.conntrack),
            ("fragments", self.sizes.fragments),
            ("exclusions", self.sizes.exclusions),
            ("flows", self.sizes.flows),
        ] {
            if size == Some(0) {
                p(
                    format!("sizes.{name}"),
                    "0 entries: a map needs at least 1 (leave it out for the default)".into(),
                );
            }
        }
        if let Some(n) = self.sizes.flows {
            if n != 0 && !n.is_power_of_two() {
                p(
                    "sizes.flows".into(),
                    format!(
                        "{n} slots: the flow cache's slots per CPU are a power of two (such as {})",
                        // The power of two below `n` (`next_power_of_two` would overflow
                        // above 2^31).
                        1u32 << (u32::BITS - 1 - n.leading_zeros())
                    ),
                );
            }
        }

        let mut monitor_names = HashMap::new();
        for (i, m) in self.monitors.iter().enumerate() {
            let loc = format!("monitor[{i}] ({})", m.name);
            if monitor_names.insert(m.name.as_str(), i).is_some() {
                p(loc.clone(), format!("duplicate monitor name {:?}", m.name));
            }
            if m.interval.0.is_zero() {
                p(format!("{loc}.interval"), "must be greater than 0".into());
            }
            if m.timeout.0 < m.interval.0 {
                p(
                    format!("{loc}.timeout"),
                    format!(
                        "{:?} is shorter than the interval {:?}; expected timeout >= interval \
                         (BIG-IP recommends 3 x interval + 1)",
                        m.timeout.0, m.interval.0
                    ),
                );
            }
            if m.rise == Some(0) {
                p(format!("{loc}.rise"), "must be at least 1".into());
            }
            if m.fall == Some(0) {
                p(format!("{loc}.fall"), "must be at least 1".into());
            }
            match &m.kind {
                MonitorKind::Sip {
                    accept,
                    reject,
                    headers,
                    port,
                    ..
                } => {
                    for c in accept.iter().chain(reject) {
                        if !(100..=699).contains(c) {
                            p(
                                format!("{loc}.accept/reject"),
                                format!("status code {c} is not 100-699"),
                            );
                        }
                    }
                    for h in headers {
                        if !h.contains(':') || h.contains('\r') || h.contains('\n') {
                            p(
                                format!("{loc}.headers"),
                                format!("{h:?} is not a single \"Name: value\" header"),
                            );
                        }
                    }
                    if *port == Some(0) {
                        p(format!("{loc}.port"), "must be 1-65535".into());
                    }
                }
                MonitorKind::Tcp { port } if *port == 0 => {
                    p(format!("{loc}.port"), "must be 1-65535".into())
                }
                _ => {}
            }
        }

        if self.vips.is_empty() {
            p("vip".into(), "at least one [[vip]] is required".into());
        }
        let mut vip_addrs = HashMap::new();
        let mut vip_names = BTreeSet::new();
        let mut member_addrs: HashMap<IpAddr, String> = HashMap::new();
        for (i, v) in self.vips.iter().enumerate() {
            let loc = format!("vip[{i}] ({})", v.name);
            if !vip_names.insert(v.name.as_str()) {
                p(loc.clone(), format!("duplicate VIP name {:?}", v.name));
            }
            match v.address {
                None if v.address6.is_none() => p(
                    loc.clone(),
                    "a VIP needs `address` (IPv4), `address6` (IPv6) or both".into(),
                ),
                None => {}
                Some(a) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() => p(
                    format!("{loc}.address"),
                    format!("{a} cannot be a unicast VIP"),
                ),
                Some(a) if vip_addrs.insert(IpAddr::V4(a), i).is_some() => p(
                    format!("{loc}.address"),
                    format!("{a} is already another VIP's address"),
                ),
                Some(_) => {}
            }
            if let Some(a6) = v.address6 {
                if let Some(why) = unusable_ipv6(a6) {
                    p(format!("{loc}.address6"), format!("{a6}: {why}"));
                }
                if vip_addrs.insert(IpAddr::V6(a6), i).is_some() {
                    p(
                        format!("{loc}.address6"),
                        format!("{a6} is already another VIP's address"),
                    );
                }
            }
            if v.services.len() > sipvip_common::MAX_SERVICES {
                p(
                    format!("{loc}.service"),
                    format!(
                        "{} services; at most {}",
                        v.services.len(),
                        sipvip_common::MAX_SERVICES
                    ),
                );
            }
            let mut seen = BTreeSet::new();
            for (j, s) in v.services.iter().enumerate() {
                if s.port == 0 || s.member_port == Some(0) {
                    p(
                        format!("{loc}.service[{j}]"),
                        "ports must be 1-65535".into(),
                    );
                }
                if !seen.insert((s.protocol.number(), s.port)) {
                    p(
                        format!("{loc}.service[{j}]"),
                        format!("{:?}/{} is listed twice", s.protocol, s.port),
                    );
                }
            }
            if v.members.is_empty() {
                p(
                    format!("{loc}.member"),
                    "a VIP needs at least one member (primary and backup)".into(),
                );
            }
            if v.members.len() > sipvip_common::MAX_MEMBERS {
                p(
                    format!("{loc}.member"),
                    format!(
                        "{} members; at most {}",
                        v.members.len(),
                        sipvip_common::MAX_MEMBERS
                    ),
                );
            }
            let mut names = BTreeSet::new();
            for (j, m) in v.members.iter().enumerate() {
                let mloc = format!("{loc}.member[{j}] ({})", m.name);
                if !names.insert(m.name.as_str()) {
                    p(mloc.clone(), format!("duplicate member name {:?}", m.name));
                }
                if m.local {
                    if self.interfaces.mode != Mode::Node {
                        p(
                            format!("{mloc}.local"),
                            "a member on this node needs interfaces.mode = \"node\"".into(),
                        );
                    }
                    if m.host.is_some() {
                        p(
                            format!("{mloc}.host"),
                            "a local member is on this node's address; it has no `host`".into(),
                        );
                    }
                }
                for (key, port) in &m.ports {
                    if !v.services.iter().any(|s| s.key() == *key) {
                        p(
                            format!("{mloc}.ports"),
                            format!(
                                "{key:?} names no service of the VIP; its services: {:?}",
                                v.services.iter().map(Service::key).collect::<Vec<_>>()
                            ),
                        );
                    }
                    if *port == 0 {
                        p(
                            format!("{mloc}.ports"),
                            format!("{key}: ports must be 1-65535"),
                        );
                    }
                }
                match (v.address, &m.host, m.address) {
                    (None, Some(_), _) => p(
                        format!("{mloc}.host"),
                        "the VIP has no IPv4 address, and `host` names a member's IPv4 \
                         address: give the member's `address6`"
                            .into(),
                    ),
                    (None, None, Some(a)) => p(
                        format!("{mloc}.address"),
                        format!(
                            "{a}: the VIP has no IPv4 address to translate it to; give the \
                             VIP an `address` or remove this one"
                        ),
                    ),
                    (None, None, None) => {}
                    (Some(_), None, None) if m.local => {}
                    (Some(_), Some(_), Some(_)) => {
                        p(mloc.clone(), "give `address` or `host`, not both".into())
                    }
                    (Some(_), None, None) => p(
                        mloc.clone(),
                        "the VIP has an IPv4 address, so each member needs one: `address` or \
                         `host` is required"
                            .into(),
                    ),
                    (Some(_), Some(h), None) if !valid_host(h) => {
                        p(format!("{mloc}.host"), format!("{h:?} is not a DNS name"))
                    }
                    (Some(_), Some(_), None) => {}
                    (Some(vip), None, Some(a)) => {
                        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
                            p(
                                format!("{mloc}.address"),
                                format!("{a} cannot be a unicast member"),
                            );
                        } else if vip_addrs.contains_key(&IpAddr::V4(a)) || a == vip {
                            p(format!("{mloc}.address"), format!("{a} is a VIP address"));
                        } else if m.local {
                            // Local members share the node's address: their ports must
                            // differ (below).
                        } else if let Some(other) =
                            member_addrs.insert(IpAddr::V4(a), format!("{}/{}", v.name, m.name))
                        {
                            p(
                                format!("{mloc}.address"),
                                format!(
                                    "{a} is already member {other}; a member belongs to one VIP"
                                ),
                            );
                        }
                    }
                }
                match (v.address6, m.address6) {
                    // A local member without one takes the node's (resolve).
                    (Some(_), None) if m.local => {}
                    (Some(vip6), None) => p(
                        mloc.clone(),
                        format!(
                            "the VIP has an IPv6 address ({vip6}), so each member needs one: \
                             add `address6`, the member's IPv6 address"
                        ),
                    ),
                    (None, Some(a6)) => p(
                        format!("{mloc}.address6"),
                        format!(
                            "{a6}: the VIP has no IPv6 address to translate it to; give the \
                             VIP an `address6` or remove this one"
                        ),
                    ),
                    (Some(vip6), Some(a6)) => {
                        if let Some(why) = unusable_ipv6(a6) {
                            p(format!("{mloc}.address6"), format!("{a6}: {why}"));
                        }
                        if a6 == vip6 || vip_addrs.contains_key(&IpAddr::V6(a6)) {
                            p(format!("{mloc}.address6"), format!("{a6} is a VIP address"));
                        } else if let Some(other) =
                            member_addrs.insert(IpAddr::V6(a6), format!("{}/{}", v.name, m.name))
                        {
                            p(
                                format!("{mloc}.address6"),
                                format!(
                                    "{a6} is already member {other}; a member belongs to one VIP"
                                ),
                            );
                        }
                    }
                    (None, None) => {}
                }
                for mon in m.monitors.iter().flatten() {
                    if !monitor_names.contains_key(mon.as_str()) {
                        p(
                            format!("{mloc}.monitors"),
                            format!(
                                "unknown monitor {mon:?}; defined: {:?}",
                                self.monitor_list()
                            ),
                        );
                    }
                }
            }
            // Local members share the node's address: each (protocol, port) is one
            // member's, and their service ports together fit one member record.
            let mut owner: BTreeMap<(u8, u16), &str> = BTreeMap::new();
            let mut ports_in_record = 0;
            for m in v.members.iter().filter(|m| m.local) {
                for s in &v.services {
                    ports_in_record += 1;
                    let port = m.port_for(s);
                    if let Some(other) = owner.insert((s.protocol.number(), port), &m.name) {
                        if other != m.name {
                            p(
                                format!("{loc}.member ({})", m.name),
                                format!(
                                    "port clash: {} on this node is also member {other}'s; give one of them `ports` of its own",
                                    Service { port, ..s.clone() }.key()
                                ),
                            );
                        }
                    }
                }
            }
            if ports_in_record > sipvip_common::MAX_SERVICES {
                p(
                    format!("{loc}.member"),
                    format!(
                        "the local members have {ports_in_record} service ports together; at most {}",
                        sipvip_common::MAX_SERVICES
                    ),
                );
            }
            for mon in &v.monitors {
                if !monitor_names.contains_key(mon.as_str()) {
                    p(
                        format!("{loc}.monitors"),
                        format!(
                            "unknown monitor {mon:?}; defined: {:?}",
                            self.monitor_list()
                        ),
                    );
                }
            }
            if v.monitors.is_empty() && v.members.iter().any(|m| m.monitors.is_none()) {
                p(
                    format!("{loc}.monitors"),
                    "no monitor: list at least one (e.g. a SIP OPTIONS monitor like the seed's monSipUdp)".into(),
                );
            }
        }
        for (i, e) in self.snat.exclusions.iter().enumerate() {
            if let Err(m) = parse_prefix(e) {
                p(format!("snat.exclusions[{i}]"), m);
            }
        }
        if self.passthrough.ports.len() > sipvip_common::MAX_PASSTHROUGH_PORTS {
            p(
                "passthrough.ports".into(),
                format!(
                    "{} ports; at most {}",
                    self.passthrough.ports.len(),
                    sipvip_common::MAX_PASSTHROUGH_PORTS
                ),
            );
        }
        if self.passthrough.ports.contains(&0) {
            p("passthrough.ports".into(), "ports must be 1-65535".into());
        }
        if !(1..=10).contains(&self.garp.burst) {
            p(
                "garp.burst".into(),
                format!("{} gratuitous ARPs; expected 1-10", self.garp.burst),
            );
        }
        if self.admin.metrics != "off" && self.admin.metrics.parse::<SocketAddr>().is_err() {
            p(
                "admin.metrics".into(),
                format!(
                    "{:?} is not an address:port (e.g. 127.0.0.1:9360) or \"off\"",
                    self.admin.metrics
                ),
            );
        }
        out
    }

    fn monitor_list(&self) -> Vec<&str> {
        self.monitors.iter().map(|m| m.name.as_str()).collect()
    }

    pub fn monitor(&self, name: &str) -> Option<&Monitor> {
        self.monitors.iter().find(|m| m.name == name)
    }

    /// The monitors a member must pass.
    pub fn member_monitors<'a>(&'a self, vip: &'a Vip, member: &'a Member) -> Vec<&'a Monitor> {
        member
            .monitors
            .as_ref()
            .unwrap_or(&vip.monitors)
            .iter()
            .filter_map(|n| self.monitor(n))
            .collect()
    }

    pub fn exclusions(&self) -> Vec<Prefix> {
        self.snat
            .exclusions
            .iter()
            .filter_map(|e| parse_prefix(e).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../packaging/sipvip.example.toml");

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text, "t.toml") {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The example with `from` replaced by `to` (which must occur).
    fn example_with(from: &str, to: &str) -> String {
        assert!(EXAMPLE.contains(from), "{from:?} not in the example");
        EXAMPLE.replacen(from, to, 1)
    }

    #[test]
    fn the_example_config_is_valid() {
        let cfg = Config::parse(EXAMPLE, "example").unwrap();
        assert_eq!(cfg.vips[0].members.len(), 2);
        assert_eq!(cfg.monitors[0].interval, Dur(Duration::from_secs(1)));
        assert_eq!(cfg.monitors[0].timeout, Dur(Duration::from_secs(4)));
        assert!(matches!(
            cfg.monitors[1].kind,
            MonitorKind::Tcp { port: 5061 }
        ));
        assert_eq!(
            cfg.exclusions(),
            vec![Prefix {
                addr: Ipv4Addr::new(198, 18, 1, 50).into(),
                len: 32
            }]
        );
        let plan = crate::plan::Plan::new(&cfg);
        let spec = plan.vip(0, Some(0));
        assert_eq!(spec.services.len(), 3);
        assert_eq!(spec.members[0].passthrough_ports, vec![3000]);
        assert_eq!(plan.probes.len(), 2, "monSipUdp on each member");
    }

    #[test]
    fn floating_addresses_and_member_subnets_are_checked() {
        let ecmp = format!(
            "{EXAMPLE}\n[ha]\nmode = \"ecmp\"\nfloating = [\"int0=198.18.2.1/24\"]\n\n[bgp]\nroutes_file = \"/etc/bird/sipvip.conf\"\nmember_subnets = [\"198.18.2.0/24\"]\n"
        );
        assert_eq!(problems(&ecmp), Vec::<String>::new());
        let plan = crate::plan::Plan::new(&Config::parse(&ecmp, "t").unwrap());
        assert_eq!(plan.return_path, vec![IpAddr::from([198, 18, 2, 1])]);
        let bgp = plan.bgp.expect("bgp");
        assert_eq!(
            bgp.member_subnets,
            vec![(IpAddr::from([198, 18, 2, 0]), 24)]
        );
        // The external interface is routed behind ECMP; an unknown interface; no prefix
        // length; a subnet with host bits; floating addresses without keepalived.
        for (from, to, what) in [
            ("int0=198.18.2.1/24", "eth0=198.18.1.1/24", "ha.floating[0]"),
            ("int0=198.18.2.1/24", "int9=198.18.2.1/24", "ha.floating[0]"),
            ("int0=198.18.2.1/24", "int0=198.18.2.1", "ha.floating[0]"),
            (
                "\"198.18.2.0/24\"",
                "\"198.18.2.1/24\"",
                "bgp.member_subnets[0]",
            ),
            ("mode = \"ecmp\"\n", "mode = \"single\"\n", "ha.floating[0]"),
        ] {
            let p = problems(&ecmp.replacen(from, to, 1));
            assert!(p.iter().any(|p| p.contains(what)), "{to}: {p:?}");
        }
    }

    /// The example as the seed's one-host pair in node mode: both instances on the node's
    /// address, the backup on 5070/5071.
    fn one_host_pair(backup_ports: &str) -> String {
        example_with("internal = [\"int0\"]", "internal = []\nmode = \"node\"")
            .replacen("address = \"198.18.2.11\"", "local = true", 1)
            .replacen(
                "address = \"198.18.2.12\"",
                &format!("local = true\nports = {{ {backup_ports} }}"),
                1,
            )
    }

    #[test]
    fn members_on_the_node_itself() {
        let good = one_host_pair(r#""udp/5060" = 5070, "tcp/5060" = 5070, "tcp/5061" = 5071"#);
        assert_eq!(problems(&good), Vec::<String>::new());
        let cfg = Config::parse(&good, "t.toml").unwrap();
        assert_eq!(cfg.interfaces.mode, Mode::Node);
        let v = &cfg.vips[0];
        let ports: Vec<u16> = v
            .services
            .iter()
            .map(|s| v.members[1].port_for(s))
            .collect();
        assert_eq!(ports, vec![5070, 5070, 5071]);
        assert!(v.members[0].local && v.members[0].address.is_none());
        // Over IPv6 too: a dual-stack or IPv6-only VIP's local members take the node's IPv6
        // address later, as its IPv4 one.
        let dual = good.replace(
            "address = \"198.18.1.100\"",
            "address = \"198.18.1.100\"\naddress6 = \"2001:db8:a::100\"",
        );
        assert_ne!(dual, good);
        assert_eq!(problems(&dual), Vec::<String>::new());
        let only6 = good.replace(
            "address = \"198.18.1.100\"",
            "address6 = \"2001:db8:a::100\"",
        );
        let cfg6 = Config::parse(&only6, "t.toml").expect("an IPv6-only VIP in node mode");
        assert!(cfg6.vips[0]
            .members
            .iter()
            .all(|m| m.local && m.address6.is_none()));

        // A port clash names both members and the port.
        let clash = one_host_pair(r#""udp/5060" = 5070, "tcp/5060" = 5070"#);
        let p = problems(&clash);
        assert!(
            p.iter().any(|p| p.contains(
                "member (nodeHa01Backup): port clash: tcp/5061 on this node is also member nodeHa01Primary's"
            )),
            "{p:?}"
        );
        // Ports name the VIP's services; port 0 is no port.
        let p = problems(&one_host_pair(r#""udp/5070" = 5070, "tcp/5060" = 0"#));
        assert!(
            p.iter()
                .any(|p| p.contains("\"udp/5070\" names no service of the VIP")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("tcp/5060: ports must be 1-65535")),
            "{p:?}"
        );
        // A local member needs node mode.
        let gateway = example_with("address = \"198.18.2.11\"", "local = true");
        let p = problems(&gateway);
        assert!(
            p.iter()
                .any(|p| p.contains("a member on this node needs interfaces.mode = \"node\"")),
            "{p:?}"
        );
        let p = problems(&example_with(
            "xdp_mode = \"auto\"",
            "xdp_mode = \"auto\"\nnode_steering = \"xdp-redirect\"",
        ));
        assert!(
            p.iter().any(|p| p
                .contains("interfaces.node_steering: applies to interfaces.mode = \"node\" only")),
            "{p:?}"
        );
        // Node mode needs no internal interface; gateway mode does.
        let p = problems(&example_with("internal = [\"int0\"]", "internal = []"));
        assert!(
            p.iter()
                .any(|p| p.contains("at least one internal interface is required in gateway mode")),
            "{p:?}"
        );
    }

    #[test]
    fn members_by_host_name() {
        let named = example_with(
            "address = \"198.18.2.12\"",
            "host = \"sip-1.sip.contact.svc.cluster.local\"",
        );
        assert_eq!(problems(&named), Vec::<String>::new());
        let cfg = Config::parse(&named, "t.toml").unwrap();
        let m = &cfg.vips[0].members[1];
        assert_eq!(
            m.host.as_deref(),
            Some("sip-1.sip.contact.svc.cluster.local")
        );
        assert!(m.address.is_none(), "resolved later");
        assert_eq!(cfg.dns, Dns::default());

        let both = example_with(
            "address = \"198.18.2.12\"",
            "address = \"198.18.2.12\"\nhost = \"sip-1\"",
        );
        assert!(
            problems(&both)
                .iter()
                .any(|p| p
                    .contains("member[1] (nodeHa01Backup): give `address` or `host`, not both")),
            "{:?}",
            problems(&both)
        );
        let neither = example_with("address = \"198.18.2.12\"\n", "");
        assert!(
            problems(&neither)
                .iter()
                .any(|p| p.contains("`address` or `host` is required")),
            "{:?}",
            problems(&neither)
        );
        let bad = example_with("address = \"198.18.2.12\"", "host = \"sip_1..x\"");
        assert!(
            problems(&bad)
                .iter()
                .any(|p| p
                    .contains("member[1] (nodeHa01Backup).host: \"sip_1..x\" is not a DNS name")),
            "{:?}",
            problems(&bad)
        );
        let refresh = format!("{EXAMPLE}\n[dns]\nrefresh = \"10ms\"\n");
        assert!(
            problems(&refresh)
                .iter()
                .any(|p| p.contains("dns.refresh: 10 ms: use 100ms to 60m")),
            "{:?}",
            problems(&refresh)
        );
        assert!(valid_host("sip-0.sip.contact.svc.cluster.local."));
        assert!(!valid_host("-a.b") && !valid_host("") && !valid_host("a b"));
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let p = problems("[interfaces]\nexternal = \"ext0\nx");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("line 2, column "), "{p:?}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let p = problems(&example_with("priority = 10", "priority = 10\nweight = 3"));
        assert_eq!(
            p,
            vec!["line 58, column 1: unknown key `weight` (expected one of: name, address, address6, host, priority, monitors, local, ports)"]
        );
        let p = problems(&example_with(
            "port = 5061\ninterval",
            "port = 5061\nsend = \"x\"\ninterval",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("line 25, column 1: unknown key `send`"),
            "{p:?}"
        );
        let p = problems(&example_with("[garp]", "[grap]"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("line 74, column 2: unknown key `grap`; did you mean `garp`?"),
            "{p:?}"
        );
    }

    #[test]
    fn wrong_types_and_values() {
        let p = problems(&example_with(
            "address = \"198.18.2.11\"",
            "address = \"198.18.2.300\"",
        ));
        assert!(p[0].contains("invalid IPv4 address syntax"), "{p:?}");
        let p = problems(&example_with("interval = \"1s\"", "interval = \"1 sec\""));
        assert!(p[0].contains("unit must be ms, s or m"), "{p:?}");
        let p = problems(&example_with("interval = \"1s\"", "interval = 1"));
        assert!(
            p[0].contains("invalid type: integer `1`, expected a string"),
            "{p:?}"
        );
        let p = problems(&example_with("type = \"sip\"", "type = \"http\""));
        assert!(p[0].contains("unknown variant `http`"), "{p:?}");
    }

    #[test]
    fn timeout_shorter_than_interval() {
        let p = problems(&example_with("timeout = \"4s\"", "timeout = \"500ms\""));
        assert_eq!(
            p,
            vec!["line 18, column 11, monitor[0] (monSipUdp).timeout: 500ms is shorter than the interval 1s; expected timeout >= interval (BIG-IP recommends 3 x interval + 1)"]
        );
    }

    #[test]
    fn nexthop_refresh_bounds() {
        let p = problems(&example_with(
            "nexthop_refresh = \"1s\"",
            "nexthop_refresh = \"2m\"",
        ));
        assert_eq!(
            p,
            vec!["line 80, column 19, forwarding.nexthop_refresh: 120000 ms: use 10ms to 60s, or \"0s\" to ask the FIB for every packet"]
        );
        assert!(problems(&example_with(
            "nexthop_refresh = \"1s\"",
            "nexthop_refresh = \"0s\""
        ))
        .is_empty());
    }

    #[test]
    fn a_map_of_no_entries_is_refused() {
        let p = problems(&format!("{EXAMPLE}\n[sizes]\nflows = 0\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("sizes.flows: 0 entries: a map needs at least 1"),
            "{p:?}"
        );
        assert!(problems(&format!("{EXAMPLE}\n[sizes]\nflows = 4096\n")).is_empty());
        let p = problems(&format!("{EXAMPLE}\n[sizes]\nflows = 100000\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("sizes.flows: 100000 slots: the flow cache's slots per CPU are a power of two (such as 65536)"),
            "{p:?}"
        );
        // Above the largest u32 power of two: still a problem, not an overflow.
        let p = problems(&format!("{EXAMPLE}\n[sizes]\nflows = 4000000000\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("(such as 2147483648)"), "{p:?}");
    }

    #[test]
    fn fragment_lifetime_bounds() {
        let p = problems(&example_with(
            "fragment_lifetime = \"2s\"",
            "fragment_lifetime = \"1m\"",
        ));
        assert_eq!(
            p,
            vec!["line 82, column 21, forwarding.fragment_lifetime: 60000 ms: use 10ms to 30s (Linux gives up reassembly after 30s)"]
        );
    }

    #[test]
    fn unknown_monitor_reference() {
        let p = problems(&example_with(
            "monitors = [\"monSipUdp\"]",
            "monitors = [\"monSip\"]",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(
            p[0],
            "line 39, column 12, vip[0] (vsVipHa01).monitors: unknown monitor \"monSip\"; defined: [\"monSipUdp\", \"monSipTls\", \"icmp\"]"
        );
    }

    #[test]
    fn duplicate_member_address_and_member_in_two_vips() {
        let p = problems(&example_with(
            "address = \"198.18.2.12\"",
            "address = \"198.18.2.11\"",
        ));
        assert_eq!(
            p,
            vec!["line 61, column 11, vip[0] (vsVipHa01).member[1] (nodeHa01Backup).address: 198.18.2.11 is already member vsVipHa01/nodeHa01Primary; a member belongs to one VIP"]
        );
    }

    #[test]
    fn ipv6_addresses_are_checked_with_precise_errors() {
        // A dual-stack VIP whose backup has no IPv6 address, and a link-local member.
        let p = problems(
            &example_with(
                "address = \"198.18.1.100\"",
                "address = \"198.18.1.100\"\naddress6 = \"2001:db8:a::100\"",
            )
            .replace(
                "address = \"198.18.2.11\"",
                "address = \"198.18.2.11\"\naddress6 = \"fe80::11\"",
            ),
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("member[0] (nodeHa01Primary).address6: fe80::11: a link-local address"),
            "{p:?}"
        );
        assert!(
            p[1].contains(
                "member[1] (nodeHa01Backup): the VIP has an IPv6 address (2001:db8:a::100), so each member needs one"
            ),
            "{p:?}"
        );
        // A member's IPv6 address on a VIP without one.
        let p = problems(&example_with(
            "address = \"198.18.2.11\"",
            "address = \"198.18.2.11\"\naddress6 = \"2001:db8:b::11\"",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("2001:db8:b::11: the VIP has no IPv6 address to translate it to"),
            "{p:?}"
        );
        // IPv6 exclusions parse; one with host bits set does not.
        assert_eq!(
            parse_prefix("2001:db8:100::/48").unwrap(),
            Prefix {
                addr: "2001:db8:100::".parse().unwrap(),
                len: 48
            }
        );
        assert_eq!(parse_prefix("2001:db8::1").unwrap().len, 128);
        assert!(parse_prefix("2001:db8::1/64")
            .unwrap_err()
            .contains("did you mean 2001:db8::/64?"));
        assert!(parse_prefix("2001:db8::/129")
            .unwrap_err()
            .contains("prefix length must be 0-128"));
    }

    /// The example with its VIP and members on IPv6 only.
    fn ipv6_only() -> String {
        example_with(
            "address = \"198.18.1.100\"",
            "address6 = \"2001:db8:a::100\"",
        )
        .replace("address = \"198.18.2.11\"", "address6 = \"2001:db8:b::11\"")
        .replace("address = \"198.18.2.12\"", "address6 = \"2001:db8:b::12\"")
    }

    #[test]
    fn a_vip_may_be_ipv6_only() {
        let cfg = Config::parse(&ipv6_only(), "v6.toml").expect("an IPv6-only VIP is valid");
        let v = &cfg.vips[0];
        assert_eq!(
            (v.address, v.address6),
            (None, "2001:db8:a::100".parse().ok())
        );
        assert!(v
            .members
            .iter()
            .all(|m| m.address.is_none() && m.address6.is_some()));
        // Neither family.
        let p = problems(&example_with("address = \"198.18.1.100\"\n", ""));
        assert!(
            p.iter().any(|p| p.contains(
                "vip[0] (vsVipHa01): a VIP needs `address` (IPv4), `address6` (IPv6) or both"
            )),
            "{p:?}"
        );
        // An IPv4 member on an IPv6-only VIP, and a member given by `host` there.
        let p = problems(
            &ipv6_only()
                .replace(
                    "address6 = \"2001:db8:b::11\"",
                    "address6 = \"2001:db8:b::11\"\naddress = \"198.18.2.11\"",
                )
                .replace(
                    "address6 = \"2001:db8:b::12\"",
                    "address6 = \"2001:db8:b::12\"\nhost = \"sip-1\"",
                ),
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("member[0] (nodeHa01Primary).address: 198.18.2.11: the VIP has no IPv4 address to translate it to"),
            "{p:?}"
        );
        assert!(
            p[1].contains("member[1] (nodeHa01Backup).host: the VIP has no IPv4 address"),
            "{p:?}"
        );
        // An IPv6-only VIP missing a member's IPv6 address.
        let p = problems(&ipv6_only().replace("address6 = \"2001:db8:b::12\"\n", ""));
        assert!(
            p.iter().any(|p| p.contains(
                "member[1] (nodeHa01Backup): the VIP has an IPv6 address (2001:db8:a::100), so each member needs one"
            )),
            "{p:?}"
        );
        // A VIP address that is not unicast.
        let p = problems(&example_with(
            "address = \"198.18.1.100\"",
            "address = \"255.255.255.255\"",
        ));
        assert!(
            p.iter().any(|p| p
                .contains("vip[0] (vsVipHa01).address: 255.255.255.255 cannot be a unicast VIP")),
            "{p:?}"
        );
    }

    #[test]
    fn bad_exclusions() {
        let p = problems(&example_with(
            "exclusions = [\"198.18.1.50\"]",
            "exclusions = [\"198.18.1.50/24\", \"dns\", \"198.18.0.0/33\"]",
        ));
        assert_eq!(
            p,
            vec![
                "line 68, column 15, snat.exclusions[0]: \"198.18.1.50/24\" has host bits set; did you mean 198.18.1.0/24?",
                "line 68, column 33, snat.exclusions[1]: \"dns\" is not an address or CIDR (e.g. 198.18.1.50, 198.18.100.0/24 or 2001:db8:100::/48)",
                "line 68, column 40, snat.exclusions[2]: \"198.18.0.0/33\": prefix length must be 0-32",
            ]
        );
    }

    #[test]
    fn duplicate_services_and_vip_without_members() {
        let p = problems(&example_with(
            "protocol = \"tcp\"\nport = 5061",
            "protocol = \"tcp\"\nport = 5060",
        ));
        assert_eq!(
            p,
            vec!["line 50, column 1, vip[0] (vsVipHa01).service[2]: Tcp/5060 is listed twice"]
        );
        let text = "[interfaces]\nexternal = \"e\"\ninternal = [\"i\"]\n[[vip]]\nname = \"v\"\naddress = \"198.18.1.1\"\nmember = []\n";
        let p = problems(text);
        assert_eq!(
            p,
            vec!["line 7, column 10, vip[0] (v).member: a VIP needs at least one member (primary and backup)"]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let bad = example_with("external = \"ext0\"", "external = \"int0\"")
            .replacen(
                "metrics = \"127.0.0.1:9360\"",
                "metrics = \"everywhere\"",
                1,
            )
            .replacen("burst = 4", "burst = 40", 1);
        let p = problems(&bad);
        assert_eq!(
            p,
            vec![
                "line 9, column 13, interfaces.internal[0]: \"int0\" is also the external interface",
                "line 75, column 9, garp.burst: 40 gratuitous ARPs; expected 1-10",
                "line 86, column 11, admin.metrics: \"everywhere\" is not an address:port (e.g. 127.0.0.1:9360) or \"off\"",
            ]
        );
    }

    /// An unknown key, a bad address and a wrongly typed priority, all in
    /// one pass, each with its line and column; a semantic problem found with them.
    #[test]
    fn every_kind_of_problem_in_one_pass() {
        let bad = example_with("priority = 10", "prority = 10")
            .replacen("address = \"198.18.2.12\"", "address = \"198.18.2.300\"", 1)
            .replacen("priority = 5", "priority = \"high\"", 1)
            .replacen("interval = \"1s\"", "interval = \"1 sec\"", 1)
            .replacen(
                "timeout = \"4s\"\n\n# monSipTls",
                "timeout = \"500ms\"\n\n# monSipTls",
                1,
            )
            .replacen("burst = 4", "burst = 40", 1)
            .replacen("name = \"icmp\"\n", "", 1);
        let p = problems(&bad);
        assert_eq!(
            p,
            vec![
                "line 17, column 12: interval: duration \"1 sec\": unit must be ms, s or m",
                "line 29, column 1: missing key `name`",
                "line 56, column 1: unknown key `prority`; did you mean `priority`? (expected one of: name, address, address6, host, priority, monitors, local, ports)",
                "line 60, column 11: address: invalid IPv4 address syntax",
                "line 61, column 12: priority: invalid type: string \"high\", expected i32",
                "line 18, column 11, monitor[0] (monSipUdp).timeout: 500ms is shorter than the interval 1s; expected timeout >= interval (BIG-IP recommends 3 x interval + 1)",
                "line 74, column 9, garp.burst: 40 gratuitous ARPs; expected 1-10",
            ]
        );
    }

    /// Mangled files never panic the checker, and every rejected one says why.
    #[test]
    fn mangled_files_get_problems_not_panics() {
        use rand::{rngs::SmallRng, Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(0x5197_c0f1);
        let pieces = [
            "=",
            "[",
            "]",
            "\"",
            "[[vip]]",
            "x = 1",
            "\n",
            "port = \"a\"",
            "ü",
            "#",
            "{",
            ".",
        ];
        for _ in 0..400 {
            let mut t: Vec<char> = EXAMPLE.chars().collect();
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..t.len());
                match rng.gen_range(0..3) {
                    0 => {
                        let end = (at + rng.gen_range(1..20)).min(t.len());
                        t.drain(at..end);
                    }
                    1 => {
                        let p = pieces[rng.gen_range(0..pieces.len())];
                        for (i, c) in p.chars().enumerate() {
                            t.insert(at + i, c);
                        }
                    }
                    _ => t[at] = char::from(rng.gen_range(b' '..b'~')),
                }
            }
            let text: String = t.into_iter().collect();
            if let Err(e) = Config::parse(&text, "m.toml") {
                assert!(!e.problems.is_empty());
                assert!(e.problems.iter().all(|p| !p.message.is_empty()));
            }
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
    }
}
