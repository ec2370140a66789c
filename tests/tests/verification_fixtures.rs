//! Packet fixtures for the defects an independent verification found (issue 10): frames not
//! addressed to the gateway, broadcast and multicast, martian addresses, path MTU discovery
//! through the VIP, fragments of unsolicited datagrams and the fragment table's lifetime, and
//! TTL expiry toward a VIP. Each runs through BPF_PROG_TEST_RUN with the output compared byte
//! for byte and its checksums re-verified from scratch.

use std::{net::Ipv4Addr, time::Duration};

use sipvip_tests::{
    check::{expect, Side, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    fixtures::{from_vip, net, phone_udp, routed, to_member, SIP},
    frame::{self, icmp6_error_reply, icmp_error_reply, Ip4, Ip6, L4},
    topo::*,
};

const BCAST_MAC: frame::Mac = [0xff; 6];
/// Another host's MAC on the segment (flooded unknown unicast, or a mirror port).
const FOREIGN_MAC: frame::Mac = [2, 0, 0, 0, 0x77, 0x77];

fn echo(smac: frame::Mac, dmac: frame::Mac, src: Ipv4Addr, dst: Ipv4Addr) -> Ip4 {
    Ip4::new(
        smac,
        dmac,
        src,
        dst,
        L4::Echo {
            ty: 8,
            id: 7,
            seq: 1,
            payload: b"ping".to_vec(),
        },
    )
}

#[test]
fn frames_for_another_host_are_left_to_the_kernel() {
    let net = net();
    // The datapath knows each interface's MAC and address.
    let mut known: Vec<_> = net
        .dp
        .interfaces()
        .unwrap()
        .into_iter()
        .map(|i| (i.ifindex, i.mac, Ipv4Addr::from(i.addr_be.to_ne_bytes())))
        .collect();
    known.sort();
    let mut want = vec![
        (net.ext_ifindex, EXT_MAC, EXT_IP),
        (net.int_ifindex, INT_MAC, INT_IP),
    ];
    want.sort();
    assert_eq!(known, want);
    // To VIP:5060, but to another host's MAC: not steered.
    let f = phone_udp(5060).with(|x| x.dmac = FOREIGN_MAC).build();
    expect(
        &net,
        "VIP with a foreign MAC",
        Side::Ext,
        &f,
        XDP_PASS,
        None,
        "pass_other_host",
    );
    // The primary to the backup, flooded to the gateway: not SNATed.
    let f = Ip4::udp(
        PRIMARY_MAC,
        BACKUP_MAC,
        (PRIMARY, 5060),
        (BACKUP, 5060),
        SIP,
    )
    .build();
    expect(
        &net,
        "member to member, flooded",
        Side::Int,
        &f,
        XDP_PASS,
        None,
        "pass_other_host",
    );
    // The same frame addressed to the gateway is translated as before.
    let f = Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 5060), (PHONE, 5062), SIP);
    expect(
        &net,
        "to the gateway's MAC",
        Side::Int,
        &f.build(),
        XDP_REDIRECT,
        Some(&from_vip(&f, PHONE_MAC, None).build()),
        "snat",
    );
    // Broadcast and multicast frames are never translated or answered.
    for dmac in [BCAST_MAC, [0x01, 0, 0x5e, 0, 0, 0xfb]] {
        let f = phone_udp(5060).with(|x| x.dmac = dmac).build();
        expect(
            &net,
            "VIP in a broadcast frame",
            Side::Ext,
            &f,
            XDP_PASS,
            None,
            "pass_l2_multicast",
        );
    }
    let ping = echo(PHONE_MAC, BCAST_MAC, PHONE, VIP).build();
    expect(
        &net,
        "echo to the VIP in a broadcast frame",
        Side::Ext,
        &ping,
        XDP_PASS,
        None,
        "pass_l2_multicast",
    );
    // A unicast echo is answered from the interface's own MAC.
    let ping = echo(PHONE_MAC, EXT_MAC, PHONE, VIP);
    let (_, out) = net
        .run("sipvip_ext", net.ext_ifindex, &ping.build())
        .expect("test run");
    assert_eq!(&out[0..6], &PHONE_MAC, "reply to the sender");
    assert_eq!(&out[6..12], &EXT_MAC, "reply from the interface");
    // An interface the datapath was not told about: nothing is translated.
    let unknown = net.ns.ifindex("extp").unwrap();
    let (v, out) = net
        .run("sipvip_ext", unknown, &phone_udp(5060).build())
        .expect("test run");
    assert_eq!((v, out), (XDP_PASS, phone_udp(5060).build()));
}

