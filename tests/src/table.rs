//! Fixtures as data: one row per packet path, with the frame that goes in, the state it
//! needs, the verdict and the frame that must come out, and the counters that must move.
//! `tests/tests/fixture_table.rs` runs every row; `cargo xtask bench` measures the
//! per-packet cost of the rows that name a cost path, on the same frames. Adding a fixture
//! is adding a row.
//!
//! Rows run in order on one fixture network: state a row leaves (a conntrack entry) is
//! there for the rows after it, as it would be for the next packet.

use std::net::Ipv4Addr;

use anyhow::{ensure, Context, Result};

use crate::{
    check::{expect, Side, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    fixtures::{
        from_vip, from_vip6, phone_udp, phone_udp6, routed, routed6, to_member, to_member6, SIP,
    },
    frame::{
        fix_checksums, icmp6_error_reply, Ip4, Ip6, Mac, DEST_OPTS, FRAGMENT, HOP_BY_HOP, L4,
        ROUTING,
    },
    topo::*,
};

/// Which per-VIP counters a row moves by one packet (of the input frame's length).
#[derive(Clone, Copy, Debug)]
pub struct Traffic {
    /// Toward a member (true) or from one.
    pub inbound: bool,
    /// The service slot, if the packet belongs to a service.
    pub service: Option<usize>,
    /// The member slot.
    pub member: usize,
}

pub struct Row {
    pub description: &'static str,
    pub side: Side,
    /// A frame sent through the same program first, to put state in place (a first
    /// fragment before a later one).
    pub before: Option<fn() -> Vec<u8>>,
    pub input: fn() -> Vec<u8>,
    pub verdict: u32,
    /// The frame as it leaves; `None`: unchanged.
    pub output: Option<fn() -> Vec<u8>>,
    /// The one reason counter that moves, by one.
    pub reason: &'static str,
    /// The per-VIP counters that move, if any.
    pub traffic: Option<Traffic>,
    /// The name of the bench's per-packet cost path this row is, if it is one.
    pub cost: Option<&'static str>,
}

// The frames of the rows.

/// IPv6: the VIP's IPv6 address (the fixture VIP is dual-stack).
fn udp6() -> Ip6 {
    phone_udp6(5060)
}

/// An IPv6 frame from the primary member.
fn member6(sport: u16, dst: (std::net::Ipv6Addr, u16)) -> Ip6 {
    Ip6::udp(PRIMARY_MAC, INT_MAC, (PRIMARY6, sport), dst, SIP)
}

fn echo6(smac: Mac, dmac: Mac, src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, ty: u8) -> Ip6 {
    Ip6::icmp6(
        smac,
        dmac,
        src,
        dst,
        ty,
        &[0, 7, 0, 1, b'p', b'i', b'n', b'g'],
    )
}

/// The echo reply the datapath answers with: addresses and MACs swapped, hop limit 64.
fn echo6_reply() -> Ip6 {
    let mut r = echo6(EXT_MAC, PHONE_MAC, VIP6, PHONE6, 129);
    r.hop_limit = 64;
    r
}

/// The IPv6 packet (no Ethernet header) of `f`, as an ICMPv6 error quotes it.
fn quote6(f: &Ip6) -> Vec<u8> {
    f.build()[14..].to_vec()
}

/// An ICMPv6 error of `ty`/`code` with its 4-byte field `word` quoting `quoted`.
fn error6(
    smac: Mac,
    dmac: Mac,
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    (ty, code, word): (u8, u8, u32),
    quoted: &[u8],
) -> Ip6 {
    let mut body = word.to_be_bytes().to_vec();
    body.extend_from_slice(quoted);
    let mut e = Ip6::icmp6(smac, dmac, src, dst, ty, &body);
    e.upper[1] = code;
    e
}

/// Packet too big from the phone's router about the member-opened flow as it left (from
/// the VIP), and the same as it reaches the member: outer destination and quoted source the
/// member, every checksum from scratch.
fn too_big6(to_member: bool) -> Ip6 {
    let vip_side = Ip6::udp(EXT_MAC, PHONE_MAC, (VIP6, 40000), (PHONE6, 5062), SIP);
    let member_side = Ip6::udp(EXT_MAC, PHONE_MAC, (PRIMARY6, 40000), (PHONE6, 5062), SIP);
    let e = error6(
        PHONE_MAC,
        EXT_MAC,
        PHONE6,
        VIP6,
        (2, 0, 1280),
        &quote6(&vip_side),
    );
    if !to_member {
        return e;
    }
    let mut out = error6(
        PHONE_MAC,
        EXT_MAC,
        PHONE6,
        PRIMARY6,
        (2, 0, 1280),
        &quote6(&member_side),
    );
    out.smac = INT_MAC;
    out.dmac = PRIMARY_MAC;
    out.hop_limit -= 1;
    out
}

/// Port unreachable from the primary about the phone's request it got through the VIP, and
/// the same as it leaves: outer source and quoted destination the VIP.
fn unreachable6(from_vip: bool) -> Ip6 {
    let to = if from_vip { VIP6 } else { PRIMARY6 };
    let req = Ip6::udp(PHONE_MAC, EXT_MAC, (PHONE6, 5062), (to, 5060), SIP);
    let src = if from_vip { VIP6 } else { PRIMARY6 };
    let mut e = error6(PRIMARY_MAC, INT_MAC, src, PHONE6, (1, 4, 0), &quote6(&req));
    if from_vip {
        e.smac = EXT_MAC;
        e.dmac = PHONE_MAC;
        e.hop_limit -= 1;
    }
    e
}

fn hop_limit_1() -> Ip6 {
    let mut p = udp6();
    p.hop_limit = 1;
    p
}

fn fragments6() -> (Ip6, Ip6) {
    Ip6::udp(
        PHONE_MAC,
        EXT_MAC,
        (PHONE6, 5062),
        (VIP6, 5060),
        &[0x5a; 64],
    )
    .fragments(0x5eed, 32)
}

/// Hop-by-hop, routing and destination options headers, and an atomic fragment (offset 0,
/// no more fragments: RFC 6946).
fn ext_chain() -> Vec<(u8, Vec<u8>)> {
    vec![
        (HOP_BY_HOP, vec![1, 4, 0, 0, 0, 0]),
        (ROUTING, vec![0, 0, 0, 0, 0, 0]),
        (DEST_OPTS, vec![1, 4, 0, 0, 0, 0]),
        (FRAGMENT, vec![0, 0, 0, 0, 0, 7]),
    ]
}

fn with_ext(mut p: Ip6, ext: &[(u8, Vec<u8>)]) -> Ip6 {
    p.ext = ext.to_vec();
    p
}

/// A neighbour solicitation for the VIP's address.
fn solicitation() -> Ip6 {
    let mut body = vec![0; 4];
    body.extend_from_slice(&VIP6.octets());
    Ip6::icmp6(PHONE_MAC, EXT_MAC, PHONE6, VIP6, 135, &body)
}

/// Cuts `frame` to `n` bytes.
fn cut(mut frame: Vec<u8>, n: usize) -> Vec<u8> {
    frame.truncate(n);
    frame
}

fn steer_udp() -> Ip4 {
    phone_udp(5060)
}

fn syn() -> Ip4 {
    Ip4::tcp(SBC_MAC, EXT_MAC, (SBC, 41000), (VIP, 5060), 0x02, b"")
}

fn tls() -> Ip4 {
    let hello = b"\x16\x03\x01\x00\x05hello";
    Ip4::tcp(SBC_MAC, EXT_MAC, (SBC, 41001), (VIP, 5061), 0x18, hello)
}

fn options() -> Ip4 {
    phone_udp(5060).with(|x| x.options = vec![1, 1, 1, 0])
}

fn tagged() -> Ip4 {
    phone_udp(5060).with(|x| x.vlan = Some(100))
}

fn fragments() -> Vec<Vec<u8>> {
    Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, 5060), &[0x5a; 64]).fragments(32)
}

