//! Flow-state sync between the gateways of a pair: the datapath's conntrack entries
//! (member-opened flows, pass-through flows, draining members' connections) in a small
//! delta stream over UDP on the gateways' own link, so that the replies of a flow that
//! began on one gateway reach the right member on the other after a takeover.
//!
//! Wire format (every field network order), one self-contained datagram at a time:
//!
//! ```text
//!  0  "SVSY"            magic
//!  4  version (1)       u8
//!  5  family (4 or 6)   u8
//!  6  count             u16: records that follow
//!  8  records           count x (addr_a, addr_b, port_a, port_b, proto, kind, member, slot)
//!                       addresses 4 (IPv4) or 16 (IPv6) octets, ports 2, proto and kind 1,
//!                       slot 4: 22 or 58 octets a record
//! ```
//!
//! A datagram whose header, length or any record is not valid is dropped whole and counted:
//! a sender killed mid-stream leaves nothing half-applied, because a datagram is applied
//! only after all of it decoded.
//!
//! Every round each gateway also sends a hello (the same version; a receiver from before
//! hellos rejects it as an unknown family and still takes the entries):
//!
//! ```text
//!  0  "SVSY"            magic
//!  4  version (1)       u8
//!  5  0                 u8: a hello
//!  6  flags             u16: bit 0, this gateway carries the members' return path
//!  8  mac               6 octets: the sender's MAC on the external link
//! 14                    end
//! ```
//!
//! The hellos tell every gateway which one carries the members' return path (holds an
//! internal floating address, `ha.floating`) and the others' MACs: behind ECMP, a packet of
//! a flow whose entry has not arrived yet is handed to that gateway ([`return_path`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sipvip_common::{
    ipv6_be, ipv6_octets, CtKey, CtValue, Ipv6Be, CT_PASSTHROUGH, CT_SNAT, CT_STEER,
};

pub const MAGIC: &[u8; 4] = b"SVSY";
const HELLO: u8 = 0;
const HELLO_LEN: usize = 14;
const F_RETURN_PATH: u16 = 1;
pub const VERSION: u8 = 1;
const HEADER: usize = 8;
/// Datagrams stay below this (the internal link's MTU, with room for IP and UDP headers).
pub const MAX_DATAGRAM: usize = 1400;

/// One conntrack entry, in either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entry {
    V4(CtKey, CtValue),
    V6(CtKey<Ipv6Be>, CtValue<Ipv6Be>),
}

impl Entry {
    fn family(&self) -> u8 {
        match self {
            Entry::V4(..) => 4,
            Entry::V6(..) => 6,
        }
    }

    /// The member the entry sends to, for checking it against the configuration.
    pub fn member(&self) -> IpAddr {
        match self {
            Entry::V4(_, v) => IpAddr::V4(Ipv4Addr::from(v.member_be.to_ne_bytes())),
            Entry::V6(_, v) => IpAddr::V6(Ipv6Addr::from(ipv6_octets(v.member_be))),
        }
    }
}

fn record_len(family: u8) -> usize {
    if family == 4 {
        22
    } else {
        58
    }
}

