//! Differential test: 1,000,000 seeded random and mutated frames (by default) through the datapath
//! (BPF_PROG_TEST_RUN) and through the plain-Rust reference model; verdicts, output bytes and
//! counters must be identical.
//!
//! Reproduce a failure with `SIPVIP_DIFF_SEED=<seed> SIPVIP_DIFF_FRAMES=<n>` (decimal or
//! 0x-hex; anything else fails the test).

use std::net::Ipv4Addr;

use rand::{rngs::SmallRng, seq::SliceRandom, Rng, SeedableRng};
use sipvip::datapath::MapSizes;
use sipvip_common::program_names;
use sipvip_tests::{
    check::{hex, verdict_name},
    frame::{self, Ip4, Mac, L4},
    model::{AnyFragKey, Model, Side},
    topo::{self, *},
};

const EXT_HOSTS: &[(Ipv4Addr, Mac)] = &[
    (PHONE, PHONE_MAC),
    (SBC, SBC_MAC),
    (TLIB, TLIB_MAC),
    (CONFIG, CONFIG_MAC),
    (EXCL_NET_HOST, EXCL_NET_HOST_MAC),
];

fn addr_pool() -> Vec<Ipv4Addr> {
    vec![
        PHONE,
        SBC,
        TLIB,
        CONFIG,
        EXCL_NET_HOST,
        UNRESOLVED,
        REMOTE_NO_NEIGH,
        BLACKHOLED,
        VIP,
        VIP,
        VIP,
        PRIMARY,
        BACKUP,
        EXT_IP,
        Ipv4Addr::new(198, 18, 2, 40),
        Ipv4Addr::new(198, 18, 50, 7),
        Ipv4Addr::new(198, 18, 1, 52),
        Ipv4Addr::new(198, 18, 200, 9),
    ]
}

const PORTS: &[u16] = &[
    5060, 5060, 5061, 5080, 15080, 3000, 8000, 40000, 40001, 5062, 7000,
];

struct Gen {
    rng: SmallRng,
    addrs: Vec<Ipv4Addr>,
    /// Frames waiting to be sent (fragments of one datagram, out of order).
    queue: Vec<(Side, Vec<u8>)>,
    /// Recently sent IPv4 packets, for ICMP errors and replies.
    history: Vec<Ip4>,
    /// IPv4 packets the datapath sent on, for replies and ICMP errors about them.
    outputs: Vec<Vec<u8>>,
    /// IPv6 flows members opened through the VIP (remote, remote port, VIP port, protocol),
    /// for the remote's replies.
    outputs6: Vec<(std::net::Ipv6Addr, u16, u16, u8)>,
    /// IPv6 frames sent to the VIP's services, and replies to members' IPv6 flows.
    services6: u64,
    replies6: u64,
    errors6: u64,
    /// Identifiers of echo requests members sent over IPv6.
    echo_ids6: Vec<u16>,
    /// IPv6 packets the datapath sent from the VIP, for ICMPv6 errors about them; and those
    /// it steered to a member, for the member's errors.
    sent6: Vec<Vec<u8>>,
    steered6: Vec<Vec<u8>>,
    id: u16,
}

fn ip_of(frame: &[u8]) -> Option<&[u8]> {
    frame::l3_offset(frame).map(|o| &frame[o..])
}

fn wrap(side: Side, smac: Mac, ip: &[u8]) -> (Side, Vec<u8>) {
    let dmac = match side {
        Side::Ext => EXT_MAC,
        Side::Int => INT_MAC,
    };
    let mut b = smac.to_vec();
    b.splice(0..0, dmac);
    b.extend_from_slice(&0x0800u16.to_be_bytes());
    b.extend_from_slice(ip);
    (side, b)
}

