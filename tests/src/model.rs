//! A plain-Rust reference model of the datapath's rules, written from the rules and
//! not from the kernel code: it works on byte vectors with host-order values and big-endian
//! checksum words. The differential test requires it and the datapath to agree on verdict,
//! output bytes and counters for every frame.

use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, Ipv6Addr},
};

use sipvip::datapath::{be16, be32, VipSpec};
use sipvip_common::{ipv6_be, FragKey, FragKey6, FRAG_IN, FRAG_OUT};

use crate::{
    check::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    frame::Mac,
    topo,
};

const UDP: u8 = 17;
const TCP: u8 = 6;
const ICMP: u8 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum FlowKind {
    /// Replies to VIP:port from remote:port go to a member.
    Snat,
    /// A flow opened from outside to member:port.
    Passthrough,
}

/// (src, dst, IP id, proto, the side it arrived on)
type DatagramId = (Ipv4Addr, Ipv4Addr, u16, u8, Side);
/// An IPv6 datagram: (src, dst, identification, proto, side).
type DatagramId6 = (Ipv6Addr, Ipv6Addr, u32, u8, Side);

/// (kind, proto, local addr, local port, remote addr, remote port)
type Flow = (FlowKind, u8, Ipv4Addr, u16, Ipv4Addr, u16);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlowTarget {
    member: Ipv4Addr,
    slot: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Datagram {
    /// Translate to this address (member inbound, VIP outbound).
    To {
        addr: Ipv4Addr,
        slot: u32,
        service: Option<usize>,
    },
    Untouched,
}

/// What every fragment of an IPv6 datagram gets: its first fragment's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Datagram6 {
    To {
        addr: Ipv6Addr,
        slot: u32,
        service: Option<usize>,
    },
    Untouched,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlowTarget6 {
    member: Ipv6Addr,
    slot: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Ext,
    Int,
}

/// What the FIB says about a destination in the fixture topology.
#[derive(Clone, Copy)]
enum Fib {
    Send {
        smac: Mac,
        dmac: Mac,
    },
    NoNeigh,
    Blackhole,
    /// Local, broadcast or no route: the kernel would not forward it.
    NotForwarded,
    /// Longer than the egress MTU.
    TooBig(u16),
    /// 802.1Q: the datapath leaves forwarding to the kernel's VLAN device.
    Vlan,
}

fn fib(dst: Ipv4Addr, tot_len: usize) -> Fib {
    let o = dst.octets();
    if o[..3] == [198, 18, 9] {
        return Fib::Blackhole;
    }
    // The gateway's own addresses, and the broadcast addresses of its connected subnets.
    let connected = o[..3] == [198, 18, 1] || o[..3] == [198, 18, 2];
    if dst == topo::EXT_IP || dst == topo::INT_IP || (connected && o[3] == 255) {
        return Fib::NotForwarded;
    }
    let (link, smac) = match o[..3] {
        [198, 18, 1] => ("ext0", topo::EXT_MAC),
        [198, 18, 2] => ("int0", topo::INT_MAC),
        [198, 18, 3] => {
            return if tot_len > 1500 {
                Fib::TooBig(1500)
            } else {
                Fib::NoNeigh
            };
        }
        _ => return Fib::NotForwarded,
    };
    if tot_len > 1500 {
        return Fib::TooBig(1500);
    }
    match topo::NEIGHBOURS
        .iter()
        .find(|(ip, _, dev)| *ip == dst && *dev == link)
    {
        Some((_, mac, _)) => Fib::Send { smac, dmac: *mac },
        None => Fib::NoNeigh,
    }
}

/// A datagram's identity in the datapath's fragment table of its family, as the datapath
/// stores it.
#[derive(Clone, Copy, Debug)]
pub enum AnyFragKey {
    V4(FragKey),
    V6(FragKey6),
}

/// Whether the datapath's fragment table still holds a datagram.
pub type FragQuery<'a> = &'a dyn Fn(AnyFragKey) -> bool;

/// How many frames after its first fragment the model trusts its own record of a datagram;
/// after that it asks the datapath whether the record is still there (the kernel's LRU
/// evicts in an order the model cannot know).
const FRAG_FRESH_FRAMES: u64 = 64;

/// Per-VIP counters as (packets, bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub vip_in: (u64, u64),
    pub vip_out: (u64, u64),
    pub service_in: [(u64, u64); 8],
    pub service_out: [(u64, u64); 8],
    pub member_in: [(u64, u64); 8],
    pub member_out: [(u64, u64); 8],
}

pub struct Model {
    pub spec: VipSpec,
    pub active: Option<usize>,
    pub exclusions: Vec<(Ipv4Addr, u8)>,
    flows: HashMap<Flow, FlowTarget>,
    /// First fragments' decisions, with the frame number they were made at.
    datagrams: HashMap<DatagramId, (Datagram, u64)>,
    frames: u64,
    /// The side of the frame being processed.
    side: Side,
    /// ICMPv6 errors translated toward a member, and from one.
    pub errors6_in: u64,
    pub errors6_out: u64,
    /// IPv6 flows: (kind, proto, local addr, local port, remote addr, remote port).
    flows6: HashMap<(FlowKind, u8, Ipv6Addr, u16, Ipv6Addr, u16), FlowTarget6>,
    /// IPv6 first fragments' decisions, with the frame number they were made at.
    datagrams6: HashMap<DatagramId6, (Datagram6, u64)>,
    /// IPv6 fragments and packets with extension headers the rules decided on.
    pub fragments6: u64,
    pub ext_headers6: u64,
    pub reasons: BTreeMap<&'static str, u64>,
    pub traffic: Traffic,
}

// ---- byte helpers (host order in, network order in the buffer) ----
/// The outcome of an IPv6 frame in a configuration without IPv6 VIPs or members: RFC 8200
/// parsing as the datapath does it, written plainly (the extension headers the datapath
/// walks: at most `MAX_IPV6_EXT_HEADERS`, each read within the frame's first 1023 bytes),
/// then the address screen, then the side's first rule, which finds no VIP (`ext`) or no
/// member (`int`).
pub fn ipv6_outcome(b: &[u8], l3: usize, ext: bool) -> &'static str {
    match ipv6_screen(b, l3) {
        "pass_ipv6" => {}
        r => return r,
    }
    let (s, d) = (&b[l3 + 8..l3 + 24], &b[l3 + 24..l3 + 40]);
    let loopback = |a: &[u8]| a[..15].iter().all(|x| *x == 0) && a[15] == 1;
    let zero = |a: &[u8]| a.iter().all(|x| *x == 0);
    if s[0] == 0xff || loopback(s) || zero(s) || loopback(d) || zero(d) {
        return "drop_martian";
    }
    if d[0] == 0xff {
        return "pass_broadcast";
    }
    if ext {
        "pass_not_vip"
    } else {
        "pass_not_member"
    }
}