/// Encodes `entries` (one family at a time is simplest for the caller, but any mix works)
/// into datagrams of at most `MAX_DATAGRAM` octets.
pub fn encode(entries: &[Entry]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for family in [4u8, 6] {
        let per = (MAX_DATAGRAM - HEADER) / record_len(family);
        let of: Vec<&Entry> = entries.iter().filter(|e| e.family() == family).collect();
        for chunk in of.chunks(per) {
            let mut d = Vec::with_capacity(HEADER + chunk.len() * record_len(family));
            d.extend_from_slice(MAGIC);
            d.push(VERSION);
            d.push(family);
            d.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            for e in chunk {
                match e {
                    Entry::V4(k, v) => {
                        d.extend_from_slice(&k.addr_a_be.to_ne_bytes());
                        d.extend_from_slice(&k.addr_b_be.to_ne_bytes());
                        d.extend_from_slice(&k.port_a_be.to_ne_bytes());
                        d.extend_from_slice(&k.port_b_be.to_ne_bytes());
                        d.push(k.proto);
                        d.push(k.kind);
                        d.extend_from_slice(&v.member_be.to_ne_bytes());
                        d.extend_from_slice(&v.slot.to_be_bytes());
                    }
                    Entry::V6(k, v) => {
                        d.extend_from_slice(&ipv6_octets(k.addr_a_be));
                        d.extend_from_slice(&ipv6_octets(k.addr_b_be));
                        d.extend_from_slice(&k.port_a_be.to_ne_bytes());
                        d.extend_from_slice(&k.port_b_be.to_ne_bytes());
                        d.push(k.proto);
                        d.push(k.kind);
                        d.extend_from_slice(&ipv6_octets(v.member_be));
                        d.extend_from_slice(&v.slot.to_be_bytes());
                    }
                }
            }
            out.push(d);
        }
    }
    out
}

/// A gateway's hello: its MAC on the external link, and whether it carries the members'
/// return path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub mac: [u8; 6],
    pub return_path: bool,
}

/// Encodes a hello.
pub fn encode_hello(h: &Hello) -> Vec<u8> {
    let mut d = Vec::with_capacity(HELLO_LEN);
    d.extend_from_slice(MAGIC);
    d.push(VERSION);
    d.push(HELLO);
    let flags = if h.return_path { F_RETURN_PATH } else { 0 };
    d.extend_from_slice(&flags.to_be_bytes());
    d.extend_from_slice(&h.mac);
    d
}

/// What a datagram carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datagram {
    Flows(Vec<Entry>),
    Hello(Hello),
}

/// Decodes a datagram of either kind, all of it or nothing.
pub fn decode_any(d: &[u8]) -> Result<Datagram, DecodeError> {
    if d.len() < 6 || d[5] != HELLO {
        return decode(d).map(Datagram::Flows);
    }
    if &d[..4] != MAGIC {
        return Err(DecodeError::Magic);
    }
    if d[4] != VERSION {
        return Err(DecodeError::Version(d[4]));
    }
    if d.len() != HELLO_LEN {
        return Err(DecodeError::Hello(d.len()));
    }
    let flags = u16::from_be_bytes([d[6], d[7]]);
    let mac: [u8; 6] = d[8..14].try_into().expect("6 octets");
    if mac == [0; 6] || mac[0] & 1 != 0 {
        return Err(DecodeError::HelloMac(mac));
    }
    Ok(Datagram::Hello(Hello {
        mac,
        return_path: flags & F_RETURN_PATH != 0,
    }))
}

/// Another gateway as its hellos describe it: `age` since the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub hello: Hello,
    pub age: std::time::Duration,
}

/// The MAC of the gateway that packets without flow state here go to: none when this
/// gateway carries the return path itself (`here`), else the peer that says it does, heard
/// within `fresh` (of several, during a VRRP transition, the one heard last).
pub fn return_path(here: bool, peers: &[Peer], fresh: std::time::Duration) -> Option<[u8; 6]> {
    if here {
        return None;
    }
    peers
        .iter()
        .filter(|p| p.hello.return_path && p.age <= fresh)
        .min_by_key(|p| p.age)
        .map(|p| p.hello.mac)
}

/// Why a datagram was dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a sipvip sync datagram (magic)")]
    Magic,
    #[error("sync version {0}, this build speaks {VERSION}")]
    Version(u8),
    #[error("family {0}")]
    Family(u8),
    #[error("{got} octets for {count} records of family {family}")]
    Length {
        got: usize,
        count: usize,
        family: u8,
    },
    #[error("record {0}: kind {1}")]
    Kind(usize, u8),
    #[error("record {0}: protocol {1}")]
    Proto(usize, u8),
    #[error("a hello of {0} octets (14 expected)")]
    Hello(usize),
    #[error("a hello with MAC {0:02x?}, which is no unicast MAC")]
    HelloMac([u8; 6]),
}

