//! The plan: everything the runtime needs, derived once from a validated `Config`: the
//! datapath's map sizes and VIP records, the monitors' probe specs with their timing, what
//! failover and the status report need of each VIP and member (names, priorities, the
//! all-down policy, the settle time), and the gratuitous ARP settings. The daemon and the
//! datapath take these, and never read the configuration by index.

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use sipvip_common::program_names;

use crate::{
    config::{AllDownPolicy, Config, MonitorKind},
    datapath::{MapSizes, MemberReach, MemberSpec, ServiceSpec, VipSpec},
    monitor::{
        probe::{ProbeKind, ProbeSpec},
        MonitorKey,
    },
};

/// What a configuration means for the datapath, the monitors and failover.
#[derive(Clone, Debug)]
pub struct Plan {
    pub sizes: MapSizes,
    /// One per VIP, in configuration order (index = VIP id).
    pub vips: Vec<VipPlan>,
    /// One per member and monitor.
    pub probes: Vec<ProbeSpec>,
    /// Monitor names, by `MonitorKey::monitor`.
    pub monitors: Vec<String>,
    pub garp: GarpPlan,
    /// Who owns the VIPs' addresses (`ha.mode`).
    pub ha: crate::config::HaMode,
    /// Flow-state sync: every gateway's address (`ha.sync`), and how often.
    pub sync: Vec<std::net::SocketAddr>,
    pub sync_interval: Duration,
    /// The internal floating addresses (`ha.floating`): the gateway holding one carries the
    /// members' return path.
    pub return_path: Vec<std::net::IpAddr>,
    /// The external interface (the hellos name its MAC; packets are handed over out of it).
    pub external: String,
    /// Scale-out: what is announced with BGP, and how (`[bgp]`).
    pub bgp: Option<BgpPlan>,
    /// How often the datapath's next-hop cache starts a new generation (zero: off).
    pub nexthop_refresh: Duration,
    /// Where the datapath is pinned, and the links it must have there: (program,
    /// interface), each pinned as `link_<program>_<interface>` (`/healthz`).
    pub pin_dir: PathBuf,
    pub attachments: Vec<(&'static str, String)>,
    /// How members named by `host` are resolved again while running.
    pub dns: crate::config::Dns,
    /// On-node mode: VIP ownership (which node answers for each VIP).
    pub ownership: Option<OwnershipPlan>,
}

/// Scale-out: the routes file, the routing daemon's reload command, and the members'
/// subnets announced with the VIPs.
#[derive(Clone, Debug)]
pub struct BgpPlan {
    pub routes_file: PathBuf,
    pub reload: Vec<String>,
    pub member_subnets: Vec<(std::net::IpAddr, u8)>,
}

/// On-node mode: a node answers for a VIP on `interface` while it hosts the VIP's active
/// member (`sipvip::ownership`).
#[derive(Clone, Debug)]
pub struct OwnershipPlan {
    pub interface: String,
    pub claim_after: Duration,
}

/// A kernel setting of the node the datapath relies on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctl {
    /// Under /proc/sys.
    pub path: String,
    pub value: &'static str,
}

/// The node's kernel settings for `cfg`'s interfaces: the kernel forwards a SNATed frame (a
/// neighbour not yet resolved) whose source is the VIP, a local address, so
/// `accept_local` 1 and `rp_filter` 0 on the interfaces (and `all`); the datapath's FIB
/// lookup honours route MTUs as the kernel's forwarding does only with
/// `ip_forward_use_pmtu` 1.
pub fn node_sysctls(cfg: &Config) -> Vec<Sysctl> {
    let mut out = Vec::new();
    for ifc in std::iter::once(&cfg.interfaces.external)
        .chain(&cfg.interfaces.internal)
        .map(String::as_str)
        .chain(["all"])
    {
        for (key, value) in [("accept_local", "1"), ("rp_filter", "0")] {
            out.push(Sysctl {
                path: format!("/proc/sys/net/ipv4/conf/{ifc}/{key}"),
                value,
            });
        }
    }
    out.push(Sysctl {
        path: "/proc/sys/net/ipv4/ip_forward_use_pmtu".into(),
        value: "1",
    });
    // The FIB answers IPv6 lookups for forwarding only where IPv6 forwarding is on.
    if cfg.vips.iter().any(|v| v.address6.is_some()) {
        out.push(Sysctl {
            path: "/proc/sys/net/ipv6/conf/all/forwarding".into(),
            value: "1",
        });
    }
    out
}