/// The later fragment as forwarded: destination, TTL and MACs, checksum from scratch.
fn later_fragment_out() -> Vec<u8> {
    let mut b = fragments()[1].clone();
    b[0..6].copy_from_slice(&PRIMARY_MAC);
    b[6..12].copy_from_slice(&INT_MAC);
    b[14 + 8] -= 1;
    b[14 + 16..14 + 20].copy_from_slice(&PRIMARY.octets());
    fix_checksums(&mut b[14..]);
    b
}

fn echo(smac: Mac, dmac: Mac, src: Ipv4Addr, dst: Ipv4Addr, ty: u8) -> Ip4 {
    let l4 = L4::Echo {
        ty,
        id: 7,
        seq: 1,
        payload: b"ping".to_vec(),
    };
    Ip4::new(smac, dmac, src, dst, l4)
}

fn member_ephemeral() -> Ip4 {
    Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 40000), (SBC, 5060), SIP)
}

fn sbc_reply() -> Ip4 {
    Ip4::udp(SBC_MAC, EXT_MAC, (SBC, 5060), (VIP, 40000), SIP)
}

fn member_service() -> Ip4 {
    Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 5060), (PHONE, 5062), SIP)
}

fn to_excluded() -> Ip4 {
    let dst = (EXCL_NET_HOST, 5060);
    Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 5060), dst, SIP)
}

