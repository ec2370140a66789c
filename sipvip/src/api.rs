//! What the operator sees: the status snapshot (table and JSON), Prometheus metrics, and the
//! control-socket protocol (one JSON request line, one JSON response line).

use std::{collections::BTreeMap, fmt::Write as _};

use serde::{Deserialize, Serialize};

/// A request on the control socket.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// BIG-IP "Forced Offline".
    Disable {
        member: String,
    },
    Enable {
        member: String,
    },
    Failover {
        vip: String,
        to: String,
    },
    Reload,
    /// keepalived's notify hooks: this gateway's VRRP state (`master`, `backup`, `fault`,
    /// `stop`). As master it announces every VIP at once and on every failover and refresh.
    HaState {
        state: String,
    },
    /// Gratuitous ARP and unsolicited Neighbor Advertisements for every VIP, now.
    Announce,
    /// Whether the datapath is attached and its maps readable (keepalived's track_script).
    Health,
    /// A flow trace: answered by a response line, then one `sipvip::trace::Line` per line
    /// until the connection closes.
    Trace(crate::trace::TraceRequest),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Response {
            ok: true,
            error: None,
            message: Some(message.into()),
            status: None,
        }
    }
    pub fn err(e: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(e.into()),
            message: None,
            status: None,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MonitorStatus {
    pub name: String,
    pub up: bool,
    pub reason: String,
    pub last_code: Option<u16>,
    pub last_rtt_ms: Option<f64>,
    /// Since the last valid reply.
    pub last_ok_ago_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MemberStatus {
    pub name: String,
    /// The member's IPv4 address, on a VIP with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The member's IPv6 address, on a VIP with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<String>,
    /// The DNS name the address comes from, for a member given by `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Why the name did not resolve at the last try (the last address stays in use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_error: Option<String>,
    pub priority: i32,
    pub up: bool,
    pub disabled: bool,
    pub active: bool,
    pub monitors: Vec<MonitorStatus>,
    pub packets_in: u64,
    pub packets_out: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    pub protocol: String,
    pub port: u16,
    pub member_port: u16,
    pub enabled: bool,
    pub packets_in: u64,
    pub packets_out: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VipStatus {
    pub name: String,
    /// The VIP's IPv4 address, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The VIP's IPv6 address, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<String>,
    pub active: Option<String>,
    /// A healthy member the VIP was moved away from, keeping its established connections.
    #[serde(default)]
    pub draining: Option<String>,
    pub active_for_s: f64,
    /// On-node mode: whether this node answers for the VIP (it hosts the active member);
    /// None in gateway mode.
    #[serde(default)]
    pub owner: Option<bool>,
    pub failovers: u64,
    pub last_failover_ms: Option<f64>,
    pub services: Vec<ServiceStatus>,
    pub members: Vec<MemberStatus>,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub vips: Vec<VipStatus>,
    /// Datapath outcomes by reason (handled, pass_*, drop_*).
    pub datapath: BTreeMap<String, u64>,
    pub probes_sent: u64,
    pub replies_malformed: u64,
    pub replies_unmatched: u64,
    pub adopted: bool,
    /// Every monitor has given its first result (`/readyz`).
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub config: ConfigStatus,
    /// `ha.mode = "keepalived"`: this gateway's VRRP state as keepalived last reported it
    /// (`master`, `backup`, `fault`, `stop`; `backup` until it reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_state: Option<String>,
    /// Flow-state sync with the other gateways (`ha.sync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
    /// Scale-out: the VIPs this gateway announces (`[bgp]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpStatus>,
    /// Whether a trace's filter is installed in the datapath (`sipvip trace`).
    #[serde(default)]
    pub tracing: bool,
}

/// What this gateway announces to the routing daemon.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BgpStatus {
    /// The names of the VIPs announced.
    pub announced: Vec<String>,
    /// The members' subnets announced (`bgp.member_subnets`).
    #[serde(default)]
    pub member_subnets: Vec<String>,
    /// Times the routing daemon was asked to reload.
    pub reloads: u64,
    /// Why the last write or reload failed (retried on the next change or tick).
    pub last_error: Option<String>,
}

/// What the flow-state sync sent and received since the daemon started.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SyncStatus {
    /// This gateway's sync address, once it found it among its own.
    pub listen: Option<String>,
    pub sent_datagrams: u64,
    pub sent_records: u64,
    pub received_datagrams: u64,
    /// Entries added to this datapath, and entries it had already.
    pub inserted: u64,
    pub present: u64,
    /// Datagrams dropped whole (not from a peer, malformed, cut short), and records naming
    /// no member of this configuration.
    pub rejected_datagrams: u64,
    pub rejected_records: u64,
    pub last_error: Option<String>,
    /// Behind ECMP, who carries the members' return path, which packets without flow state
    /// are handed to: `here`, another gateway's sync address, or none known.
    #[serde(default)]
    pub return_path: Option<String>,
}

/// The configuration the daemon runs, and what became of the reloads it was asked for.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ConfigStatus {
    pub path: String,
    /// Reloads applied since the daemon started: asked for by SIGHUP, `sipvip reload`, a
    /// watched file's change, or a member's name resolving to a new address.
    pub reloads: u64,
    /// Reloads rejected (the running configuration stayed).
    pub reload_failures: u64,
    /// Why the last reload was rejected; cleared by the next one that applies.
    pub last_error: Option<String>,
}