/// Sets a sysctl unless it has the value already; returns whether it wrote.
pub fn apply_sysctl(s: &Sysctl) -> std::io::Result<bool> {
    if std::fs::read_to_string(&s.path).is_ok_and(|v| v.trim() == s.value) {
        return Ok(false);
    }
    std::fs::write(&s.path, s.value)?;
    Ok(true)
}

/// A VIP as the runtime sees it.
#[derive(Clone, Debug)]
pub struct VipPlan {
    pub name: String,
    /// The datapath's record, with no active member.
    pub spec: VipSpec,
    /// In configuration order (index = member slot).
    pub members: Vec<MemberPlan>,
    pub when_all_down: AllDownPolicy,
    /// How long the VIP waits for its monitors' first answers before choosing an active
    /// member when it starts without one: the longest interval among them.
    pub settle: Duration,
}

/// A member as failover and the status report see it.
#[derive(Clone, Debug)]
pub struct MemberPlan {
    pub name: String,
    /// The DNS name the address was resolved from, if the member is given by one.
    pub host: Option<String>,
    /// The member's address in each of its VIP's families.
    pub address: Option<Ipv4Addr>,
    pub address6: Option<std::net::Ipv6Addr>,
    pub priority: i32,
}

/// Gratuitous ARP for the VIPs, out of the external interface.
#[derive(Clone, Debug)]
pub struct GarpPlan {
    pub interface: String,
    /// Sent when a VIP moves, `spacing` apart.
    pub burst: u32,
    pub spacing: Duration,
    /// Periodic refresh of every VIP.
    pub refresh: Option<Duration>,
}

impl Plan {
    pub fn new(cfg: &Config) -> Plan {
        let d = MapSizes::default();
        Plan {
            sizes: MapSizes {
                conntrack: cfg.sizes.conntrack.unwrap_or(d.conntrack),
                frags: cfg.sizes.fragments.unwrap_or(d.frags),
                exclusions: cfg.sizes.exclusions.unwrap_or(d.exclusions),
                flows: cfg.sizes.flows.unwrap_or(d.flows),
                ..d
            },
            vips: (0..cfg.vips.len()).map(|i| vip_plan(cfg, i)).collect(),
            probes: probe_specs(cfg),
            monitors: cfg.monitors.iter().map(|m| m.name.clone()).collect(),
            garp: GarpPlan {
                interface: cfg.interfaces.external.clone(),
                burst: cfg.garp.burst,
                spacing: cfg.garp.spacing.0,
                refresh: cfg.garp.refresh.map(|d| d.0),
            },
            ha: cfg.ha.mode,
            sync: cfg.ha.sync.iter().filter_map(|s| s.parse().ok()).collect(),
            sync_interval: cfg.ha.sync_interval.0,
            external: cfg.interfaces.external.clone(),
            return_path: cfg
                .ha
                .floating
                .iter()
                .filter_map(|f| crate::keepalived::parse_floating(f).ok())
                .filter(|(ifc, _)| cfg.interfaces.internal.contains(ifc))
                .map(|(_, p)| p.addr)
                .collect(),
            bgp: cfg.bgp.routes_file.clone().map(|routes_file| BgpPlan {
                routes_file,
                reload: cfg.bgp.reload.clone(),
                member_subnets: cfg
                    .bgp
                    .member_subnets
                    .iter()
                    .filter_map(|m| crate::config::parse_prefix(m).ok())
                    .map(|p| (p.addr, p.len))
                    .collect(),
            }),
            nexthop_refresh: cfg.forwarding.nexthop_refresh.0,
            pin_dir: cfg.admin.pin_dir.clone(),
            attachments: std::iter::once((program_names::EXTERNAL, &cfg.interfaces.external))
                .chain(
                    (cfg.interfaces.mode == crate::config::Mode::Node)
                        .then_some((program_names::NODE_OUT, &cfg.interfaces.external)),
                )
                .chain(
                    cfg.interfaces
                        .internal
                        .iter()
                        .map(|i| (program_names::INTERNAL, i)),
                )
                .map(|(p, i)| (p, i.clone()))
                .collect(),
            dns: cfg.dns.clone(),
            ownership: (cfg.interfaces.mode == crate::config::Mode::Node).then(|| OwnershipPlan {
                interface: cfg.interfaces.external.clone(),
                claim_after: cfg.ownership.claim_after.0,
            }),
        }
    }