fn tlib() -> Ip4 {
    let src = (PRIMARY, TSERVER_PORT);
    Ip4::tcp(PRIMARY_MAC, INT_MAC, src, (TLIB, 45000), 0x18, b"tlib")
}

const fn steered(service: usize) -> Option<Traffic> {
    Some(Traffic {
        inbound: true,
        service: Some(service),
        member: 0,
    })
}

/// The table. Rows run in this order.
pub const ROWS: &[Row] = &[
    Row {
        description: "udp/5060 to the VIP is steered to the active member",
        side: Side::Ext,
        before: None,
        input: || steer_udp().build(),
        verdict: XDP_REDIRECT,
        output: Some(|| to_member(&steer_udp(), PRIMARY, PRIMARY_MAC, None).build()),
        reason: "steered",
        traffic: steered(0),
        cost: Some("inbound steer"),
    },
    Row {
        description: "a TCP SYN to tcp/5060 is steered",
        side: Side::Ext,
        before: None,
        input: || syn().build(),
        verdict: XDP_REDIRECT,
        output: Some(|| to_member(&syn(), PRIMARY, PRIMARY_MAC, None).build()),
        reason: "steered",
        traffic: steered(1),
        cost: None,
    },
    Row {
        description: "TLS on tcp/5061 is steered, untouched above L4",
        side: Side::Ext,
        before: None,
        input: || tls().build(),
        verdict: XDP_REDIRECT,
        output: Some(|| to_member(&tls(), PRIMARY, PRIMARY_MAC, None).build()),
        reason: "steered",
        traffic: steered(2),
        cost: None,
    },
    Row {
        description: "a mapped service: VIP udp/5080 goes to member port 15080",
        side: Side::Ext,
        before: None,
        input: || phone_udp(MAPPED_PORT).build(),
        verdict: XDP_REDIRECT,
        output: Some(|| {
            let f = phone_udp(MAPPED_PORT);
            to_member(&f, PRIMARY, PRIMARY_MAC, Some(MAPPED_MEMBER_PORT)).build()
        }),
        reason: "steered",
        traffic: steered(3),
        cost: None,
    },
    Row {
        description: "IP options are carried through a steer",
        side: Side::Ext,
        before: None,
        input: || options().build(),
        verdict: XDP_REDIRECT,
        output: Some(|| to_member(&options(), PRIMARY, PRIMARY_MAC, None).build()),
        reason: "steered",
        traffic: steered(0),
        cost: None,
    },
    Row {
        description: "802.1Q: translated, then to the kernel's VLAN device (it decrements the TTL)",
        side: Side::Ext,
        before: None,
        input: || tagged().build(),
        verdict: XDP_PASS,
        output: Some(|| tagged().with(|x| x.dst = PRIMARY).build()),
        reason: "pass_vlan",
        traffic: steered(0),
        cost: None,
    },
    Row {
        description: "a later fragment follows its first fragment to the member",
        side: Side::Ext,
        before: Some(|| fragments()[0].clone()),
        input: || fragments()[1].clone(),
        verdict: XDP_REDIRECT,
        output: Some(later_fragment_out),
        reason: "frag_in",
        traffic: steered(0),
        cost: Some("inbound later fragment"),
    },
    Row {
        description: "a closed port of the VIP is dropped",
        side: Side::Ext,
        before: None,
        input: || phone_udp(5999).build(),
        verdict: XDP_DROP,
        output: None,
        reason: "drop_vip_closed",
        traffic: None,
        cost: None,
    },
    Row {
        description: "an echo request to the VIP is answered, even with TTL 1",
        side: Side::Ext,
        before: None,
        input: || {
            echo(PHONE_MAC, EXT_MAC, PHONE, VIP, 8)
                .with(|x| x.ttl = 1)
                .build()
        },
        verdict: XDP_TX,
        output: Some(|| echo(EXT_MAC, PHONE_MAC, VIP, PHONE, 0).build()),
        reason: "echo_reply",
        traffic: None,
        cost: None,
    },
    Row {
        description: "a frame for another host's MAC is left to the kernel",
        side: Side::Ext,
        before: None,
        input: || steer_udp().with(|x| x.dmac = [2, 0, 0, 9, 9, 9]).build(),
        verdict: XDP_PASS,
        output: None,
        reason: "pass_other_host",
        traffic: None,
        cost: None,
    },
    Row {
        description: "a loopback source is a martian, dropped",
        side: Side::Ext,
        before: None,
        input: || steer_udp().with(|x| x.src = Ipv4Addr::LOCALHOST).build(),
        verdict: XDP_DROP,
        output: None,
        reason: "drop_martian",
        traffic: None,
        cost: None,
    },
    Row {
        description: "member traffic from an ephemeral port is SNATed to the VIP",
        side: Side::Int,
        before: None,
        input: || member_ephemeral().build(),
        verdict: XDP_REDIRECT,
        output: Some(|| from_vip(&member_ephemeral(), SBC_MAC, None).build()),
        reason: "snat",
        traffic: Some(Traffic {
            inbound: false,
            service: None,
            member: 0,
        }),
        cost: Some("outbound SNAT, exclusion miss"),
    },
    Row {
        description: "the reply to a member-opened flow goes back to the member",
        side: Side::Ext,
        before: None,
        input: || sbc_reply().build(),
        verdict: XDP_REDIRECT,
        output: Some(|| to_member(&sbc_reply(), PRIMARY, PRIMARY_MAC, None).build()),
        reason: "conntrack_reply",
        traffic: Some(Traffic {
            inbound: true,
            service: None,
            member: 0,
        }),
        cost: None,
    },
    Row {
        description: "service traffic leaves from the VIP's service port",
        side: Side::Int,
        before: None,
        input: || member_service().build(),
        verdict: XDP_REDIRECT,
        output: Some(|| from_vip(&member_service(), PHONE_MAC, None).build()),
        reason: "snat",
        traffic: Some(Traffic {
            inbound: false,
            service: Some(0),
            member: 0,
        }),
        cost: None,
    },
    Row {
        description: "member traffic to an excluded destination leaves untouched",
        side: Side::Int,
        before: None,
        input: || to_excluded().build(),
        verdict: XDP_REDIRECT,
        output: Some(|| routed(&to_excluded(), EXT_MAC, EXCL_NET_HOST_MAC).build()),
        reason: "excluded",
        traffic: None,
        cost: Some("outbound SNAT, exclusion hit"),
    },
    Row {
        description: "member traffic from a pass-through port (T-Lib) leaves untouched",
        side: Side::Int,
        before: None,
        input: || tlib().build(),
        verdict: XDP_REDIRECT,
        output: Some(|| routed(&tlib(), EXT_MAC, TLIB_MAC).build()),
        reason: "passthrough",
        traffic: None,
        cost: Some("outbound pass-through port"),
    },
    Row {
        description: "IPv6 UDP to the VIP is steered to the active member",
        side: Side::Ext,
        before: None,
        input: || udp6().build(),
        verdict: XDP_REDIRECT,
        output: Some(|| to_member6(&udp6(), PRIMARY6, PRIMARY_MAC, None).build()),
        reason: "steered",
        traffic: Some(Traffic {
            inbound: true,
            service: Some(0),
            member: 0,
        }),
        cost: Some("inbound steer (IPv6)"),
    },
    Row {
        description: "IPv6 to a mapped service port is steered to the member's port",
        side: Side::Ext,
        before: None,
        input: || phone_udp6(MAPPED_PORT).build(),
        verdict: XDP_REDIRECT,
        output: Some(|| {
            to_member6(
                &phone_udp6(MAPPED_PORT),
                PRIMARY6,
                PRIMARY_MAC,
                Some(MAPPED_MEMBER_PORT),
            )
            .build()
        }),
        reason: "steered",
        traffic: Some(Traffic {
            inbound: true,
            service: Some(3),
            member: 0,
        }),
        cost: None,
    },
    Row {
        description: "IPv6 through hop-by-hop, routing, destination options and an atomic fragment is steered",
        side: Side::Ext,
        before: None,
        input: || with_ext(udp6(), &ext_chain()).build(),
        verdict: XDP_REDIRECT,
        output: Some(|| {
            with_ext(to_member6(&udp6(), PRIMARY6, PRIMARY_MAC, None), &ext_chain()).build()
        }),
        reason: "steered",
        traffic: Some(Traffic {
            inbound: true,
            service: Some(0),
            member: 0,
        }),
        cost: None,
    },
    Row {
        description: "an IPv6 first fragment is steered and its later fragment follows it",
        side: Side::Ext,
        before: Some(|| fragments6().0.build()),
        input: || fragments6().1.build(),
        verdict: XDP_REDIRECT,
        output: Some(|| to_member6(&fragments6().1, PRIMARY6, PRIMARY_MAC, None).build()),
        reason: "frag_in",
        traffic: Some(Traffic {
            inbound: true,
            service: Some(0),
            member: 0,
        }),
        cost: None,
    },
    Row {
        description: "an IPv6 UDP checksum of 0 (forbidden by RFC 8200) is dropped",
        side: Side::Ext,
        before: None,
        input: || {
            let mut b = udp6().build();
            b[14 + 40 + 6] = 0;
            b[14 + 40 + 7] = 0;
            b
        },
        verdict: XDP_DROP,
        output: None,
        reason: "drop_udp_no_csum",
        traffic: None,
        cost: None,
    },
    Row {
        description: "IPv6 to the VIP with hop limit 1 is answered with time exceeded from the interface",
        side: Side::Ext,
        before: None,
        input: || hop_limit_1().build(),
        verdict: XDP_TX,
        output: Some(|| icmp6_error_reply(&hop_limit_1().build(), 3, 0, 0, EXT_IP6)),
        reason: "time_exceeded",
        traffic: None,
        cost: None,
    },
    Row {
        description: "IPv6 to a port of the VIP that is no service is dropped",
        side: Side::Ext,
        before: None,
        input: || phone_udp6(6000).build(),
        verdict: XDP_DROP,
        output: None,
        reason: "drop_vip_closed",
        traffic: None,
        cost: None,
    },
    Row {
        description: "an ICMPv6 echo request to the VIP is answered",
        side: Side::Ext,
        before: None,
        input: || echo6(PHONE_MAC, EXT_MAC, PHONE6, VIP6, 128).build(),
        verdict: XDP_TX,
        output: Some(|| echo6_reply().build()),
        reason: "echo_reply",
        traffic: None,
        cost: None,
    },
    Row {
        description: "IPv6 service traffic from a member leaves with the VIP's IPv6 address",
        side: Side::Int,
        before: None,
        input: || member6(5060, (PHONE6, 5062)).build(),
        verdict: XDP_REDIRECT,
        output: Some(|| from_vip6(&member6(5060, (PHONE6, 5062)), PHONE_MAC).build()),
        reason: "snat",
        traffic: Some(Traffic {
            inbound: false,
            service: Some(0),
            member: 0,
        }),
        cost: Some("outbound SNAT (IPv6)"),
    },
    Row {
        description: "an IPv6 flow a member opens is SNATed and tracked",
        side: Side::Int,
        before: None,
        input: || member6(40000, (PHONE6, 5062)).build(),
        verdict: XDP_REDIRECT,
        output: Some(|| from_vip6(&member6(40000, (PHONE6, 5062)), PHONE_MAC).build()),
        reason: "snat",
        traffic: Some(Traffic {
            inbound: false,
            service: None,
            member: 0,
        }),
        cost: None,
    },
    Row {
        description: "the reply to that IPv6 flow reaches the member",
        side: Side::Ext,
        before: None,
        input: || Ip6::udp(PHONE_MAC, EXT_MAC, (PHONE6, 5062), (VIP6, 40000), SIP).build(),
        verdict: XDP_REDIRECT,
        output: Some(|| {
            let reply = Ip6::udp(PHONE_MAC, EXT_MAC, (PHONE6, 5062), (VIP6, 40000), SIP);
            to_member6(&reply, PRIMARY6, PRIMARY_MAC, None).build()
        }),
        reason: "conntrack_reply",
        traffic: Some(Traffic {
            inbound: true,
            service: None,
            member: 0,
        }),
        cost: None,
    },
    Row {
        description: "ICMPv6 packet too big about that flow reaches the member, quote translated",
        side: Side::Ext,
        before: None,
        input: || too_big6(false).build(),
        verdict: XDP_REDIRECT,
        output: Some(|| too_big6(true).build()),
        reason: "icmp_error_in",
        traffic: Some(Traffic {
            inbound: true,
            service: None,
            member: 0,
        }),
        cost: None,
    },
    Row {
        description: "a member's ICMPv6 port unreachable about a request to the VIP leaves from the VIP",
        side: Side::Int,
        before: None,
        input: || unreachable6(false).build(),
        verdict: XDP_REDIRECT,
        output: Some(|| unreachable6(true).build()),
        reason: "icmp_error_out",
        traffic: Some(Traffic {
            inbound: false,
            service: Some(0),
            member: 0,
        }),
        cost: None,
    },
    Row {
        description: "an ICMPv6 echo a member sends is SNATed (the checksum covers the addresses)",
        side: Side::Int,
        before: None,
        input: || echo6(PRIMARY_MAC, INT_MAC, PRIMARY6, PHONE6, 128).build(),
        verdict: XDP_REDIRECT,
        output: Some(|| {
            from_vip6(&echo6(PRIMARY_MAC, INT_MAC, PRIMARY6, PHONE6, 128), PHONE_MAC).build()
        }),
        reason: "snat",
        traffic: Some(Traffic {
            inbound: false,
            service: None,
            member: 0,
        }),
        cost: None,
    },
    Row {
        description: "member IPv6 traffic to an excluded prefix leaves untouched",
        side: Side::Int,
        before: None,
        input: || member6(5060, (EXCL_NET_HOST6, 5060)).build(),
        verdict: XDP_REDIRECT,
        output: Some(|| {
            routed6(&member6(5060, (EXCL_NET_HOST6, 5060)), EXT_MAC, EXCL_NET_HOST_MAC).build()
        }),
        reason: "excluded",
        traffic: None,
        cost: None,
    },
    Row {
        description: "member IPv6 traffic from a pass-through port leaves untouched",
        side: Side::Int,
        before: None,
        input: || member6(TSERVER_PORT, (TLIB6, 41000)).build(),
        verdict: XDP_REDIRECT,
        output: Some(|| routed6(&member6(TSERVER_PORT, (TLIB6, 41000)), EXT_MAC, TLIB_MAC).build()),
        reason: "passthrough",
        traffic: None,
        cost: None,
    },
    Row {
        description: "IPv6 to a member's own address (T-Lib) goes to the kernel untouched",
        side: Side::Ext,
        before: None,
        input: || Ip6::udp(TLIB_MAC, EXT_MAC, (TLIB6, 41001), (PRIMARY6, 8000), SIP).build(),
        verdict: XDP_PASS,
        output: None,
        reason: "pass_to_member",
        traffic: None,
        cost: None,
    },
    Row {
        description: "the member's IPv6 reply in that flow leaves untouched",
        side: Side::Int,
        before: None,
        input: || member6(8000, (TLIB6, 41001)).build(),
        verdict: XDP_REDIRECT,
        output: Some(|| routed6(&member6(8000, (TLIB6, 41001)), EXT_MAC, TLIB_MAC).build()),
        reason: "passthrough",
        traffic: None,
        cost: None,
    },
    Row {
        description: "IPv6 from an address that is no member's goes to the kernel",
        side: Side::Int,
        before: None,
        input: || {
            Ip6::udp(
                PRIMARY_MAC,
                INT_MAC,
                (std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 0x99), 5060),
                (PHONE6, 5062),
                SIP,
            )
            .build()
        },
        verdict: XDP_PASS,
        output: None,
        reason: "pass_not_member",
        traffic: None,
        cost: None,
    },
    Row {
        description: "member IPv6 traffic to a blackholed prefix is dropped",
        side: Side::Int,
        before: None,
        input: || member6(5060, (BLACKHOLED6, 5060)).build(),
        verdict: XDP_DROP,
        // The drop verdict carries the rewritten frame, as for IPv4: nothing leaves.
        output: Some(|| {
            let mut x = member6(5060, (BLACKHOLED6, 5060));
            x.src = VIP6;
            x.build()
        }),
        reason: "drop_fib",
        // Counted as translated traffic, as for IPv4.
        traffic: Some(Traffic {
            inbound: false,
            service: Some(0),
            member: 0,
        }),
        cost: None,
    },
    Row {
        description: "IPv6 Neighbor Discovery always goes to the kernel",
        side: Side::Ext,
        before: None,
        input: || solicitation().build(),
        verdict: XDP_PASS,
        output: None,
        reason: "pass_nd",
        traffic: None,
        cost: None,
    },
    Row {
        description: "IPv6 with more extension headers than the datapath walks goes to the kernel",
        side: Side::Ext,
        before: None,
        input: || with_ext(udp6(), &vec![(DEST_OPTS, vec![]); 5]).build(),
        verdict: XDP_PASS,
        output: None,
        reason: "pass_ipv6_ext",
        traffic: None,
        cost: None,
    },
    Row {
        description: "IPv6 with a truncated extension header chain is dropped",
        side: Side::Ext,
        before: None,
        input: || {
            let mut p = with_ext(udp6(), &[(HOP_BY_HOP, vec![1, 4, 0, 0, 0, 0])]);
            p.upper.clear();
            p.proto = DEST_OPTS;
            p.payload_len = Some(8);
            p.build()
        },
        verdict: XDP_DROP,
        output: None,
        reason: "drop_malformed_ipv6",
        traffic: None,
        cost: None,
    },
    Row {
        description: "IPv6 with an extension header longer than the packet is dropped",
        side: Side::Ext,
        before: None,
        input: || {
            let mut b = with_ext(udp6(), &[(DEST_OPTS, vec![1, 4, 0, 0, 0, 0])]).build();
            // The header's length octet: 200 x 8 octets.
            b[14 + 40 + 1] = 200;
            b
        },
        verdict: XDP_DROP,
        output: None,
        reason: "drop_malformed_ipv6",
        traffic: None,
        cost: None,
    },
    Row {
        description: "an IPv6 payload length past the frame is dropped",
        side: Side::Ext,
        before: None,
        input: || cut(udp6().build(), 14 + 40 + 10),
        verdict: XDP_DROP,
        output: None,
        reason: "drop_malformed_ipv6",
        traffic: None,
        cost: None,
    },
    Row {
        description: "an IPv6 jumbogram (payload length 0, hop-by-hop) is dropped",
        side: Side::Ext,
        before: None,
        input: || {
            let mut p = with_ext(udp6(), &[(HOP_BY_HOP, vec![0xc2, 4, 0, 1, 0, 0])]);
            p.payload_len = Some(0);
            p.build()
        },
        verdict: XDP_DROP,
        output: None,
        reason: "drop_malformed_ipv6",
        traffic: None,
        cost: None,
    },
    Row {
        description: "a non-final IPv6 fragment not a multiple of 8 octets long is dropped",
        side: Side::Ext,
        before: None,
        input: || {
            let mut p = with_ext(udp6(), &[(FRAGMENT, vec![0, 1, 0, 0, 0, 9])]);
            p.upper.truncate(13);
            p.build()
        },
        verdict: XDP_DROP,
        output: None,
        reason: "drop_malformed_ipv6",
        traffic: None,
        cost: None,
    },
    Row {
        description: "an ICMPv6 error to the VIP quoting a truncated packet is dropped",
        side: Side::Ext,
        before: None,
        input: || Ip6::icmp6(PHONE_MAC, EXT_MAC, PHONE6, VIP6, 1, &[0, 0, 0, 0, 0x60, 0]).build(),
        verdict: XDP_DROP,
        output: None,
        reason: "drop_truncated_l4",
        traffic: None,
        cost: None,
    },
];
/// The row named `cost` by the bench.
pub fn cost_row(cost: &str) -> Option<&'static Row> {
    ROWS.iter().find(|r| r.cost == Some(cost))
}

