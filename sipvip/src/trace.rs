//! `sipvip trace`: what the datapath did to each packet, live. The request (filters, limits)
//! becomes the datapath's filter ([`filter`]); each event the datapath emits becomes a
//! [`Record`] in the operator's vocabulary ([`record`]): the frame's addresses and ports
//! before and after the rewrite, the side and direction, the verdict and the reason (the
//! counters' labels), the VIP and member by name. Records print as human lines ([`human`]),
//! JSON, or a pcapng capture ([`Pcap`]) with both frames and the verdict in each packet's
//! comment; [`sip`] reads a SIP start line and Call-ID out of a frame. All of it is pure:
//! the daemon reads the ring buffer and streams records (`daemon/trace.rs`), the command
//! line prints them.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sipvip_common::{
    Disposition, Reason, TraceEvent, TraceFilter, TRACE_F_HOST, TRACE_F_MEMBER, TRACE_F_PORT,
    TRACE_F_PROTO, TRACE_F_VIP, TRACE_SIDE_EXT, TRACE_SIDE_INT, TRACE_SIDE_NODE_OUT,
    TRACE_SNAP_MAX, TRACE_WINDOW_NS,
};

use crate::plan::Plan;

/// Bytes of each frame a trace copies unless told: Ethernet, IPv6 and UDP headers and a SIP
/// start line with room to spare.
pub const DEFAULT_SNAP: u32 = 256;
/// Events per second each CPU may emit unless told.
pub const DEFAULT_RATE: u32 = 1000;

/// What a trace asks for (`sipvip trace`'s filters and limits).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TraceRequest {
    /// A VIP by name: its addresses before or after the rewrite.
    #[serde(default)]
    pub vip: Option<String>,
    /// A member by name: its addresses before or after the rewrite.
    #[serde(default)]
    pub member: Option<String>,
    /// ADDR or ADDR/LEN: any address of the packet, before or after the rewrite.
    #[serde(default)]
    pub host: Option<String>,
    /// A source or destination port, before or after the rewrite.
    #[serde(default)]
    pub port: Option<u16>,
    /// udp, tcp or icmp (ICMPv6 too).
    #[serde(default)]
    pub proto: Option<String>,
    /// Reason labels (`steered`, `drop_vip_closed`, ...) or classes (`handled`, `pass`,
    /// `drop`); empty: all.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// `in` (the external side: toward the members) or `out` (from the members); none:
    /// both.
    #[serde(default)]
    pub direction: Option<String>,
    /// Bytes of each frame, 1 to `TRACE_SNAP_MAX`.
    #[serde(default)]
    pub snap: Option<u32>,
    /// Events per second on each CPU.
    #[serde(default)]
    pub rate: Option<u32>,
}

