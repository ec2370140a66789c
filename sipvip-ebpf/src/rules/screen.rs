//! Before any other rule, on both sides: the L2 acceptance rule and the address screen.

use sipvip_common::{iface_slot, Iface, Ipv6Be, Reason};

use crate::{
    hook::Frame,
    maps::{IFACES, IFACES6},
    packet::{ipv4::Ipv4, ipv6::Ipv6},
};

/// The L2 acceptance rule: only a frame addressed to the MAC of the interface it arrived on
/// may be translated. Broadcast and multicast frames, frames for another host
/// (unknown-unicast flooding, mirror ports) and frames on an interface the datapath does not
/// know go to the kernel untouched. `ifindex` is the frame's ingress device.
#[inline(always)]
pub fn accept<F: Frame>(f: &F, ifindex: u32) -> Result<(), Reason> {
    let dmac: [u16; 3] = f.load(0).map_err(|_| Reason::DropMalformedEth)?;
    if dmac[0].to_ne_bytes()[0] & 1 != 0 {
        return Err(Reason::PassL2Multicast);
    }
    let Some(ifc) = iface_at(ifindex) else {
        return Err(Reason::PassOtherHost);
    };
    let m = ifc.mac;
    let own = [
        u16::from_ne_bytes([m[0], m[1]]),
        u16::from_ne_bytes([m[2], m[3]]),
        u16::from_ne_bytes([m[4], m[5]]),
    ];
    if dmac != own {
        return Err(Reason::PassOtherHost);
    }
    Ok(())
}

/// The record of the interface the frame arrived on, if the datapath knows it.
#[inline(always)]
pub fn iface<F: Frame>(f: &F) -> Option<&'static Iface> {
    iface_at(f.ingress_ifindex())
}

/// The record of the interface `ifindex`, if the datapath knows it.
#[inline(always)]
fn iface_at(ifindex: u32) -> Option<&'static Iface> {
    IFACES
        .get(iface_slot(ifindex))
        .filter(|i| i.ifindex == ifindex)
}

/// The source of the ICMP errors the gateway sends: the ingress interface's address, or
/// `fallback_be` when it has none.
#[inline(always)]
pub fn error_source<F: Frame>(f: &F, fallback_be: u32) -> u32 {
    match iface(f) {
        Some(ifc) if ifc.addr_be != 0 => ifc.addr_be,
        _ => fallback_be,
    }
}

/// The source of the ICMPv6 errors the gateway sends: the ingress interface's IPv6 address,
/// or `fallback` (the VIP's) when it has none.
#[inline(always)]
pub fn error_source6<F: Frame>(f: &F, fallback: Ipv6Be) -> Ipv6Be {
    if iface(f).is_none() {
        return fallback;
    }
    match IFACES6.get(iface_slot(f.ingress_ifindex())) {
        Some(a) if *a != [0; 4] => *a,
        _ => fallback,
    }
}

/// Martian addresses are dropped, and broadcast or multicast destinations passed untouched.
#[inline(always)]
pub fn screen(p: &Ipv4) -> Result<(), Reason> {
    screen_src(p.src_be)?;
    let d = p.dst_be.to_ne_bytes();
    if d[0] == 0 || d[0] == 127 {
        return Err(Reason::DropMartian);
    }
    if (224..240).contains(&d[0]) || p.dst_be == u32::MAX {
        return Err(Reason::PassBroadcast);
    }
    Ok(())
}

/// The source's part of the IPv4 address screen: 0/8, 127/8, and 224/3 (multicast,
/// reserved, 255.255.255.255) are martians.
#[inline(always)]
pub fn screen_src(src_be: u32) -> Result<(), Reason> {
    let s = src_be.to_ne_bytes()[0];
    if s == 0 || s == 127 || s >= 224 {
        return Err(Reason::DropMartian);
    }
    Ok(())
}

/// The IPv6 address screen: a multicast, loopback or unspecified source and a loopback or
/// unspecified destination are martians, dropped; a multicast destination (ff00::/8) is
/// passed untouched. (Link-local addresses are never VIPs or members: they pass on as
/// not-for-a-VIP.)
#[inline(always)]
pub fn screen6(p: &Ipv6) -> Result<(), Reason> {
    const LOOPBACK: [u32; 4] = [0, 0, 0, 1u32.to_be()];
    let (s, d) = (&p.src_be, &p.dst_be);
    if s[0].to_ne_bytes()[0] == 0xff || *s == LOOPBACK || *s == [0; 4] {
        return Err(Reason::DropMartian);
    }
    if *d == LOOPBACK || *d == [0; 4] {
        return Err(Reason::DropMartian);
    }
    if d[0].to_ne_bytes()[0] == 0xff {
        return Err(Reason::PassBroadcast);
    }
    Ok(())
}