#[test]
fn member_broadcast_and_multicast_pass_untouched() {
    let net = net();
    let from_primary = |dst: Ipv4Addr, dmac: frame::Mac| {
        Ip4::udp(PRIMARY_MAC, dmac, (PRIMARY, 5353), (dst, 5353), b"mdns").build()
    };
    let cases: [(&str, Ipv4Addr, frame::Mac, &'static str); 6] = [
        (
            "limited broadcast",
            Ipv4Addr::BROADCAST,
            BCAST_MAC,
            "pass_l2_multicast",
        ),
        (
            "subnet broadcast",
            Ipv4Addr::new(198, 18, 2, 255),
            BCAST_MAC,
            "pass_l2_multicast",
        ),
        (
            "mDNS",
            Ipv4Addr::new(224, 0, 0, 251),
            [1, 0, 0x5e, 0, 0, 0xfb],
            "pass_l2_multicast",
        ),
        // The same addresses in frames sent to the gateway's MAC.
        (
            "limited broadcast to our MAC",
            Ipv4Addr::BROADCAST,
            INT_MAC,
            "pass_broadcast",
        ),
        (
            "mDNS to our MAC",
            Ipv4Addr::new(224, 0, 0, 251),
            INT_MAC,
            "pass_broadcast",
        ),
        // The FIB says broadcast: the kernel gets it as the member sent it.
        (
            "subnet broadcast to our MAC",
            Ipv4Addr::new(198, 18, 2, 255),
            INT_MAC,
            "pass_fib",
        ),
    ];
    for (name, dst, dmac, reason) in cases {
        expect(
            &net,
            name,
            Side::Int,
            &from_primary(dst, dmac),
            XDP_PASS,
            None,
            reason,
        );
    }
    assert!(
        net.dp.vip_counters(VIP_ID).unwrap().vip_out.packets == 0,
        "nothing was SNATed"
    );
}

#[test]
fn martian_addresses_are_dropped_on_both_sides() {
    let net = net();
    let ext = |src: Ipv4Addr| Ip4::udp(PHONE_MAC, EXT_MAC, (src, 5062), (VIP, 5060), SIP).build();
    for src in [
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(0, 1, 2, 3),
        Ipv4Addr::new(224, 0, 0, 5),
        Ipv4Addr::new(240, 0, 0, 1),
        Ipv4Addr::BROADCAST,
    ] {
        expect(
            &net,
            &format!("from {src} to the VIP"),
            Side::Ext,
            &ext(src),
            XDP_DROP,
            None,
            "drop_martian",
        );
    }
    let ping = echo(PHONE_MAC, EXT_MAC, Ipv4Addr::BROADCAST, VIP).build();
    expect(
        &net,
        "echo from the broadcast address",
        Side::Ext,
        &ping,
        XDP_DROP,
        None,
        "drop_martian",
    );
    let int = |src: Ipv4Addr, dst: Ipv4Addr| {
        Ip4::udp(PRIMARY_MAC, INT_MAC, (src, 5060), (dst, 5062), SIP).build()
    };
    for (src, dst) in [
        (Ipv4Addr::new(127, 0, 0, 1), PHONE),
        (PRIMARY, Ipv4Addr::new(127, 0, 0, 1)),
        (PRIMARY, Ipv4Addr::new(0, 0, 0, 9)),
        (Ipv4Addr::new(225, 1, 1, 1), PHONE),
    ] {
        expect(
            &net,
            &format!("member side {src} -> {dst}"),
            Side::Int,
            &int(src, dst),
            XDP_DROP,
            None,
            "drop_martian",
        );
    }
}

#[test]
fn too_big_with_df_is_answered_as_the_sender_sent_it() {
    let net = net();
    // The gateway's routes toward the primary and toward the phone have MTU 1400. The
    // kernel's forwarding path always honours a route MTU; bpf_fib_lookup only a locked one
    // (or any with net.ipv4.ip_forward_use_pmtu=1), as docs/architecture.md says.
    net.ns
        .exec(&format!(
            "ip route add {PRIMARY}/32 dev int0 mtu lock 1400 && ip route add {PHONE}/32 dev ext0 mtu lock 1400"
        ))
        .unwrap();
    let big = [b'x'; 1422]; // 20 + 8 + 1422 = 1450 bytes of IP

    // Inbound: answered from the gateway's external address, quoting VIP:5060.
    for (name, f) in [
        (
            "udp/5060",
            Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, 5060), &big),
        ),
        (
            "tcp/5060",
            Ip4::tcp(
                PHONE_MAC,
                EXT_MAC,
                (PHONE, 41000),
                (VIP, 5060),
                0x18,
                &big[..1410],
            ),
        ),
        (
            "tls tcp/5061",
            Ip4::tcp(
                PHONE_MAC,
                EXT_MAC,
                (PHONE, 41001),
                (VIP, 5061),
                0x18,
                &big[..1410],
            ),
        ),
    ] {
        let f = f.with(|x| x.df = true).build();
        let reply = icmp_error_reply(&f, 3, 4, 1400, EXT_IP);
        expect(
            &net,
            name,
            Side::Ext,
            &f,
            XDP_TX,
            Some(&reply),
            "frag_needed",
        );
    }
    // Without DF the kernel fragments it: translated and handed over.
    let nodf = Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, 5060), &big);
    let translated = nodf.clone().with(|x| x.dst = PRIMARY).build();
    expect(
        &net,
        "no DF",
        Side::Ext,
        &nodf.build(),
        XDP_PASS,
        Some(&translated),
        "pass_fib",
    );
    // Small packets still go through.
    let small = phone_udp(5060).with(|x| x.df = true);
    expect(
        &net,
        "small",
        Side::Ext,
        &small.build(),
        XDP_REDIRECT,
        Some(&to_member(&small, PRIMARY, PRIMARY_MAC, None).build()),
        "steered",
    );

    // Outbound: answered to the member from the gateway's internal address, quoting the
    // member's own addresses.
    for (name, f) in [
        (
            "member service udp",
            Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 5060), (PHONE, 5062), &big),
        ),
        (
            "member-opened tcp",
            Ip4::tcp(
                PRIMARY_MAC,
                INT_MAC,
                (PRIMARY, 40000),
                (PHONE, 8080),
                0x18,
                &big[..1410],
            ),
        ),
    ] {
        let f = f.with(|x| x.df = true).build();
        let reply = icmp_error_reply(&f, 3, 4, 1400, INT_IP);
        expect(
            &net,
            name,
            Side::Int,
            &f,
            XDP_TX,
            Some(&reply),
            "frag_needed",
        );
    }
    // Nothing was translated on the way.
    let c = net.dp.vip_counters(VIP_ID).unwrap();
    assert_eq!(
        (c.vip_in.packets, c.vip_out.packets),
        (2, 0),
        "in: small + no DF"
    );
}

