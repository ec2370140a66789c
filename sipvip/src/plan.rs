//! The plan: everything the runtime needs, derived once from a validated `Config`: the
//! datapath's map sizes and VIP records, and the monitors' probe specs with their timing.
//! The daemon and the datapath take these instead of translating the config themselves.

use crate::{
    config::{Config, MonitorKind},
    datapath::{MapSizes, MemberSpec, ServiceSpec, VipSpec},
    monitor::{
        probe::{ProbeKind, ProbeSpec},
        MonitorKey,
    },
};

/// What a configuration means for the datapath and the monitors.
#[derive(Clone, Debug)]
pub struct Plan {
    pub sizes: MapSizes,
    /// One per VIP, in configuration order (index = VIP id), with no active member.
    pub vips: Vec<VipSpec>,
    /// One per member and monitor.
    pub probes: Vec<ProbeSpec>,
}

impl Plan {
    pub fn new(cfg: &Config) -> Plan {
        let d = MapSizes::default();
        Plan {
            sizes: MapSizes {
                conntrack: cfg.sizes.conntrack.unwrap_or(d.conntrack),
                frags: cfg.sizes.fragments.unwrap_or(d.frags),
                exclusions: cfg.sizes.exclusions.unwrap_or(d.exclusions),
                ..d
            },
            vips: (0..cfg.vips.len()).map(|i| vip_spec(cfg, i)).collect(),
            probes: probe_specs(cfg),
        }
    }

    /// VIP `i` with `active` as its active member.
    pub fn vip(&self, i: usize, active: Option<usize>) -> VipSpec {
        VipSpec {
            active,
            ..self.vips[i].clone()
        }
    }
}

/// The datapath's view of VIP `i`.
fn vip_spec(cfg: &Config, i: usize) -> VipSpec {
    let v = &cfg.vips[i];
    VipSpec {
        addr: v.address,
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
                passthrough_ports: cfg.passthrough.ports.clone(),
            })
            .collect(),
        active: None,
        snat: cfg.snat.enabled,
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
                                .map(|s| s.member_port.unwrap_or(s.port))
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
                out.push(ProbeSpec {
                    key: MonitorKey {
                        vip: vi,
                        member: mi,
                        monitor: k,
                    },
                    target: m.address,
                    interval: mon.interval.0,
                    timeout: mon.timeout.0,
                    rise: mon.rise,
                    fall: mon.fall,
                    kind,
                });
            }
        }
    }
    out
}