/// The datapath's filter for a request, its names looked up in `plan`.
pub fn filter(req: &TraceRequest, plan: &Plan) -> Result<TraceFilter, String> {
    let mut f = TraceFilter {
        snap: req.snap.unwrap_or(DEFAULT_SNAP),
        reasons: 0,
        sides: 1 << TRACE_SIDE_EXT | 1 << TRACE_SIDE_INT | 1 << TRACE_SIDE_NODE_OUT,
        ..TraceFilter::default()
    };
    if f.snap == 0 || f.snap as usize > TRACE_SNAP_MAX {
        return Err(format!(
            "--snap {}: use 1 to {TRACE_SNAP_MAX} bytes",
            f.snap
        ));
    }
    let rate = req.rate.unwrap_or(DEFAULT_RATE);
    if rate == 0 || rate > 1_000_000 {
        return Err(format!("--rate {rate}: use 1 to 1000000 events a second"));
    }
    let windows = (1_000_000_000 / TRACE_WINDOW_NS) as u32;
    f.per_window = rate.div_ceil(windows);
    // Unused families never match: mask all-ones, address 0.
    f.host_mask = [[u32::MAX; 4]; 2];
    if let Some(name) = &req.vip {
        let v = plan
            .vips
            .iter()
            .find(|v| &v.name == name)
            .ok_or_else(|| format!("--vip {name}: no such VIP ({})", names(plan)))?;
        f.flags |= TRACE_F_VIP;
        f.vip = words(v.spec.addr, v.spec.addr6);
    }
    if let Some(name) = &req.member {
        let m = plan
            .vips
            .iter()
            .flat_map(|v| &v.members)
            .find(|m| &m.name == name)
            .ok_or_else(|| format!("--member {name}: no such member"))?;
        f.flags |= TRACE_F_MEMBER;
        f.member = words(m.address, m.address6);
    }
    if let Some(h) = &req.host {
        let p = crate::config::parse_prefix(h).map_err(|e| format!("--host {e}"))?;
        f.flags |= TRACE_F_HOST;
        let fam = usize::from(p.addr.is_ipv6());
        f.host[fam] = addr_words(p.addr);
        f.host_mask[fam] = mask_words(p.addr.is_ipv6(), p.len);
    }
    if let Some(port) = req.port {
        if port == 0 {
            return Err("--port 0: name a port from 1 to 65535".into());
        }
        f.flags |= TRACE_F_PORT;
        f.port_be = port.to_be();
    }
    if let Some(p) = &req.proto {
        f.flags |= TRACE_F_PROTO;
        f.proto = match p.as_str() {
            "udp" => 17,
            "tcp" => 6,
            "icmp" | "icmp6" | "icmpv6" => 1,
            other => return Err(format!("--proto {other}: udp, tcp or icmp")),
        };
    }
    if let Some(d) = &req.direction {
        f.sides = match d.as_str() {
            "in" => 1 << TRACE_SIDE_EXT,
            "out" => 1 << TRACE_SIDE_INT | 1 << TRACE_SIDE_NODE_OUT,
            other => return Err(format!("--direction {other}: in or out")),
        };
    }
    if req.reasons.is_empty() {
        f.reasons = u64::MAX;
    }
    for r in &req.reasons {
        let class = match r.as_str() {
            "handled" => Some(Disposition::Handled),
            "pass" => Some(Disposition::Pass),
            "drop" => Some(Disposition::Drop),
            _ => None,
        };
        let mut any = false;
        for reason in Reason::ALL {
            if reason.label() == r || class == Some(reason.disposition()) {
                f.reasons |= 1 << (*reason as u32);
                any = true;
            }
        }
        if !any {
            return Err(format!(
                "--reason {r}: handled, pass, drop, or a reason ({})",
                Reason::ALL
                    .iter()
                    .map(|r| r.label())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(f)
}

fn names(plan: &Plan) -> String {
    plan.vips
        .iter()
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An address in the datapath's 16-byte form (IPv4 in word 0).
fn addr_words(a: IpAddr) -> [u32; 4] {
    match a {
        IpAddr::V4(a) => [u32::from_ne_bytes(a.octets()), 0, 0, 0],
        IpAddr::V6(a) => sipvip_common::ipv6_be(a.octets()),
    }
}

fn words(v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> [[u32; 4]; 2] {
    [
        v4.map(|a| addr_words(IpAddr::V4(a))).unwrap_or_default(),
        v6.map(|a| addr_words(IpAddr::V6(a))).unwrap_or_default(),
    ]
}

fn mask_words(v6: bool, len: u8) -> [u32; 4] {
    if !v6 {
        let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        return [m.to_be(), 0, 0, 0];
    }
    let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    sipvip_common::ipv6_be(m.to_be_bytes())
}

/// A packet's addresses and ports (ports 0 where it has none, or they were not captured).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// Where the L4 payload starts in the frame, when the ports were read.
    #[serde(skip)]
    pub payload: Option<usize>,
}

/// Reads the addresses and ports out of an Ethernet frame's first bytes (802.1Q, IPv4 with
/// options, IPv6 with extension headers), as far as they were captured.
pub fn tuple(frame: &[u8]) -> Option<Tuple> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    off += 2;
    if ethertype == 0x8100 {
        ethertype = u16::from_be_bytes([*frame.get(off + 2)?, *frame.get(off + 3)?]);
        off += 4;
    }
    let (src, dst, mut proto, mut l4, later) = match ethertype {
        0x0800 => {
            let h = frame.get(off..off + 20)?;
            let ihl = usize::from(h[0] & 0xf) * 4;
            let frag = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
            (
                IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
                IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
                h[9],
                off + ihl,
                frag != 0,
            )
        }
        0x86dd => {
            let h = frame.get(off..off + 40)?;
            let a = |o: usize| -> Option<Ipv6Addr> {
                Some(Ipv6Addr::from(
                    <[u8; 16]>::try_from(h.get(o..o + 16)?).ok()?,
                ))
            };
            (IpAddr::V6(a(8)?), IpAddr::V6(a(24)?), h[6], off + 40, false)
        }
        _ => return None,
    };
    let mut later = later;
    // IPv6 extension headers: hop-by-hop, routing, destination options, fragment.
    for _ in 0..8 {
        match proto {
            0 | 43 | 60 if src.is_ipv6() => {
                let h = frame.get(l4..l4 + 2);
                let Some(h) = h else { break };
                proto = h[0];
                l4 += (usize::from(h[1]) + 1) * 8;
            }
            44 if src.is_ipv6() => {
                let Some(h) = frame.get(l4..l4 + 8) else {
                    break;
                };
                proto = h[0];
                later = u16::from_be_bytes([h[2], h[3]]) >> 3 != 0;
                l4 += 8;
            }
            _ => break,
        }
    }
    let (mut sport, mut dport, mut payload) = (0, 0, None);
    if !later && (proto == 6 || proto == 17) {
        if let Some(p) = frame.get(l4..l4 + 4) {
            sport = u16::from_be_bytes([p[0], p[1]]);
            dport = u16::from_be_bytes([p[2], p[3]]);
            payload = if proto == 17 {
                Some(l4 + 8)
            } else {
                frame.get(l4 + 12).map(|o| l4 + usize::from(o >> 4) * 4)
            };
        }
    }
    Some(Tuple {
        src,
        dst,
        proto,
        sport,
        dport,
        payload,
    })
}

/// One traced packet, as `sipvip trace` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub interface: String,
    /// `ext` (external side), `int` (internal side), `node` (on-node TC egress).
    pub side: String,
    /// `in` (toward the members) or `out` (from them).
    pub direction: String,
    /// What the program returned: `pass` (to the kernel), `drop`, `tx` (back out of the
    /// interface it came in on), `redirect`.
    pub verdict: String,
    /// The reason counted (the counters' label).
    pub reason: String,
    pub vip: Option<String>,
    pub member: Option<String>,
    pub before: Option<Tuple>,
    /// The packet as it left, where the datapath rewrote it or built an answer.
    pub after: Option<Tuple>,
    pub len: u32,
    pub len_after: u32,
    /// The frames' first bytes, hex.
    pub frame: String,
    pub frame_after: String,
    /// The human line (`human`), names resolved by the daemon.
    #[serde(default)]
    pub line: String,
}

impl Record {
    pub fn frame_bytes(&self) -> Vec<u8> {
        unhex(&self.frame)
    }
    pub fn frame_after_bytes(&self) -> Vec<u8> {
        unhex(&self.frame_after)
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// How an event's names are found.
pub struct Namer<'a> {
    pub plan: &'a Plan,
    /// Interface names by index.
    pub interfaces: BTreeMap<u32, String>,
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, to date the datapath's timestamps.
    pub epoch_offset_ns: i128,
}

impl Namer<'_> {
    /// The VIP, and member, an address belongs to.
    fn owner(&self, a: IpAddr) -> Option<(String, Option<String>)> {
        for v in &self.plan.vips {
            if v.spec.addr.map(IpAddr::V4) == Some(a) || v.spec.addr6.map(IpAddr::V6) == Some(a) {
                return Some((v.name.clone(), None));
            }
            for m in &v.members {
                if m.address.map(IpAddr::V4) == Some(a) || m.address6.map(IpAddr::V6) == Some(a) {
                    return Some((v.name.clone(), Some(m.name.clone())));
                }
            }
        }
        None
    }

    /// A name for an address: `VIP name`, a member's name, or the address.
    pub fn label(&self, a: IpAddr) -> String {
        match self.owner(a) {
            Some((v, None)) => format!("VIP {v}"),
            Some((_, Some(m))) => m,
            None => a.to_string(),
        }
    }
}

/// The record of an event.
pub fn record(e: &TraceEvent, n: &Namer) -> Record {
    let before = &e.before[..(e.cap as usize).min(TRACE_SNAP_MAX)];
    let after = &e.after[..(e.cap_after as usize).min(TRACE_SNAP_MAX)];
    let reason = Reason::ALL
        .iter()
        .find(|r| **r as u8 == e.reason)
        .map(|r| r.label().to_string())
        .unwrap_or_else(|| format!("reason_{}", e.reason));
    let side = match e.side {
        TRACE_SIDE_EXT => "ext",
        TRACE_SIDE_INT => "int",
        _ => "node",
    };
    let tc = e.side == TRACE_SIDE_NODE_OUT;
    let verdict = match (tc, e.verdict) {
        (false, 1) | (true, 2) => "drop",
        (false, 2) | (true, 0) => "pass",
        (false, 3) => "tx",
        (false, 4) => "redirect",
        _ => "other",
    };
    let t_before = tuple(before);
    let t_after = tuple(after).filter(|a| Some(*a) != t_before || before != after);
    // Named by the addresses the packet carried, as it arrived and as it left.
    let (mut vip, mut member) = (None, None);
    for a in [t_before, t_after]
        .iter()
        .flatten()
        .flat_map(|t| [t.dst, t.src])
    {
        if let Some((v, m)) = n.owner(a) {
            vip.get_or_insert(v);
            if member.is_none() {
                member = m;
            }
        }
    }
    let time = (i128::from(e.ts_ns) + n.epoch_offset_ns).max(0) as u64;
    let mut r = Record {
        time_ns: time,
        interface: n
            .interfaces
            .get(&e.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{}", e.ifindex)),
        side: side.into(),
        direction: if e.side == TRACE_SIDE_EXT {
            "in"
        } else {
            "out"
        }
        .into(),
        verdict: verdict.into(),
        reason,
        vip,
        member,
        before: t_before,
        after: t_after,
        len: e.len,
        len_after: e.len_after,
        frame: hex(before),
        frame_after: if before == after {
            String::new()
        } else {
            hex(after)
        },
        line: String::new(),
    };
    r.line = human(&r, n);
    r
}

fn endpoint(n: &Namer, a: IpAddr, port: u16) -> String {
    let label = n.label(a);
    let addr = match a {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let at = if port == 0 {
        addr
    } else {
        format!("{addr}:{port}")
    };
    if label == a.to_string() {
        at
    } else {
        format!("{label} {at}")
    }
}

/// One human line: time, side and direction, the packet as it arrived, what was done, and
/// what changed.
pub fn human(r: &Record, n: &Namer) -> String {
    let secs = r.time_ns / 1_000_000_000;
    let t = format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        r.time_ns % 1_000_000_000 / 1000
    );
    let mut s = format!("{t} {} {:<3}", r.side, r.direction);
    match &r.before {
        Some(b) => {
            let _ = write!(
                s,
                " {} > {} {}",
                endpoint(n, b.src, b.sport),
                endpoint(n, b.dst, b.dport),
                proto_name(b.proto)
            );
        }
        None => s.push_str(" (not IP)"),
    }
    let _ = write!(s, "  {} ({})", r.reason, r.verdict);
    if let (Some(b), Some(a)) = (&r.before, &r.after) {
        if a.dst != b.dst || a.dport != b.dport {
            let _ = write!(s, " -> {}", endpoint(n, a.dst, a.dport));
        } else if a.src != b.src || a.sport != b.sport {
            let _ = write!(s, " as {}", endpoint(n, a.src, a.sport));
        } else if a.src == b.dst {
            let _ = write!(s, " answered to {}", endpoint(n, a.dst, a.dport));
        }
    }
    s
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmp6".into(),
        other => format!("proto {other}"),
    }
}

/// A SIP message's start line and Call-ID, from a frame's captured payload.
pub fn sip(frame: &[u8]) -> Option<(String, Option<String>)> {
    let t = tuple(frame)?;
    let payload = frame.get(t.payload?..)?;
    let text = String::from_utf8_lossy(payload);
    let mut lines = text.split("\r\n");
    let start = lines.next()?.trim().to_string();
    let is_sip = start.starts_with("SIP/2.0 ")
        || start.rsplit_once(' ').is_some_and(|(_, v)| v == "SIP/2.0");
    if !is_sip {
        return None;
    }
    let call_id = lines.take_while(|l| !l.is_empty()).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        let k = k.trim();
        (k.eq_ignore_ascii_case("call-id") || k == "i").then(|| v.trim().to_string())
    });
    Some((start, call_id))
}

/// A pcapng capture of the records: one interface per datapath interface and side, each
/// record's frame as it arrived and, where it changed, as it left, each with a comment that
/// names the verdict.
pub struct Pcap<W: std::io::Write> {
    w: pcap_file::pcapng::PcapNgWriter<W>,
    interfaces: Vec<String>,
    snap: u32,
}

impl<W: std::io::Write> Pcap<W> {
    pub fn new(w: W, snap: u32) -> Result<Self, String> {
        Ok(Pcap {
            w: pcap_file::pcapng::PcapNgWriter::new(w).map_err(|e| e.to_string())?,
            interfaces: Vec::new(),
            snap,
        })
    }

    fn interface(&mut self, name: &str) -> Result<u32, String> {
        use pcap_file::pcapng::blocks::interface_description::{
            InterfaceDescriptionBlock, InterfaceDescriptionOption,
        };
        if let Some(i) = self.interfaces.iter().position(|n| n == name) {
            return Ok(i as u32);
        }
        let idb = InterfaceDescriptionBlock {
            linktype: pcap_file::DataLink::ETHERNET,
            snaplen: self.snap,
            options: vec![
                InterfaceDescriptionOption::IfName(name.to_string().into()),
                // Nanosecond timestamps.
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        self.w.write_pcapng_block(idb).map_err(|e| e.to_string())?;
        self.interfaces.push(name.to_string());
        Ok(self.interfaces.len() as u32 - 1)
    }

    /// Writes a record's frames.
    pub fn write(&mut self, r: &Record) -> Result<(), String> {
        use pcap_file::pcapng::blocks::enhanced_packet::{
            EnhancedPacketBlock, EnhancedPacketOption,
        };
        let what = format!(
            "sipvip {} {} {} ({}){}{}",
            r.side,
            r.direction,
            r.reason,
            r.verdict,
            r.vip
                .as_deref()
                .map(|v| format!(" vip={v}"))
                .unwrap_or_default(),
            r.member
                .as_deref()
                .map(|m| format!(" member={m}"))
                .unwrap_or_default()
        );
        let mut frames = vec![(r.frame_bytes(), r.len, format!("{what}: as it arrived"))];
        if !r.frame_after.is_empty() {
            frames.push((
                r.frame_after_bytes(),
                r.len_after,
                format!("{what}: as it left"),
            ));
        }
        for (data, len, comment) in frames {
            let interface_id = self.interface(&format!("{}-{}", r.interface, r.side))?;
            let epb = EnhancedPacketBlock {
                interface_id,
                timestamp: Duration::from_nanos(r.time_ns),
                original_len: len,
                data: data.into(),
                options: vec![EnhancedPacketOption::Comment(comment.into())],
            };
            self.w.write_pcapng_block(epb).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), String> {
        self.w.get_mut().flush().map_err(|e| e.to_string())
    }
}

/// What the daemon sends on a trace's connection, one JSON line each.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Line {
    Event(Box<Record>),
    /// The datapath's counts since the trace began (every second, and at the end).
    Counts {
        matched: u64,
        emitted: u64,
        rate_limited: u64,
        lost: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_v4_udp(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&[198, 18, 1, 10, 198, 18, 1, 100]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&5062u16.to_be_bytes());
        f.extend_from_slice(&5060u16.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn tuples_and_sip_come_out_of_frames() {
        let f = frame_v4_udp(b"REGISTER sip:vip SIP/2.0\r\nVia: x\r\nCall-ID: abc@1\r\n\r\n");
        let t = tuple(&f).unwrap();
        assert_eq!(t.src, IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10)));
        assert_eq!((t.proto, t.sport, t.dport), (17, 5062, 5060));
        let (start, call) = sip(&f).unwrap();
        assert_eq!(start, "REGISTER sip:vip SIP/2.0");
        assert_eq!(call.as_deref(), Some("abc@1"));
        let reply = frame_v4_udp(b"SIP/2.0 200 OK\r\ni: compact\r\n\r\n");
        assert_eq!(
            sip(&reply),
            Some(("SIP/2.0 200 OK".into(), Some("compact".into())))
        );
        assert_eq!(sip(&frame_v4_udp(b"hello")), None);
        // Cut anywhere: never a panic.
        for cut in 0..f.len() {
            let _ = tuple(&f[..cut]);
            let _ = sip(&f[..cut]);
        }
        assert_eq!(tuple(&[0u8; 14]), None);
    }

    #[test]
    fn masks_and_hex() {
        assert_eq!(
            mask_words(false, 24),
            [u32::from_ne_bytes([255, 255, 255, 0]), 0, 0, 0]
        );
        assert_eq!(mask_words(false, 0), [0, 0, 0, 0]);
        assert_eq!(mask_words(true, 128), [u32::MAX; 4]);
        assert_eq!(unhex(&hex(&[1, 0xab, 0xff])), vec![1, 0xab, 0xff]);
    }
}