impl Gen {
    /// An IPv6 frame, well-formed or not: extension header chains up to past the datapath's
    /// limit, fragments (some of a length the RFC forbids), ICMPv6 of every kind the screen
    /// tells apart (Neighbor Discovery among them), payload lengths that lie, jumbograms,
    /// truncations and tags.
    fn ipv6(&mut self) -> (Side, Vec<u8>) {
        use frame::{Ip6, DEST_OPTS, FRAGMENT, HOP_BY_HOP, ROUTING};
        let side = if self.rng.gen_bool(0.5) {
            Side::Ext
        } else {
            Side::Int
        };
        let a = |last: u16| std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last);
        let (src, dst) = (a(self.rng.gen_range(1..20)), a(self.rng.gen_range(1..300)));
        let (smac, dmac) = match side {
            Side::Ext => (PHONE_MAC, EXT_MAC),
            Side::Int => (PRIMARY_MAC, INT_MAC),
        };
        let payload: Vec<u8> = (0..self.rng.gen_range(0..64))
            .map(|_| self.rng.gen())
            .collect();
        let mut p = match self.rng.gen_range(0..10) {
            0..=3 => Ip6::udp(smac, dmac, (src, 5062), (dst, 5060), &payload),
            4..=7 => {
                let ty = *[1u8, 2, 3, 4, 128, 129, 133, 134, 135, 136, 137]
                    .choose(&mut self.rng)
                    .unwrap();
                Ip6::icmp6(smac, dmac, src, dst, ty, &payload)
            }
            8 => Ip6::new(smac, dmac, src, dst, frame::TCP, payload),
            _ => Ip6::new(smac, dmac, src, dst, 59, Vec::new()),
        };
        for _ in 0..self.rng.gen_range(0..7) {
            let ty = *[HOP_BY_HOP, ROUTING, DEST_OPTS, FRAGMENT]
                .choose(&mut self.rng)
                .unwrap();
            let body: Vec<u8> = if ty == FRAGMENT {
                let offset: u16 = *[0u16, 0, 8, 185].choose(&mut self.rng).unwrap();
                let more = u16::from(self.rng.gen_bool(0.5));
                let fo = (offset << 3) | more;
                let mut b = fo.to_be_bytes().to_vec();
                b.extend_from_slice(&self.rng.gen::<u32>().to_be_bytes());
                b
            } else {
                (0..self.rng.gen_range(0..3) * 8 + 6)
                    .map(|_| self.rng.gen())
                    .collect()
            };
            p.ext.push((ty, body));
        }
        p.hop_limit = *[64u8, 1, 0].choose(&mut self.rng).unwrap();
        if self.rng.gen_bool(0.04) {
            p.vlan = Some(100);
        }
        match self.rng.gen_range(0..100) {
            0..=4 => p.payload_len = Some(self.rng.gen_range(0..200)),
            5..=7 => {
                // A jumbogram.
                p.ext.insert(0, (HOP_BY_HOP, vec![0xc2, 4, 0, 1, 0, 0]));
                p.payload_len = Some(0);
            }
            8..=9 => p.dmac = [0x33, 0x33, 0, 0, 0, 1],
            _ => {}
        }
        let mut b = p.build();
        if self.rng.gen_bool(0.08) {
            let n = self.rng.gen_range(14..b.len());
            b.truncate(n);
        }
        (side, b)
    }

    fn port(&mut self) -> u16 {
        if self.rng.gen_bool(0.8) {
            *PORTS.choose(&mut self.rng).unwrap()
        } else {
            self.rng.gen_range(1..65535)
        }
    }

    fn l4(&mut self, proto_pick: u32, history: Option<&Ip4>) -> L4 {
        let payload_len = if self.rng.gen_bool(0.05) {
            self.rng.gen_range(1400..1560)
        } else {
            self.rng.gen_range(0..200)
        };
        let payload: Vec<u8> = (0..payload_len).map(|_| self.rng.gen()).collect();
        match proto_pick {
            0..=44 => L4::Udp {
                sport: self.port(),
                dport: self.port(),
                payload,
            },
            45..=74 => L4::Tcp {
                sport: self.port(),
                dport: self.port(),
                seq: self.rng.gen(),
                flags: *[0x02u8, 0x12, 0x10, 0x18, 0x11]
                    .choose(&mut self.rng)
                    .unwrap(),
                payload,
            },
            75..=84 => L4::Echo {
                ty: *[8u8, 8, 0, 13].choose(&mut self.rng).unwrap(),
                id: *[99u16, 100, 7].choose(&mut self.rng).unwrap(),
                seq: self.rng.gen(),
                payload: payload[..payload.len().min(56)].to_vec(),
            },
            85..=94 => {
                let quoted = match history {
                    Some(h) => {
                        let b = h.ip_bytes();
                        let n = *[28usize, 40, 64, b.len()].choose(&mut self.rng).unwrap();
                        b[..n.min(b.len())].to_vec()
                    }
                    None => vec![0x45; 28],
                };
                L4::IcmpError {
                    ty: *[3u8, 3, 11, 12].choose(&mut self.rng).unwrap(),
                    code: self.rng.gen_range(0..4),
                    quoted,
                }
            }
            _ => L4::Raw {
                proto: *[47u8, 50, 132].choose(&mut self.rng).unwrap(),
                bytes: payload,
            },
        }
    }

    /// A reply to a packet seen leaving (swap addresses and ports), arriving on the other side.
    fn reply(&mut self, h: &Ip4) -> Ip4 {
        let mut r = h.clone();
        std::mem::swap(&mut r.src, &mut r.dst);
        std::mem::swap(&mut r.smac, &mut r.dmac);
        match &mut r.l4 {
            L4::Udp { sport, dport, .. } | L4::Tcp { sport, dport, .. } => {
                std::mem::swap(sport, dport)
            }
            L4::Echo { ty, .. } => *ty = 0,
            _ => {}
        }
        r.ttl = 64;
        r
    }

    /// Remembers what the datapath sent on.
    /// An IPv6 UDP or TCP packet the rules decide on: a phone or the T-Lib client to the
    /// IPv6 VIP's services, a closed port or a member's own address, a reply to a flow a
    /// member opened; or a member to the outside (a phone, the excluded config server, an
    /// address without a neighbour, a blackholed or unroutable one, the VIP), from a
    /// service, pass-through or ephemeral port. Some UDP checksums are 0 (forbidden).
    fn ipv6_rules(&mut self) -> (Side, Vec<u8>) {
        use frame::Ip6;
        use std::net::Ipv6Addr;
        let mut proto = if self.rng.gen_bool(0.6) {
            frame::UDP
        } else {
            frame::TCP
        };
        let (side, src, smac, dmac, dst, sport, dport) = if self.rng.gen_bool(0.5) {
            let (src, smac) = *[(PHONE6, PHONE_MAC), (TLIB6, TLIB_MAC)]
                .choose(&mut self.rng)
                .unwrap();
            match self.rng.gen_range(0..10) {
                0..=4 => {
                    let port = *[5060u16, 5061, MAPPED_PORT, 6000]
                        .choose(&mut self.rng)
                        .unwrap();
                    let sport = self.rng.gen_range(1024..65535);
                    self.services6 += 1;
                    (Side::Ext, src, smac, EXT_MAC, VIP6, sport, port)
                }
                5..=7 if !self.outputs6.is_empty() => {
                    let (remote, rport, vport, pr) =
                        self.outputs6[self.rng.gen_range(0..self.outputs6.len())];
                    proto = pr;
                    self.replies6 += 1;
                    let mac = NEIGHBOURS6
                        .iter()
                        .find(|(a, _, _)| *a == remote)
                        .map(|(_, m, _)| *m)
                        .unwrap_or(PHONE_MAC);
                    (Side::Ext, remote, mac, EXT_MAC, VIP6, rport, vport)
                }
                _ => {
                    let m = *[PRIMARY6, BACKUP6].choose(&mut self.rng).unwrap();
                    let dport = *[TSERVER_PORT, 8000, 5060].choose(&mut self.rng).unwrap();
                    let sport = self.rng.gen_range(1024..65535);
                    (Side::Ext, src, smac, EXT_MAC, m, sport, dport)
                }
            }
        } else {
            let (src, smac) = *[(PRIMARY6, PRIMARY_MAC), (BACKUP6, BACKUP_MAC)]
                .choose(&mut self.rng)
                .unwrap();
            let dst = *[
                PHONE6,
                TLIB6,
                CONFIG6,
                EXCL_NET_HOST6,
                Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x77),
                BLACKHOLED6,
                Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 5),
                VIP6,
            ]
            .choose(&mut self.rng)
            .unwrap();
            let sport = *[
                5060u16,
                5061,
                MAPPED_MEMBER_PORT,
                TSERVER_PORT,
                8000,
                40000,
                40001,
            ]
            .choose(&mut self.rng)
            .unwrap();
            let dport = *[5062u16, 41000, 5060].choose(&mut self.rng).unwrap();
            (Side::Int, src, smac, INT_MAC, dst, sport, dport)
        };
        let payload: Vec<u8> = (0..self.rng.gen_range(0..48))
            .map(|_| self.rng.gen())
            .collect();
        let mut upper = Vec::new();
        upper.extend_from_slice(&sport.to_be_bytes());
        upper.extend_from_slice(&dport.to_be_bytes());
        if proto == frame::TCP {
            upper.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        } else {
            upper.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            upper.extend_from_slice(&[0, 0]);
        }
        upper.extend_from_slice(&payload);
        // Now and then an ICMPv6 error about a packet the VIP sent, from its destination:
        // destination unreachable, packet too big or time exceeded, quoting all of it or a
        // prefix (a quote without its ports is too short).
        if side == Side::Ext && !self.sent6.is_empty() && self.rng.gen_bool(0.1) {
            let pkt = self.sent6[self.rng.gen_range(0..self.sent6.len())].clone();
            let remote: [u8; 16] = pkt[24..40].try_into().unwrap();
            let remote = Ipv6Addr::from(remote);
            if let Some((_, mac, _)) = NEIGHBOURS6.iter().find(|(a, _, _)| *a == remote) {
                let n = *[44usize, 56, 64, pkt.len()].choose(&mut self.rng).unwrap();
                let (ty, code, word) = *[(1u8, 4u8, 0u32), (2, 0, 1280), (3, 0, 0)]
                    .choose(&mut self.rng)
                    .unwrap();
                let mut body = word.to_be_bytes().to_vec();
                body.extend_from_slice(&pkt[..n.min(pkt.len())]);
                let mut e = Ip6::icmp6(*mac, EXT_MAC, remote, VIP6, ty, &body);
                e.upper[1] = code;
                self.errors6 += 1;
                return (Side::Ext, e.build());
            }
        }
        // Or a member's ICMPv6 error about a packet steered to it, to the packet's source.
        if side == Side::Int && !self.steered6.is_empty() && self.rng.gen_bool(0.1) {
            let pkt = self.steered6[self.rng.gen_range(0..self.steered6.len())].clone();
            let member: [u8; 16] = pkt[24..40].try_into().unwrap();
            let member = Ipv6Addr::from(member);
            let peer: [u8; 16] = pkt[8..24].try_into().unwrap();
            let mac = if member == PRIMARY6 {
                PRIMARY_MAC
            } else {
                BACKUP_MAC
            };
            let n = *[44usize, 56, pkt.len()].choose(&mut self.rng).unwrap();
            let mut body = vec![0u8; 4];
            body.extend_from_slice(&pkt[..n.min(pkt.len())]);
            let mut e = Ip6::icmp6(mac, INT_MAC, member, Ipv6Addr::from(peer), 1, &body);
            e.upper[1] = 4;
            return (Side::Int, e.build());
        }
        // Now and then an echo instead: a phone's to the VIP, a member's to the outside, or
        // the reply to a member's (its identifier from an echo a member sent).
        if self.rng.gen_bool(0.1) {
            let id: u16 = if self.echo_ids6.is_empty() || self.rng.gen_bool(0.5) {
                self.rng.gen()
            } else {
                self.echo_ids6[self.rng.gen_range(0..self.echo_ids6.len())]
            };
            let ty = match side {
                Side::Ext if self.rng.gen_bool(0.5) => 129,
                _ => 128,
            };
            if side == Side::Int {
                self.echo_ids6.push(id);
                self.echo_ids6.truncate(32);
            }
            let (s6, d6) = match (side, ty) {
                (Side::Ext, 129) => (PHONE6, VIP6),
                _ => (src, dst),
            };
            let mac = if (side, ty) == (Side::Ext, 129) {
                PHONE_MAC
            } else {
                smac
            };
            let mut body = id.to_be_bytes().to_vec();
            body.extend_from_slice(&[0, 1, b'p', b'i', b'n', b'g']);
            let b = Ip6::icmp6(mac, dmac, s6, d6, ty, &body).build();
            return (side, b);
        }
        let mut ip = Ip6::new(smac, dmac, src, dst, proto, upper);
        // Now and then extension headers before the upper layer: hop-by-hop (first, as RFC
        // 8200 orders it), destination options (PadN), a routing header with no segments
        // left.
        if self.rng.gen_bool(0.12) {
            if self.rng.gen_bool(0.4) {
                ip.ext.push((frame::HOP_BY_HOP, vec![1, 4, 0, 0, 0, 0]));
            }
            if self.rng.gen_bool(0.5) {
                ip.ext.push((frame::ROUTING, vec![4, 0, 0, 0, 0, 0]));
            }
            let opts = 1 + 8 * self.rng.gen_range(0..2);
            ip.ext.push((
                frame::DEST_OPTS,
                [vec![1, opts as u8], vec![0; opts]].concat(),
            ));
        }
        // Now and then two fragments, the later one sometimes first (an orphan until its
        // first fragment passes); the other waits in the queue for the next frame.
        let len = ip.upper.len();
        if len > 24 && self.rng.gen_bool(0.15) {
            let first = 8 * self.rng.gen_range(3..=(len - 1) / 8);
            let (a, b) = ip.fragments(self.rng.gen(), first);
            let (now, later) = if self.rng.gen_bool(0.8) {
                (a, b)
            } else {
                (b, a)
            };
            self.queue.push((side, later.build()));
            return (side, now.build());
        }
        let mut b = ip.build();
        if proto == frame::UDP && self.rng.gen_bool(0.05) {
            let at = b.len() - ip.upper.len() + 6;
            b[at] = 0;
            b[at + 1] = 0;
        }
        (side, b)
    }

    fn observe(&mut self, verdict: u32, input: &[u8], out: &[u8]) {
        // An IPv6 packet steered to a member: the member may answer it with an error.
        if verdict == 4
            && out.len() >= 14 + 48
            && out[12..14] == [0x86, 0xdd]
            && (out[38..54] == PRIMARY6.octets() || out[38..54] == BACKUP6.octets())
            && input[38..54] == VIP6.octets()
        {
            if self.steered6.len() < 64 {
                self.steered6.push(out[14..].to_vec());
            } else {
                let i = self.rng.gen_range(0..64);
                self.steered6[i] = out[14..].to_vec();
            }
        }
        // A member's IPv6 flow through the VIP: its remote may answer.
        if verdict == 4
            && out.len() >= 14 + 44
            && out[12..14] == [0x86, 0xdd]
            && out[22..38] == VIP6.octets()
        {
            let remote: [u8; 16] = out[38..54].try_into().unwrap();
            let (vport, rport) = (
                u16::from_be_bytes([out[54], out[55]]),
                u16::from_be_bytes([out[56], out[57]]),
            );
            // (Replies to UDP and TCP flows; echo has its own replies.)
            if self.outputs6.len() < 64 && (out[20] == frame::UDP || out[20] == frame::TCP) {
                self.outputs6.push((remote.into(), rport, vport, out[20]));
            }
            // And the packet itself, for ICMPv6 errors about it.
            if self.sent6.len() < 64 {
                self.sent6.push(out[14..].to_vec());
            } else {
                let i = self.rng.gen_range(0..64);
                self.sent6[i] = out[14..].to_vec();
            }
        }
        if (verdict == 4 || verdict == 2) && input != out {
            if let Some(ip) = ip_of(out) {
                if ip.len() >= 20 && frame::verify_checksums(out).is_ok() {
                    if self.outputs.len() < 512 {
                        self.outputs.push(ip.to_vec());
                    } else {
                        let i = self.rng.gen_range(0..512);
                        self.outputs[i] = ip.to_vec();
                    }
                }
            }
        }
    }

    /// Where a packet about `ip` comes from: the remote answering the VIP on the external
    /// side, or the member answering on the internal side.
    fn answer_side(ip: &[u8]) -> Option<Side> {
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        if src == VIP {
            Some(Side::Ext)
        } else if dst == PRIMARY || dst == BACKUP {
            Some(Side::Int)
        } else {
            None
        }
    }

    /// A reply to something the datapath sent on.
    fn reply_to_output(&mut self) -> Option<(Side, Vec<u8>)> {
        let ip = self.outputs[self.rng.gen_range(0..self.outputs.len())].clone();
        let side = Self::answer_side(&ip)?;
        let ihl = usize::from(ip[0] & 15) * 4;
        let mut r = ip.clone();
        r[12..16].copy_from_slice(&ip[16..20]);
        r[16..20].copy_from_slice(&ip[12..16]);
        r[8] = 64;
        match r[9] {
            6 | 17 if r.len() >= ihl + 4 => {
                r[ihl..ihl + 2].copy_from_slice(&ip[ihl + 2..ihl + 4]);
                r[ihl + 2..ihl + 4].copy_from_slice(&ip[ihl..ihl + 2]);
            }
            1 if r.len() > ihl => r[ihl] = 0,
            _ => {}
        }
        frame::fix_checksums(&mut r);
        Some(wrap(side, [2, 0, 0, 9, 9, 9], &r))
    }

    /// An ICMP error about something the datapath sent on.
    fn error_about_output(&mut self) -> Option<(Side, Vec<u8>)> {
        let ip = self.outputs[self.rng.gen_range(0..self.outputs.len())].clone();
        let side = Self::answer_side(&ip)?;
        let n = *[28usize, 48, ip.len()].choose(&mut self.rng).unwrap();
        let quoted = ip[..n.min(ip.len())].to_vec();
        let src = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let dst = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let e = Ip4::new(
            [0; 6],
            [0; 6],
            src,
            dst,
            L4::IcmpError {
                ty: 3,
                code: 3,
                quoted,
            },
        );
        Some(wrap(side, [2, 0, 0, 9, 9, 8], &e.ip_bytes()))
    }

    fn next(&mut self) -> (Side, Vec<u8>) {
        if let Some(f) = self.queue.pop() {
            return f;
        }
        if !self.outputs.is_empty() {
            let roll = self.rng.gen_range(0..100);
            let f = match roll {
                0..=9 => self.reply_to_output(),
                10..=17 => self.error_about_output(),
                _ => None,
            };
            if let Some(f) = f {
                return f;
            }
        }
        if self.rng.gen_bool(0.06) {
            return self.ipv6();
        }
        if self.rng.gen_bool(0.06) {
            return self.ipv6_rules();
        }
        let side = if self.rng.gen_bool(0.5) {
            Side::Ext
        } else {
            Side::Int
        };
        let mut pkt = if !self.history.is_empty() && self.rng.gen_bool(0.15) {
            let h = self.history[self.rng.gen_range(0..self.history.len())].clone();
            self.reply(&h)
        } else {
            let (src, smac, dmac) = match side {
                Side::Ext => {
                    let (a, m) = *EXT_HOSTS.choose(&mut self.rng).unwrap();
                    (a, m, EXT_MAC)
                }
                Side::Int => {
                    let (a, m) = if self.rng.gen_bool(0.9) {
                        *[(PRIMARY, PRIMARY_MAC), (BACKUP, BACKUP_MAC)]
                            .choose(&mut self.rng)
                            .unwrap()
                    } else {
                        (Ipv4Addr::new(198, 18, 2, 40), [2, 0, 0, 2, 0, 40])
                    };
                    (a, m, INT_MAC)
                }
            };
            let dst = *self.addrs.choose(&mut self.rng).unwrap();
            let hist = if self.history.is_empty() {
                None
            } else {
                Some(self.history[self.rng.gen_range(0..self.history.len())].clone())
            };
            let pick = self.rng.gen_range(0..100);
            let l4 = self.l4(pick, hist.as_ref());
            Ip4::new(smac, dmac, src, dst, l4)
        };
        self.id = self.id.wrapping_add(1);
        pkt.id = self.id;
        // Addressed to the interface it arrives on (a reply to history swapped the MACs).
        pkt.dmac = match side {
            Side::Ext => EXT_MAC,
            Side::Int => INT_MAC,
        };
        // DF on many packets, so that the large ones meet the MTU.
        pkt.df = self.rng.gen_bool(0.4);
        // L2 and L3 hygiene: frames for another host, broadcast and multicast frames,
        // martian sources, broadcast and multicast destinations.
        match self.rng.gen_range(0..100) {
            0..=2 => pkt.dmac = [2, 0, 0, 0, 0x77, 0x77],
            3 => pkt.dmac = [0xff; 6],
            4 => pkt.dmac = [1, 0, 0x5e, 0, 0, 0xfb],
            5 => {
                pkt.src = *[
                    Ipv4Addr::new(127, 0, 0, 1),
                    Ipv4Addr::new(0, 0, 0, 0),
                    Ipv4Addr::new(224, 0, 0, 5),
                    Ipv4Addr::new(240, 1, 2, 3),
                    Ipv4Addr::BROADCAST,
                ]
                .choose(&mut self.rng)
                .unwrap()
            }
            6 => {
                pkt.dst = *[
                    Ipv4Addr::BROADCAST,
                    Ipv4Addr::new(198, 18, 2, 255),
                    Ipv4Addr::new(198, 18, 1, 255),
                    Ipv4Addr::new(224, 0, 0, 251),
                    Ipv4Addr::new(127, 0, 0, 1),
                ]
                .choose(&mut self.rng)
                .unwrap()
            }
            _ => {}
        }
        pkt.ttl = *[64u8, 64, 64, 2, 1, 0].choose(&mut self.rng).unwrap();
        if self.rng.gen_bool(0.04) {
            pkt.vlan = Some(100);
        }
        if self.rng.gen_bool(0.04) {
            pkt.options = vec![1, 1, 1, 0];
        }
        if self.history.len() < 512 {
            self.history.push(pkt.clone());
        } else {
            let i = self.rng.gen_range(0..512);
            self.history[i] = pkt.clone();
        }
        // Fragments: a bigger datagram split and sent out of order.
        if self.rng.gen_bool(0.08) && matches!(pkt.l4, L4::Udp { .. } | L4::Tcp { .. }) {
            let big: Vec<u8> = (0..self.rng.gen_range(1500..3000))
                .map(|_| self.rng.gen())
                .collect();
            match &mut pkt.l4 {
                L4::Udp { payload, .. } | L4::Tcp { payload, .. } => *payload = big,
                _ => {}
            }
            let mut frags: Vec<(Side, Vec<u8>)> =
                pkt.fragments(1200).into_iter().map(|f| (side, f)).collect();
            frags.shuffle(&mut self.rng);
            self.queue = frags;
            return self.queue.pop().unwrap();
        }
        let mut b = pkt.build();
        // Mutations: flipped bytes in the headers, or a truncated frame.
        if b.len() > 40 && self.rng.gen_bool(0.12) {
            if self.rng.gen_bool(0.5) {
                for _ in 0..self.rng.gen_range(1..4) {
                    let i = self.rng.gen_range(12..b.len().min(80));
                    b[i] ^= 1 << self.rng.gen_range(0..8);
                }
            } else if self.rng.gen_bool(0.5) {
                let n = self.rng.gen_range(14..b.len());
                b.truncate(n);
            } else if let Some(l3) = frame::l3_offset(&b).filter(|l3| b.len() > l3 + 21) {
                // Shorten the datagram consistently: the L4 header may end up truncated.
                let n = self.rng.gen_range(l3 + 20..b.len());
                b.truncate(n);
                let tot = ((n - l3) as u16).to_be_bytes();
                b[l3 + 2..l3 + 4].copy_from_slice(&tot);
            }
        }
        (side, b)
    }
}