#[test]
fn fragments_to_a_closed_port_never_reach_a_member() {
    let net = net();
    let payload: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    let d =
        Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, 9999), &payload).with(|x| x.id = 0x9999);
    let frags = d.fragments(1400);
    assert_eq!(frags.len(), 3);
    for (i, reason) in [
        (2, "drop_frag_orphan"),
        (1, "drop_frag_orphan"),
        (0, "drop_vip_closed"),
        (1, "drop_frag_orphan"),
        (2, "drop_frag_orphan"),
    ] {
        expect(
            &net,
            &format!("fragment {i} to VIP:9999"),
            Side::Ext,
            &frags[i],
            XDP_DROP,
            None,
            reason,
        );
    }
    assert_eq!(net.dp.vip_counters(VIP_ID).unwrap().vip_in.packets, 0);
}

#[test]
fn fragment_decisions_expire() {
    let mut net = net();
    net.dp.set_frag_lifetime(Duration::from_millis(50)).unwrap();
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let d =
        Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, 5060), &payload).with(|x| x.id = 0x7777);
    let frags = d.fragments(1200);
    let expected = to_member(&d, PRIMARY, PRIMARY_MAC, None).fragments(1200);
    expect(
        &net,
        "first",
        Side::Ext,
        &frags[0],
        XDP_REDIRECT,
        Some(&expected[0]),
        "steered",
    );
    expect(
        &net,
        "second, at once",
        Side::Ext,
        &frags[1],
        XDP_REDIRECT,
        Some(&expected[1]),
        "frag_in",
    );
    std::thread::sleep(Duration::from_millis(150));
    expect(
        &net,
        "third, too late",
        Side::Ext,
        &frags[2],
        XDP_DROP,
        None,
        "drop_frag_orphan",
    );

    // Outbound, a later fragment past the lifetime takes the default (SNAT).
    let out = Ip4::udp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, TSERVER_PORT),
        (PHONE, 5062),
        &payload,
    )
    .with(|x| x.id = 0x7878);
    let frags = out.fragments(1200);
    expect(
        &net,
        "pass-through first",
        Side::Int,
        &frags[0],
        XDP_REDIRECT,
        Some(&routed(&out, EXT_MAC, PHONE_MAC).fragments(1200)[0]),
        "passthrough",
    );
    std::thread::sleep(Duration::from_millis(150));
    let snat = from_vip(&out, PHONE_MAC, None).fragments(1200);
    expect(
        &net,
        "later, past the lifetime",
        Side::Int,
        &frags[1],
        XDP_REDIRECT,
        Some(&snat[1]),
        "frag_out",
    );
}

