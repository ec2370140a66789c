//! Building test frames, and verifying every checksum of a frame from scratch.

use std::net::Ipv4Addr;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const UDP: u8 = 17;
pub const TCP: u8 = 6;
pub const ICMP: u8 = 1;

pub type Mac = [u8; 6];

/// A MAC address as `ip` writes it (`02:00:00:00:01:01`).
pub fn mac_str(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The Internet checksum of `data` (RFC 1071), folded and complemented.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.push(0);
    p.push(proto);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

/// The L4 part of an IPv4 packet.
#[derive(Clone, Debug)]
pub enum L4 {
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
    },
    /// `flags` is the TCP flags byte (0x02 SYN, 0x10 ACK, 0x18 PSH|ACK).
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        flags: u8,
        payload: Vec<u8>,
    },
    /// Echo request (8) or reply (0).
    Echo {
        ty: u8,
        id: u16,
        seq: u16,
        payload: Vec<u8>,
    },
    /// An ICMP error quoting `quoted` (the start of an IPv4 packet).
    IcmpError { ty: u8, code: u8, quoted: Vec<u8> },
    /// Any protocol number with raw bytes.
    Raw { proto: u8, bytes: Vec<u8> },
}

impl L4 {
    pub fn proto(&self) -> u8 {
        match self {
            L4::Udp { .. } => UDP,
            L4::Tcp { .. } => TCP,
            L4::Echo { .. } | L4::IcmpError { .. } => ICMP,
            L4::Raw { proto, .. } => *proto,
        }
    }

    /// The L4 bytes with a correct checksum for `src` -> `dst`.
    pub fn bytes(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        match self {
            L4::Udp {
                sport,
                dport,
                payload,
            } => {
                let len = 8 + payload.len();
                let mut b = Vec::with_capacity(len);
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&(len as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend_from_slice(payload);
                let mut c = checksum(&[&pseudo(src, dst, UDP, len), &b]);
                if c == 0 {
                    c = 0xffff;
                }
                b[6..8].copy_from_slice(&c.to_be_bytes());
                b
            }
            L4::Tcp {
                sport,
                dport,
                seq,
                flags,
                payload,
            } => {
                let mut b = Vec::with_capacity(20 + payload.len());
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&0u32.to_be_bytes());
                b.push(5 << 4);
                b.push(*flags);
                b.extend_from_slice(&65535u16.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]);
                b.extend_from_slice(payload);
                let c = checksum(&[&pseudo(src, dst, TCP, b.len()), &b]);
                b[16..18].copy_from_slice(&c.to_be_bytes());
                b
            }
            L4::Echo {
                ty,
                id,
                seq,
                payload,
            } => {
                let mut b = vec![*ty, 0, 0, 0];
                b.extend_from_slice(&id.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(payload);
                let c = checksum(&[&b]);
                b[2..4].copy_from_slice(&c.to_be_bytes());
                b
            }
            L4::IcmpError { ty, code, quoted } => {
                let mut b = vec![*ty, *code, 0, 0, 0, 0, 0, 0];
                b.extend_from_slice(quoted);
                let c = checksum(&[&b]);
                b[2..4].copy_from_slice(&c.to_be_bytes());
                b
            }
            L4::Raw { bytes, .. } => bytes.clone(),
        }
    }
}

/// An Ethernet frame carrying IPv4, described field by field.
#[derive(Clone, Debug)]
pub struct Ip4 {
    pub dmac: Mac,
    pub smac: Mac,
    pub vlan: Option<u16>,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub tos: u8,
    pub id: u16,
    pub df: bool,
    /// IP options (a multiple of 4 bytes).
    pub options: Vec<u8>,
    pub l4: L4,
}