/// The status as a table.
pub fn table(s: &Status) -> String {
    let mut o = String::new();
    if let Some(h) = &s.ha_state {
        let _ = writeln!(o, "HA (keepalived): {h}");
    }
    if let Some(y) = &s.sync {
        let _ = writeln!(
            o,
            "Sync {}: sent {} records, inserted {}, rejected {} datagrams; members' return path: {}",
            y.listen.as_deref().unwrap_or("(not listening)"),
            y.sent_records,
            y.inserted,
            y.rejected_datagrams,
            y.return_path.as_deref().unwrap_or("unknown"),
        );
    }
    for v in &s.vips {
        let _ = writeln!(
            o,
            "VIP {} {}  active: {} (for {:.1}s){}{}  failovers: {}{}",
            v.name,
            [&v.address, &v.address6]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            v.active.as_deref().unwrap_or("none"),
            v.active_for_s,
            v.draining
                .as_deref()
                .map(|d| format!("  draining: {d}"))
                .unwrap_or_default(),
            match v.owner {
                Some(true) => "  this node answers for it",
                Some(false) => "  another node answers for it",
                None => "",
            },
            v.failovers,
            v.last_failover_ms
                .map(|m| format!(" (last took {m:.0} ms)"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            o,
            "  in {} pkts / {} bytes, out {} pkts / {} bytes",
            v.packets_in, v.bytes_in, v.packets_out, v.bytes_out
        );
        for sv in &v.services {
            let _ = writeln!(
                o,
                "  service {}/{} -> member port {}  {}  in {} out {}",
                sv.protocol,
                sv.port,
                sv.member_port,
                if sv.enabled { "enabled" } else { "disabled" },
                sv.packets_in,
                sv.packets_out
            );
        }
        let _ = writeln!(
            o,
            "  {:<20} {:<16} {:>4} {:<6} {:<8} {:>9} {:>9}  monitors",
            "member", "address", "prio", "state", "role", "pkts in", "pkts out"
        );
        for m in &v.members {
            let state = if m.disabled {
                "forced offline"
            } else if m.up {
                "up"
            } else {
                "down"
            };
            let role = if m.active { "ACTIVE" } else { "" };
            let mons: Vec<String> = m
                .monitors
                .iter()
                .map(|x| {
                    format!(
                        "{} {} ({}{}{})",
                        x.name,
                        if x.up { "up" } else { "down" },
                        x.reason,
                        x.last_code
                            .map(|c| format!(", last {c}"))
                            .unwrap_or_default(),
                        x.last_rtt_ms
                            .map(|r| format!(", rtt {r:.2} ms"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            let _ = writeln!(
                o,
                "  {:<20} {:<16} {:>4} {:<6} {:<8} {:>9} {:>9}  {}",
                m.name,
                m.address
                    .as_deref()
                    .or(m.address6.as_deref())
                    .unwrap_or("-"),
                m.priority,
                state,
                role,
                m.packets_in,
                m.packets_out,
                mons.join("; ")
            );
            if let (Some(_), Some(a6)) = (&m.address, &m.address6) {
                let _ = writeln!(o, "  {:<20} {a6}", "");
            }
            if let Some(h) = &m.host {
                let _ = writeln!(
                    o,
                    "  {:<20} host {h}{}",
                    "",
                    m.resolve_error
                        .as_deref()
                        .map(|e| format!(" (last address kept: {e})"))
                        .unwrap_or_default()
                );
            }
        }
    }
    let _ = writeln!(o, "datapath:");
    for (k, v) in &s.datapath {
        let _ = writeln!(o, "  {k:<20} {v}");
    }
    let _ = writeln!(
        o,
        "probes: {} sent, {} malformed and {} unmatched replies ignored",
        s.probes_sent, s.replies_malformed, s.replies_unmatched
    );
    let c = &s.config;
    let _ = writeln!(
        o,
        "config: {}  reloads {}  rejected {}{}",
        c.path,
        c.reloads,
        c.reload_failures,
        c.last_error
            .as_deref()
            .map(|e| format!(
                "\n  last reload rejected (the running configuration stays):\n  {}",
                e.replace('\n', "\n  ")
            ))
            .unwrap_or_default()
    );
    o
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The status as Prometheus text exposition.
pub fn metrics(s: &Status) -> String {
    let mut o = String::new();
    let head = |o: &mut String, name: &str, ty: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {ty}");
    };
    // The addresses of each VIP and member, by family (an info metric: join on the names).
    let addrs = |a: &Option<String>, a6: &Option<String>| {
        format!(
            "address=\"{}\",address6=\"{}\"",
            esc(a.as_deref().unwrap_or("")),
            esc(a6.as_deref().unwrap_or(""))
        )
    };
    head(
        &mut o,
        "sipvip_vip_info",
        "gauge",
        "the VIP's addresses (IPv4, IPv6; empty where it has none)",
    );
    for v in &s.vips {
        let _ = writeln!(
            o,
            "sipvip_vip_info{{vip=\"{}\",{}}} 1",
            esc(&v.name),
            addrs(&v.address, &v.address6)
        );
    }
    head(
        &mut o,
        "sipvip_member_info",
        "gauge",
        "the member's addresses (IPv4, IPv6; empty where it has none)",
    );
    for v in &s.vips {
        for m in &v.members {
            let _ = writeln!(
                o,
                "sipvip_member_info{{vip=\"{}\",member=\"{}\",{}}} 1",
                esc(&v.name),
                esc(&m.name),
                addrs(&m.address, &m.address6)
            );
        }
    }
    if let Some(y) = &s.sync {
        head(
            &mut o,
            "sipvip_sync_records_total",
            "counter",
            "flow-state sync records: sent, inserted here, present here already, rejected",
        );
        for (what, v) in [
            ("sent", y.sent_records),
            ("inserted", y.inserted),
            ("present", y.present),
            ("rejected", y.rejected_records),
        ] {
            let _ = writeln!(o, "sipvip_sync_records_total{{what=\"{what}\"}} {v}");
        }
        head(
            &mut o,
            "sipvip_sync_datagrams_total",
            "counter",
            "flow-state sync datagrams: sent, received, rejected whole",
        );
        for (what, v) in [
            ("sent", y.sent_datagrams),
            ("received", y.received_datagrams),
            ("rejected", y.rejected_datagrams),
        ] {
            let _ = writeln!(o, "sipvip_sync_datagrams_total{{what=\"{what}\"}} {v}");
        }
    }
    if let Some(b) = &s.bgp {
        head(
            &mut o,
            "sipvip_bgp_announced",
            "gauge",
            "1 while this gateway announces the VIP to the routing daemon",
        );
        for v in &s.vips {
            let _ = writeln!(
                o,
                "sipvip_bgp_announced{{vip=\"{}\"}} {}",
                esc(&v.name),
                u8::from(b.announced.contains(&v.name))
            );
        }
    }
    if let Some(h) = &s.ha_state {
        head(
            &mut o,
            "sipvip_ha_master",
            "gauge",
            "1 while keepalived says this gateway is the VRRP master",
        );
        let _ = writeln!(o, "sipvip_ha_master {}", u8::from(h == "master"));
    }
    head(
        &mut o,
        "sipvip_member_up",
        "gauge",
        "1 when every monitor of the member is up",
    );
    for v in &s.vips {
        for m in &v.members {
            let _ = writeln!(
                o,
                "sipvip_member_up{{vip=\"{}\",member=\"{}\"}} {}",
                esc(&v.name),
                esc(&m.name),
                u8::from(m.up && !m.disabled)
            );
        }
    }
    head(
        &mut o,
        "sipvip_member_resolved",
        "gauge",
        "For a member given by a DNS name: 1 when the name resolved at the last try",
    );
    for v in &s.vips {
        for m in v.members.iter().filter(|m| m.host.is_some()) {
            let _ = writeln!(
                o,
                "sipvip_member_resolved{{vip=\"{}\",member=\"{}\"}} {}",
                esc(&v.name),
                esc(&m.name),
                u8::from(m.resolve_error.is_none())
            );
        }
    }
    head(
        &mut o,
        "sipvip_vip_owner",
        "gauge",
        "On-node mode: 1 when this node answers for the VIP (it hosts the active member)",
    );
    for v in &s.vips {
        if let Some(owner) = v.owner {
            let _ = writeln!(
                o,
                "sipvip_vip_owner{{vip=\"{}\"}} {}",
                esc(&v.name),
                u8::from(owner)
            );
        }
    }
    head(
        &mut o,
        "sipvip_member_active",
        "gauge",
        "1 for the VIP's active member",
    );
    for v in &s.vips {
        for m in &v.members {
            let _ = writeln!(
                o,
                "sipvip_member_active{{vip=\"{}\",member=\"{}\"}} {}",
                esc(&v.name),
                esc(&m.name),
                u8::from(m.active)
            );
        }
    }
    head(
        &mut o,
        "sipvip_failovers_total",
        "counter",
        "Changes of active member after a failure or by the operator",
    );
    for v in &s.vips {
        let _ = writeln!(
            o,
            "sipvip_failovers_total{{vip=\"{}\"}} {}",
            esc(&v.name),
            v.failovers
        );
    }
    head(
        &mut o,
        "sipvip_failover_seconds",
        "gauge",
        "Last failover: from the failed member's last valid reply to the flip",
    );
    for v in &s.vips {
        if let Some(ms) = v.last_failover_ms {
            let _ = writeln!(
                o,
                "sipvip_failover_seconds{{vip=\"{}\"}} {}",
                esc(&v.name),
                ms / 1000.0
            );
        }
    }
    head(
        &mut o,
        "sipvip_probe_rtt_seconds",
        "gauge",
        "Round-trip time of the last valid probe reply",
    );
    for v in &s.vips {
        for m in &v.members {
            for x in &m.monitors {
                if let Some(r) = x.last_rtt_ms {
                    let _ = writeln!(
                        o,
                        "sipvip_probe_rtt_seconds{{vip=\"{}\",member=\"{}\",monitor=\"{}\"}} {}",
                        esc(&v.name),
                        esc(&m.name),
                        esc(&x.name),
                        r / 1000.0
                    );
                }
            }
        }
    }
    head(
        &mut o,
        "sipvip_packets_total",
        "counter",
        "Packets through the VIP by direction (in: to members)",
    );
    for v in &s.vips {
        let _ = writeln!(
            o,
            "sipvip_packets_total{{vip=\"{}\",direction=\"in\"}} {}",
            esc(&v.name),
            v.packets_in
        );
        let _ = writeln!(
            o,
            "sipvip_packets_total{{vip=\"{}\",direction=\"out\"}} {}",
            esc(&v.name),
            v.packets_out
        );
    }
    head(
        &mut o,
        "sipvip_bytes_total",
        "counter",
        "Bytes through the VIP by direction",
    );
    for v in &s.vips {
        let _ = writeln!(
            o,
            "sipvip_bytes_total{{vip=\"{}\",direction=\"in\"}} {}",
            esc(&v.name),
            v.bytes_in
        );
        let _ = writeln!(
            o,
            "sipvip_bytes_total{{vip=\"{}\",direction=\"out\"}} {}",
            esc(&v.name),
            v.bytes_out
        );
    }
    head(
        &mut o,
        "sipvip_datapath_packets_total",
        "counter",
        "Datapath outcomes by reason (drop_* are drops)",
    );
    for (k, v) in &s.datapath {
        let _ = writeln!(
            o,
            "sipvip_datapath_packets_total{{reason=\"{}\"}} {v}",
            esc(k)
        );
    }
    head(
        &mut o,
        "sipvip_probe_replies_ignored_total",
        "counter",
        "Monitor replies that did not count",
    );
    let _ = writeln!(
        o,
        "sipvip_probe_replies_ignored_total{{why=\"malformed\"}} {}",
        s.replies_malformed
    );
    let _ = writeln!(
        o,
        "sipvip_probe_replies_ignored_total{{why=\"unmatched\"}} {}",
        s.replies_unmatched
    );
    head(
        &mut o,
        "sipvip_config_reloads_total",
        "counter",
        "Configuration reloads applied",
    );
    let _ = writeln!(o, "sipvip_config_reloads_total {}", s.config.reloads);
    head(
        &mut o,
        "sipvip_config_reload_failures_total",
        "counter",
        "Configuration reloads rejected (the running configuration stayed)",
    );
    let _ = writeln!(
        o,
        "sipvip_config_reload_failures_total {}",
        s.config.reload_failures
    );
    head(
        &mut o,
        "sipvip_config_last_reload_ok",
        "gauge",
        "0 while the last reload asked for was rejected",
    );
    let _ = writeln!(
        o,
        "sipvip_config_last_reload_ok {}",
        u8::from(s.config.last_error.is_none())
    );
    head(
        &mut o,
        "sipvip_ready",
        "gauge",
        "1 once every monitor has given its first result",
    );
    let _ = writeln!(o, "sipvip_ready {}", u8::from(s.ready));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json_lines() {
        let r = Request::Failover {
            vip: "vsVipHa01".into(),
            to: "nodeHa01Backup".into(),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"cmd":"failover","vip":"vsVipHa01","to":"nodeHa01Backup"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let s = Status {
            vips: vec![VipStatus {
                name: "v".into(),
                failovers: 2,
                last_failover_ms: Some(250.0),
                members: vec![MemberStatus {
                    name: "p".into(),
                    address6: Some("2001:db8:b::11".into()),
                    up: true,
                    active: true,
                    ..Default::default()
                }],
                address6: Some("2001:db8:a::100".into()),
                packets_in: 5,
                ..Default::default()
            }],
            datapath: [("drop_vip_closed".to_string(), 3)].into(),
            ..Default::default()
        };
        let m = metrics(&s);
        assert!(m.contains("sipvip_member_up{vip=\"v\",member=\"p\"} 1\n"));
        assert!(
            m.contains("sipvip_vip_info{vip=\"v\",address=\"\",address6=\"2001:db8:a::100\"} 1\n")
        );
        assert!(m.contains(
            "sipvip_member_info{vip=\"v\",member=\"p\",address=\"\",address6=\"2001:db8:b::11\"} 1\n"
        ));
        assert!(m.contains("sipvip_failovers_total{vip=\"v\"} 2\n"));
        assert!(m.contains("sipvip_failover_seconds{vip=\"v\"} 0.25\n"));
        assert!(m.contains("sipvip_packets_total{vip=\"v\",direction=\"in\"} 5\n"));
        assert!(m.contains("sipvip_datapath_packets_total{reason=\"drop_vip_closed\"} 3\n"));
        assert!(m.contains("# TYPE sipvip_failovers_total counter\n"));
        let t = table(&s);
        assert!(t.contains("ACTIVE"), "{t}");
    }
}