#[test]
fn ipv6_too_big_is_answered_with_packet_too_big() {
    let net = net();
    net.ns
        .exec(&format!(
            "ip -6 route add {PRIMARY6}/128 dev int0 mtu lock 1400 && ip -6 route add {PHONE6}/128 dev ext0 mtu lock 1400"
        ))
        .unwrap();
    let big = [b'x'; 1402]; // 40 + 8 + 1402 = 1450 bytes of IPv6
                            // Inbound: packet too big from the gateway's external address, quoting the packet as
                            // the phone sent it.
    let f = Ip6::udp(PHONE_MAC, EXT_MAC, (PHONE6, 5062), (VIP6, 5060), &big).build();
    let reply = icmp6_error_reply(&f, 2, 0, 1400, EXT_IP6);
    expect(
        &net,
        "inbound",
        Side::Ext,
        &f,
        XDP_TX,
        Some(&reply),
        "frag_needed",
    );
    // Outbound: to the member from the gateway's internal address, quoting its own
    // addresses.
    let f = Ip6::udp(PRIMARY_MAC, INT_MAC, (PRIMARY6, 5060), (PHONE6, 5062), &big).build();
    let reply = icmp6_error_reply(&f, 2, 0, 1400, INT_IP6);
    expect(
        &net,
        "outbound",
        Side::Int,
        &f,
        XDP_TX,
        Some(&reply),
        "frag_needed",
    );
    // Small packets still go through.
    let small = Ip6::udp(PHONE_MAC, EXT_MAC, (PHONE6, 5062), (VIP6, 5060), b"x");
    let mut out = small.clone();
    out.smac = INT_MAC;
    out.dmac = PRIMARY_MAC;
    out.dst = PRIMARY6;
    out.hop_limit -= 1;
    expect(
        &net,
        "small",
        Side::Ext,
        &small.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "steered",
    );
}