/// The parse's part of [`ipv6_outcome`]: `pass_ipv6` for a packet the rules then see.
pub fn ipv6_screen(b: &[u8], l3: usize) -> &'static str {
    const EXT: [u8; 4] = [0, 43, 60, 44];
    if b.len() < l3 + 40 || b[l3] >> 4 != 6 {
        return "drop_malformed_ipv6";
    }
    let payload = usize::from(r16(b, l3 + 4));
    let mut next = b[l3 + 6];
    if payload == 0 && next == 0 {
        return "drop_malformed_ipv6"; // a jumbogram
    }
    if l3 + 40 + payload > b.len() {
        return "drop_malformed_ipv6";
    }
    let end = l3 + 40 + payload;
    let mut off = l3 + 40;
    let mut later = false;
    for _ in 0..sipvip_common::MAX_IPV6_EXT_HEADERS {
        if !EXT.contains(&next) {
            break;
        }
        if off + 8 > 0x3ff {
            return "pass_ipv6_ext";
        }
        if off + 8 > end {
            return "drop_malformed_ipv6";
        }
        let size = if next == 44 {
            let frag = r16(b, off + 2);
            if frag & 1 != 0 && !(end - (off + 8)).is_multiple_of(8) {
                return "drop_malformed_ipv6";
            }
            if usize::from(frag >> 3) * 8 + (end - (off + 8)) > 0xffff {
                return "drop_malformed_ipv6";
            }
            later = frag >> 3 != 0;
            8
        } else {
            (usize::from(b[off + 1]) + 1) * 8
        };
        if off + size > end {
            return "drop_malformed_ipv6";
        }
        next = b[off];
        off += size;
        if later {
            break;
        }
    }
    if !later && EXT.contains(&next) {
        return "pass_ipv6_ext";
    }
    if next == 58 && !later {
        if off + 4 > end {
            return "drop_malformed_ipv6";
        }
        if (133..=137).contains(&b[off]) {
            return "pass_nd";
        }
    }
    "pass_ipv6"
}

fn r16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}
fn w16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_be_bytes());
}
fn rip(b: &[u8], o: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3])
}
fn wip(b: &mut [u8], o: usize, a: Ipv4Addr) {
    b[o..o + 4].copy_from_slice(&a.octets());
}

