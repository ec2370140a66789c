//! Shared pieces of the packet fixtures: the fixture network, a SIP request from a phone,
//! and the frames as the datapath forwards them.

use std::net::Ipv4Addr;

use sipvip::datapath::MapSizes;

use crate::{
    frame::{self, Ip4, Ip6},
    topo::*,
};

pub const SIP: &[u8] =
    b"OPTIONS sip:vip SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.10:5062;branch=z9hG4bKx\r\n\r\n";

pub fn net() -> FixtureNet {
    FixtureNet::new(&MapSizes::default()).expect("fixture namespace")
}

pub fn phone_udp(dport: u16) -> Ip4 {
    Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, dport), SIP)
}

/// The frame as the datapath forwards it to a member.
pub fn to_member(f: &Ip4, member: Ipv4Addr, mac: frame::Mac, dport: Option<u16>) -> Ip4 {
    f.clone().with(|x| {
        x.smac = INT_MAC;
        x.dmac = mac;
        x.dst = member;
        x.ttl -= 1;
        if let Some(p) = dport {
            x.l4.set_dport(p);
        }
    })
}

/// The frame as the datapath forwards it out of the external side with the VIP as source.
pub fn from_vip(f: &Ip4, dmac: frame::Mac, sport: Option<u16>) -> Ip4 {
    f.clone().with(|x| {
        x.smac = EXT_MAC;
        x.dmac = dmac;
        x.src = VIP;
        x.ttl -= 1;
        if let Some(p) = sport {
            x.l4.set_sport(p);
        }
    })
}

/// The frame forwarded untouched (TTL and MACs only).
pub fn routed(f: &Ip4, smac: frame::Mac, dmac: frame::Mac) -> Ip4 {
    f.clone().with(|x| {
        x.smac = smac;
        x.dmac = dmac;
        x.ttl -= 1;
    })
}

/// A SIP request from the phone to the VIP's IPv6 address.
pub fn phone_udp6(dport: u16) -> Ip6 {
    Ip6::udp(PHONE_MAC, EXT_MAC, (PHONE6, 5062), (VIP6, dport), SIP)
}

/// The IPv6 frame as the datapath forwards it to a member (hop limit decremented, the
/// checksum computed from scratch by the builder).
pub fn to_member6(f: &Ip6, member: std::net::Ipv6Addr, mac: frame::Mac, dport: Option<u16>) -> Ip6 {
    let mut x = f.clone();
    x.smac = INT_MAC;
    x.dmac = mac;
    x.dst = member;
    x.hop_limit -= 1;
    if let Some(p) = dport {
        x.upper[2..4].copy_from_slice(&p.to_be_bytes());
    }
    x
}

/// The IPv6 frame as the datapath forwards it out of the external side from the VIP.
pub fn from_vip6(f: &Ip6, dmac: frame::Mac) -> Ip6 {
    let mut x = f.clone();
    x.smac = EXT_MAC;
    x.dmac = dmac;
    x.src = VIP6;
    x.hop_limit -= 1;
    x
}

/// The IPv6 frame forwarded untouched (hop limit and MACs only).
pub fn routed6(f: &Ip6, smac: frame::Mac, dmac: frame::Mac) -> Ip6 {
    let mut x = f.clone();
    x.smac = smac;
    x.dmac = dmac;
    x.hop_limit -= 1;
    x
}