/// Decodes one datagram, all of it or nothing.
pub fn decode(d: &[u8]) -> Result<Vec<Entry>, DecodeError> {
    if d.len() < HEADER || &d[..4] != MAGIC {
        return Err(DecodeError::Magic);
    }
    if d[4] != VERSION {
        return Err(DecodeError::Version(d[4]));
    }
    let family = d[5];
    if family != 4 && family != 6 {
        return Err(DecodeError::Family(family));
    }
    let count = usize::from(u16::from_be_bytes([d[6], d[7]]));
    let len = record_len(family);
    if d.len() != HEADER + count * len {
        return Err(DecodeError::Length {
            got: d.len(),
            count,
            family,
        });
    }
    let mut out = Vec::with_capacity(count);
    for (i, r) in d[HEADER..].chunks_exact(len).enumerate() {
        let a = if family == 4 { 4 } else { 16 };
        let at = |o: usize, n: usize| &r[o..o + n];
        let port = |o: usize| u16::from_ne_bytes([r[o], r[o + 1]]);
        let (proto, kind) = (r[2 * a + 4], r[2 * a + 5]);
        if ![CT_SNAT, CT_PASSTHROUGH, CT_STEER].contains(&kind) {
            return Err(DecodeError::Kind(i, kind));
        }
        if ![1u8, 6, 17, 58].contains(&proto) {
            return Err(DecodeError::Proto(i, proto));
        }
        let slot_at = 3 * a + 6;
        let slot = u32::from_be_bytes([r[slot_at], r[slot_at + 1], r[slot_at + 2], r[slot_at + 3]]);
        let (port_a_be, port_b_be) = (port(2 * a), port(2 * a + 2));
        out.push(if family == 4 {
            let w = |o: usize| u32::from_ne_bytes(at(o, 4).try_into().expect("4 octets"));
            Entry::V4(
                CtKey {
                    addr_a_be: w(0),
                    addr_b_be: w(4),
                    port_a_be,
                    port_b_be,
                    proto,
                    kind,
                    _pad: 0,
                },
                CtValue {
                    member_be: w(2 * a + 6),
                    slot,
                },
            )
        } else {
            let w = |o: usize| ipv6_be(at(o, 16).try_into().expect("16 octets"));
            Entry::V6(
                CtKey {
                    addr_a_be: w(0),
                    addr_b_be: w(16),
                    port_a_be,
                    port_b_be,
                    proto,
                    kind,
                    _pad: 0,
                },
                CtValue {
                    member_be: w(2 * a + 6),
                    slot,
                },
            )
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(n: u16) -> Entry {
        Entry::V4(
            CtKey {
                addr_a_be: u32::from_ne_bytes([198, 18, 1, 100]),
                addr_b_be: u32::from_ne_bytes([198, 18, 1, 20]),
                port_a_be: (40000 + n).to_be(),
                port_b_be: 5060u16.to_be(),
                proto: 17,
                kind: CT_SNAT,
                _pad: 0,
            },
            CtValue {
                member_be: u32::from_ne_bytes([198, 18, 2, 11]),
                slot: 1,
            },
        )
    }

    fn v6(n: u16) -> Entry {
        let a = |last: u8| {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            o[15] = last;
            ipv6_be(o)
        };
        Entry::V6(
            CtKey {
                addr_a_be: a(0x11),
                addr_b_be: a(0x30),
                port_a_be: 7000u16.to_be(),
                port_b_be: (50000 + n).to_be(),
                proto: 6,
                kind: CT_PASSTHROUGH,
                _pad: 0,
            },
            CtValue {
                member_be: a(0x11),
                slot: 0,
            },
        )
    }

    #[test]
    fn entries_round_trip_in_datagrams_that_fit() {
        let entries: Vec<Entry> = (0..200).map(v4).chain((0..50).map(v6)).collect();
        let ds = encode(&entries);
        assert!(ds.iter().all(|d| d.len() <= MAX_DATAGRAM));
        // 200 IPv4 records at 63 a datagram, 50 IPv6 at 23.
        assert_eq!(ds.len(), 4 + 3);
        let back: Vec<Entry> = ds.iter().flat_map(|d| decode(d).unwrap()).collect();
        assert_eq!(back, entries);
        assert_eq!(v4(0).member(), IpAddr::V4(Ipv4Addr::new(198, 18, 2, 11)));
    }

    #[test]
    fn hellos_round_trip_and_name_the_return_path() {
        let h = Hello {
            mac: [0x02, 0, 0, 0, 0, 7],
            return_path: true,
        };
        let d = encode_hello(&h);
        assert_eq!(d.len(), 14);
        assert_eq!(decode_any(&d), Ok(Datagram::Hello(h)));
        // Entries still decode through decode_any; a hello is no flow datagram.
        let e = encode(&[v4(1)]).remove(0);
        assert_eq!(decode_any(&e), Ok(Datagram::Flows(vec![v4(1)])));
        assert_eq!(decode(&d), Err(DecodeError::Family(0)));
        for cut in 0..d.len() {
            assert!(decode_any(&d[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = d.clone();
        long.push(0);
        assert_eq!(decode_any(&long), Err(DecodeError::Hello(15)));
        let mut multicast = d.clone();
        multicast[8] = 1;
        assert!(matches!(
            decode_any(&multicast),
            Err(DecodeError::HelloMac(_))
        ));

        let ms = std::time::Duration::from_millis;
        let peer = |last: u8, rp: bool, age: u64| Peer {
            hello: Hello {
                mac: [0x02, 0, 0, 0, 0, last],
                return_path: rp,
            },
            age: ms(age),
        };
        let fresh = ms(600);
        // This gateway carries it: nothing is handed over.
        assert_eq!(return_path(true, &[peer(2, true, 10)], fresh), None);
        assert_eq!(
            return_path(false, &[peer(2, false, 10), peer(3, true, 100)], fresh),
            Some([0x02, 0, 0, 0, 0, 3])
        );
        // A claim not renewed within `fresh` (the gateway died) is no longer followed.
        assert_eq!(return_path(false, &[peer(3, true, 700)], fresh), None);
        // Two claims during a transition: the one heard last.
        assert_eq!(
            return_path(false, &[peer(2, true, 150), peer(3, true, 20)], fresh),
            Some([0x02, 0, 0, 0, 0, 3])
        );
        assert_eq!(return_path(false, &[], fresh), None);
    }

    #[test]
    fn a_datagram_cut_short_or_garbled_is_dropped_whole() {
        let d = encode(&(0..10).map(v4).collect::<Vec<_>>()).remove(0);
        // Cut anywhere (a sender killed mid-write, a truncated read): nothing decodes.
        for cut in 0..d.len() {
            assert!(decode(&d[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = d.clone();
        bad[4] = 9;
        assert_eq!(decode(&bad), Err(DecodeError::Version(9)));
        let mut bad = d.clone();
        bad[5] = 5;
        assert_eq!(decode(&bad), Err(DecodeError::Family(5)));
        // The last record's kind garbled: the whole datagram goes, not the first nine.
        let mut bad = d.clone();
        let kind_at = 8 + 9 * 22 + 13;
        bad[kind_at] = 77;
        assert_eq!(decode(&bad), Err(DecodeError::Kind(9, 77)));
        let mut bad = d;
        bad[8 + 12] = 99;
        assert_eq!(decode(&bad), Err(DecodeError::Proto(0, 99)));
        assert_eq!(decode(b"SVSY"), Err(DecodeError::Magic));
    }
}