/// RFC 1624 eqn. 3 over a list of (old, new) words.
fn adjust(csum: u16, changes: &[(u16, u16)]) -> u16 {
    let mut s = u32::from(!csum);
    for (old, new) in changes {
        s += u32::from(!*old) + u32::from(*new);
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}
fn adjust_udp(csum: u16, changes: &[(u16, u16)]) -> u16 {
    if csum == 0 {
        return 0;
    }
    match adjust(csum, changes) {
        0 => 0xffff,
        c => c,
    }
}
fn addr_words(old: Ipv4Addr, new: Ipv4Addr) -> [(u16, u16); 2] {
    let (o, n) = (old.octets(), new.octets());
    [
        (
            u16::from_be_bytes([o[0], o[1]]),
            u16::from_be_bytes([n[0], n[1]]),
        ),
        (
            u16::from_be_bytes([o[2], o[3]]),
            u16::from_be_bytes([n[2], n[3]]),
        ),
    ]
}

/// Parsed offsets of one frame.
struct P {
    l3: usize,
    l4: usize,
    vlan: bool,
    proto: u8,
    ttl: u8,
    tot: usize,
    id: u16,
    frag_off: u16,
    mf: bool,
    df: bool,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

impl P {
    fn later(&self) -> bool {
        self.frag_off != 0
    }
    fn l4_end(&self) -> usize {
        self.l3 + self.tot
    }
}

type Outcome = Result<u32, &'static str>;

impl Model {
    pub fn new(spec: VipSpec, exclusions: &[(Ipv4Addr, u8)]) -> Self {
        Model {
            active: spec.active,
            spec,
            exclusions: exclusions.to_vec(),
            flows: HashMap::new(),
            datagrams: HashMap::new(),
            frames: 0,
            side: Side::Ext,
            flows6: HashMap::new(),
            datagrams6: HashMap::new(),
            fragments6: 0,
            ext_headers6: 0,
            errors6_in: 0,
            errors6_out: 0,
            reasons: BTreeMap::new(),
            traffic: Traffic::default(),
        }
    }

    /// Runs one frame; returns the verdict and the frame as it leaves. `frags` tells whether
    /// the datapath's fragment table still holds a datagram (asked only about records older
    /// than `FRAG_FRESH_FRAMES`).
    pub fn process(&mut self, side: Side, frame: &[u8], frags: FragQuery) -> (u32, Vec<u8>) {
        self.frames += 1;
        self.side = side;
        let mut b = frame.to_vec();
        let r = match self.accept(side, &b) {
            Err(r) => Err(r),
            Ok(()) if ipv6_l3(&b).is_some() => self.ipv6(side, &mut b, frags),
            Ok(()) => match side {
                Side::Ext => self.external(&mut b, frags),
                Side::Int => self.internal(&mut b, frags),
            },
        };
        let verdict = match r {
            Ok(v) => v,
            Err(reason) => {
                *self.reasons.entry(reason).or_default() += 1;
                if reason.starts_with("drop_") {
                    XDP_DROP
                } else {
                    XDP_PASS
                }
            }
        };
        (verdict, b)
    }

    /// The L2 acceptance rule: only frames to the interface's own MAC are translated.
    fn accept(&self, side: Side, b: &[u8]) -> Result<(), &'static str> {
        if b.len() < 6 {
            return Err("drop_malformed_eth");
        }
        if b[0] & 1 != 0 {
            return Err("pass_l2_multicast");
        }
        let own = match side {
            Side::Ext => topo::EXT_MAC,
            Side::Int => topo::INT_MAC,
        };
        if b[0..6] != own {
            return Err("pass_other_host");
        }
        Ok(())
    }

    /// Martian addresses, then broadcast and multicast destinations.
    fn screen(p: &P) -> Result<(), &'static str> {
        let (s, d) = (p.src.octets()[0], p.dst.octets()[0]);
        if s == 0 || s == 127 || s >= 224 || d == 0 || d == 127 {
            return Err("drop_martian");
        }
        if p.dst.is_multicast() || p.dst == Ipv4Addr::BROADCAST {
            return Err("pass_broadcast");
        }
        Ok(())
    }

    fn count(&mut self, reason: &'static str) {
        *self.reasons.entry(reason).or_default() += 1;
    }

    fn parse(&self, b: &[u8]) -> Result<P, &'static str> {
        if b.len() < 14 {
            return Err("drop_malformed_eth");
        }
        let (mut et, mut l3, mut vlan) = (r16(b, 12), 14, false);
        if et == 0x8100 {
            if b.len() < 18 {
                return Err("drop_malformed_eth");
            }
            et = r16(b, 16);
            l3 = 18;
            vlan = true;
        }
        if et == 0x86dd {
            return Err(ipv6_outcome(b, l3, self.side == Side::Ext));
        }
        if et != 0x0800 {
            return Err("pass_not_ipv4");
        }
        if b.len() < l3 + 20 || b[l3] >> 4 != 4 {
            return Err("drop_malformed_ip");
        }
        let ihl = usize::from(b[l3] & 15) * 4;
        let tot = usize::from(r16(b, l3 + 2));
        if ihl < 20 || tot < ihl || tot > b.len() - l3 {
            return Err("drop_malformed_ip");
        }
        let frag = r16(b, l3 + 6);
        Ok(P {
            l3,
            l4: l3 + ihl,
            vlan,
            proto: b[l3 + 9],
            ttl: b[l3 + 8],
            tot,
            id: r16(b, l3 + 4),
            frag_off: frag & 0x1fff,
            mf: frag & 0x2000 != 0,
            df: frag & 0x4000 != 0,
            src: rip(b, l3 + 12),
            dst: rip(b, l3 + 16),
        })
    }

    fn ports(&self, b: &[u8], p: &P) -> Result<(u16, u16), &'static str> {
        let need = if p.proto == TCP { 20 } else { 8 };
        if p.l4 + need > p.l4_end() {
            return Err("drop_truncated_l4");
        }
        Ok((r16(b, p.l4), r16(b, p.l4 + 2)))
    }

    fn service_vip_side(&self, proto: u8, port: u16) -> Option<usize> {
        self.spec
            .services
            .iter()
            .position(|s| s.proto == proto && s.port == port)
    }

    fn service_member_side(&self, proto: u8, port: u16) -> Option<usize> {
        self.spec
            .services
            .iter()
            .position(|s| s.proto == proto && s.member_port == port)
    }

    fn member_slot(&self, addr: Ipv4Addr) -> Option<usize> {
        self.spec.members.iter().position(|m| m.addr == Some(addr))
    }

    /// The VIP's IPv4 address (the model's VIP is dual-stack).
    fn vip4(&self) -> Ipv4Addr {
        self.spec.addr.expect("the model's VIP has an IPv4 address")
    }

    fn active_member(&self) -> Option<(Ipv4Addr, u32)> {
        self.active.map(|i| {
            let a = self.spec.members[i].addr;
            (
                a.expect("the model's members have IPv4 addresses"),
                i as u32,
            )
        })
    }

    fn excluded(&self, a: Ipv4Addr) -> bool {
        self.exclusions.iter().any(|(net, len)| {
            let mask = if *len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(*len))
            };
            u32::from(a) & mask == u32::from(*net) & mask
        })
    }

    /// A first fragment's decision, for the rest of its datagram.
    fn record_first(&mut self, p: &P, side: Side, d: Datagram) {
        self.datagrams
            .insert((p.src, p.dst, p.id, p.proto, side), (d, self.frames));
    }

    /// The decision of a later fragment's first fragment, if it is still recorded.
    fn follow(&self, p: &P, side: Side, frags: FragQuery) -> Option<Datagram> {
        let (d, at) = *self.datagrams.get(&(p.src, p.dst, p.id, p.proto, side))?;
        if self.frames - at <= FRAG_FRESH_FRAMES {
            return Some(d);
        }
        let key = FragKey {
            src_be: be32(p.src),
            dst_be: be32(p.dst),
            id_be: be16(p.id),
            proto: p.proto,
            dir: if side == Side::Ext { FRAG_IN } else { FRAG_OUT },
        };
        frags(AnyFragKey::V4(key)).then_some(d)
    }

    fn add(t: &mut (u64, u64), len: usize) {
        t.0 += 1;
        t.1 += len as u64;
    }

    fn account(&mut self, inbound: bool, service: Option<usize>, slot: Option<u32>, len: usize) {
        let t = &mut self.traffic;
        let (v, s, m) = if inbound {
            (&mut t.vip_in, &mut t.service_in, &mut t.member_in)
        } else {
            (&mut t.vip_out, &mut t.service_out, &mut t.member_out)
        };
        Self::add(v, len);
        if let Some(i) = service {
            Self::add(&mut s[i], len);
        }
        if let Some(i) = slot {
            if i < 8 {
                Self::add(&mut m[i as usize], len);
            }
        }
    }

    /// Rewrites the source or destination address, and that side's port.
    fn rewrite(
        &self,
        b: &mut [u8],
        p: &P,
        src_side: bool,
        new: Ipv4Addr,
        port: Option<(u16, u16)>,
    ) {
        let aoff = if src_side { 12 } else { 16 };
        let old = rip(b, p.l3 + aoff);
        let aw = addr_words(old, new);
        wip(b, p.l3 + aoff, new);
        let c = r16(b, p.l3 + 10);
        w16(b, p.l3 + 10, adjust(c, &aw));
        if p.later() || (p.proto != TCP && p.proto != UDP) {
            return;
        }
        let mut ch = aw.to_vec();
        if let Some((o, n)) = port {
            if o != n {
                ch.push((o, n));
                w16(b, p.l4 + if src_side { 0 } else { 2 }, n);
            }
        }
        let coff = p.l4 + if p.proto == UDP { 6 } else { 16 };
        let c = r16(b, coff);
        let n = if p.proto == UDP {
            adjust_udp(c, &ch)
        } else {
            adjust(c, &ch)
        };
        w16(b, coff, n);
    }

    /// Sends along `f`: TTL and MACs when the datapath sends it itself.
    fn send(&mut self, b: &mut [u8], p: &P, f: Fib, handled: &'static str) -> Outcome {
        match f {
            Fib::Send { smac, dmac } => {
                let ttl_proto = r16(b, p.l3 + 8);
                let new = ttl_proto.wrapping_sub(0x100);
                b[p.l3 + 8] = b[p.l3 + 8].wrapping_sub(1);
                let c = r16(b, p.l3 + 10);
                w16(b, p.l3 + 10, adjust(c, &[(ttl_proto, new)]));
                b[0..6].copy_from_slice(&dmac);
                b[6..12].copy_from_slice(&smac);
                self.count(handled);
                Ok(XDP_REDIRECT)
            }
            Fib::NoNeigh => Err("pass_no_neigh"),
            Fib::Blackhole => Err("drop_fib"),
            Fib::Vlan => Err("pass_vlan"),
            Fib::NotForwarded | Fib::TooBig(_) => Err("pass_fib"),
        }
    }

    fn route(p: &P, dst: Ipv4Addr) -> Fib {
        if p.vlan {
            Fib::Vlan
        } else {
            fib(dst, p.tot)
        }
    }

    /// Forwards an untouched packet.
    fn forward(&mut self, b: &mut [u8], p: &P, handled: &'static str) -> Outcome {
        let f = Self::route(p, p.dst);
        self.send(b, p, f, handled)
    }

    /// The ICMP error the gateway sends back about the packet as it arrived.
    fn answer(
        &mut self,
        b: &mut Vec<u8>,
        side: Side,
        ty: u8,
        code: u8,
        mtu: u16,
        r: &'static str,
    ) -> Outcome {
        let from = match side {
            Side::Ext => topo::EXT_IP,
            Side::Int => topo::INT_IP,
        };
        *b = crate::frame::icmp_error_reply(b, ty, code, mtu, from);
        self.count(r);
        Ok(XDP_TX)
    }

    /// Translates (one address, and the port on that side) and forwards, the next hop
    /// being decided for the translated packet first.
    #[allow(clippy::too_many_arguments)]
    fn translate(
        &mut self,
        b: &mut Vec<u8>,
        p: &P,
        src_side: bool,
        new: Ipv4Addr,
        port: Option<(u16, u16)>,
        handled: &'static str,
        service: Option<usize>,
        slot: u32,
        answerable: bool,
    ) -> Outcome {
        let dst = if src_side { p.dst } else { new };
        let f = Self::route(p, dst);
        match f {
            Fib::NotForwarded if answerable => return Err("pass_fib"),
            Fib::TooBig(mtu) if p.df && !p.later() && answerable => {
                let side = if src_side { Side::Int } else { Side::Ext };
                return self.answer(b, side, 3, 4, mtu, "frag_needed");
            }
            _ => {}
        }
        self.rewrite(b, p, src_side, new, port);
        self.account(!src_side, service, Some(slot), b.len());
        self.send(b, p, f, handled)
    }

    // ------------------------------------------------------------------ external side
    fn external(&mut self, b: &mut Vec<u8>, frags: FragQuery) -> Outcome {
        let p = self.parse(b)?;
        Self::screen(&p)?;
        if p.dst != self.vip4() {
            if let Some(slot) = self.member_slot(p.dst) {
                if (p.proto == TCP || p.proto == UDP) && !p.later() {
                    if let Ok((sp, dp)) = self.ports(b, &p) {
                        self.flows
                            .entry((FlowKind::Passthrough, p.proto, p.dst, dp, p.src, sp))
                            .or_insert(FlowTarget {
                                member: p.dst,
                                slot: slot as u32,
                            });
                    }
                }
                return Err("pass_to_member");
            }
            return Err("pass_not_vip");
        }
        match p.proto {
            TCP | UDP => {}
            ICMP if !p.later() && !p.mf => return self.icmp_to_vip(b, &p),
            ICMP => return Err("drop_icmp"),
            _ => return Err("drop_vip_proto"),
        }
        let (target, port, reason) = if p.later() {
            if p.ttl <= 1 {
                return Err("drop_ttl");
            }
            let d = self
                .follow(&p, Side::Ext, frags)
                .ok_or("drop_frag_orphan")?;
            (d, None, "frag_in")
        } else {
            let (sp, dp) = self.ports(b, &p)?;
            let (t, port, r) = if let Some(i) = self.service_vip_side(p.proto, dp) {
                if !self.spec.services[i].enabled {
                    return Err("drop_vip_closed");
                }
                let (a, slot) = self.active_member().ok_or("drop_no_active")?;
                (
                    Datagram::To {
                        addr: a,
                        slot,
                        service: Some(i),
                    },
                    Some((dp, self.spec.services[i].member_port)),
                    "steered",
                )
            } else if let Some(ft) =
                self.flows
                    .get(&(FlowKind::Snat, p.proto, p.dst, dp, p.src, sp))
            {
                (
                    Datagram::To {
                        addr: ft.member,
                        slot: ft.slot,
                        service: None,
                    },
                    None,
                    "conntrack_reply",
                )
            } else {
                return Err("drop_vip_closed");
            };
            if p.ttl <= 1 {
                return self.answer(b, Side::Ext, 11, 0, 0, "time_exceeded");
            }
            if p.mf {
                self.record_first(&p, Side::Ext, t);
            }
            (t, port, r)
        };
        let Datagram::To {
            addr,
            slot,
            service,
        } = target
        else {
            unreachable!("inbound datagrams are always translated")
        };
        self.translate(b, &p, false, addr, port, reason, service, slot, true)
    }

    fn icmp_header(&self, b: &[u8], p: &P) -> Result<[u8; 8], &'static str> {
        if p.l4 + 8 > p.l4_end() {
            return Err("drop_truncated_l4");
        }
        Ok(b[p.l4..p.l4 + 8].try_into().unwrap())
    }

    fn icmp_to_vip(&mut self, b: &mut Vec<u8>, p: &P) -> Outcome {
        let h = self.icmp_header(b, p)?;
        match h[0] {
            8 => {
                let (dmac, smac) = (b[0..6].to_vec(), b[6..12].to_vec());
                b[0..6].copy_from_slice(&smac);
                b[6..12].copy_from_slice(&dmac);
                wip(b, p.l3 + 12, p.dst);
                wip(b, p.l3 + 16, p.src);
                let old = r16(b, p.l3 + 8);
                let new = (64u16 << 8) | (old & 0xff);
                if new != old {
                    b[p.l3 + 8] = 64;
                    let c = r16(b, p.l3 + 10);
                    w16(b, p.l3 + 10, adjust(c, &[(old, new)]));
                }
                let tc = u16::from(h[1]);
                b[p.l4] = 0;
                let c = r16(b, p.l4 + 2);
                w16(b, p.l4 + 2, adjust(c, &[((8 << 8) | tc, tc)]));
                self.count("echo_reply");
                Ok(XDP_TX)
            }
            0 => {
                let id = u16::from_be_bytes([h[4], h[5]]);
                let Some(ft) = self
                    .flows
                    .get(&(FlowKind::Snat, ICMP, p.dst, id, p.src, 0))
                    .copied()
                else {
                    return Err("drop_icmp");
                };
                if p.ttl <= 1 {
                    return Err("drop_ttl");
                }
                self.translate(
                    b,
                    p,
                    false,
                    ft.member,
                    None,
                    "conntrack_reply",
                    None,
                    ft.slot,
                    true,
                )
            }
            3 | 11 | 12 => self.error_to_vip(b, p),
            _ => Err("drop_icmp"),
        }
    }

    /// The quoted packet: (proto, src, dst, sport-or-echo-id, dport, icmp type).
    fn quoted(
        &self,
        b: &[u8],
        p: &P,
    ) -> Result<(u8, Ipv4Addr, Ipv4Addr, u16, u16, u8), &'static str> {
        let q = p.l4 + 8;
        if b.len() < q + 20 {
            return Err("drop_truncated_l4");
        }
        if b[q] != 0x45 {
            return Err("drop_icmp");
        }
        if b.len() < q + 28 || q + 28 > p.l4_end() {
            return Err("drop_truncated_l4");
        }
        let proto = b[q + 9];
        let (s, d) = if proto == ICMP {
            (r16(b, q + 24), 0)
        } else {
            (r16(b, q + 20), r16(b, q + 22))
        };
        Ok((proto, rip(b, q + 12), rip(b, q + 16), s, d, b[q + 20]))
    }

    /// Rewrites one address of the quoted packet and its port on that side.
    fn translate_quoted(
        &self,
        b: &mut [u8],
        p: &P,
        src_side: bool,
        new: Ipv4Addr,
        port: Option<(u16, u16)>,
    ) {
        let q = p.l4 + 8;
        let ql4 = q + 20;
        let aoff = if src_side { 12 } else { 16 };
        let old = rip(b, q + aoff);
        let aw = addr_words(old, new);
        let mut icmp: Vec<(u16, u16)> = aw.to_vec();
        let oc = r16(b, q + 10);
        let nc = adjust(oc, &aw);
        wip(b, q + aoff, new);
        w16(b, q + 10, nc);
        if nc != oc {
            icmp.push((oc, nc));
        }
        let proto = b[q + 9];
        if proto == TCP || proto == UDP {
            let mut l4 = aw.to_vec();
            if let Some((o, n)) = port {
                if o != n {
                    l4.push((o, n));
                    icmp.push((o, n));
                    w16(b, ql4 + if src_side { 0 } else { 2 }, n);
                }
            }
            let coff = ql4 + if proto == UDP { 6 } else { 16 };
            if coff + 2 <= p.l4_end() && coff + 2 <= b.len() {
                let c = r16(b, coff);
                let n = if proto == UDP {
                    adjust_udp(c, &l4)
                } else {
                    adjust(c, &l4)
                };
                if n != c {
                    w16(b, coff, n);
                    icmp.push((c, n));
                }
            }
        }
        let c = r16(b, p.l4 + 2);
        w16(b, p.l4 + 2, adjust(c, &icmp));
    }

    fn error_to_vip(&mut self, b: &mut Vec<u8>, p: &P) -> Outcome {
        let (proto, qsrc, qdst, qs, qd, qtype) = self.quoted(b, p)?;
        if qsrc != p.dst {
            return Err("drop_icmp");
        }
        let mut port = None;
        let mut service = None;
        let (member, slot) = match proto {
            TCP | UDP => {
                if let Some(i) = self.service_vip_side(proto, qs) {
                    let a = self.active_member().ok_or("drop_no_active")?;
                    port = Some((qs, self.spec.services[i].member_port));
                    service = Some(i);
                    a
                } else {
                    let ft = self
                        .flows
                        .get(&(FlowKind::Snat, proto, p.dst, qs, qdst, qd))
                        .ok_or("drop_icmp")?;
                    (ft.member, ft.slot)
                }
            }
            ICMP if qtype == 8 => {
                let ft = self
                    .flows
                    .get(&(FlowKind::Snat, ICMP, p.dst, qs, qdst, 0))
                    .ok_or("drop_icmp")?;
                (ft.member, ft.slot)
            }
            _ => return Err("drop_icmp"),
        };
        if p.ttl <= 1 {
            return Err("drop_ttl");
        }
        self.translate_quoted(b, p, true, member, port);
        self.translate(
            b,
            p,
            false,
            member,
            None,
            "icmp_error_in",
            service,
            slot,
            false,
        )
    }

    // ------------------------------------------------------------------ internal side
    fn internal(&mut self, b: &mut Vec<u8>, frags: FragQuery) -> Outcome {
        let p = self.parse(b)?;
        Self::screen(&p)?;
        let Some(slot) = self.member_slot(p.src) else {
            return Err("pass_not_member");
        };
        let slot = slot as u32;
        if p.dst == self.vip4() {
            return Err("pass_to_vip");
        }
        if p.ttl <= 1 {
            return Err("pass_ttl");
        }
        if !self.spec.snat {
            return self.forward(b, &p, "passthrough");
        }
        match p.proto {
            TCP | UDP => {}
            ICMP => return self.icmp_from_member(b, &p, slot),
            _ => return Err("pass_other_proto"),
        }
        let vip = self.vip4();
        let snat = |service| Datagram::To {
            addr: vip,
            slot,
            service,
        };
        let mut port = None;
        let (d, reason) = if p.later() {
            let d = match self.follow(&p, Side::Int, frags) {
                Some(d) => d,
                None if self.excluded(p.dst) => Datagram::Untouched,
                None => snat(None),
            };
            (d, "frag_out")
        } else {
            let (sp, dp) = self.ports(b, &p)?;
            let (d, r) = if self.passthrough(slot, p.proto, p.src, sp, p.dst, dp) {
                (Datagram::Untouched, "passthrough")
            } else if self.excluded(p.dst) {
                (Datagram::Untouched, "excluded")
            } else if let Some(i) = self.service_member_side(p.proto, sp) {
                port = Some((sp, self.spec.services[i].port));
                (snat(Some(i)), "snat")
            } else {
                self.flows.insert(
                    (FlowKind::Snat, p.proto, vip, sp, p.dst, dp),
                    FlowTarget {
                        member: p.src,
                        slot,
                    },
                );
                (snat(None), "snat")
            };
            if p.mf {
                self.record_first(&p, Side::Int, d);
            }
            (d, r)
        };
        match d {
            Datagram::Untouched => self.forward(b, &p, reason),
            Datagram::To { addr, service, .. } => {
                self.translate(b, &p, true, addr, port, reason, service, slot, true)
            }
        }
    }

    fn passthrough(
        &self,
        slot: u32,
        proto: u8,
        member: Ipv4Addr,
        mport: u16,
        remote: Ipv4Addr,
        rport: u16,
    ) -> bool {
        self.spec.members[slot as usize]
            .passthrough_ports
            .contains(&mport)
            || self.flows.contains_key(&(
                FlowKind::Passthrough,
                proto,
                member,
                mport,
                remote,
                rport,
            ))
    }

    fn icmp_from_member(&mut self, b: &mut Vec<u8>, p: &P, slot: u32) -> Outcome {
        if p.later() || p.mf {
            return Err("pass_icmp");
        }
        let h = self.icmp_header(b, p)?;
        let vip = self.vip4();
        match h[0] {
            8 => {
                if self.excluded(p.dst) {
                    return self.forward(b, p, "excluded");
                }
                let id = u16::from_be_bytes([h[4], h[5]]);
                self.flows.insert(
                    (FlowKind::Snat, ICMP, vip, id, p.dst, 0),
                    FlowTarget {
                        member: p.src,
                        slot,
                    },
                );
                self.translate(b, p, true, vip, None, "snat", None, slot, true)
            }
            3 | 11 | 12 => {
                let (proto, qsrc, qdst, qs, qd, _) = match self.quoted(b, p) {
                    Ok(q) => q,
                    Err("drop_truncated_l4") => return Err("drop_truncated_l4"),
                    Err(_) => return Err("pass_icmp"),
                };
                if qdst != p.src || (proto != TCP && proto != UDP) {
                    return Err("pass_icmp");
                }
                if self.passthrough(slot, proto, p.src, qd, qsrc, qs) {
                    return self.forward(b, p, "passthrough");
                }
                if self.excluded(p.dst) {
                    return self.forward(b, p, "excluded");
                }
                let mut service = None;
                let port = if let Some(i) = self.service_member_side(proto, qd) {
                    service = Some(i);
                    Some((qd, self.spec.services[i].port))
                } else {
                    match self.flows.get(&(FlowKind::Snat, proto, vip, qd, qsrc, qs)) {
                        Some(ft) if ft.member == p.src => None,
                        _ => return Err("pass_icmp"),
                    }
                };
                self.translate_quoted(b, p, false, vip, port);
                self.translate(
                    b,
                    p,
                    true,
                    vip,
                    None,
                    "icmp_error_out",
                    service,
                    slot,
                    false,
                )
            }
            _ => Err("pass_icmp"),
        }
    }
}