impl Ip4 {
    pub fn new(smac: Mac, dmac: Mac, src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Self {
        Ip4 {
            dmac,
            smac,
            vlan: None,
            src,
            dst,
            ttl: 64,
            tos: 0,
            id: 0x1234,
            df: false,
            options: Vec::new(),
            l4,
        }
    }

    pub fn udp(
        smac: Mac,
        dmac: Mac,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        payload: &[u8],
    ) -> Self {
        Self::new(
            smac,
            dmac,
            src.0,
            dst.0,
            L4::Udp {
                sport: src.1,
                dport: dst.1,
                payload: payload.to_vec(),
            },
        )
    }

    pub fn tcp(
        smac: Mac,
        dmac: Mac,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        flags: u8,
        payload: &[u8],
    ) -> Self {
        Self::new(
            smac,
            dmac,
            src.0,
            dst.0,
            L4::Tcp {
                sport: src.1,
                dport: dst.1,
                seq: 1000,
                flags,
                payload: payload.to_vec(),
            },
        )
    }

    pub fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }

    fn l2(&self, ethertype: u16) -> Vec<u8> {
        let mut b = Vec::with_capacity(18);
        b.extend_from_slice(&self.dmac);
        b.extend_from_slice(&self.smac);
        if let Some(vid) = self.vlan {
            b.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            b.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        b.extend_from_slice(&ethertype.to_be_bytes());
        b
    }

    fn ip_header(&self, payload_len: usize, frag: u16) -> Vec<u8> {
        let ihl = 20 + self.options.len();
        let mut h = Vec::with_capacity(ihl);
        h.push(0x40 | (ihl / 4) as u8);
        h.push(self.tos);
        h.extend_from_slice(&((ihl + payload_len) as u16).to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        let flags = if self.df { 0x4000 } else { 0 } | frag;
        h.extend_from_slice(&flags.to_be_bytes());
        h.push(self.ttl);
        h.push(self.l4.proto());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&self.options);
        let c = checksum(&[&h]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    /// The IPv4 packet (no L2).
    pub fn ip_bytes(&self) -> Vec<u8> {
        let l4 = self.l4.bytes(self.src, self.dst);
        let mut b = self.ip_header(l4.len(), 0);
        b.extend_from_slice(&l4);
        b
    }

    /// The whole frame.
    pub fn build(&self) -> Vec<u8> {
        let mut b = self.l2(ETH_P_IP);
        b.extend_from_slice(&self.ip_bytes());
        b
    }

    /// The frame split into IPv4 fragments carrying at most `chunk` bytes of IP payload each
    /// (a multiple of 8), in order.
    pub fn fragments(&self, chunk: usize) -> Vec<Vec<u8>> {
        assert_eq!(chunk % 8, 0);
        let payload = self.l4.bytes(self.src, self.dst);
        let mut out = Vec::new();
        let mut off = 0;
        while off < payload.len() {
            let end = (off + chunk).min(payload.len());
            let mf = if end < payload.len() { 0x2000 } else { 0 };
            let mut b = self.l2(ETH_P_IP);
            b.extend_from_slice(&self.ip_header(end - off, mf | (off / 8) as u16));
            b.extend_from_slice(&payload[off..end]);
            out.push(b);
            off = end;
        }
        out
    }
}

/// A non-IPv4 frame.
pub fn ether(smac: Mac, dmac: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&dmac);
    b.extend_from_slice(&smac);
    b.extend_from_slice(&ethertype.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// Where the IPv4 header starts, if the frame carries IPv4.
pub fn l3_offset(frame: &[u8]) -> Option<usize> {
    if frame.len() < 14 {
        return None;
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_IP => Some(14),
        ETH_P_8021Q
            if frame.len() >= 18 && u16::from_be_bytes([frame[16], frame[17]]) == ETH_P_IP =>
        {
            Some(18)
        }
        _ => None,
    }
}

/// Verifies, from scratch, every checksum the frame carries: IPv4 header; TCP, UDP or ICMP
/// (unless a fragment); for an ICMP error, the quoted IPv4 header and, when the quote holds
/// the whole quoted datagram, its UDP/TCP checksum.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    let Some(l3) = l3_offset(frame) else {
        return verify_checksums6(frame);
    };
    let ip = &frame[l3..];
    if ip.len() < 20 {
        return Err("short IPv4 header".into());
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || tot < ihl || tot > ip.len() {
        return Err(format!(
            "bad IPv4 lengths ihl={ihl} tot={tot} avail={}",
            ip.len()
        ));
    }
    if checksum(&[&ip[..ihl]]) != 0 {
        return Err("IPv4 header checksum".into());
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x3fff != 0 {
        return Ok(()); // a fragment: the L4 checksum covers the whole datagram
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = &ip[ihl..tot];
    verify_l4(ip[9], src, dst, l4, true)
}

fn verify_l4(
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    l4: &[u8],
    outer: bool,
) -> Result<(), String> {
    match proto {
        UDP => {
            if l4.len() < 8 {
                return Err("short UDP".into());
            }
            if l4[6..8] == [0, 0] {
                return Ok(());
            }
            if checksum(&[&pseudo(src, dst, UDP, l4.len()), l4]) != 0 {
                return Err(format!(
                    "UDP checksum ({})",
                    if outer { "outer" } else { "quoted" }
                ));
            }
        }
        TCP if checksum(&[&pseudo(src, dst, TCP, l4.len()), l4]) != 0 => {
            return Err(format!(
                "TCP checksum ({})",
                if outer { "outer" } else { "quoted" }
            ));
        }
        ICMP => {
            if checksum(&[l4]) != 0 {
                return Err(format!(
                    "ICMP checksum ({})",
                    if outer { "outer" } else { "quoted" }
                ));
            }
            if outer && l4.len() >= 8 + 20 && matches!(l4[0], 3 | 11 | 12) {
                let q = &l4[8..];
                let qihl = usize::from(q[0] & 0x0f) * 4;
                if qihl < 20 || q.len() < qihl {
                    return Err("short quoted header".into());
                }
                if checksum(&[&q[..qihl]]) != 0 {
                    return Err("quoted IPv4 header checksum".into());
                }
                let qtot = usize::from(u16::from_be_bytes([q[2], q[3]]));
                if qtot <= q.len() && qtot >= qihl {
                    let qs = Ipv4Addr::new(q[12], q[13], q[14], q[15]);
                    let qd = Ipv4Addr::new(q[16], q[17], q[18], q[19]);
                    verify_l4(q[9], qs, qd, &q[qihl..qtot], false)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Reassembles IPv4 fragments (any order) into the IP payload.
pub fn reassemble(frames: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let mut parts: Vec<(usize, bool, Vec<u8>)> = Vec::new();
    for f in frames {
        let l3 = l3_offset(f).ok_or("not IPv4")?;
        let ip = &f[l3..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        parts.push((
            usize::from(frag & 0x1fff) * 8,
            frag & 0x2000 != 0,
            ip[ihl..tot].to_vec(),
        ));
    }
    parts.sort_by_key(|p| p.0);
    let mut out = Vec::new();
    for (off, _, data) in &parts {
        if *off != out.len() {
            return Err(format!("gap at {}", out.len()));
        }
        out.extend_from_slice(data);
    }
    if parts.last().is_some_and(|p| p.1) {
        return Err("last fragment has MF".into());
    }
    Ok(out)
}

/// Verifies the L4 checksum of a reassembled datagram.
pub fn verify_datagram(
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
) -> Result<(), String> {
    verify_l4(proto, src, dst, payload, true)
}

impl L4 {
    pub fn set_sport(&mut self, p: u16) {
        match self {
            L4::Udp { sport, .. } | L4::Tcp { sport, .. } => *sport = p,
            _ => panic!("no ports"),
        }
    }

    pub fn set_dport(&mut self, p: u16) {
        match self {
            L4::Udp { dport, .. } | L4::Tcp { dport, .. } => *dport = p,
            _ => panic!("no ports"),
        }
    }
}

/// Recomputes, from scratch, the IPv4 header checksum and (for an unfragmented packet) the
/// TCP, UDP or ICMP checksum of the IPv4 packet `ip`.
pub fn fix_checksums(ip: &mut [u8]) {
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&[&ip[..ihl]]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || tot < ihl {
        return;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let proto = ip[9];
    let l4 = &mut ip[ihl..tot];
    let off = match proto {
        UDP if l4.len() >= 8 => 6,
        TCP if l4.len() >= 20 => 16,
        ICMP if l4.len() >= 4 => 2,
        _ => return,
    };
    l4[off..off + 2].copy_from_slice(&[0, 0]);
    let mut c = if proto == ICMP {
        checksum(&[l4])
    } else {
        checksum(&[&pseudo(src, dst, proto, l4.len()), l4])
    };
    if proto == UDP && c == 0 {
        c = 0xffff;
    }
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

/// The ICMP error a router sends back about `frame` (an Ethernet frame carrying IPv4, 802.1Q
/// tag kept): from `src` to the frame's source, MACs swapped, TTL 64, TOS 0xc0, ID 0, no
/// flags, quoting the IP header and the first 8 bytes of its payload as they arrived. `mtu`
/// fills the next-hop MTU field of "fragmentation needed" (type 3).
pub fn icmp_error_reply(frame: &[u8], ty: u8, code: u8, mtu: u16, src: Ipv4Addr) -> Vec<u8> {
    let l3 = l3_offset(frame).expect("an IPv4 frame");
    let ip = &frame[l3..];
    let ihl = usize::from(ip[0] & 15) * 4;
    let quoted = &ip[..ihl + 8];
    let mut out = Vec::new();
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&frame[12..l3]);
    let mut h = vec![0x45, 0xc0];
    h.extend_from_slice(&((28 + quoted.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0, 64, ICMP, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&ip[12..16]);
    let c = checksum(&[&h]);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    let mut icmp = vec![ty, code, 0, 0, 0, 0];
    icmp.extend_from_slice(&(if ty == 3 { mtu } else { 0 }).to_be_bytes());
    icmp.extend_from_slice(quoted);
    let c = checksum(&[&icmp]);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&icmp);
    out
}

/// An IPv6 frame: the fixed header, extension headers, and an upper-layer header with its
/// payload (checksummed over the IPv6 pseudo-header where it is UDP, TCP or ICMPv6).
#[derive(Clone, Debug)]
pub struct Ip6 {
    pub dmac: Mac,
    pub smac: Mac,
    pub vlan: Option<u16>,
    pub src: std::net::Ipv6Addr,
    pub dst: std::net::Ipv6Addr,
    pub hop_limit: u8,
    /// Extension headers in order: (type, the bytes after the next-header and length
    /// octets). Hop-by-hop, routing and destination options are padded to a multiple of 8
    /// octets; a fragment header's body is its 6 bytes (offset and M flag, identification).
    pub ext: Vec<(u8, Vec<u8>)>,
    pub proto: u8,
    pub upper: Vec<u8>,
    /// Overrides the fixed header's payload length (a lie, for bad-input frames).
    pub payload_len: Option<u16>,
    /// Leaves the upper-layer bytes as they are (a fragment's part of a checksummed
    /// datagram), instead of computing their checksum.
    pub keep_csum: bool,
}

pub const HOP_BY_HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const DEST_OPTS: u8 = 60;
pub const ICMPV6: u8 = 58;

impl Ip6 {
    /// UDP from `src` to `dst` with `payload`.
    pub fn udp(
        smac: Mac,
        dmac: Mac,
        src: (std::net::Ipv6Addr, u16),
        dst: (std::net::Ipv6Addr, u16),
        payload: &[u8],
    ) -> Ip6 {
        let mut upper = Vec::new();
        upper.extend_from_slice(&src.1.to_be_bytes());
        upper.extend_from_slice(&dst.1.to_be_bytes());
        upper.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        upper.extend_from_slice(&[0, 0]);
        upper.extend_from_slice(payload);
        Ip6::new(smac, dmac, src.0, dst.0, UDP, upper)
    }

    /// ICMPv6 of `ty` and `code` with `body` after the 4-byte header.
    pub fn icmp6(
        smac: Mac,
        dmac: Mac,
        src: std::net::Ipv6Addr,
        dst: std::net::Ipv6Addr,
        ty: u8,
        body: &[u8],
    ) -> Ip6 {
        let mut upper = vec![ty, 0, 0, 0];
        upper.extend_from_slice(body);
        Ip6::new(smac, dmac, src, dst, ICMPV6, upper)
    }

    pub fn new(
        smac: Mac,
        dmac: Mac,
        src: std::net::Ipv6Addr,
        dst: std::net::Ipv6Addr,
        proto: u8,
        upper: Vec<u8>,
    ) -> Ip6 {
        Ip6 {
            dmac,
            smac,
            vlan: None,
            src,
            dst,
            hop_limit: 64,
            ext: Vec::new(),
            proto,
            upper,
            payload_len: None,
            keep_csum: false,
        }
    }

    /// The upper-layer bytes as `build` writes them (checksum included).
    pub fn upper_bytes(&self) -> Vec<u8> {
        let b = self.build();
        let l3 = if self.vlan.is_some() { 18 } else { 14 };
        let ext: usize = self
            .ext
            .iter()
            .map(|(ty, body)| {
                if *ty == FRAGMENT {
                    8
                } else {
                    (2 + body.len()).div_ceil(8) * 8
                }
            })
            .sum();
        b[l3 + 40 + ext..].to_vec()
    }

    /// The datagram cut into two fragments (RFC 8200, 4.5) after `first` bytes of its
    /// upper-layer part (a multiple of 8), with identification `id`.
    pub fn fragments(&self, id: u32, first: usize) -> (Ip6, Ip6) {
        let upper = self.upper_bytes();
        let frag = |offset: usize, more: bool, part: &[u8]| {
            let mut f = self.clone();
            let word = ((offset / 8) as u16) << 3 | u16::from(more);
            let mut body = word.to_be_bytes().to_vec();
            body.extend_from_slice(&id.to_be_bytes());
            f.ext.push((FRAGMENT, body));
            f.upper = part.to_vec();
            f.keep_csum = true;
            f
        };
        (
            frag(0, true, &upper[..first]),
            frag(first, false, &upper[first..]),
        )
    }

    pub fn build(&self) -> Vec<u8> {
        let mut upper = self.upper.clone();
        let csum_at = match self.proto {
            _ if self.keep_csum => None,
            UDP if upper.len() >= 8 => Some(6),
            TCP if upper.len() >= 20 => Some(16),
            ICMPV6 if upper.len() >= 4 => Some(2),
            _ => None,
        };
        if let Some(at) = csum_at {
            upper[at] = 0;
            upper[at + 1] = 0;
            let mut p = Vec::with_capacity(40);
            p.extend_from_slice(&self.src.octets());
            p.extend_from_slice(&self.dst.octets());
            p.extend_from_slice(&(upper.len() as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, self.proto]);
            let mut c = checksum(&[&p, &upper]);
            if c == 0 && self.proto == UDP {
                c = 0xffff;
            }
            upper[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        let mut ext = Vec::new();
        for (i, (ty, body)) in self.ext.iter().enumerate() {
            let next = self.ext.get(i + 1).map_or(self.proto, |e| e.0);
            if *ty == FRAGMENT {
                ext.push(next);
                ext.push(0);
                let mut b = body.clone();
                b.resize(6, 0);
                ext.extend_from_slice(&b);
            } else {
                let mut b = body.clone();
                let total = (2 + b.len()).div_ceil(8) * 8;
                b.resize(total - 2, 0);
                ext.push(next);
                ext.push((total / 8 - 1) as u8);
                ext.extend_from_slice(&b);
            }
        }
        let first = self.ext.first().map_or(self.proto, |e| e.0);
        let payload = ext.len() + upper.len();
        let mut b = Vec::new();
        b.extend_from_slice(&self.dmac);
        b.extend_from_slice(&self.smac);
        if let Some(tag) = self.vlan {
            b.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            b.extend_from_slice(&tag.to_be_bytes());
        }
        b.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        b.extend_from_slice(&[0x60, 0, 0, 0]);
        b.extend_from_slice(&self.payload_len.unwrap_or(payload as u16).to_be_bytes());
        b.push(first);
        b.push(self.hop_limit);
        b.extend_from_slice(&self.src.octets());
        b.extend_from_slice(&self.dst.octets());
        b.extend_from_slice(&ext);
        b.extend_from_slice(&upper);
        b
    }
}

/// Verifies, from scratch, the upper-layer checksum of an IPv6 frame (UDP, TCP or ICMPv6 over
/// the IPv6 pseudo-header), after walking its extension headers; a fragment carries only
/// part of its datagram and is not checked. A UDP checksum of 0 is an error: IPv6 forbids it.
/// Frames that are not IPv6 pass.
pub fn verify_checksums6(frame: &[u8]) -> Result<(), String> {
    if frame.len() < 14 {
        return Ok(());
    }
    let (et, l3) = match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_8021Q if frame.len() >= 18 => (u16::from_be_bytes([frame[16], frame[17]]), 18),
        et => (et, 14),
    };
    if et != ETH_P_IPV6 {
        return Ok(());
    }
    let ip = &frame[l3..];
    if ip.len() < 40 {
        return Err("short IPv6 header".into());
    }
    let end = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if end > ip.len() {
        return Err("IPv6 payload length past the frame".into());
    }
    let (mut next, mut off) = (ip[6], 40);
    while matches!(next, HOP_BY_HOP | ROUTING | DEST_OPTS | FRAGMENT) {
        if off + 8 > end {
            return Err("truncated extension header".into());
        }
        if next == FRAGMENT {
            return Ok(()); // a fragment: the checksum covers the whole datagram
        }
        let size = (usize::from(ip[off + 1]) + 1) * 8;
        next = ip[off];
        off += size;
    }
    let l4 = &ip[off.min(end)..end];
    let at = match next {
        UDP => 6,
        TCP => 16,
        ICMPV6 => 2,
        _ => return Ok(()),
    };
    if l4.len() < at + 2 {
        return Err("short upper-layer header".into());
    }
    if next == UDP && l4[6..8] == [0, 0] {
        return Err("UDP checksum 0 over IPv6".into());
    }
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&ip[8..40]);
    p.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, next]);
    if checksum(&[&p, l4]) != 0 {
        return Err(format!("IPv6 upper-layer checksum (protocol {next})"));
    }
    Ok(())
}

/// The ICMPv6 error the datapath answers `frame` (an IPv6 frame) with: MACs swapped, from
/// `src` to the frame's source, hop limit 64, `ty`/`code` with the 4-byte field `word` (the
/// MTU of a packet too big), quoting the first 112 bytes of the IPv6 packet (an even count),
/// checksum from scratch.
pub fn icmp6_error_reply(
    frame: &[u8],
    ty: u8,
    code: u8,
    word: u32,
    src: std::net::Ipv6Addr,
) -> Vec<u8> {
    let l3 = if u16::from_be_bytes([frame[12], frame[13]]) == ETH_P_8021Q {
        18
    } else {
        14
    };
    let ip = &frame[l3..];
    let tot = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let quoted = tot.min(112) & !1;
    let mut body = word.to_be_bytes().to_vec();
    body.extend_from_slice(&ip[..quoted]);
    let from: [u8; 16] = ip[8..24].try_into().unwrap();
    let mut e = Ip6::icmp6(
        frame[0..6].try_into().unwrap(),
        frame[6..12].try_into().unwrap(),
        src,
        std::net::Ipv6Addr::from(from),
        ty,
        &body,
    );
    e.upper[1] = code;
    // Back out where it came from: to the sender's MAC, from the one it was sent to.
    e.dmac = frame[6..12].try_into().unwrap();
    e.smac = frame[0..6].try_into().unwrap();
    if l3 == 18 {
        e.vlan = Some(u16::from_be_bytes([frame[14], frame[15]]));
    }
    e.build()
}