/// A decimal or 0x-prefixed hex number (underscores allowed).
/// The flow cache's key of an untagged IPv4 TCP/UDP frame: a member's flow on the internal
/// side, a service's (no source) on the external side.
fn flow_key(side: Side, ifindex: u32, frame: &[u8]) -> Option<sipvip_common::FlowKey> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.len() < 20 {
        return None;
    }
    let l4 = ip.get(usize::from(ip[0] & 0x0f) * 4..)?;
    let word = |b: &[u8], i: usize| Some(u16::from_ne_bytes([*b.get(i)?, *b.get(i + 1)?]));
    let addr = |i: usize| u32::from_ne_bytes([ip[i], ip[i + 1], ip[i + 2], ip[i + 3]]);
    let (src_be, sport_be, hook) = match side {
        Side::Int => (addr(12), word(l4, 0)?, sipvip_common::FLOW_HOOK_INT),
        Side::Ext => (0, 0, sipvip_common::FLOW_HOOK_EXT),
    };
    Some(sipvip_common::FlowKey {
        src_be,
        dst_be: addr(16),
        sport_be,
        dport_be: word(l4, 2)?,
        proto: ip[9],
        hook,
        _pad: 0,
        ifindex,
    })
}

fn parse_number(raw: &str) -> Result<u64, std::num::ParseIntError> {
    let s = raw.trim().replace('_', "");
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
}