/// The IPv6 header's offset when the frame carries IPv6.
fn ipv6_l3(b: &[u8]) -> Option<usize> {
    if b.len() < 14 {
        return None;
    }
    match r16(b, 12) {
        0x86dd => Some(14),
        0x8100 if b.len() >= 18 && r16(b, 16) == 0x86dd => Some(18),
        _ => None,
    }
}

/// The upper layer of an IPv6 packet the screen passed (RFC 8200 order, as the datapath
/// walks it): its protocol, where its header starts, and the fragment header's (offset in
/// 8-octet units, M flag, identification) if there is one. A later fragment's walk ends at
/// its fragment header.
fn upper6(b: &[u8], l3: usize) -> (u8, usize, Option<(u16, bool, u32)>) {
    const EXT: [u8; 4] = [0, 43, 60, 44];
    let (mut next, mut off, mut frag) = (b[l3 + 6], l3 + 40, None);
    for _ in 0..sipvip_common::MAX_IPV6_EXT_HEADERS {
        if !EXT.contains(&next) {
            break;
        }
        let here = next;
        next = b[off];
        if here == 44 {
            let word = r16(b, off + 2);
            let id = u32::from_be_bytes(b[off + 4..off + 8].try_into().unwrap());
            frag = Some((word >> 3, word & 1 != 0, id));
            off += 8;
            if word >> 3 != 0 {
                break;
            }
        } else {
            off += (usize::from(b[off + 1]) + 1) * 8;
        }
    }
    (next, off, frag)
}