impl Row {
    /// The program's name and the ingress device on the fixture network.
    pub fn program(&self, net: &FixtureNet) -> (&'static str, u32) {
        match self.side {
            Side::Ext => (sipvip_common::program_names::EXTERNAL, net.ext_ifindex),
            Side::Int => (sipvip_common::program_names::INTERNAL, net.int_ifindex),
        }
    }

    /// Runs the row on `net` and checks everything it expects.
    /// Runs the row's frame twice, each time checked in full: the first packet goes through
    /// the rules, the second through the flow cache where the first left an entry (the
    /// cache runs in front of the rules, so every row holds either way).
    pub fn run(&self, net: &FixtureNet) -> Result<()> {
        if let Some(before) = self.before {
            let (prog, ifindex) = self.program(net);
            net.run(prog, ifindex, &before())?;
        }
        self.run_once(net).context("first packet")?;
        self.run_once(net).context("second packet")
    }

    fn run_once(&self, net: &FixtureNet) -> Result<()> {
        let name = self.description;
        let input = (self.input)();
        let output = self.output.map(|o| o());
        let before = net.dp.vip_counters(VIP_ID)?;
        expect(
            net,
            name,
            self.side,
            &input,
            self.verdict,
            output.as_deref(),
            self.reason,
        );
        let after = net.dp.vip_counters(VIP_ID)?;
        let len = input.len() as u64;
        let (vip_b, vip_a, svc_b, svc_a, mem_b, mem_a) =
            match self.traffic.map(|t| t.inbound).unwrap_or(true) {
                true => (
                    before.vip_in,
                    after.vip_in,
                    before.service_in,
                    after.service_in,
                    before.member_in,
                    after.member_in,
                ),
                false => (
                    before.vip_out,
                    after.vip_out,
                    before.service_out,
                    after.service_out,
                    before.member_out,
                    after.member_out,
                ),
            };
        let moved = |a: u64, b: u64| a - b;
        match self.traffic {
            None => ensure!(
                after.vip_in.packets == before.vip_in.packets
                    && after.vip_out.packets == before.vip_out.packets,
                "{name}: VIP counters moved"
            ),
            Some(t) => {
                ensure!(
                    moved(vip_a.packets, vip_b.packets) == 1
                        && moved(vip_a.bytes, vip_b.bytes) == len,
                    "{name}: VIP counter moved by {} packets / {} bytes, not 1 / {len}",
                    moved(vip_a.packets, vip_b.packets),
                    moved(vip_a.bytes, vip_b.bytes)
                );
                for (i, (a, b)) in svc_a.iter().zip(&svc_b).enumerate() {
                    let want = u64::from(t.service == Some(i));
                    ensure!(
                        moved(a.packets, b.packets) == want,
                        "{name}: service slot {i} moved by {}",
                        moved(a.packets, b.packets)
                    );
                }
                for (i, (a, b)) in mem_a.iter().zip(&mem_b).enumerate() {
                    let want = u64::from(t.member == i);
                    ensure!(
                        moved(a.packets, b.packets) == want,
                        "{name}: member slot {i} moved by {}",
                        moved(a.packets, b.packets)
                    );
                }
            }
        }
        Ok(())
    }
}