/// A number from the environment; a value that is not one fails the test.
fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(raw) => parse_number(&raw)
            .unwrap_or_else(|e| panic!("{name}={raw:?} is not a decimal or 0x-hex number: {e}")),
        Err(_) => default,
    }
}

#[test]
fn seeds_and_counts_accept_hex_and_decimal() {
    assert_eq!(parse_number("0x5197_0001"), Ok(0x5197_0001));
    assert_eq!(parse_number("0X10"), Ok(16));
    assert_eq!(parse_number("1000000"), Ok(1_000_000));
    assert_eq!(parse_number("10_000_000"), Ok(10_000_000));
    for bad in ["12z", "0x", "", "-1", "0xg1", "1e6"] {
        assert!(parse_number(bad).is_err(), "{bad:?} must be refused");
    }
}

/// How the datapath runs beside the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// As deployed: the flow cache in front of the rules; the active member flips now and
    /// then.
    Cache,
    /// The flow cache off: every packet through the rules.
    NoCache,
    /// The flow cache on, with failovers, an exclusion removed and added back, and new
    /// next-hop generations interleaved with the traffic, often: no packet may take a
    /// decision cached before a change.
    Churn,
}

#[test]
fn datapath_matches_reference_model() {
    differential(Mode::Cache, 0x5197_0001);
}