fn rip6(b: &[u8], o: usize) -> Ipv6Addr {
    let a: [u8; 16] = b[o..o + 16].try_into().unwrap();
    Ipv6Addr::from(a)
}

/// The eight (old, new) words of an IPv6 address change.
fn addr6_words(old: Ipv6Addr, new: Ipv6Addr) -> Vec<(u16, u16)> {
    old.segments()
        .iter()
        .zip(new.segments().iter())
        .map(|(o, n)| (*o, *n))
        .collect()
}

/// Where the fixture network's FIB sends an IPv6 destination.
fn fib6(dst: Ipv6Addr) -> Fib {
    let seg = dst.segments();
    let on = |net: u16| seg[0..4] == [0x2001, 0xdb8, net, 0];
    let neighbour = topo::NEIGHBOURS6.iter().find(|(a, _, _)| *a == dst);
    match neighbour {
        Some((_, mac, dev)) => Fib::Send {
            smac: if *dev == "ext0" {
                topo::EXT_MAC
            } else {
                topo::INT_MAC
            },
            dmac: *mac,
        },
        None if on(0xa) || on(0xb) => Fib::NoNeigh,
        None if seg[0..3] == [0x2001, 0xdb8, 9] => Fib::Blackhole,
        None => Fib::NotForwarded,
    }
}