#[test]
fn ttl_expiring_toward_the_vip_is_answered() {
    let net = net();
    for ttl in [1u8, 0] {
        let f = phone_udp(5060).with(|x| x.ttl = ttl).build();
        let reply = icmp_error_reply(&f, 11, 0, 0, EXT_IP);
        expect(
            &net,
            &format!("ttl {ttl}"),
            Side::Ext,
            &f,
            XDP_TX,
            Some(&reply),
            "time_exceeded",
        );
    }
    // With IP options and an 802.1Q tag: the whole header is quoted, the tag kept.
    let f = phone_udp(5060)
        .with(|x| {
            x.ttl = 1;
            x.options = vec![1, 1, 1, 0];
            x.vlan = Some(100);
        })
        .build();
    let reply = icmp_error_reply(&f, 11, 0, 0, EXT_IP);
    expect(
        &net,
        "options and tag",
        Side::Ext,
        &f,
        XDP_TX,
        Some(&reply),
        "time_exceeded",
    );
    // Nothing is answered for what would not be forwarded, or for a later fragment.
    let closed = phone_udp(9999).with(|x| x.ttl = 1).build();
    expect(
        &net,
        "closed port",
        Side::Ext,
        &closed,
        XDP_DROP,
        None,
        "drop_vip_closed",
    );
    let payload = [7u8; 3000];
    let d = Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, 5060), &payload).with(|x| x.ttl = 1);
    let frags = d.fragments(1200);
    expect(
        &net,
        "later fragment",
        Side::Ext,
        &frags[1],
        XDP_DROP,
        None,
        "drop_ttl",
    );
}

#[test]
fn a_drained_member_keeps_its_established_connections() {
    let mut net = net();
    // The primary opened a flow before the move; its replies must still reach it.
    let opened = Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 40000), (PHONE, 8080), b"q");
    expect(
        &net,
        "member-opened flow",
        Side::Int,
        &opened.build(),
        XDP_REDIRECT,
        Some(&from_vip(&opened, PHONE_MAC, None).build()),
        "snat",
    );
    // A manual move to the backup with the primary healthy: the primary drains.
    net.dp
        .set_active_draining(&net.spec, Some(BACKUP), Some(PRIMARY))
        .unwrap();
    let seg = |sport: u16, flags: u8| {
        Ip4::tcp(
            SBC_MAC,
            EXT_MAC,
            (SBC, sport),
            (VIP, 5060),
            flags,
            b"INVITE",
        )
    };
    let cases = [
        (
            "established before the move",
            seg(41000, 0x18),
            PRIMARY,
            PRIMARY_MAC,
        ),
        (
            "a new connection's SYN",
            seg(41001, 0x02),
            BACKUP,
            BACKUP_MAC,
        ),
        (
            "the new connection goes on",
            seg(41001, 0x18),
            BACKUP,
            BACKUP_MAC,
        ),
        (
            "the old one goes on",
            seg(41000, 0x10),
            PRIMARY,
            PRIMARY_MAC,
        ),
        ("UDP is stateless", phone_udp(5060), BACKUP, BACKUP_MAC),
    ];
    for (name, f, member, mac) in cases {
        expect(
            &net,
            name,
            Side::Ext,
            &f.build(),
            XDP_REDIRECT,
            Some(&to_member(&f, member, mac, None).build()),
            "steered",
        );
    }
    let reply = Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 8080), (VIP, 40000), b"r");
    expect(
        &net,
        "reply to the drained member's own flow",
        Side::Ext,
        &reply.build(),
        XDP_REDIRECT,
        Some(&to_member(&reply, PRIMARY, PRIMARY_MAC, None).build()),
        "conntrack_reply",
    );
    // The drain ends (the primary failed): everything goes to the active member.
    net.dp.set_active(&net.spec, Some(BACKUP)).unwrap();
    assert_eq!(
        net.dp
            .forget_member_flows(Some(PRIMARY), Some(PRIMARY6))
            .unwrap(),
        1
    );
    let old = seg(41000, 0x10);
    expect(
        &net,
        "after the drain",
        Side::Ext,
        &old.build(),
        XDP_REDIRECT,
        Some(&to_member(&old, BACKUP, BACKUP_MAC, None).build()),
        "steered",
    );
}