    /// VIP `i`'s datapath record with `active` as its active member.
    pub fn vip(&self, i: usize, active: Option<usize>) -> VipSpec {
        VipSpec {
            active,
            ..self.vips[i].spec.clone()
        }
    }

    /// The pins of the links the datapath must have.
    pub fn link_pins(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.attachments
            .iter()
            .map(|(p, i)| crate::datapath::link_pin(&self.pin_dir, p, i))
    }

    /// The VIP and member slot of the member named `name`.
    pub fn member_named(&self, name: &str) -> Option<(usize, usize)> {
        self.vips.iter().enumerate().find_map(|(vi, v)| {
            v.members
                .iter()
                .position(|m| m.name == name)
                .map(|mi| (vi, mi))
        })
    }
}

/// The runtime's view of VIP `i`.
fn vip_plan(cfg: &Config, i: usize) -> VipPlan {
    let v = &cfg.vips[i];
    VipPlan {
        name: v.name.clone(),
        spec: vip_spec(cfg, i),
        members: v
            .members
            .iter()
            .map(|m| MemberPlan {
                name: m.name.clone(),
                host: m.host.clone(),
                address: m.address,
                address6: m.address6,
                priority: m.priority,
            })
            .collect(),
        when_all_down: v.when_all_down,
        settle: v
            .members
            .iter()
            .flat_map(|m| cfg.member_monitors(v, m))
            .map(|m| m.interval.0)
            .max()
            .unwrap_or_default(),
    }
}

/// The datapath's view of VIP `i`.
fn vip_spec(cfg: &Config, i: usize) -> VipSpec {
    let v = &cfg.vips[i];
    VipSpec {
        addr: v.address,
        addr6: v.address6,
        id: i as u32,
        services: v
            .services
            .iter()
            .map(|s| ServiceSpec {
                proto: s.protocol.number(),
                port: s.port,
                member_port: s.member_port.unwrap_or(s.port),
                enabled: s.enabled,
            })
            .collect(),
        members: v
            .members
            .iter()
            .map(|m| MemberSpec {
                addr: m.address,
                addr6: m.address6,
                passthrough_ports: cfg.passthrough.ports.clone(),
                ports: if m.ports.is_empty() {
                    Vec::new()
                } else {
                    v.services.iter().map(|s| m.port_for(s)).collect()
                },
                local: m.local,
            })
            .collect(),
        active: None,
        snat: cfg.snat.enabled,
        reach: match (cfg.interfaces.mode, cfg.interfaces.node_steering) {
            (crate::config::Mode::Gateway, _) => MemberReach::Gateway,
            (_, crate::config::NodeSteering::Kernel) => MemberReach::Kernel,
            (_, crate::config::NodeSteering::XdpRedirect) => MemberReach::XdpRedirect,
        },
    }
}