impl Model {
    fn excluded6(&self, a: Ipv6Addr) -> bool {
        topo::EXCLUSIONS6.iter().any(|(net, len)| {
            let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(*net) & mask
        })
    }

    /// An IPv6 frame: the parse and screen, then the same rules as IPv4 for the packets the
    /// differential test sends to the VIP and from the members: UDP and TCP (behind
    /// extension headers, fragmented, in and out of order), ICMPv6 echo and errors (no
    /// extension headers), hop limit above 1; anything else that reaches the rules is
    /// neither for the VIP nor from a member.
    fn ipv6(&mut self, side: Side, b: &mut [u8], frags: FragQuery) -> Outcome {
        let l3 = ipv6_l3(b).expect("IPv6");
        match ipv6_outcome(b, l3, side == Side::Ext) {
            "pass_not_vip" | "pass_not_member" => {}
            r => return Err(r),
        }
        let (src, dst) = (rip6(b, l3 + 8), rip6(b, l3 + 24));
        let vip6 = self.spec.addr6.expect("a dual-stack fixture VIP");
        let member6 = |a: Ipv6Addr| self.spec.members.iter().position(|m| m.addr6 == Some(a));
        let (proto, l4, frag) = upper6(b, l3);
        let hop = b[l3 + 7];
        // An atomic fragment (offset 0, no more) is an unfragmented packet.
        let (later, mf, id) = match frag {
            Some((off, mf, id)) => (off != 0, mf, id),
            None => (false, false, 0),
        };
        let simple = |proto: u8| proto == UDP || proto == TCP;
        const ICMPV6: u8 = 58;
        let ours = match side {
            Side::Ext => dst == vip6,
            Side::Int => member6(src).is_some() && dst != vip6,
        };
        if ours && simple(proto) {
            self.ext_headers6 += u64::from(l4 != l3 + 40);
            self.fragments6 += u64::from(later || mf);
        }
        if proto == ICMPV6 && ours && (later || mf) && side == Side::Ext {
            return Err("drop_icmp");
        }
        if proto == ICMPV6 && ours {
            assert!(
                l4 == l3 + 40 && !later && !mf,
                "the model's IPv6 rules: ICMPv6 without extension headers"
            );
        }
        match side {
            Side::Ext if dst == vip6 && proto == ICMPV6 => {
                assert!(hop > 1 && b.len() >= l4 + 8, "the model's IPv6 rules: echo");
                match b[l4] {
                    128 => {
                        // Answered in place: MACs and addresses swapped (the pseudo-header's
                        // sum unchanged), hop limit 64, type 129.
                        let (dmac, smac) = (b[0..6].to_vec(), b[6..12].to_vec());
                        b[0..6].copy_from_slice(&smac);
                        b[6..12].copy_from_slice(&dmac);
                        b[l3 + 8..l3 + 24].copy_from_slice(&dst.octets());
                        b[l3 + 24..l3 + 40].copy_from_slice(&src.octets());
                        b[l3 + 7] = 64;
                        let code = u16::from(b[l4 + 1]);
                        b[l4] = 129;
                        let c = r16(b, l4 + 2);
                        w16(
                            b,
                            l4 + 2,
                            adjust(c, &[((128 << 8) | code, (129 << 8) | code)]),
                        );
                        self.count("echo_reply");
                        Ok(XDP_TX)
                    }
                    129 => {
                        let id = r16(b, l4 + 4);
                        let t = *self
                            .flows6
                            .get(&(FlowKind::Snat, ICMPV6, vip6, id, src, 0))
                            .ok_or("drop_icmp")?;
                        self.rewrite6(b, l3, Some(l3 + 40), ICMPV6, false, t.member, None);
                        self.account(true, None, Some(t.slot), b.len());
                        self.send6(b, l3, fib6(t.member), "conntrack_reply")
                    }
                    1..=4 => self.error6_to_vip(b, l3, vip6),
                    _ => Err("drop_icmp"),
                }
            }
            Side::Ext if dst == vip6 => {
                assert!(
                    simple(proto) && hop > 1,
                    "the model's IPv6 rules: UDP/TCP to the VIP, hop limit above 1"
                );
                let (target, port, reason) = if later {
                    let d = self
                        .follow6((src, dst, id, proto, Side::Ext), frags)
                        .ok_or("drop_frag_orphan")?;
                    (d, None, "frag_in")
                } else {
                    let (sport, dport) = self.ports6(b, l3, l4, proto)?;
                    let (t, port, r) = if let Some(i) = self.service_vip_side(proto, dport) {
                        if !self.spec.services[i].enabled {
                            return Err("drop_vip_closed");
                        }
                        let (_, slot) = self.active_member().ok_or("drop_no_active")?;
                        let m = self.spec.members[slot as usize].addr6.expect("member IPv6");
                        (
                            Datagram6::To {
                                addr: m,
                                slot,
                                service: Some(i),
                            },
                            Some((dport, self.spec.services[i].member_port)),
                            "steered",
                        )
                    } else {
                        let key = (FlowKind::Snat, proto, vip6, dport, src, sport);
                        let t = *self.flows6.get(&key).ok_or("drop_vip_closed")?;
                        (
                            Datagram6::To {
                                addr: t.member,
                                slot: t.slot,
                                service: None,
                            },
                            None,
                            "conntrack_reply",
                        )
                    };
                    if mf {
                        self.datagrams6
                            .insert((src, dst, id, proto, Side::Ext), (t, self.frames));
                    }
                    (t, port, r)
                };
                let Datagram6::To {
                    addr: member,
                    slot,
                    service,
                } = target
                else {
                    unreachable!("inbound datagrams are always translated")
                };
                let l4 = (!later).then_some(l4);
                self.rewrite6(b, l3, l4, proto, false, member, port);
                self.account(true, service, Some(slot), b.len());
                self.send6(b, l3, fib6(member), reason)
            }
            Side::Ext => {
                let Some(slot) = member6(dst) else {
                    return Err("pass_not_vip");
                };
                // As the rules read the ports: a header cut short by the datagram, or a UDP
                // datagram without a checksum (which IPv6 forbids), opens no flow.
                if simple(proto) && !later {
                    if let Ok((sport, dport)) = self.ports6(b, l3, l4, proto) {
                        self.flows6
                            .entry((FlowKind::Passthrough, proto, dst, dport, src, sport))
                            .or_insert(FlowTarget6 {
                                member: dst,
                                slot: slot as u32,
                            });
                    }
                }
                Err("pass_to_member")
            }
            Side::Int => {
                let Some(slot) = member6(src) else {
                    return Err("pass_not_member");
                };
                if dst == vip6 {
                    return Err("pass_to_vip");
                }
                if proto == ICMPV6 && hop > 1 && b.len() >= l4 + 8 && (1..=4).contains(&b[l4]) {
                    return self.error6_from_member(b, l3, slot, vip6);
                }
                if proto == ICMPV6 && hop > 1 && b.len() >= l4 + 8 && b[l4] == 128 {
                    // A member's echo: SNATed, its identifier tracked for the reply.
                    if self.excluded6(dst) {
                        return self.forward6(b, l3, dst, "excluded");
                    }
                    let id = r16(b, l4 + 4);
                    // Recorded by the rule, before the next hop is known.
                    self.flows6.insert(
                        (FlowKind::Snat, ICMPV6, vip6, id, dst, 0),
                        FlowTarget6 {
                            member: src,
                            slot: slot as u32,
                        },
                    );
                    let f = fib6(dst);
                    if matches!(f, Fib::NotForwarded) {
                        return Err("pass_fib");
                    }
                    self.rewrite6(b, l3, Some(l3 + 40), ICMPV6, true, vip6, None);
                    self.account(false, None, Some(slot as u32), b.len());
                    return self.send6(b, l3, f, "snat");
                }
                assert!(
                    simple(proto) && hop > 1,
                    "the model's IPv6 rules: UDP/TCP from a member, hop limit above 1"
                );
                let slot = slot as u32;
                let snat = |service| Datagram6::To {
                    addr: vip6,
                    slot,
                    service,
                };
                let mut port = None;
                let (d, reason) = if later {
                    let d = match self.follow6((src, dst, id, proto, Side::Int), frags) {
                        Some(d) => d,
                        None if self.excluded6(dst) => Datagram6::Untouched,
                        None => snat(None),
                    };
                    (d, "frag_out")
                } else {
                    let (sport, dport) = self.ports6(b, l3, l4, proto)?;
                    let pt_port = self.spec.members[slot as usize]
                        .passthrough_ports
                        .contains(&sport);
                    let pt_flow = self.flows6.contains_key(&(
                        FlowKind::Passthrough,
                        proto,
                        src,
                        sport,
                        dst,
                        dport,
                    ));
                    let (d, r) = if pt_port || pt_flow {
                        (Datagram6::Untouched, "passthrough")
                    } else if self.excluded6(dst) {
                        (Datagram6::Untouched, "excluded")
                    } else if let Some(i) = self.service_member_side(proto, sport) {
                        port = Some((sport, self.spec.services[i].port));
                        (snat(Some(i)), "snat")
                    } else {
                        self.flows6.insert(
                            (FlowKind::Snat, proto, vip6, sport, dst, dport),
                            FlowTarget6 { member: src, slot },
                        );
                        (snat(None), "snat")
                    };
                    if mf {
                        self.datagrams6
                            .insert((src, dst, id, proto, Side::Int), (d, self.frames));
                    }
                    (d, r)
                };
                let Datagram6::To { service, .. } = d else {
                    return self.forward6(b, l3, dst, reason);
                };
                let f = fib6(dst);
                if matches!(f, Fib::NotForwarded) {
                    // Not forwardable: to the kernel as it arrived.
                    return Err("pass_fib");
                }
                let l4 = (!later).then_some(l4);
                self.rewrite6(b, l3, l4, proto, true, vip6, port);
                self.account(false, service, Some(slot), b.len());
                self.send6(b, l3, f, reason)
            }
        }
    }