#[test]
fn datapath_without_the_flow_cache_matches_reference_model() {
    differential(Mode::NoCache, 0x5197_0002);
}

#[test]
fn datapath_under_changes_matches_reference_model() {
    differential(Mode::Churn, 0x5197_0003);
}

/// Seed 0x5eed120b's divergence, kept: a phone's UDP datagram to a member's own IPv6 address
/// with a checksum of zero (which IPv6 forbids) opens no pass-through flow, so the member's
/// ICMPv6 error about it later leaves as the service's, from the VIP. With a checksum, the
/// flow is opened and the error passes untouched. The datapath and the model agree on both.
#[test]
fn a_udp6_datagram_without_checksum_opens_no_flow() {
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    // Phone 2001:db8:a::10 port 16601 to member 2001:db8:b::11 port 5060; the UDP
    // checksum is the last header word before the payload (`0000` or `1234`).
    let datagram = |csum: &str| {
        unhex(&format!(
            "02000000010102000001000a86dd60000000000e114020010db8000a00000000000000000010\
             20010db8000b0000000000000000001140d913c4000e{csum}283939d0853b"
        ))
    };
    // The member's port unreachable about it (frame 1,637,935 of that run).
    let error = unhex(
        "02000000020102000002000b86dd6000000000403a4020010db8000b00000000000000000011\
         20010db8000a000000000000000000100104fb090000000060000000002d113f20010db8000a\
         0000000000000000001020010db8000b0000000000000000001140d913c4002d843445ad6f02\
         7145dbc6",
    );
    for (csum, flow, reason) in [
        ("0000", false, "icmp_error_out"),
        ("1234", true, "passthrough"),
    ] {
        let net = FixtureNet::new(&MapSizes::default()).expect("fixture namespace");
        let mut model = Model::new(topo::vip_spec(), EXCLUSIONS);
        let guard = net.ns.enter().unwrap();
        let dp = &net.dp;
        let no_frags = |_: AnyFragKey| false;
        for (side, frame, prog, ifindex) in [
            (
                Side::Ext,
                datagram(csum),
                program_names::EXTERNAL,
                net.ext_ifindex,
            ),
            (
                Side::Int,
                error.clone(),
                program_names::INTERNAL,
                net.int_ifindex,
            ),
        ] {
            let (v, out) = topo::run_xdp(dp.program(prog).unwrap(), ifindex, &frame).unwrap();
            let (mv, mout) = model.process(side, &frame, &no_frags);
            assert!(
                v == mv && out == mout,
                "checksum {csum}, {side:?}: datapath {} {}, model {} {}",
                verdict_name(v),
                hex(&out),
                verdict_name(mv),
                hex(&mout)
            );
        }
        drop(guard);
        let opened = dp
            .conntrack6()
            .unwrap()
            .iter()
            .any(|(k, _)| k.kind == sipvip_common::CT_PASSTHROUGH);
        assert_eq!(opened, flow, "checksum {csum}: a pass-through flow opened");
        let reasons = dp.reasons().unwrap();
        assert_eq!(
            reasons.get(reason),
            Some(&1),
            "checksum {csum}: {reasons:?}"
        );
    }
}