/// What every member's monitors probe, and how often.
fn probe_specs(cfg: &Config) -> Vec<ProbeSpec> {
    let mut out = Vec::new();
    for (vi, v) in cfg.vips.iter().enumerate() {
        for (mi, m) in v.members.iter().enumerate() {
            for mon in cfg.member_monitors(v, m) {
                let k = cfg
                    .monitors
                    .iter()
                    .position(|x| x.name == mon.name)
                    .unwrap_or(0);
                let kind = match &mon.kind {
                    MonitorKind::Sip {
                        transport,
                        port,
                        request_uri,
                        from,
                        headers,
                        accept,
                        reject,
                    } => {
                        let port = port.unwrap_or_else(|| {
                            v.services
                                .iter()
                                .find(|s| s.protocol == *transport)
                                .map(|s| m.port_for(s))
                                .unwrap_or(5060)
                        });
                        ProbeKind::Sip {
                            transport: *transport,
                            port,
                            request_uri: request_uri.clone(),
                            from: from.clone(),
                            headers: headers.clone(),
                            accept: accept.clone(),
                            reject: reject.clone(),
                        }
                    }
                    MonitorKind::Tcp { port } => ProbeKind::Tcp { port: *port },
                    MonitorKind::Icmp => ProbeKind::Icmp,
                };
                let spec = |v6: bool, target: std::net::IpAddr| ProbeSpec {
                    key: MonitorKey {
                        vip: vi,
                        member: mi,
                        monitor: k,
                        v6,
                    },
                    target,
                    interval: mon.interval.0,
                    timeout: mon.timeout.0,
                    rise: mon.rise,
                    fall: mon.fall,
                    kind: kind.clone(),
                };
                // A member of an IPv6-only VIP is probed on its IPv6 address; with
                // `ipv6 = true` a dual-stack VIP's member is probed on its IPv6 address too,
                // and is up only while both answer.
                if let (Some(a6), true) = (m.address6, mon.ipv6 || m.address.is_none()) {
                    out.push(spec(true, a6.into()));
                }
                if let Some(a) = m.address {
                    out.push(spec(false, a.into()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../packaging/sipvip.example.toml");

    #[test]
    fn the_plan_carries_what_the_runtime_reads_by_index() {
        let cfg = Config::parse(EXAMPLE, "example.toml").expect("the example is valid");
        let plan = Plan::new(&cfg);
        assert_eq!(plan.vips.len(), cfg.vips.len());
        let v = &plan.vips[0];
        assert_eq!(v.name, "vsVipHa01");
        assert_eq!(v.spec.id, 0);
        assert_eq!(v.spec.addr, cfg.vips[0].address);
        let names: Vec<_> = v
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.priority))
            .collect();
        assert_eq!(names, [("nodeHa01Primary", 10), ("nodeHa01Backup", 5)]);
        assert_eq!(v.members[1].address, v.spec.members[1].addr);
        assert_eq!(
            v.settle,
            Duration::from_secs(1),
            "the longest monitor interval"
        );
        assert_eq!(plan.member_named("nodeHa01Backup"), Some((0, 1)));
        assert_eq!(plan.member_named("nobody"), None);
        // Every probe's monitor index names a monitor.
        for p in &plan.probes {
            assert!(p.key.monitor < plan.monitors.len());
            assert_eq!(p.key.vip, 0);
        }
        assert_eq!(plan.garp.interface, cfg.interfaces.external);
        assert_eq!(plan.garp.burst, 4);
        assert_eq!(plan.vip(0, Some(1)).active, Some(1));
        assert_eq!(plan.vip(0, None).services, v.spec.services);
    }

    #[test]
    fn an_ipv6_only_vip_is_probed_and_recorded_in_ipv6_only() {
        let text = EXAMPLE
            .replace(
                "address = \"198.18.1.100\"",
                "address6 = \"2001:db8:a::100\"",
            )
            .replace("address = \"198.18.2.11\"", "address6 = \"2001:db8:b::11\"")
            .replace("address = \"198.18.2.12\"", "address6 = \"2001:db8:b::12\"");
        let cfg = Config::parse(&text, "v6.toml").expect("valid");
        let plan = Plan::new(&cfg);
        // Every monitor probes the members' IPv6 addresses, without `ipv6 = true`.
        assert!(!plan.probes.is_empty());
        for p in &plan.probes {
            assert!(p.key.v6 && p.target.is_ipv6(), "{p:?}");
        }
        let spec = plan.vip(0, Some(1));
        assert!(spec.record(Some(1), None).is_none(), "no IPv4 record");
        assert!(spec.member_record(0).unwrap().is_none());
        let r6 = spec.record6(Some(1), None).expect("an IPv6 record");
        assert_eq!(
            r6.active_be,
            sipvip_common::ipv6_be(
                "2001:db8:b::12"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets()
            )
        );
        let (key, m6) = spec
            .member_record6(0)
            .unwrap()
            .expect("an IPv6 member record");
        assert_eq!(
            (key, m6.vip_be),
            (
                sipvip_common::ipv6_be(
                    "2001:db8:b::11"
                        .parse::<std::net::Ipv6Addr>()
                        .unwrap()
                        .octets()
                ),
                sipvip_common::ipv6_be(
                    "2001:db8:a::100"
                        .parse::<std::net::Ipv6Addr>()
                        .unwrap()
                        .octets()
                )
            )
        );
    }
}