    /// A UDP or TCP header's ports, checked as the datapath checks them: the header inside
    /// the datagram, and no UDP checksum 0 (IPv6 forbids it).
    fn ports6(
        &self,
        b: &[u8],
        l3: usize,
        l4: usize,
        proto: u8,
    ) -> Result<(u16, u16), &'static str> {
        let need = if proto == TCP { 20 } else { 8 };
        if l4 + need > l3 + 40 + usize::from(r16(b, l3 + 4)) {
            return Err("drop_truncated_l4");
        }
        if proto == UDP && r16(b, l4 + 6) == 0 {
            return Err("drop_udp_no_csum");
        }
        Ok((r16(b, l4), r16(b, l4 + 2)))
    }

    /// The decision of a later fragment's first fragment, if it is still recorded (asked of
    /// the datapath's table once the model's own record is older than `FRAG_FRESH_FRAMES`).
    fn follow6(&self, id: DatagramId6, frags: FragQuery) -> Option<Datagram6> {
        let (d, at) = *self.datagrams6.get(&id)?;
        if self.frames - at <= FRAG_FRESH_FRAMES {
            return Some(d);
        }
        let (src, dst, ident, proto, side) = id;
        let key = FragKey6 {
            src_be: ipv6_be(src.octets()),
            dst_be: ipv6_be(dst.octets()),
            id_be: ident.to_be(),
            proto,
            dir: if side == Side::Ext { FRAG_IN } else { FRAG_OUT },
            _pad: 0,
        };
        frags(AnyFragKey::V6(key)).then_some(d)
    }

    /// An ICMPv6 error to the VIP about a packet the VIP sent (RFC 4443 types 1-4): to the
    /// member, the quoted source (and a service's port) translated, quoted and ICMPv6
    /// checksums updated (the quote's first, then the outer address, as the datapath does).
    fn error6_to_vip(&mut self, b: &mut [u8], l3: usize, vip6: Ipv6Addr) -> Outcome {
        const ICMPV6: u8 = 58;
        let l4 = l3 + 40;
        let (il3, il4) = (l4 + 8, l4 + 48);
        let end = l3 + 40 + usize::from(r16(b, l3 + 4));
        // As the datapath reads the quote: its IPv6 header, its version, its ports.
        if b.len() < il3 + 40 {
            return Err("drop_truncated_l4");
        }
        if b[il3] >> 4 != 6 {
            return Err("drop_icmp");
        }
        if b.len() < il4 + 8 || il4 + 8 > end {
            return Err("drop_truncated_l4");
        }
        let (iproto, isrc, idst) = (b[il3 + 6], rip6(b, il3 + 8), rip6(b, il3 + 24));
        if isrc != vip6 {
            return Err("drop_icmp");
        }
        let (sport, dport) = (r16(b, il4), r16(b, il4 + 2));
        let (member, slot, service, port) = match iproto {
            UDP | TCP => {
                if let Some(i) = self.service_vip_side(iproto, sport) {
                    let (_, slot) = self.active_member().ok_or("drop_no_active")?;
                    let m = self.spec.members[slot as usize].addr6.expect("member IPv6");
                    (m, slot, Some(i), (sport, self.spec.services[i].member_port))
                } else {
                    let t = *self
                        .flows6
                        .get(&(FlowKind::Snat, iproto, vip6, sport, idst, dport))
                        .ok_or("drop_icmp")?;
                    (t.member, t.slot, None, (sport, sport))
                }
            }
            ICMPV6 if b[il4] == 128 => {
                let id = r16(b, il4 + 4);
                let t = *self
                    .flows6
                    .get(&(FlowKind::Snat, ICMPV6, vip6, id, idst, 0))
                    .ok_or("drop_icmp")?;
                (t.member, t.slot, None, (id, id))
            }
            _ => return Err("drop_icmp"),
        };
        // The quote: its source address, its port, its checksum.
        Self::rewrite_quote6(b, l3, iproto, true, isrc, member, port);
        // Then the outer destination.
        self.rewrite6(b, l3, Some(l3 + 40), ICMPV6, false, member, None);
        self.account(true, service, Some(slot), b.len());
        self.errors6_in += 1;
        self.send6(b, l3, fib6(member), "icmp_error_in")
    }

    /// Rewrites one address of the packet quoted in the ICMPv6 error at `l3` (its source
    /// when `src_side`), and that side's port, with the quoted upper-layer checksum when the
    /// quote carries it and the ICMPv6 checksum (the quote first: the outer address is the
    /// caller's).
    fn rewrite_quote6(
        b: &mut [u8],
        l3: usize,
        iproto: u8,
        src_side: bool,
        old: Ipv6Addr,
        new: Ipv6Addr,
        port: (u16, u16),
    ) {
        let l4 = l3 + 40;
        let (il3, il4) = (l4 + 8, l4 + 48);
        let end = l3 + 40 + usize::from(r16(b, l3 + 4));
        let aoff = il3 + if src_side { 8 } else { 24 };
        let addr = addr6_words(old, new);
        b[aoff..aoff + 16].copy_from_slice(&new.octets());
        let mut icmp = addr.clone();
        let mut inner = addr;
        if (iproto == UDP || iproto == TCP) && port.0 != port.1 {
            inner.push(port);
            icmp.push(port);
            w16(b, il4 + if src_side { 0 } else { 2 }, port.1);
        }
        let at = match iproto {
            UDP => 6,
            TCP => 16,
            _ => 2,
        };
        if il4 + at + 2 <= end && il4 + at + 2 <= b.len() {
            let c = r16(b, il4 + at);
            let n = if iproto == UDP {
                adjust_udp(c, &inner)
            } else {
                adjust(c, &inner)
            };
            if n != c {
                w16(b, il4 + at, n);
                icmp.push((c, n));
            }
        }
        let c = r16(b, l4 + 2);
        w16(b, l4 + 2, adjust(c, &icmp));
    }

    /// A member's ICMPv6 error about a packet it got through the VIP: it leaves from the VIP,
    /// the quoted destination (and a service's port) translated back to what the peer sent.
    fn error6_from_member(
        &mut self,
        b: &mut [u8],
        l3: usize,
        slot: usize,
        vip6: Ipv6Addr,
    ) -> Outcome {
        const ICMPV6: u8 = 58;
        let l4 = l3 + 40;
        let (il3, il4) = (l4 + 8, l4 + 48);
        let end = l3 + 40 + usize::from(r16(b, l3 + 4));
        let (src, dst) = (rip6(b, l3 + 8), rip6(b, l3 + 24));
        if b.len() < il3 + 40 {
            return Err("drop_truncated_l4");
        }
        if b[il3] >> 4 != 6 {
            return Err("pass_icmp");
        }
        if b.len() < il4 + 8 || il4 + 8 > end {
            return Err("drop_truncated_l4");
        }
        let (iproto, isrc, idst) = (b[il3 + 6], rip6(b, il3 + 8), rip6(b, il3 + 24));
        if idst != src || (iproto != UDP && iproto != TCP) {
            return Err("pass_icmp");
        }
        let (isport, mport) = (r16(b, il4), r16(b, il4 + 2));
        if self.spec.members[slot].passthrough_ports.contains(&mport)
            || self
                .flows6
                .contains_key(&(FlowKind::Passthrough, iproto, src, mport, isrc, isport))
        {
            return self.forward6(b, l3, dst, "passthrough");
        }
        if self.excluded6(dst) {
            return self.forward6(b, l3, dst, "excluded");
        }
        let (service, port) = match self.service_member_side(iproto, mport) {
            Some(i) => (Some(i), (mport, self.spec.services[i].port)),
            None => match self
                .flows6
                .get(&(FlowKind::Snat, iproto, vip6, mport, isrc, isport))
            {
                Some(t) if t.member == src => (None, (mport, mport)),
                _ => return Err("pass_icmp"),
            },
        };
        Self::rewrite_quote6(b, l3, iproto, false, idst, vip6, port);
        let f = fib6(dst);
        self.rewrite6(b, l3, Some(l3 + 40), ICMPV6, true, vip6, None);
        self.account(false, service, Some(slot as u32), b.len());
        self.errors6_out += 1;
        self.send6(b, l3, f, "icmp_error_out")
    }

    /// Rewrites the source (`src_side`) or destination address and that side's port, with
    /// the TCP/UDP checksum (it covers the pseudo-header).
    #[allow(clippy::too_many_arguments)]
    fn rewrite6(
        &self,
        b: &mut [u8],
        l3: usize,
        l4: Option<usize>,
        proto: u8,
        src_side: bool,
        new: Ipv6Addr,
        port: Option<(u16, u16)>,
    ) {
        let aoff = l3 + if src_side { 8 } else { 24 };
        let old = rip6(b, aoff);
        let mut ch = addr6_words(old, new);
        b[aoff..aoff + 16].copy_from_slice(&new.octets());
        // A later fragment has no upper-layer header: the addresses are all there is.
        let Some(l4) = l4 else { return };
        if let Some((o, n)) = port {
            if o != n {
                ch.push((o, n));
                w16(b, l4 + if src_side { 0 } else { 2 }, n);
            }
        }
        let coff = l4
            + match proto {
                UDP => 6,
                TCP => 16,
                _ => 2, // ICMPv6: its checksum covers the pseudo-header too
            };
        let c = r16(b, coff);
        let n = if proto == UDP {
            adjust_udp(c, &ch)
        } else {
            adjust(c, &ch)
        };
        w16(b, coff, n);
    }

    /// Sends a translated IPv6 packet along `f`: hop limit and MACs when the datapath sends
    /// it, else to the kernel translated (or dropped, for a blackhole).
    fn send6(&mut self, b: &mut [u8], l3: usize, f: Fib, handled: &'static str) -> Outcome {
        match f {
            Fib::Send { smac, dmac } => {
                b[l3 + 7] -= 1;
                b[0..6].copy_from_slice(&dmac);
                b[6..12].copy_from_slice(&smac);
                self.count(handled);
                Ok(XDP_REDIRECT)
            }
            Fib::NoNeigh => Err("pass_no_neigh"),
            Fib::Blackhole => Err("drop_fib"),
            Fib::Vlan => Err("pass_vlan"),
            Fib::NotForwarded | Fib::TooBig(_) => Err("pass_fib"),
        }
    }

    /// Forwards an untranslated IPv6 packet: hop limit and MACs only, or to the kernel.
    fn forward6(
        &mut self,
        b: &mut [u8],
        l3: usize,
        dst: Ipv6Addr,
        handled: &'static str,
    ) -> Outcome {
        self.send6(b, l3, fib6(dst), handled)
    }
}