fn differential(mode: Mode, default_seed: u64) {
    let seed = env_number("SIPVIP_DIFF_SEED", default_seed);
    // CI runs a million frames; `SIPVIP_DIFF_FRAMES=10000000` is the long run.
    let frames = env_number("SIPVIP_DIFF_FRAMES", 1_000_000) as usize;
    // Under changes, the flow cache has few slots (8: four buckets of two ways), so that
    // flows keep taking each other's slots and their buckets' other ways (a lookup must
    // tell them apart by the whole key).
    let sizes = match mode {
        Mode::Churn => MapSizes {
            flows: 8,
            ..MapSizes::default()
        },
        _ => MapSizes::default(),
    };
    let mut net = FixtureNet::new(&sizes).expect("fixture namespace");
    if mode == Mode::NoCache {
        net.dp.set_flow_cache(false).unwrap();
    }
    // The lifetime is covered by its own fixture; here time must not decide anything.
    net.dp
        .set_frag_lifetime(std::time::Duration::from_secs(24 * 3600))
        .unwrap();
    let mut model = Model::new(topo::vip_spec(), EXCLUSIONS);
    let mut gen = Gen {
        rng: SmallRng::seed_from_u64(seed),
        addrs: addr_pool(),
        queue: Vec::new(),
        history: Vec::new(),
        outputs: Vec::new(),
        outputs6: Vec::new(),
        services6: 0,
        replies6: 0,
        errors6: 0,
        echo_ids6: Vec::new(),
        sent6: Vec::new(),
        steered6: Vec::new(),
        id: 0,
    };
    let guard = net.ns.enter().unwrap();
    let mut flips = 0;
    let mut changes = 0;
    let flip_every = if mode == Mode::Churn { 997 } else { 9973 };
    // An exclusion covering the phone, the SBC and the T-Lib client (most of the members'
    // traffic), put in and taken out again (Churn).
    let toggled = (Ipv4Addr::new(198, 18, 1, 0), 27u8);
    let mut cached_max = 0;
    // Every other frame sent again right after a forwarded one (the same flow's next
    // packet: what the flow cache answers), unless a change came between them, which the
    // cached decision must then not outlive.
    let mut replay: Option<(Side, Vec<u8>)> = None;
    let mut replays = 0;
    // Replays whose flow the cache held when they were sent (what the cached path took),
    // and of them the external side's (a service's steering).
    let mut replays_cached = 0;
    let mut replays_cached_ext = 0;
    for n in 0..frames {
        // Flip the active member now and then, in both.
        if n % flip_every == flip_every - 1 {
            let next = if model.active == Some(0) { 1 } else { 0 };
            model.active = Some(next);
            let addr = model.spec.members[next].addr;
            net.dp.set_active(&net.spec, addr).unwrap();
            flips += 1;
        }
        if mode == Mode::Churn && n % 1499 == 1498 {
            if let Some(i) = model.exclusions.iter().position(|e| *e == toggled) {
                model.exclusions.remove(i);
                net.dp
                    .remove_exclusion(toggled.0.into(), toggled.1)
                    .unwrap();
            } else {
                model.exclusions.push(toggled);
                net.dp.add_exclusion(toggled.0.into(), toggled.1).unwrap();
            }
            changes += 1;
        }
        if mode == Mode::Churn && n % 503 == 502 {
            net.dp.refresh_nexthops(true).unwrap();
            changes += 1;
        }
        if n % 100_000 == 99_999 {
            cached_max = cached_max.max(net.dp.cached_flows().unwrap().0.len());
        }
        let (side, frame) = match replay.take() {
            Some(r) if n % 2 == 0 => {
                replays += 1;
                let ifindex = match r.0 {
                    Side::Ext => net.ext_ifindex,
                    Side::Int => net.int_ifindex,
                };
                if let Some(key) = flow_key(r.0, ifindex, &r.1) {
                    if net.dp.cached_flow(&key).unwrap().is_some() {
                        replays_cached += 1;
                        if r.0 == Side::Ext {
                            replays_cached_ext += 1;
                        }
                    }
                }
                r
            }
            _ => gen.next(),
        };
        let (prog, ifindex) = match side {
            Side::Ext => (program_names::EXTERNAL, net.ext_ifindex),
            Side::Int => (program_names::INTERNAL, net.int_ifindex),
        };
        let (v, out) = topo::run_xdp(net.dp.program(prog).unwrap(), ifindex, &frame).unwrap();
        let dp = &net.dp;
        let (mv, mout) = model.process(side, &frame, &|k| match k {
            AnyFragKey::V4(k) => dp.frag_entry(&k).expect("fragment table").is_some(),
            AnyFragKey::V6(k) => dp.frag_entry6(&k).expect("IPv6 fragment table").is_some(),
        });
        gen.observe(v, &frame, &out);
        if v == sipvip_tests::check::XDP_REDIRECT {
            replay = Some((side, frame.clone()));
        }
        assert!(
            v == mv && out == mout,
            "frame {n} (seed {seed:#x}) on {side:?} differs\n input:     {}\n datapath:  {} {}\n model:     {} {}",
            hex(&frame),
            verdict_name(v),
            hex(&out),
            verdict_name(mv),
            hex(&mout),
        );
    }
    drop(guard);

    // Counters: every reason, and the VIP's traffic by direction, service and member.
    let reasons = net.dp.reasons().unwrap();
    assert_eq!(reasons, model.reasons, "reason counters");
    let c = net.dp.vip_counters(VIP_ID).unwrap();
    let t = &model.traffic;
    assert_eq!((c.vip_in.packets, c.vip_in.bytes), t.vip_in, "vip in");
    assert_eq!((c.vip_out.packets, c.vip_out.bytes), t.vip_out, "vip out");
    for i in 0..8 {
        assert_eq!(
            (c.service_in[i].packets, c.service_in[i].bytes),
            t.service_in[i],
            "service {i} in"
        );
        assert_eq!(
            (c.service_out[i].packets, c.service_out[i].bytes),
            t.service_out[i],
            "service {i} out"
        );
        assert_eq!(
            (c.member_in[i].packets, c.member_in[i].bytes),
            t.member_in[i],
            "member {i} in"
        );
        assert_eq!(
            (c.member_out[i].packets, c.member_out[i].bytes),
            t.member_out[i],
            "member {i} out"
        );
    }
    // The run must have exercised every path, not just drops.
    for r in [
        "steered",
        "conntrack_reply",
        "snat",
        "excluded",
        "passthrough",
        "echo_reply",
        "frag_in",
        "frag_out",
        "icmp_error_in",
        "icmp_error_out",
        "pass_vlan",
        "drop_malformed_ip",
        "drop_truncated_l4",
        "pass_no_neigh",
        "frag_needed",
        "time_exceeded",
        "pass_other_host",
        "pass_l2_multicast",
        "pass_broadcast",
        "drop_martian",
        "drop_frag_orphan",
        "drop_udp_no_csum",
        "pass_to_vip",
        "drop_fib",
        "drop_icmp",
    ] {
        assert!(
            reasons.get(r).copied().unwrap_or(0) > 0,
            "no frame took the {r} path: {reasons:?}"
        );
    }
    // IPv6 took the rules' paths too: flows members opened, and the replies they got.
    let ct6 = net.dp.conntrack6().unwrap();
    assert!(
        ct6.iter().any(|(k, _)| k.kind == sipvip_common::CT_SNAT)
            && ct6
                .iter()
                .any(|(k, _)| k.kind == sipvip_common::CT_PASSTHROUGH)
            && ct6.iter().any(|(k, _)| k.proto == 58),
        "IPv6 flows recorded (SNAT, pass-through, ICMPv6 echo): {}",
        ct6.len()
    );
    assert!(
        gen.replies6 > 0 && gen.services6 > 0 && model.errors6_in > 0 && model.errors6_out > 0,
        "IPv6 frames to the VIP's services ({}), replies to members' flows ({}), errors about them ({} sent, {} translated in, {} out)",
        gen.services6,
        gen.replies6,
        gen.errors6,
        model.errors6_in,
        model.errors6_out
    );
    assert!(
        model.fragments6 > 0 && model.ext_headers6 > 0,
        "IPv6 fragments ({}) and extension headers ({}) to the VIP and from members",
        model.fragments6,
        model.ext_headers6
    );
    // The flow cache took part (or, turned off, held nothing).
    match mode {
        Mode::NoCache => assert_eq!(
            (cached_max, replays_cached),
            (0, 0),
            "the flow cache is off"
        ),
        Mode::Cache | Mode::Churn => assert!(
            cached_max > 0 && replays_cached > 1000 && replays_cached_ext > 1000,
            "flows cached: {cached_max}, replays through the cache: {replays_cached} \
             ({replays_cached_ext} steered)"
        ),
    }
    eprintln!(
        "{mode:?}: {frames} frames ({replays} sent again, {replays_cached} of them through the flow cache, {replays_cached_ext} steered), {flips} flips, {changes} other changes, up to {cached_max} flows cached, seed {seed:#x}: IPv6 fragments {}, with extension headers {}: {reasons:?}",
        model.fragments6, model.ext_headers6
    );
}
