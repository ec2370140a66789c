//! `sipvip import-bigip`: a tmsh bigip.conf translated into a sipvip config, with a report of
//! what was translated, approximated and ignored, each naming its object.

pub mod parse;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

use parse::{Body, Node, ParseError};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub translated: Vec<String>,
    pub approximated: Vec<String>,
    pub ignored: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (title, items) in [
            ("translated", &self.translated),
            ("approximated", &self.approximated),
            ("ignored", &self.ignored),
        ] {
            writeln!(f, "{title} ({}):", items.len())?;
            for i in items {
                writeln!(f, "  {i}")?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("bigip.conf {0}")]
    Parse(#[from] ParseError),
    #[error("nothing to import: {0}")]
    Empty(String),
}

pub struct Import {
    pub toml: String,
    pub report: Report,
}

/// `/Common/name` -> (`Common`, `name`); a bare name has no partition.
fn split_path(p: &str) -> (Option<&str>, &str) {
    let t = p.trim_start_matches('/');
    match t.rsplit_once('/') {
        Some((folder, name)) if p.starts_with('/') => {
            (Some(folder.split('/').next().unwrap_or(folder)), name)
        }
        _ => (None, t),
    }
}

fn name(p: &str) -> String {
    split_path(p).1.to_string()
}

fn port_of(s: &str) -> Option<u16> {
    match s {
        "any" | "*" | "0" => Some(0),
        "sip" => Some(5060),
        "sips" | "sip-tls" => Some(5061),
        "http" => Some(80),
        "https" => Some(443),
        _ => s.parse().ok(),
    }
}

/// Parses `addr%rd:port`, `addr:port` and IPv6 `addr.port`; returns the address text, the
/// route domain if any, and the port.
fn destination(d: &str) -> Option<(String, Option<String>, u16)> {
    let d = name(d);
    let (addr, port) = if d.matches(':').count() > 1 {
        let (a, p) = d.rsplit_once('.')?;
        (a.to_string(), p)
    } else {
        let (a, p) = d.rsplit_once(':')?;
        (a.to_string(), p)
    };
    let (addr, rd) = match addr.split_once('%') {
        Some((a, r)) => (a.to_string(), Some(r.to_string())),
        None => (addr, None),
    };
    Some((addr, rd, port_of(port)?))
}

/// The node a pool member names: `node:port`, or `node.port` where the node is an IPv6
/// address (more than one colon) or carries no colon at all.
fn member_node(mw: &str) -> String {
    let split = if mw.matches(':').count() > 1 {
        mw.rsplit_once('.')
    } else {
        mw.rsplit_once(':').or_else(|| mw.rsplit_once('.'))
    };
    split.map(|(n, _)| name(n)).unwrap_or_else(|| name(mw))
}

fn strip_rd(a: &str, what: &str, report: &mut Report) -> String {
    match a.split_once('%') {
        Some((addr, rd)) => {
            report.approximated.push(format!(
                "{what}: route domain %{rd} dropped from {a} (sipvip has one routing table)"
            ));
            addr.to_string()
        }
        None => a.to_string(),
    }
}

struct Monitor {
    toml: String,
}

fn secs(n: Option<&str>, default: u64) -> String {
    let v = n.and_then(|x| x.parse::<u64>().ok()).unwrap_or(default);
    format!("{v}s")
}

/// Status codes in a BIG-IP filter ("any", "200 503", ...); None for "any".
fn codes(v: Option<&str>) -> Vec<u16> {
    v.map(|s| {
        s.split(|c: char| !c.is_ascii_digit())
            .filter_map(|x| x.parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

fn toml_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A monitor definition (or a BIG-IP built-in one) as a sipvip `[[monitor]]`.
fn monitor(kind: &str, n: Option<&Node>, mname: &str, report: &mut Report) -> Option<Monitor> {
    let v = |k: &str| n.and_then(|n| n.value(k));
    let (interval, timeout) = (secs(v("interval"), 5), secs(v("timeout"), 16));
    let mut t = format!(
        "[[monitor]]\nname = {}\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\n",
        toml_str(mname)
    );
    if let (Some(up), Some(iv)) = (
        v("time-until-up").and_then(|x| x.parse::<u64>().ok()),
        v("interval").and_then(|x| x.parse::<u64>().ok()),
    ) {
        if up > 0 && iv > 0 {
            let rise = up.div_ceil(iv).max(1);
            let _ = writeln!(t, "rise = {rise}");
            report.approximated.push(format!(
                "monitor {mname}: time-until-up {up}s as rise = {rise} replies"
            ));
        }
    }
    if let Some(ui) = v("up-interval") {
        if ui != "0" && ui != "disabled" {
            report.approximated.push(format!(
                "monitor {mname}: up-interval {ui}s not kept (sipvip probes every interval)"
            ));
        }
    }
    match kind {
        "sip" => {
            let mode = v("mode").unwrap_or("udp");
            let transport = match mode {
                "udp" => "udp",
                "tcp" => "tcp",
                other => {
                    report.approximated.push(format!(
                        "monitor {mname}: mode {other} probed as a TCP connect (sipvip's SIP monitor has no TLS)"
                    ));
                    let _ = writeln!(t, "type = \"tcp\"\nport = 5061");
                    return Some(Monitor { toml: t });
                }
            };
            let _ = writeln!(t, "type = \"sip\"\ntransport = \"{transport}\"");
            let accept = codes(v("filter"));
            if !accept.is_empty() {
                let _ = writeln!(t, "accept = {accept:?}");
            }
            let reject = codes(v("filter-neg"));
            if !reject.is_empty() {
                let _ = writeln!(t, "reject = {reject:?}");
            }
            if let Some(req) = v("request") {
                // "OPTIONS sip:x SIP/2.0" -> the request URI.
                match req.split_whitespace().collect::<Vec<_>>().as_slice() {
                    ["OPTIONS", uri, ..] => {
                        let _ = writeln!(t, "request_uri = {}", toml_str(uri));
                    }
                    _ => report.approximated.push(format!(
                        "monitor {mname}: request {req:?} replaced by sipvip's OPTIONS"
                    )),
                }
            }
            if let Some(h) = v("headers") {
                let hs: Vec<String> = h
                    .split(['\n', '\r'])
                    .map(str::trim)
                    .filter(|x| x.contains(':'))
                    .map(toml_str)
                    .collect();
                if !hs.is_empty() {
                    let _ = writeln!(t, "headers = [{}]", hs.join(", "));
                }
            }
        }
        "tcp" | "tcp_half_open" => {
            let port = v("destination")
                .and_then(|d| d.rsplit_once(':'))
                .and_then(|(_, p)| port_of(p))
                .filter(|p| *p != 0);
            let port = port.unwrap_or_else(|| {
                report
                    .approximated
                    .push(format!("monitor {mname}: no destination port; using 5061"));
                5061
            });
            let _ = writeln!(t, "type = \"tcp\"\nport = {port}");
            if v("send").is_some() || v("recv").is_some() {
                report.approximated.push(format!(
                    "monitor {mname}: send/recv strings not checked (a connect is up)"
                ));
            }
        }
        "icmp" | "gateway-icmp" | "gateway_icmp" => {
            let _ = writeln!(t, "type = \"icmp\"");
        }
        other => {
            report.ignored.push(format!(
                "monitor {mname}: type {other} has no sipvip equivalent"
            ));
            return None;
        }
    }
    Some(Monitor { toml: t })
}

/// The seed's SNAT iRule: `if { [class match [IP::remote_addr] equals SRC] } { if { [class
/// match [IP::local_addr] equals EXCL] } { } else { snatpool POOL } }`. Anything else is None.
fn snat_rule(text: &str) -> Option<(String, Option<String>, String)> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ");
    let toks: Vec<String> = code
        .replace(['[', ']', '{', '}'], " ")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut src = None;
    let mut excl = None;
    let mut pool = None;
    let mut i = 0;
    while i < toks.len() {
        match toks[i].as_str() {
            "when" | "CLIENT_ACCEPTED" | "if" | "else" => i += 1,
            "class"
                if toks.get(i + 1).map(String::as_str) == Some("match")
                    && toks.get(i + 3).map(String::as_str) == Some("equals") =>
            {
                let dg = name(toks.get(i + 4)?);
                match toks[i + 2].as_str() {
                    "IP::remote_addr" if src.is_none() => src = Some(dg),
                    "IP::local_addr" if excl.is_none() && src.is_some() => excl = Some(dg),
                    _ => return None,
                }
                i += 5;
            }
            "snatpool" => {
                pool = Some(name(toks.get(i + 1)?));
                i += 2;
            }
            _ => return None,
        }
    }
    Some((src?, excl, pool?))
}

/// Translates a bigip.conf (objects of `partition` only, if given).
pub fn import(text: &str, partition: Option<&str>) -> Result<Import, ImportError> {
    let nodes = parse::parse(text)?;
    let mut report = Report::default();
    let mut objects: BTreeMap<(String, String), &Node> = BTreeMap::new();
    for n in &nodes {
        let w: Vec<&str> = n.words.iter().map(String::as_str).collect();
        let (kind, path) = match w.as_slice() {
            ["ltm", "virtual", p]
            | ["ltm", "pool", p]
            | ["ltm", "node", p]
            | ["ltm", "snatpool", p]
            | ["ltm", "rule", p]
            | ["ltm", "snat-translation", p] => (w[1].to_string(), *p),
            ["ltm", "monitor", k, p] => (format!("monitor {k}"), *p),
            ["ltm", "data-group", "internal", p] => ("data-group".to_string(), *p),
            _ => {
                report.ignored.push(format!(
                    "line {}: `{}` is not a kind sipvip imports",
                    n.line,
                    w.iter().take(3).copied().collect::<Vec<_>>().join(" ")
                ));
                continue;
            }
        };
        if let Some(want) = partition {
            if split_path(path).0.is_some_and(|p| p != want) {
                continue;
            }
        }
        objects.insert((kind, name(path)), n);
    }
    let get = |kind: &str, n: &str| objects.get(&(kind.to_string(), n.to_string())).copied();

    // Data groups of type ip.
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((k, gname), n) in &objects {
        if k != "data-group" {
            continue;
        }
        if n.value("type") != Some("ip") {
            report.ignored.push(format!(
                "data-group {gname}: type {} (only ip is imported)",
                n.value("type").unwrap_or("?")
            ));
            continue;
        }
        let recs: Vec<String> = n
            .child("records")
            .map(|r| {
                r.children()
                    .iter()
                    .filter_map(|x| x.words.first())
                    .map(|a| strip_rd(a, &format!("data-group {gname}"), &mut report))
                    .collect()
            })
            .unwrap_or_default();
        groups.insert(gname.clone(), recs);
    }

    // SNAT: the iRule, its data groups and its SNAT pool.
    let mut snat_pool_addrs: Vec<String> = Vec::new();
    let mut snat_sources: Vec<String> = Vec::new();
    let mut exclusions: Vec<String> = Vec::new();
    let mut snat_rule_name = None;
    for ((k, rname), n) in &objects {
        if k != "rule" {
            continue;
        }
        let text = match &n.body {
            Some(Body::Raw(t)) => t.as_str(),
            _ => "",
        };
        match snat_rule(text) {
            Some((src, excl, pool)) => {
                snat_rule_name = Some(rname.clone());
                match groups.get(&src) {
                    Some(g) => snat_sources = g.clone(),
                    None => report
                        .ignored
                        .push(format!("rule {rname}: data group {src} is not defined")),
                }
                if let Some(e) = excl {
                    match groups.get(&e) {
                        Some(g) => {
                            exclusions = g.clone();
                            report.translated.push(format!("data-group {e} -> [snat] exclusions"));
                        }
                        None => report.ignored.push(format!("rule {rname}: excluded data group {e} is not defined, so nothing is excluded")),
                    }
                }
                match get("snatpool", &pool) {
                    Some(p) => {
                        for m in p.child("members").map(|m| m.children()).unwrap_or_default() {
                            for w in &m.words {
                                let t = get("snat-translation", &name(w))
                                    .and_then(|t| t.value("address"))
                                    .map(str::to_string)
                                    .unwrap_or_else(|| name(w));
                                snat_pool_addrs.push(strip_rd(
                                    &t,
                                    &format!("snatpool {pool}"),
                                    &mut report,
                                ));
                            }
                        }
                        report
                            .translated
                            .push(format!("snatpool {pool} -> SNAT to the VIP"));
                    }
                    None => report
                        .ignored
                        .push(format!("rule {rname}: snatpool {pool} is not defined")),
                }
                report
                    .translated
                    .push(format!("rule {rname} -> [snat] enabled, sources {src}"));
            }
            None => report.ignored.push(format!(
                "rule {rname}: not the SNAT pattern; not translated"
            )),
        }
    }

    // Virtuals: forwarding wildcards give the interfaces; host virtuals give VIPs and services.
    let mut external = None;
    let mut internal = Vec::new();
    struct Svc {
        proto: String,
        port: u16,
        member_port: Option<u16>,
        enabled: bool,
        pool: String,
        virt: String,
    }
    let mut vips: BTreeMap<String, Vec<Svc>> = BTreeMap::new();
    // IPv6 virtuals: each address with its pools (paired below with an IPv4 VIP where one
    // VIP of each family has the same members), and with its services (an IPv6-only VIP).
    let mut vips6: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    let mut svcs6: BTreeMap<String, Vec<Svc>> = BTreeMap::new();
    for ((k, vname), n) in &objects {
        if k != "virtual" {
            continue;
        }
        let vlans: Vec<String> = n
            .child("vlans")
            .map(|v| {
                v.children()
                    .iter()
                    .flat_map(|c| c.words.iter().map(|w| name(w)))
                    .collect()
            })
            .unwrap_or_default();
        let Some((addr, rd, port)) = n.value("destination").and_then(destination) else {
            report
                .ignored
                .push(format!("virtual {vname}: no destination"));
            continue;
        };
        if let Some(rd) = rd {
            report
                .approximated
                .push(format!("virtual {vname}: route domain %{rd} dropped"));
        }
        let wildcard = addr == "0.0.0.0" || addr == "any" || addr == "::";
        if n.flag("ip-forward") || (wildcard && n.value("pool").is_none()) {
            let has_rule = n.child("rules").is_some_and(|r| !r.children().is_empty());
            if has_rule {
                internal.extend(vlans.clone());
                report.translated.push(format!("virtual {vname} (forwarding, outbound with the SNAT iRule) -> sipvip_int on {vlans:?}"));
            } else {
                if external.is_none() {
                    external = vlans.first().cloned();
                }
                report.translated.push(format!("virtual {vname} (forwarding, inbound) -> physical addresses pass untouched on {vlans:?}"));
            }
            continue;
        }
        let is6 = addr.parse::<Ipv6Addr>().is_ok();
        if is6 {
            let e = vips6
                .entry(addr.clone())
                .or_insert_with(|| (vname.clone(), BTreeSet::new()));
            if let Some(pool) = n.value("pool").map(name) {
                e.1.insert(pool);
            }
        } else if addr.parse::<Ipv4Addr>().is_err() {
            report
                .ignored
                .push(format!("virtual {vname}: {addr} is not an address"));
            continue;
        }
        let Some(pool) = n.value("pool").map(name) else {
            report.ignored.push(format!("virtual {vname}: no pool"));
            continue;
        };
        let proto = n.value("ip-protocol").unwrap_or("tcp").to_string();
        if proto != "udp" && proto != "tcp" {
            report
                .ignored
                .push(format!("virtual {vname}: ip-protocol {proto}"));
            continue;
        }
        if n.value("translate-address") == Some("disabled") {
            report.approximated.push(format!("virtual {vname}: translate-address disabled; sipvip always translates to the member"));
        }
        if n.value("snatpool").is_some()
            || n.child("source-address-translation")
                .is_some_and(|s| s.value("type") == Some("snat"))
        {
            report.ignored.push(format!(
                "virtual {vname}: SNAT on the virtual itself (the seed forbids it for SIP)"
            ));
        }
        if external.is_none() {
            external = vlans.first().cloned();
        }
        let member_port = get("pool", &pool)
            .and_then(|p| p.child("members"))
            .and_then(|m| m.children().first())
            .and_then(|m| m.words.first())
            .and_then(|w| w.rsplit_once(':').or_else(|| w.rsplit_once('.')))
            .and_then(|(_, p)| port_of(p))
            .filter(|p| *p != port && *p != 0 && n.value("translate-port") != Some("disabled"));
        if is6 { &mut svcs6 } else { &mut vips }
            .entry(addr)
            .or_default()
            .push(Svc {
                proto,
                port,
                member_port,
                enabled: !n.flag("disabled"),
                pool,
                virt: vname.clone(),
            });
    }
    if vips.is_empty() && svcs6.is_empty() {
        return Err(ImportError::Empty(
            "no host virtual server with a pool".into(),
        ));
    }

    // Output.
    let mut out = String::from("# Imported from a bigip.conf by `sipvip import-bigip`. Interface names are the BIG-IP\n# VLAN names: rename them to the gateway's Linux interfaces.\n\n");
    let ext = external.unwrap_or_else(|| "ext0".into());
    if internal.is_empty() {
        internal.push("int0".into());
        report
            .approximated
            .push("no outbound forwarding virtual: internal interface int0 assumed".into());
    }
    let _ = writeln!(
        out,
        "[interfaces]\nexternal = {}\ninternal = [{}]\n",
        toml_str(&ext),
        internal
            .iter()
            .map(|i| toml_str(i))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Monitors used by the pools and nodes.
    let mut monitors: BTreeMap<String, Monitor> = BTreeMap::new();
    let use_monitor = |m: &str,
                       report: &mut Report,
                       monitors: &mut BTreeMap<String, Monitor>|
     -> Option<String> {
        let mname = name(m);
        if monitors.contains_key(&mname) {
            return Some(mname);
        }
        let defined = objects
            .iter()
            .find(|((k, n), _)| k.starts_with("monitor ") && *n == mname);
        let mon = match defined {
            Some(((k, _), node)) => {
                let kind = k.trim_start_matches("monitor ").to_string();
                let m = monitor(&kind, Some(node), &mname, report);
                if m.is_some() {
                    report
                        .translated
                        .push(format!("monitor {kind} {mname} -> [[monitor]] {mname}"));
                }
                m
            }
            None => {
                let kind = match mname.as_str() {
                    "icmp" | "gateway_icmp" => "icmp",
                    "sip" => "sip",
                    "tcp" | "tcp_half_open" => "tcp",
                    other => {
                        report
                            .ignored
                            .push(format!("monitor {other}: not defined in the file"));
                        return None;
                    }
                };
                report.approximated.push(format!("monitor {mname}: BIG-IP built-in, imported with its defaults (interval 5 s, timeout 16 s)"));
                monitor(kind, None, &mname, report)
            }
        }?;
        monitors.insert(mname.clone(), mon);
        Some(mname)
    };

    // One IPv4 VIP and one IPv6 virtual with as many members pair up into a dual-stack VIP,
    // the IPv6 pool's members paired with the IPv4 ones in the same order (primary first).
    // Any other IPv6 virtual becomes an IPv6-only VIP of its own.
    let pool_addresses = |pools: &BTreeSet<String>, report: &mut Report| -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for pname in pools {
            for m in get("pool", pname)
                .and_then(|p| p.child("members"))
                .map(|m| m.children())
                .unwrap_or_default()
            {
                let Some(mw) = m.words.first() else { continue };
                let node_name = member_node(mw);
                let address = m
                    .value("address")
                    .or_else(|| get("node", &node_name).and_then(|n| n.value("address")))
                    .map(|a| strip_rd(a, &format!("node {node_name}"), report))
                    .or_else(|| node_name.parse::<Ipv6Addr>().ok().map(|a| a.to_string()));
                // Only IPv6 members pair (an IPv6 virtual on an IPv4 pool gives none).
                if let Some(a) = address.filter(|a| a.parse::<Ipv6Addr>().is_ok()) {
                    if !out.iter().any(|(n, _)| *n == node_name) {
                        out.push((node_name, a));
                    }
                }
            }
        }
        out.sort_by_key(|(n, _)| (n.to_ascii_lowercase().contains("backup"), n.clone()));
        out
    };
    /// An IPv6 virtual's address, name and pool members (node name, IPv6 address).
    type Virtual6 = (String, String, Vec<(String, String)>);
    // The IPv6 virtual to pair with the one IPv4 VIP, if there is one of each.
    let mut pair6: Option<Virtual6> = None;
    // The IPv6 virtuals that become VIPs of their own.
    let mut only6: Vec<String> = Vec::new();
    if vips.len() == 1 && vips6.len() == 1 {
        let (a6, (v6name, pools6)) = vips6.iter().next().expect("one");
        pair6 = Some((
            a6.clone(),
            v6name.clone(),
            pool_addresses(pools6, &mut report),
        ));
    } else {
        only6.extend(svcs6.keys().cloned());
    }

    let mut vip_text = String::new();
    let mut passthrough_note = false;
    // The IPv4 VIPs, then the IPv6-only ones (an IPv6 virtual that did not pair is queued
    // behind them).
    let mut queue: std::collections::VecDeque<(&String, &Vec<Svc>)> = vips
        .iter()
        .chain(only6.iter().filter_map(|a| svcs6.get_key_value(a)))
        .collect();
    let mut next = 0;
    while let Some((addr, svcs)) = queue.pop_front() {
        let i = next;
        next += 1;
        let is6 = addr.parse::<Ipv6Addr>().is_ok();
        let vip_start = vip_text.len();
        let pools: BTreeSet<&str> = svcs.iter().map(|s| s.pool.as_str()).collect();
        // vsVipUdpHa01 + vsVipTcpHa01 + vsVipTlsHa01 -> vsVipHa01.
        let vname = svcs
            .iter()
            .map(|s| {
                s.virt
                    .replace("Udp", "")
                    .replace("Tcp", "")
                    .replace("Tls", "")
            })
            .next()
            .unwrap_or_else(|| format!("vip{i}"));
        let _ = writeln!(
            vip_text,
            "[[vip]]\nname = {}\naddress{} = \"{addr}\"",
            toml_str(&vname),
            if is6 { "6" } else { "" }
        );
        // Where the VIP's address6 goes, once its members say whether it pairs.
        let address6_at = vip_text.len();
        // Pool monitors (all pools of the VIP share members in the seed).
        let mut pool_monitors: Vec<String> = Vec::new();
        let mut members: BTreeMap<String, (String, i32, Vec<String>)> = BTreeMap::new();
        for pname in &pools {
            let Some(p) = get("pool", pname) else {
                report.ignored.push(format!("pool {pname}: not defined"));
                continue;
            };
            // A pool that serves only disabled virtuals (TLS-only mode) imposes no monitor.
            let serves_enabled = svcs.iter().any(|s| s.pool == *pname && s.enabled);
            if !serves_enabled {
                report.approximated.push(format!(
                    "pool {pname}: serves only disabled virtuals; its monitors are not required"
                ));
            }
            if let Some(mon) = p.child("monitor").filter(|_| serves_enabled) {
                let mut words: Vec<String> = mon.words[1..].to_vec();
                for c in mon.children() {
                    words.extend(c.words.clone());
                }
                if words.first().map(String::as_str) == Some("min") {
                    report.approximated.push(format!(
                        "pool {pname}: monitor `min {} of` treated as all of them",
                        words.get(1).map(String::as_str).unwrap_or("?")
                    ));
                    words.drain(..3.min(words.len()));
                }
                for w in words.iter().filter(|w| *w != "and") {
                    if let Some(m) = use_monitor(w, &mut report, &mut monitors) {
                        if !pool_monitors.contains(&m) {
                            pool_monitors.push(m);
                        }
                    }
                }
            }
            match p.value("service-down-action") {
                Some("reselect") => report.translated.push(format!(
                    "pool {pname}: service-down-action reselect (what sipvip does on failover)"
                )),
                Some(other) => report.approximated.push(format!(
                    "pool {pname}: service-down-action {other}; sipvip reselects"
                )),
                None => {}
            }
            if let Some(m) = p.value("min-active-members") {
                report.approximated.push(format!("pool {pname}: min-active-members {m}; sipvip has one active member per VIP, chosen by priority"));
            }
            for m in p.child("members").map(|m| m.children()).unwrap_or_default() {
                let Some(mw) = m.words.first() else { continue };
                let node_name = member_node(mw);
                let node = get("node", &node_name);
                let address = m
                    .value("address")
                    .or_else(|| node.and_then(|n| n.value("address")))
                    .map(|a| strip_rd(a, &format!("node {node_name}"), &mut report))
                    .or_else(|| {
                        node_name
                            .parse::<std::net::IpAddr>()
                            .ok()
                            .map(|a| a.to_string())
                    });
                let Some(address) = address else {
                    report
                        .ignored
                        .push(format!("pool {pname}: member {mw} has no address"));
                    continue;
                };
                // A VIP's members are of its family (an IPv6 member pairs, above).
                if address.parse::<Ipv6Addr>().is_ok() != is6 {
                    report.ignored.push(format!(
                        "pool {pname}: member {mw} ({address}) is not of VIP {addr}'s address family"
                    ));
                    continue;
                }
                let prio = m
                    .value("priority-group")
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0);
                let mut node_mons = Vec::new();
                if let Some(nm) = node.and_then(|n| n.child("monitor")) {
                    for w in nm.words[1..].iter().filter(|w| *w != "and") {
                        if let Some(mm) = use_monitor(w, &mut report, &mut monitors) {
                            node_mons.push(mm);
                        }
                    }
                }
                let e = members
                    .entry(node_name.clone())
                    .or_insert((address, prio, Vec::new()));
                e.1 = e.1.max(prio);
                for nm in node_mons {
                    if !e.2.contains(&nm) {
                        e.2.push(nm);
                    }
                }
                if node.is_some() {
                    report
                        .translated
                        .push(format!("node {node_name} -> member of VIP {addr}"));
                }
            }
            report
                .translated
                .push(format!("pool {pname} -> members of VIP {addr}"));
        }
        let _ = writeln!(
            vip_text,
            "monitors = [{}]\nwhen_all_down = \"keep-last\"\n",
            pool_monitors
                .iter()
                .map(|m| toml_str(m))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for s in svcs {
            let _ = write!(
                vip_text,
                "[[vip.service]]\nprotocol = \"{}\"\nport = {}\n",
                s.proto, s.port
            );
            if let Some(mp) = s.member_port {
                let _ = writeln!(vip_text, "member_port = {mp}");
            }
            let _ = writeln!(vip_text, "enabled = {}\n", s.enabled);
            report.translated.push(format!(
                "virtual {} -> VIP {addr} service {}/{}{}",
                s.virt,
                s.proto,
                s.port,
                if s.enabled { "" } else { " (disabled)" }
            ));
        }
        if is6 && members.is_empty() {
            vip_text.truncate(vip_start);
            report.ignored.push(format!(
                "virtual {}: IPv6 {addr}: its pools have no IPv6 members",
                svcs.first().map(|s| s.virt.as_str()).unwrap_or("?")
            ));
            continue;
        }
        if is6 {
            for s in svcs {
                report.translated.push(format!(
                    "virtual {} (IPv6 {addr}) -> IPv6-only VIP {vname}",
                    s.virt
                ));
            }
        }
        // The IPv6 virtual pairs when its pool has as many IPv6 members as this VIP has;
        // else it is a VIP of its own.
        let mut pair6_addr: Option<String> = None;
        let paired6 = match pair6.take().filter(|_| !is6) {
            Some((a6, v6name, members6)) if members6.len() == members.len() => {
                pair6_addr = Some(a6.clone());
                vip_text.insert_str(address6_at, &format!("address6 = \"{a6}\"\n"));
                report.translated.push(format!(
                    "virtual {v6name} (IPv6 {a6}) -> address6 of VIP {addr}; its pool's members' IPv6 addresses paired in order"
                ));
                Some(members6)
            }
            Some((a6, v6name, members6)) => {
                report.approximated.push(format!(
                    "virtual {v6name}: IPv6 {a6}: its pool has {} IPv6 members and VIP {addr} {}: imported as a VIP of its own",
                    members6.len(),
                    members.len()
                ));
                if let Some(item) = svcs6.get_key_value(&a6) {
                    queue.push_back(item);
                }
                None
            }
            None => None,
        };
        // Priorities: BIG-IP priority groups when set; else the first member is preferred,
        // as the seed's primary is listed first.
        let any_prio = members.values().any(|m| m.1 != 0);
        let mut ordered: Vec<_> = members.iter().collect();
        ordered.sort_by_key(|(n, _)| {
            // Keep the pool's member order where possible: "Primary" before "Backup".
            (n.to_ascii_lowercase().contains("backup"), (*n).clone())
        });
        for (k, (mname, (address, prio, node_mons))) in ordered.iter().enumerate() {
            let priority = if any_prio { *prio } else { 10 - k as i32 * 5 };
            let _ = write!(
                vip_text,
                "[[vip.member]]\nname = {}\naddress{} = \"{address}\"\npriority = {priority}\n",
                toml_str(mname),
                if is6 { "6" } else { "" }
            );
            if let Some((n6, a6)) = paired6.as_ref().and_then(|m| m.get(k)) {
                let _ = writeln!(vip_text, "address6 = \"{a6}\"");
                report.approximated.push(format!(
                    "member {mname}: IPv6 address {a6} from node {n6} (paired by order)"
                ));
            }
            if !node_mons.is_empty() {
                let mut all = pool_monitors.clone();
                for m in node_mons {
                    if !all.contains(m) {
                        all.push(m.clone());
                    }
                }
                let _ = writeln!(
                    vip_text,
                    "monitors = [{}]",
                    all.iter()
                        .map(|m| toml_str(m))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            vip_text.push('\n');
        }
        if !any_prio && members.len() > 1 {
            report.approximated.push(format!("VIP {addr}: no priority groups; the primary (listed first, not named backup) is preferred"));
        }
        // SNAT pool and sources must be this VIP and its members, in each family: the pool's
        // addresses of a family the VIP has include the VIP's address of that family.
        let vip6 = paired6.as_ref().and(pair6_addr.as_deref());
        for (family, vip_addr) in [
            (is6, Some(addr.as_str())),
            (true, if is6 { None } else { vip6 }),
        ] {
            let Some(vip_addr) = vip_addr else { continue };
            let pool: Vec<&String> = snat_pool_addrs
                .iter()
                .filter(|a| a.parse::<Ipv6Addr>().is_ok() == family)
                .collect();
            if !pool.is_empty() && !pool.iter().any(|a| *a == vip_addr) {
                report.approximated.push(format!("SNAT pool addresses {pool:?} differ from VIP {vip_addr}; sipvip SNATs members to their VIP"));
            }
        }
        for s in &snat_sources {
            let a = s.trim_end_matches("/32").trim_end_matches("/128");
            let is_member6 = paired6
                .as_ref()
                .is_some_and(|m6| m6.iter().any(|(_, a6)| a6 == a));
            if !members.values().any(|m| m.0 == a) && !is_member6 {
                report.approximated.push(format!(
                    "SNAT source {s} is not a member of VIP {addr}; sipvip SNATs members only"
                ));
            }
        }
        passthrough_note = true;
    }
    for m in monitors.values() {
        out.push_str(&m.toml);
        out.push('\n');
    }
    out.push_str(&vip_text);
    let _ = writeln!(
        out,
        "[snat]\nenabled = {}\nexclusions = [{}]\n",
        snat_rule_name.is_some(),
        exclusions
            .iter()
            .map(|e| toml_str(
                e.strip_suffix("/32")
                    .filter(|a| a.parse::<Ipv4Addr>().is_ok())
                    .or_else(|| e.strip_suffix("/128"))
                    .unwrap_or(e)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if snat_rule_name.is_none() {
        report
            .approximated
            .push("no SNAT iRule: [snat] enabled = false".into());
    }
    if passthrough_note {
        let _ = writeln!(out, "# T-Server listening ports go here: replies from them are never SNATed.\n[passthrough]\nports = []");
    }
    for list in [
        &mut report.translated,
        &mut report.approximated,
        &mut report.ignored,
    ] {
        let mut seen = BTreeSet::new();
        list.retain(|x| seen.insert(x.clone()));
    }
    Ok(Import { toml: out, report })
}
