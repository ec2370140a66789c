//! Packet tests through BPF_PROG_TEST_RUN: for each numbered rule of the datapath, an input
//! frame, the expected verdict, the expected output frame byte for byte, the counter that
//! must move, and every checksum of the output re-verified from scratch.

use std::net::Ipv4Addr;

use sipvip::datapath::{be16, be32};
use sipvip_common::{
    CtKey, CtValue, CT_PASSTHROUGH, CT_SNAT, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
};
use sipvip_tests::fixtures::{from_vip, net, phone_udp, routed, routed6, to_member, SIP};
use sipvip_tests::{
    check::{expect, Side, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
    frame::{self, ether, reassemble, verify_datagram, Ip4, Ip6, L4},
    topo::*,
};

fn ct(net: &FixtureNet) -> Vec<(CtKey, CtValue)> {
    net.dp.conntrack().expect("conntrack")
}

// Rule 1's steering paths (udp, tcp, TLS, a mapped port, IP options, 802.1Q) are rows of
// the fixture table: tests/src/table.rs, run by tests/fixture_table.rs.

#[test]
fn rule1_active_member_flip_and_tls_only_mode() {
    let mut net = net();
    let udp = phone_udp(5060);
    net.dp.set_active(&net.spec, Some(BACKUP)).unwrap();
    let out = to_member(&udp, BACKUP, BACKUP_MAC, None);
    expect(
        &net,
        "after flip",
        Side::Ext,
        &udp.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "steered",
    );
    assert_eq!(net.dp.vip_counters(VIP_ID).unwrap().member_in[1].packets, 1);

    // TLS-only: udp/5060 and tcp/5060 disabled.
    let mut spec = net.spec.clone();
    spec.services[0].enabled = false;
    spec.services[1].enabled = false;
    net.dp.install_vip(&spec).unwrap();
    expect(
        &net,
        "udp/5060 disabled",
        Side::Ext,
        &udp.build(),
        XDP_DROP,
        None,
        "drop_vip_closed",
    );
    let syn = Ip4::tcp(SBC_MAC, EXT_MAC, (SBC, 41000), (VIP, 5060), 0x02, b"");
    expect(
        &net,
        "tcp/5060 disabled",
        Side::Ext,
        &syn.build(),
        XDP_DROP,
        None,
        "drop_vip_closed",
    );
    let tls = Ip4::tcp(SBC_MAC, EXT_MAC, (SBC, 41001), (VIP, 5061), 0x02, b"");
    let out = to_member(&tls, PRIMARY, PRIMARY_MAC, None);
    expect(
        &net,
        "tcp/5061 enabled",
        Side::Ext,
        &tls.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "steered",
    );

    // No member up, policy drop.
    net.dp.set_active(&spec, None).unwrap();
    expect(
        &net,
        "no active",
        Side::Ext,
        &tls.build(),
        XDP_DROP,
        None,
        "drop_no_active",
    );
}

#[test]
fn rule1_forwarding_edge_cases() {
    let mut net = net();
    // The member's neighbour is unknown: rewritten, TTL left to the kernel, passed.
    let mut spec = net.spec.clone();
    spec.members[1].addr = Some(Ipv4Addr::new(198, 18, 2, 99));
    net.dp.install_vip(&spec).unwrap();
    net.dp.set_active(&spec, spec.members[1].addr).unwrap();
    let udp = phone_udp(5060);
    let out = udp.clone().with(|x| x.dst = Ipv4Addr::new(198, 18, 2, 99));
    expect(
        &net,
        "no neighbour",
        Side::Ext,
        &udp.build(),
        XDP_PASS,
        Some(&out.build()),
        "pass_no_neigh",
    );

    // Larger than the egress MTU without DF: rewritten and handed to the kernel, which
    // fragments it (with DF it is answered: see the PMTU fixtures).
    net.dp.set_active(&spec, Some(PRIMARY)).unwrap();
    let big = Ip4::udp(
        PHONE_MAC,
        EXT_MAC,
        (PHONE, 5062),
        (VIP, 5060),
        &[b'x'; 1560],
    );
    let out = big.clone().with(|x| x.dst = PRIMARY);
    expect(
        &net,
        "over MTU",
        Side::Ext,
        &big.build(),
        XDP_PASS,
        Some(&out.build()),
        "pass_fib",
    );

    // TTL 1 to a VIP: answered with time exceeded from the gateway, quoting the VIP.
    let ttl1 = phone_udp(5060).with(|x| x.ttl = 1).build();
    let reply = frame::icmp_error_reply(&ttl1, 11, 0, 0, EXT_IP);
    expect(
        &net,
        "ttl 1",
        Side::Ext,
        &ttl1,
        XDP_TX,
        Some(&reply),
        "time_exceeded",
    );

    // The member's next hop is out of an interface the datapath was not given: the redirect
    // is refused, so the packet goes on translated, through the kernel. Its ifindex shares
    // the external interface's slot of the interface table (`iface_slot`), so a datapath
    // that found its egress devices by slot would also have to tell the two apart.
    let index = net.ext_ifindex + sipvip_common::IFACE_SLOTS;
    net.ns
        .exec(&format!(
            "ip link add oth0 index {index} type veth peer name othp && ip link set oth0 up && \
             ip link set othp up && ip route add {PRIMARY}/32 dev oth0 && \
             ip neigh replace {PRIMARY} lladdr 02:00:00:00:09:09 dev oth0 nud permanent"
        ))
        .expect("ip");
    net.dp.refresh_nexthops(true).expect("refresh");
    let udp = phone_udp(5060);
    let out = udp.clone().with(|x| x.dst = PRIMARY);
    expect(
        &net,
        "egress not given",
        Side::Ext,
        &udp.build(),
        XDP_PASS,
        Some(&out.build()),
        "pass_fib",
    );
}

#[test]
fn rule3_other_traffic_to_the_vip() {
    let net = net();
    expect(
        &net,
        "closed port",
        Side::Ext,
        &phone_udp(5070).build(),
        XDP_DROP,
        None,
        "drop_vip_closed",
    );
    let gre = Ip4::new(
        PHONE_MAC,
        EXT_MAC,
        PHONE,
        VIP,
        L4::Raw {
            proto: 47,
            bytes: vec![0; 8],
        },
    );
    expect(
        &net,
        "GRE",
        Side::Ext,
        &gre.build(),
        XDP_DROP,
        None,
        "drop_vip_proto",
    );
    let ts = Ip4::new(
        PHONE_MAC,
        EXT_MAC,
        PHONE,
        VIP,
        L4::Echo {
            ty: 13,
            id: 1,
            seq: 1,
            payload: vec![0; 12],
        },
    );
    expect(
        &net,
        "ICMP timestamp",
        Side::Ext,
        &ts.build(),
        XDP_DROP,
        None,
        "drop_icmp",
    );

    // Echo is answered, even with TTL 1 (the VIP is the destination).
    let echo = Ip4::new(
        PHONE_MAC,
        EXT_MAC,
        PHONE,
        VIP,
        L4::Echo {
            ty: 8,
            id: 7,
            seq: 1,
            payload: b"ping".to_vec(),
        },
    )
    .with(|x| x.ttl = 1);
    let reply = Ip4::new(
        EXT_MAC,
        PHONE_MAC,
        VIP,
        PHONE,
        L4::Echo {
            ty: 0,
            id: 7,
            seq: 1,
            payload: b"ping".to_vec(),
        },
    );
    expect(
        &net,
        "echo",
        Side::Ext,
        &echo.build(),
        XDP_TX,
        Some(&reply.build()),
        "echo_reply",
    );
    let reason = net.dp.reasons().unwrap();
    assert_eq!(reason.get("drop_vip_closed"), Some(&1));
    assert_eq!(net.dp.vip_counters(VIP_ID).unwrap().vip_in.packets, 0);
}

#[test]
fn rule4_outbound_snat_exclusions_and_conntrack() {
    let mut net = net();
    // Service port: VIP:5060, no conntrack needed.
    let reg = Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 5060), (PHONE, 5062), SIP);
    let out = from_vip(&reg, PHONE_MAC, None);
    expect(
        &net,
        "from 5060",
        Side::Int,
        &reg.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "snat",
    );
    // Mapped service: member 15080 leaves as VIP:5080.
    let m = Ip4::udp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, MAPPED_MEMBER_PORT),
        (PHONE, 7000),
        SIP,
    );
    let out = from_vip(&m, PHONE_MAC, Some(MAPPED_PORT));
    expect(
        &net,
        "from 15080",
        Side::Int,
        &m.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "snat",
    );
    assert!(ct(&net).is_empty());

    // A member-opened TCP flow from an ephemeral port: SNAT 1:1 plus a conntrack entry.
    let syn = Ip4::tcp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, 40000),
        (SBC, 5060),
        0x02,
        b"",
    );
    let out = from_vip(&syn, SBC_MAC, None);
    expect(
        &net,
        "member SYN",
        Side::Int,
        &syn.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "snat",
    );
    let entries = ct(&net);
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0],
        (
            CtKey {
                addr_a_be: be32(VIP),
                addr_b_be: be32(SBC),
                port_a_be: be16(40000),
                port_b_be: be16(5060),
                proto: IPPROTO_TCP,
                kind: CT_SNAT,
                _pad: 0
            },
            CtValue {
                member_be: be32(PRIMARY),
                slot: 0
            }
        )
    );
    // The reply to VIP:40000 goes back to the member.
    let synack = Ip4::tcp(SBC_MAC, EXT_MAC, (SBC, 5060), (VIP, 40000), 0x12, b"");
    let out = to_member(&synack, PRIMARY, PRIMARY_MAC, None);
    expect(
        &net,
        "reply",
        Side::Ext,
        &synack.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "conntrack_reply",
    );
    // Even after a flip, the member that opened the flow gets its replies.
    net.dp.set_active(&net.spec, Some(BACKUP)).unwrap();
    expect(
        &net,
        "reply after flip",
        Side::Ext,
        &synack.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "conntrack_reply",
    );
    // Reselect: forgetting the member's flows closes the port again.
    assert_eq!(
        net.dp
            .forget_member_flows(Some(PRIMARY), Some(PRIMARY6))
            .unwrap(),
        1
    );
    expect(
        &net,
        "reply after reselect",
        Side::Ext,
        &synack.build(),
        XDP_DROP,
        None,
        "drop_vip_closed",
    );

    // Exclusions (overlapping /32 and /28): physical source kept, still forwarded.
    let cfg = Ip4::tcp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, 40001),
        (CONFIG, 2020),
        0x02,
        b"",
    );
    let out = routed(&cfg, EXT_MAC, CONFIG_MAC);
    expect(
        &net,
        "excluded /32",
        Side::Int,
        &cfg.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "excluded",
    );
    let n = Ip4::udp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, 5060),
        (EXCL_NET_HOST, 5060),
        SIP,
    );
    let out = routed(&n, EXT_MAC, EXCL_NET_HOST_MAC);
    expect(
        &net,
        "excluded /28",
        Side::Int,
        &n.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "excluded",
    );
    // Just outside the /28 (198.18.1.64): SNATed; its neighbour is unresolved, so the
    // rewritten packet goes to the kernel with its TTL.
    let outside = Ip4::udp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, 5060),
        (Ipv4Addr::new(198, 18, 1, 64), 5060),
        SIP,
    );
    let out = outside.clone().with(|x| x.src = VIP);
    expect(
        &net,
        "outside /28",
        Side::Int,
        &outside.build(),
        XDP_PASS,
        Some(&out.build()),
        "pass_no_neigh",
    );
    // A member answering the gateway's own monitor: never SNATed, delivered by the kernel.
    let probe_reply = Ip4::udp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, 5060),
        (INT_IP, 45000),
        b"SIP/2.0 200 OK\r\n\r\n",
    );
    expect(
        &net,
        "monitor reply",
        Side::Int,
        &probe_reply.build(),
        XDP_PASS,
        None,
        "pass_fib",
    );
    // A blackholed destination is dropped.
    let bh = Ip4::udp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, 5060),
        (BLACKHOLED, 5060),
        SIP,
    );
    let out = bh.clone().with(|x| x.src = VIP);
    // The drop verdict carries the rewritten frame; what matters is that nothing leaves.
    expect(
        &net,
        "blackhole",
        Side::Int,
        &bh.build(),
        XDP_DROP,
        Some(&out.build()),
        "drop_fib",
    );

    let c = net.dp.vip_counters(VIP_ID).unwrap();
    assert_eq!(
        c.vip_out.packets, 5,
        "5060, 15080, SYN, outside /28, blackhole"
    );
    assert_eq!(c.service_out[0].packets, 3);
    assert_eq!(c.service_out[3].packets, 1);
    assert_eq!(c.member_out[0].packets, 5);
}

#[test]
fn rule5_tlib_passthrough_survives_conntrack_loss() {
    let mut net = net();
    // A T-Lib client connects to the primary's physical address: untouched, and remembered.
    let syn = Ip4::tcp(TLIB_MAC, EXT_MAC, (TLIB, 50001), (PRIMARY, 8000), 0x02, b"");
    expect(
        &net,
        "to physical",
        Side::Ext,
        &syn.build(),
        XDP_PASS,
        None,
        "pass_to_member",
    );
    let entries = ct(&net);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0.kind, CT_PASSTHROUGH);
    // The member's reply keeps its physical source.
    let synack = Ip4::tcp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, 8000),
        (TLIB, 50001),
        0x12,
        b"",
    );
    let out = routed(&synack, EXT_MAC, TLIB_MAC);
    expect(
        &net,
        "reply",
        Side::Int,
        &synack.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "passthrough",
    );

    // On the T-Server port, replies stay physical even with all conntrack state lost.
    net.dp.flush_conntrack().unwrap();
    let data = Ip4::tcp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, TSERVER_PORT),
        (TLIB, 50002),
        0x18,
        b"EventRinging",
    );
    let out = routed(&data, EXT_MAC, TLIB_MAC);
    expect(
        &net,
        "T-Server port",
        Side::Int,
        &data.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "passthrough",
    );
    assert!(ct(&net).is_empty());
    // Without the port rule, a flow forgotten by conntrack would be SNATed.
    let lost = Ip4::tcp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, 8000),
        (TLIB, 50001),
        0x10,
        b"",
    );
    let out = from_vip(&lost, TLIB_MAC, None);
    expect(
        &net,
        "forgotten flow",
        Side::Int,
        &lost.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "snat",
    );

    // SIP straight to a member's physical address on its service port: the member's replies
    // from the service port keep the physical source too (the port is marked in
    // SV_PTPORTS_V1, so the outbound side looks the flow up).
    let sip = Ip4::udp(SBC_MAC, EXT_MAC, (SBC, 5070), (PRIMARY, 5060), SIP);
    expect(
        &net,
        "SIP to physical",
        Side::Ext,
        &sip.build(),
        XDP_PASS,
        None,
        "pass_to_member",
    );
    let reply = Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 5060), (SBC, 5070), SIP);
    let out = routed(&reply, EXT_MAC, SBC_MAC);
    expect(
        &net,
        "service-port reply to a physical flow",
        Side::Int,
        &reply.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "passthrough",
    );
    // Another peer on the same service port is service traffic: SNATed to VIP:5060.
    let other = Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 5060), (PHONE, 5062), SIP);
    let out = from_vip(&other, PHONE_MAC, None);
    expect(
        &net,
        "service traffic after a physical flow",
        Side::Int,
        &other.build(),
        XDP_REDIRECT,
        Some(&out.build()),
        "snat",
    );
}

#[test]
fn rule2_fragments_follow_their_datagram() {
    let mut net = net();
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let invite =
        Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, 5060), &payload).with(|x| x.id = 0x4242);
    let frags = invite.fragments(1200);
    assert_eq!(frags.len(), 3);
    let expected = to_member(&invite, PRIMARY, PRIMARY_MAC, None).fragments(1200);

    // In order.
    let mut outs = Vec::new();
    for (i, f) in frags.iter().enumerate() {
        let reason = if i == 0 { "steered" } else { "frag_in" };
        outs.push(expect(
            &net,
            &format!("in-order frag {i}"),
            Side::Ext,
            f,
            XDP_REDIRECT,
            Some(&expected[i]),
            reason,
        ));
    }
    let data = reassemble(&outs).unwrap();
    verify_datagram(IPPROTO_UDP, PHONE, PRIMARY, &data).expect("reassembled UDP checksum");

    // Out of order: a later fragment that arrives before its first one cannot be placed
    // (its ports are unknown), so it is dropped; from the first fragment on, every fragment
    // follows the first one's member, across a flip too.
    let invite2 = invite.clone().with(|x| x.id = 0x4343);
    let frags = invite2.fragments(1200);
    let expected = to_member(&invite2, PRIMARY, PRIMARY_MAC, None).fragments(1200);
    expect(
        &net,
        "frag 2 first",
        Side::Ext,
        &frags[2],
        XDP_DROP,
        None,
        "drop_frag_orphan",
    );
    expect(
        &net,
        "frag 0",
        Side::Ext,
        &frags[0],
        XDP_REDIRECT,
        Some(&expected[0]),
        "steered",
    );
    net.dp.set_active(&net.spec, Some(BACKUP)).unwrap();
    for i in [1, 2] {
        expect(
            &net,
            &format!("frag {i} after flip"),
            Side::Ext,
            &frags[i],
            XDP_REDIRECT,
            Some(&expected[i]),
            "frag_in",
        );
    }
    // A new datagram goes to the new active member.
    let invite3 = invite.clone().with(|x| x.id = 0x4444);
    let f3 = invite3.fragments(1200);
    let e3 = to_member(&invite3, BACKUP, BACKUP_MAC, None).fragments(1200);
    for (i, reason) in [(0, "steered"), (1, "frag_in")] {
        expect(
            &net,
            &format!("new datagram {i}"),
            Side::Ext,
            &f3[i],
            XDP_REDIRECT,
            Some(&e3[i]),
            reason,
        );
    }
    // The identity 0x4343 reused by a new datagram after the flip: its first fragment
    // decides afresh (the backup), whatever the old entry said.
    let e2 = to_member(&invite2, BACKUP, BACKUP_MAC, None).fragments(1200);
    for (i, reason) in [(0, "steered"), (1, "frag_in")] {
        expect(
            &net,
            &format!("reused identity {i}"),
            Side::Ext,
            &frags[i],
            XDP_REDIRECT,
            Some(&e2[i]),
            reason,
        );
    }
    net.dp.set_active(&net.spec, Some(PRIMARY)).unwrap();

    // Outbound: a large INVITE from the member, SNATed in every fragment; sent last
    // fragment first, the later ones are orphans and take the default (SNAT).
    let big = Ip4::udp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, 5060),
        (PHONE, 5062),
        &payload,
    )
    .with(|x| x.id = 0x5151);
    let frags = big.fragments(1200);
    let expected = from_vip(&big, PHONE_MAC, None).fragments(1200);
    let mut outs = Vec::new();
    for (i, f) in frags.iter().enumerate().rev() {
        let reason = if i == 0 { "snat" } else { "frag_out" };
        outs.push(expect(
            &net,
            &format!("out frag {i}"),
            Side::Int,
            f,
            XDP_REDIRECT,
            Some(&expected[i]),
            reason,
        ));
    }
    let data = reassemble(&outs).unwrap();
    verify_datagram(IPPROTO_UDP, VIP, PHONE, &data).expect("reassembled outbound checksum");
    // First fragments only: 0x4242, 0x4343, 0x4444 inbound, 0x5151 outbound.
    assert_eq!(net.dp.frags().unwrap().len(), 4);
}

/// The first `n` bytes of an IPv4 packet, as an ICMP error quotes it.
fn quote(p: &Ip4, n: usize) -> Vec<u8> {
    let b = p.ip_bytes();
    b[..n.min(b.len())].to_vec()
}

#[test]
fn rule6_icmp_errors_are_translated_both_ways() {
    let net = net();
    // A member's port unreachable about a steered packet (as the member received it).
    let received =
        Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (PRIMARY, 5060), SIP).with(|x| x.ttl = 63);
    let err = Ip4::new(
        PRIMARY_MAC,
        INT_MAC,
        PRIMARY,
        PHONE,
        L4::IcmpError {
            ty: 3,
            code: 3,
            quoted: quote(&received, 999),
        },
    );
    let sent = Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, 5060), SIP).with(|x| x.ttl = 63);
    let want = Ip4::new(
        EXT_MAC,
        PHONE_MAC,
        VIP,
        PHONE,
        L4::IcmpError {
            ty: 3,
            code: 3,
            quoted: quote(&sent, 999),
        },
    )
    .with(|x| x.ttl = 63);
    expect(
        &net,
        "member error, service",
        Side::Int,
        &err.build(),
        XDP_REDIRECT,
        Some(&want.build()),
        "icmp_error_out",
    );

    // Mapped port: quoted 15080 goes back to 5080.
    let received = Ip4::udp(
        PHONE_MAC,
        EXT_MAC,
        (PHONE, 7000),
        (PRIMARY, MAPPED_MEMBER_PORT),
        SIP,
    );
    let err = Ip4::new(
        PRIMARY_MAC,
        INT_MAC,
        PRIMARY,
        PHONE,
        L4::IcmpError {
            ty: 3,
            code: 3,
            quoted: quote(&received, 999),
        },
    );
    let sent = Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 7000), (VIP, MAPPED_PORT), SIP);
    let want = Ip4::new(
        EXT_MAC,
        PHONE_MAC,
        VIP,
        PHONE,
        L4::IcmpError {
            ty: 3,
            code: 3,
            quoted: quote(&sent, 999),
        },
    )
    .with(|x| x.ttl = 63);
    expect(
        &net,
        "member error, mapped",
        Side::Int,
        &err.build(),
        XDP_REDIRECT,
        Some(&want.build()),
        "icmp_error_out",
    );

    // An error about a packet a T-Lib client sent to the physical address stays physical.
    let received = Ip4::tcp(
        TLIB_MAC,
        EXT_MAC,
        (TLIB, 50001),
        (PRIMARY, TSERVER_PORT),
        0x02,
        b"",
    );
    let err = Ip4::new(
        PRIMARY_MAC,
        INT_MAC,
        PRIMARY,
        TLIB,
        L4::IcmpError {
            ty: 3,
            code: 3,
            quoted: quote(&received, 28),
        },
    );
    let want = routed(&err, EXT_MAC, TLIB_MAC);
    expect(
        &net,
        "member error, pass-through",
        Side::Int,
        &err.build(),
        XDP_REDIRECT,
        Some(&want.build()),
        "passthrough",
    );

    // An error arriving for the VIP about a service packet the VIP sent: to the active member.
    let vip_sent =
        Ip4::udp(EXT_MAC, PHONE_MAC, (VIP, 5060), (PHONE, 5062), SIP).with(|x| x.ttl = 63);
    let err = Ip4::new(
        PHONE_MAC,
        EXT_MAC,
        PHONE,
        VIP,
        L4::IcmpError {
            ty: 3,
            code: 3,
            quoted: quote(&vip_sent, 999),
        },
    );
    let member_sent = vip_sent.clone().with(|x| x.src = PRIMARY);
    let want = Ip4::new(
        INT_MAC,
        PRIMARY_MAC,
        PHONE,
        PRIMARY,
        L4::IcmpError {
            ty: 3,
            code: 3,
            quoted: quote(&member_sent, 999),
        },
    )
    .with(|x| x.ttl = 63);
    expect(
        &net,
        "error to VIP, service",
        Side::Ext,
        &err.build(),
        XDP_REDIRECT,
        Some(&want.build()),
        "icmp_error_in",
    );

    // About a member-opened TCP flow, quoting only 8 bytes of TCP (RFC 792).
    let syn = Ip4::tcp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, 40000),
        (SBC, 5060),
        0x02,
        b"",
    );
    expect(
        &net,
        "member SYN",
        Side::Int,
        &syn.build(),
        XDP_REDIRECT,
        Some(&from_vip(&syn, SBC_MAC, None).build()),
        "snat",
    );
    let vip_syn = syn.clone().with(|x| {
        x.src = VIP;
        x.ttl = 63;
    });
    let err = Ip4::new(
        SBC_MAC,
        EXT_MAC,
        SBC,
        VIP,
        L4::IcmpError {
            ty: 3,
            code: 1,
            quoted: quote(&vip_syn, 28),
        },
    );
    let member_syn = vip_syn.clone().with(|x| x.src = PRIMARY);
    let want = Ip4::new(
        INT_MAC,
        PRIMARY_MAC,
        SBC,
        PRIMARY,
        L4::IcmpError {
            ty: 3,
            code: 1,
            quoted: quote(&member_syn, 28),
        },
    )
    .with(|x| x.ttl = 63);
    expect(
        &net,
        "error to VIP, conntrack",
        Side::Ext,
        &err.build(),
        XDP_REDIRECT,
        Some(&want.build()),
        "icmp_error_in",
    );

    // About no known flow: dropped.
    let stray = vip_syn.clone().with(|x| x.l4.set_sport(40999));
    let err = Ip4::new(
        SBC_MAC,
        EXT_MAC,
        SBC,
        VIP,
        L4::IcmpError {
            ty: 3,
            code: 1,
            quoted: quote(&stray, 28),
        },
    );
    expect(
        &net,
        "error to VIP, unknown",
        Side::Ext,
        &err.build(),
        XDP_DROP,
        None,
        "drop_icmp",
    );

    // Echo from a member is SNATed, and its reply returns to it.
    let ping = Ip4::new(
        PRIMARY_MAC,
        INT_MAC,
        PRIMARY,
        SBC,
        L4::Echo {
            ty: 8,
            id: 99,
            seq: 1,
            payload: b"x".to_vec(),
        },
    );
    expect(
        &net,
        "member ping",
        Side::Int,
        &ping.build(),
        XDP_REDIRECT,
        Some(&from_vip(&ping, SBC_MAC, None).build()),
        "snat",
    );
    let pong = Ip4::new(
        SBC_MAC,
        EXT_MAC,
        SBC,
        VIP,
        L4::Echo {
            ty: 0,
            id: 99,
            seq: 1,
            payload: b"x".to_vec(),
        },
    );
    expect(
        &net,
        "pong",
        Side::Ext,
        &pong.build(),
        XDP_REDIRECT,
        Some(&to_member(&pong, PRIMARY, PRIMARY_MAC, None).build()),
        "conntrack_reply",
    );
    assert!(ct(&net)
        .iter()
        .any(|(k, _)| k.proto == IPPROTO_ICMP && k.port_a_be == be16(99)));
}

#[test]
fn rule7_everything_else_goes_to_the_kernel_or_is_counted() {
    let net = net();
    let arp = ether(PHONE_MAC, [0xff; 6], frame::ETH_P_ARP, &[0; 28]);
    expect(
        &net,
        "ARP request (broadcast)",
        Side::Ext,
        &arp,
        XDP_PASS,
        None,
        "pass_l2_multicast",
    );
    let arp = ether(PHONE_MAC, EXT_MAC, frame::ETH_P_ARP, &[0; 28]);
    expect(
        &net,
        "ARP reply",
        Side::Ext,
        &arp,
        XDP_PASS,
        None,
        "pass_not_ipv4",
    );
    // IPv6: a header whose payload length (0x6060) runs past the frame is dropped; the
    // IPv6 screen's other outcomes are rows of the fixture table.
    let v6 = ether(PHONE_MAC, EXT_MAC, frame::ETH_P_IPV6, &[0x60; 40]);
    expect(
        &net,
        "IPv6 with a payload length past the frame",
        Side::Ext,
        &v6,
        XDP_DROP,
        None,
        "drop_malformed_ipv6",
    );
    let transit = Ip4::udp(
        PHONE_MAC,
        EXT_MAC,
        (PHONE, 1000),
        (REMOTE_NO_NEIGH, 2000),
        b"x",
    );
    expect(
        &net,
        "transit",
        Side::Ext,
        &transit.build(),
        XDP_PASS,
        None,
        "pass_not_vip",
    );
    let to_gw = Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 1000), (EXT_IP, 22), b"x");
    expect(
        &net,
        "to the gateway",
        Side::Ext,
        &to_gw.build(),
        XDP_PASS,
        None,
        "pass_not_vip",
    );
    let not_member = Ip4::udp(
        INT_MAC,
        INT_MAC,
        (Ipv4Addr::new(198, 18, 2, 40), 5060),
        (PHONE, 5060),
        b"x",
    );
    expect(
        &net,
        "not a member",
        Side::Int,
        &not_member.build(),
        XDP_PASS,
        None,
        "pass_not_member",
    );
    let ttl1 =
        Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 5060), (PHONE, 5062), SIP).with(|x| x.ttl = 1);
    expect(
        &net,
        "member ttl 1",
        Side::Int,
        &ttl1.build(),
        XDP_PASS,
        None,
        "pass_ttl",
    );
    let hairpin = Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 5060), (VIP, 5060), SIP);
    expect(
        &net,
        "hairpin",
        Side::Int,
        &hairpin.build(),
        XDP_PASS,
        None,
        "pass_to_vip",
    );
    let gre = Ip4::new(
        PRIMARY_MAC,
        INT_MAC,
        PRIMARY,
        SBC,
        L4::Raw {
            proto: 47,
            bytes: vec![0; 8],
        },
    );
    expect(
        &net,
        "member GRE",
        Side::Int,
        &gre.build(),
        XDP_PASS,
        None,
        "pass_other_proto",
    );
    let echo_reply = Ip4::new(
        PRIMARY_MAC,
        INT_MAC,
        PRIMARY,
        TLIB,
        L4::Echo {
            ty: 0,
            id: 1,
            seq: 1,
            payload: vec![],
        },
    );
    expect(
        &net,
        "member echo reply",
        Side::Int,
        &echo_reply.build(),
        XDP_PASS,
        None,
        "pass_icmp",
    );

    // Malformed frames: counted drops, never forwarded.
    let good = phone_udp(5060).build();
    expect(
        &net,
        "bare Ethernet header",
        Side::Ext,
        &good[..14],
        XDP_DROP,
        None,
        "drop_malformed_ip",
    );
    let vlan_short = ether(PHONE_MAC, EXT_MAC, frame::ETH_P_8021Q, &[0, 100]);
    expect(
        &net,
        "short 802.1Q",
        Side::Ext,
        &vlan_short,
        XDP_DROP,
        None,
        "drop_malformed_eth",
    );
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    expect(
        &net,
        "IP version 6 in IPv4",
        Side::Ext,
        &bad_version,
        XDP_DROP,
        None,
        "drop_malformed_ip",
    );
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    expect(
        &net,
        "IHL 4",
        Side::Ext,
        &bad_ihl,
        XDP_DROP,
        None,
        "drop_malformed_ip",
    );
    expect(
        &net,
        "truncated datagram",
        Side::Ext,
        &good[..good.len() - 10],
        XDP_DROP,
        None,
        "drop_malformed_ip",
    );
    let short_udp = Ip4::new(
        PHONE_MAC,
        EXT_MAC,
        PHONE,
        VIP,
        L4::Raw {
            proto: IPPROTO_UDP,
            bytes: vec![0x13, 0xc4, 0x13],
        },
    );
    expect(
        &net,
        "truncated UDP",
        Side::Ext,
        &short_udp.build(),
        XDP_DROP,
        None,
        "drop_truncated_l4",
    );
    let short_tcp = Ip4::new(
        PRIMARY_MAC,
        INT_MAC,
        PRIMARY,
        PHONE,
        L4::Raw {
            proto: IPPROTO_TCP,
            bytes: vec![0; 12],
        },
    );
    expect(
        &net,
        "truncated TCP",
        Side::Int,
        &short_tcp.build(),
        XDP_DROP,
        None,
        "drop_truncated_l4",
    );
    let mut garbage = vec![0xa5u8; 64];
    garbage[0..6].copy_from_slice(&EXT_MAC);
    garbage[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    expect(
        &net,
        "garbage",
        Side::Ext,
        &garbage,
        XDP_DROP,
        None,
        "drop_malformed_ip",
    );
}

#[test]
fn forwarding_next_hops_are_cached_until_the_next_generation() {
    // The next-hop cache is per CPU.
    let _cpu = sipvip_tests::bench::PinnedToCpu0::new();
    let mut net = net();
    let frame = phone_udp(5060).build();
    let dmac_after = |net: &FixtureNet, want: u32| {
        let (v, out) = net
            .run("sipvip_ext", net.ext_ifindex, &frame)
            .expect("test run");
        assert_eq!(v, want, "verdict");
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&out[..6]);
        mac
    };
    let neigh = |net: &FixtureNet, mac: &str| {
        net.ns
            .exec(&format!(
                "ip neigh replace {PRIMARY} lladdr {mac} dev int0 nud permanent"
            ))
            .expect("ip neigh");
    };
    assert_eq!(dmac_after(&net, XDP_REDIRECT), PRIMARY_MAC);

    // The primary's MAC changes: the cached answer holds until the daemon starts a new
    // generation (every forwarding.nexthop_refresh), then the FIB's new answer is used.
    neigh(&net, "02:00:00:02:00:99");
    assert_eq!(dmac_after(&net, XDP_REDIRECT), PRIMARY_MAC, "cached");
    let g = net.dp.refresh_nexthops(true).expect("refresh");
    assert!(g >= 2, "generation {g}");
    assert_eq!(dmac_after(&net, XDP_REDIRECT), [2, 0, 0, 2, 0, 0x99]);

    // A packet longer than any the FIB accepted for this destination asks it again: over
    // the egress MTU, it goes to the kernel.
    let count = |net: &FixtureNet, r: &str| {
        net.dp
            .reasons()
            .expect("reasons")
            .get(r)
            .copied()
            .unwrap_or(0)
    };
    let before = count(&net, "pass_fib");
    let big = Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, 5060), &[7; 1560]).build();
    let (v, _) = net
        .run("sipvip_ext", net.ext_ifindex, &big)
        .expect("test run");
    assert_eq!(v, XDP_PASS);
    assert_eq!(count(&net, "pass_fib"), before + 1);

    // The neighbour goes away: after the next generation, the kernel resolves it.
    net.ns
        .exec(&format!("ip neigh del {PRIMARY} dev int0"))
        .expect("ip neigh del");
    assert_eq!(
        dmac_after(&net, XDP_REDIRECT),
        [2, 0, 0, 2, 0, 0x99],
        "cached"
    );
    net.dp.refresh_nexthops(true).expect("refresh");
    let before = count(&net, "pass_no_neigh");
    dmac_after(&net, XDP_PASS);
    assert_eq!(count(&net, "pass_no_neigh"), before + 1);

    // Cache off (nexthop_refresh = "0s"): every packet asks the FIB.
    assert_eq!(net.dp.refresh_nexthops(false).expect("off"), 0);
    neigh(&net, "02:00:00:02:00:a1");
    assert_eq!(dmac_after(&net, XDP_REDIRECT), [2, 0, 0, 2, 0, 0xa1]);
    neigh(&net, "02:00:00:02:00:a2");
    assert_eq!(dmac_after(&net, XDP_REDIRECT), [2, 0, 0, 2, 0, 0xa2]);

    // On again, off, and on again with a new MAC between (the flow cache off, so that the
    // next-hop cache answers): no generation is given twice, so the answer cached under
    // the first generation after the cache came back (which a count restarting from 0
    // would give again) is not taken again.
    net.dp.set_flow_cache(false).expect("flow cache off");
    let on = net.dp.refresh_nexthops(true).expect("on");
    assert_eq!(dmac_after(&net, XDP_REDIRECT), [2, 0, 0, 2, 0, 0xa2]);
    neigh(&net, "02:00:00:02:00:a3");
    assert_eq!(
        dmac_after(&net, XDP_REDIRECT),
        [2, 0, 0, 2, 0, 0xa2],
        "cached"
    );
    assert_eq!(net.dp.refresh_nexthops(false).expect("off"), 0);
    let again = net.dp.refresh_nexthops(true).expect("on again");
    assert_ne!(again, on, "a generation given twice");
    assert_eq!(
        dmac_after(&net, XDP_REDIRECT),
        [2, 0, 0, 2, 0, 0xa3],
        "the answer from before the cache was off"
    );
}

/// Behind ECMP (`SV_RETPATH_V1` set): a packet of a flow this gateway has no state for goes,
/// untranslated, to the gateway carrying the members' return path (out of the interface it
/// came in on, TTL decremented, the MACs rewritten), once at most; with state, or with the
/// hand-over off, the rules are unchanged.
#[test]
fn ecmp_packets_without_flow_state_are_handed_to_the_return_path() {
    const HOLDER_MAC: frame::Mac = [2, 0, 0, 1, 0, 3];
    const PEER_MAC: frame::Mac = [2, 0, 0, 1, 0, 4];
    let mut net = net();
    let mut peers = [[0u8; 6]; sipvip_common::MAX_PEERS];
    peers[0] = HOLDER_MAC;
    peers[1] = PEER_MAC;
    let rp = sipvip_common::ReturnPath {
        ifindex: net.ext_ifindex,
        dmac: HOLDER_MAC,
        smac: EXT_MAC,
        peers,
        _pad: [0; 2],
    };
    net.dp.set_return_path(Some(rp)).unwrap();
    assert_eq!(net.dp.return_path(), Some(rp));

    // The SBC's reply to a flow a member opened through another gateway.
    let reply = Ip4::udp(SBC_MAC, EXT_MAC, (SBC, 5060), (VIP, 40001), SIP);
    expect(
        &net,
        "reply without state",
        Side::Ext,
        &reply.build(),
        XDP_TX,
        Some(&routed(&reply, EXT_MAC, HOLDER_MAC).build()),
        "handed_over",
    );
    // From a gateway (it was handed over already): never handed on.
    expect(
        &net,
        "handed over already",
        Side::Ext,
        &reply.clone().with(|x| x.smac = PEER_MAC).build(),
        XDP_DROP,
        None,
        "drop_vip_closed",
    );
    // TTL 1 would not survive the hop.
    expect(
        &net,
        "TTL 1",
        Side::Ext,
        &reply.clone().with(|x| x.ttl = 1).build(),
        XDP_DROP,
        None,
        "drop_vip_closed",
    );
    // An echo reply to a ping a member sent through another gateway.
    let pong = Ip4::new(
        SBC_MAC,
        EXT_MAC,
        SBC,
        VIP,
        L4::Echo {
            ty: 0,
            id: 77,
            seq: 1,
            payload: b"ping".to_vec(),
        },
    );
    expect(
        &net,
        "echo reply without state",
        Side::Ext,
        &pong.build(),
        XDP_TX,
        Some(&routed(&pong, EXT_MAC, HOLDER_MAC).build()),
        "handed_over",
    );

    // A flow opened here: its replies are this gateway's, translated as always.
    let out = Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 40002), (SBC, 5060), SIP);
    expect(
        &net,
        "member-opened",
        Side::Int,
        &out.build(),
        XDP_REDIRECT,
        Some(&from_vip(&out, SBC_MAC, None).build()),
        "snat",
    );
    let back = Ip4::udp(SBC_MAC, EXT_MAC, (SBC, 5060), (VIP, 40002), SIP);
    expect(
        &net,
        "reply with state",
        Side::Ext,
        &back.build(),
        XDP_REDIRECT,
        Some(&to_member(&back, PRIMARY, PRIMARY_MAC, None).build()),
        "conntrack_reply",
    );

    // A T-Lib client's first packet to the primary's own address: the return-path gateway
    // records the flow (the member answers through it); nothing is recorded here.
    let syn = Ip4::tcp(TLIB_MAC, EXT_MAC, (TLIB, 50001), (PRIMARY, 8000), 0x02, b"");
    expect(
        &net,
        "pass-through without state",
        Side::Ext,
        &syn.build(),
        XDP_TX,
        Some(&routed(&syn, EXT_MAC, HOLDER_MAC).build()),
        "handed_over",
    );
    assert!(
        ct(&net).iter().all(|(k, _)| k.kind != CT_PASSTHROUGH),
        "no pass-through flow recorded here"
    );
    // Service traffic needs no state: steered here.
    let phone = phone_udp(5060);
    expect(
        &net,
        "service",
        Side::Ext,
        &phone.build(),
        XDP_REDIRECT,
        Some(&to_member(&phone, PRIMARY, PRIMARY_MAC, None).build()),
        "steered",
    );

    // IPv6 alike: a reply to the IPv6 VIP without state, and a T-Lib client's first packet
    // to the primary's IPv6 address.
    let reply6 = Ip6::udp(PHONE_MAC, EXT_MAC, (PHONE6, 5060), (VIP6, 40001), SIP);
    expect(
        &net,
        "IPv6 reply without state",
        Side::Ext,
        &reply6.build(),
        XDP_TX,
        Some(&routed6(&reply6, EXT_MAC, HOLDER_MAC).build()),
        "handed_over",
    );
    let syn6 = Ip6::udp(
        TLIB_MAC,
        EXT_MAC,
        (TLIB6, 50001),
        (PRIMARY6, 8000),
        b"hello",
    );
    expect(
        &net,
        "IPv6 pass-through without state",
        Side::Ext,
        &syn6.build(),
        XDP_TX,
        Some(&routed6(&syn6, EXT_MAC, HOLDER_MAC).build()),
        "handed_over",
    );
    expect(
        &net,
        "IPv6, handed over already",
        Side::Ext,
        &{
            let mut x = reply6.clone();
            x.smac = PEER_MAC;
            x
        }
        .build(),
        XDP_DROP,
        None,
        "drop_vip_closed",
    );

    // The hand-over off (this gateway carries the return path): dropped and recorded as
    // before.
    net.dp.set_return_path(None).unwrap();
    assert_eq!(net.dp.return_path(), None);
    expect(
        &net,
        "reply, hand-over off",
        Side::Ext,
        &reply.build(),
        XDP_DROP,
        None,
        "drop_vip_closed",
    );
    expect(
        &net,
        "pass-through, hand-over off",
        Side::Ext,
        &syn.build(),
        XDP_PASS,
        None,
        "pass_to_member",
    );
    assert!(ct(&net).iter().any(|(k, _)| k.kind == CT_PASSTHROUGH));
    let reasons = net.dp.reasons().unwrap();
    assert_eq!(reasons.get("handed_over"), Some(&5));
}

/// The flow cache never outlives a change: a member's flow whose decision is cached (its
/// second packet took it) gets the new decision on its next packet after an exclusion is
/// added or removed, a neighbour's MAC changes (with the next next-hop generation), and a
/// pass-through flow the datapath records itself (the member's replies on it are no longer
/// SNATed); a service's cached steering follows a failover, a VIP left without a member,
/// and a member's new MAC. Every output's checksums are re-verified from scratch.
#[test]
fn the_flow_cache_never_outlives_a_change() {
    let _cpu = sipvip_tests::bench::PinnedToCpu0::new();
    let mut net = net();
    let run = |net: &FixtureNet, prog: &'static str, frame: &[u8]| {
        let ifindex = if prog == "sipvip_ext" {
            net.ext_ifindex
        } else {
            net.int_ifindex
        };
        let (v, out) = net.run(prog, ifindex, frame).expect("test run");
        if v == XDP_REDIRECT {
            sipvip_tests::frame::verify_checksums(&out)
                .unwrap_or_else(|e| panic!("checksums: {e}"));
        }
        (v, out)
    };
    let dst = |out: &[u8]| Ipv4Addr::new(out[30], out[31], out[32], out[33]);
    let src = |out: &[u8]| Ipv4Addr::new(out[26], out[27], out[28], out[29]);
    // A neighbour's MAC, as the kernel holds it.
    let neigh = |net: &FixtureNet, addr: Ipv4Addr, mac: &[u8; 6], dev: &str| {
        net.ns
            .exec(&format!(
                "ip neigh replace {addr} lladdr {} dev {dev} nud permanent",
                sipvip_tests::frame::mac_str(mac)
            ))
            .expect("ip neigh");
    };
    let cached = |net: &FixtureNet, reason: &str| {
        let (live, _) = net.dp.cached_flows().expect("flow cache");
        live.iter().any(|(_, e)| {
            sipvip_common::Reason::ALL
                .iter()
                .any(|r| *r as u8 == e.reason && r.label() == reason)
        })
    };

    // Steering, cached per service (its rules read no per-flow state): each change's first
    // packet and the one after it (which a still-valid entry would answer) both get the new
    // decision.
    let steer = phone_udp(5060).build();
    for _ in 0..2 {
        let (v, out) = run(&net, "sipvip_ext", &steer);
        assert_eq!((v, dst(&out)), (XDP_REDIRECT, PRIMARY));
    }
    assert!(cached(&net, "steered"), "the service's steering is cached");
    // A frame of the same flow addressed to another MAC (another host's, a broadcast) is
    // not the cache's: the L2 acceptance rule passes it to the kernel, untouched.
    for (dmac, reason) in [
        ([2, 0, 0, 0, 9, 9], "pass_other_host"),
        ([0xff; 6], "pass_l2_multicast"),
    ] {
        let mut other = steer.clone();
        other[..6].copy_from_slice(&dmac);
        let before = net.dp.reasons().unwrap().get(reason).copied();
        let (v, out) = run(&net, "sipvip_ext", &other);
        assert_eq!((v, &out[..]), (XDP_PASS, &other[..]), "to {dmac:02x?}");
        let after = net.dp.reasons().unwrap().get(reason).copied();
        assert_eq!(
            after.unwrap_or(0),
            before.unwrap_or(0) + 1,
            "counted {reason}"
        );
    }
    // Failover: the member is disabled, the backup takes over.
    net.dp
        .set_active(&net.spec, Some(BACKUP))
        .expect("failover");
    for _ in 0..2 {
        let (v, out) = run(&net, "sipvip_ext", &steer);
        assert_eq!(
            (v, dst(&out), &out[..6]),
            (XDP_REDIRECT, BACKUP, &BACKUP_MAC[..]),
            "after the failover"
        );
    }
    // No member left (both disabled): nothing is steered.
    net.dp.set_active(&net.spec, None).expect("no member");
    for _ in 0..2 {
        let (v, _) = run(&net, "sipvip_ext", &steer);
        assert_eq!(v, XDP_DROP, "with no active member");
    }
    net.dp.set_active(&net.spec, Some(PRIMARY)).expect("back");
    for _ in 0..2 {
        let (v, out) = run(&net, "sipvip_ext", &steer);
        assert_eq!((v, dst(&out)), (XDP_REDIRECT, PRIMARY));
    }
    // The cache turned off and on again, a failover between: no generation is given twice,
    // so the entry cached before (under the first generation after a restart, as it would
    // be if the next one started over) is not taken again.
    net.dp.set_flow_cache(false).expect("cache off");
    net.dp.set_flow_cache(true).expect("cache on");
    for _ in 0..2 {
        let (v, out) = run(&net, "sipvip_ext", &steer);
        assert_eq!((v, dst(&out)), (XDP_REDIRECT, PRIMARY));
    }
    assert!(cached(&net, "steered"), "cached again");
    net.dp.set_flow_cache(false).expect("cache off");
    net.dp
        .set_active(&net.spec, Some(BACKUP))
        .expect("failover while the cache is off");
    net.dp.set_flow_cache(true).expect("cache on");
    for _ in 0..2 {
        let (v, out) = run(&net, "sipvip_ext", &steer);
        assert_eq!(
            (v, dst(&out)),
            (XDP_REDIRECT, BACKUP),
            "the entry from before the cache was off"
        );
    }
    net.dp.set_active(&net.spec, Some(PRIMARY)).expect("back");
    // The member's MAC changes: as for a flow (below), the cached steering holds until the
    // next next-hop generation, then the new MAC is used.
    neigh(&net, PRIMARY, &[2, 0, 0, 2, 0, 0x99], "int0");
    let (_, out) = run(&net, "sipvip_ext", &steer);
    assert_eq!(out[..6], PRIMARY_MAC, "cached until the next generation");
    net.dp.refresh_nexthops(true).expect("refresh");
    for _ in 0..2 {
        let (v, out) = run(&net, "sipvip_ext", &steer);
        assert_eq!((v, &out[..6]), (XDP_REDIRECT, &[2, 0, 0, 2, 0, 0x99][..]));
    }
    neigh(&net, PRIMARY, &PRIMARY_MAC, "int0");
    net.dp.refresh_nexthops(true).expect("refresh");
    let (v, out) = run(&net, "sipvip_ext", &steer);
    assert_eq!((v, &out[..6]), (XDP_REDIRECT, &PRIMARY_MAC[..]));

    // A member-opened flow, SNATed and cached.
    let opened = Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 40000), (PHONE, 5070), SIP).build();
    for _ in 0..2 {
        let (v, out) = run(&net, "sipvip_int", &opened);
        assert_eq!((v, src(&out)), (XDP_REDIRECT, VIP));
    }
    assert!(cached(&net, "snat"), "the SNATed flow is cached");
    let mut other = opened.clone();
    other[..6].copy_from_slice(&[2, 0, 0, 0, 9, 9]);
    let (v, out) = run(&net, "sipvip_int", &other);
    assert_eq!(
        (v, &out[..]),
        (XDP_PASS, &other[..]),
        "the SNATed flow's frame to another host"
    );
    // The phone becomes an exclusion, then stops being one.
    net.dp.add_exclusion(PHONE.into(), 32).expect("exclusion");
    let (v, out) = run(&net, "sipvip_int", &opened);
    assert_eq!((v, src(&out)), (XDP_REDIRECT, PRIMARY), "excluded");
    net.dp
        .remove_exclusion(PHONE.into(), 32)
        .expect("exclusion");
    for _ in 0..2 {
        let (v, out) = run(&net, "sipvip_int", &opened);
        assert_eq!((v, src(&out)), (XDP_REDIRECT, VIP), "no longer excluded");
    }
    // The phone's MAC changes: the cached decision holds until the next next-hop
    // generation, as the next-hop cache's answer does, then the new MAC is used.
    neigh(&net, PHONE, &[2, 0, 0, 1, 0, 0x99], "ext0");
    let (_, out) = run(&net, "sipvip_int", &opened);
    assert_eq!(out[..6], PHONE_MAC, "cached until the next generation");
    net.dp.refresh_nexthops(true).expect("refresh");
    let (v, out) = run(&net, "sipvip_int", &opened);
    assert_eq!((v, &out[..6]), (XDP_REDIRECT, &[2, 0, 0, 1, 0, 0x99][..]));
    neigh(&net, PHONE, &PHONE_MAC, "ext0");
    net.dp.refresh_nexthops(true).expect("refresh");
    // Its replies' conntrack entry is kept by the cached packets too: removed, the next
    // packet puts it back, as the rules would.
    net.dp.flush_conntrack().expect("flush");
    let (v, _) = run(&net, "sipvip_int", &opened);
    assert_eq!(v, XDP_REDIRECT);
    let (v, _) = run(&net, "sipvip_int", &opened);
    assert_eq!(v, XDP_REDIRECT);
    assert!(
        ct(&net)
            .iter()
            .any(|(k, _)| k.kind == sipvip_common::CT_SNAT),
        "the replies' entry"
    );

    // The phone opens a flow to the member's own address from the port the member's
    // flow goes to: the datapath records a pass-through flow, and the member's packets on
    // it leave untranslated from then on.
    let inbound = Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5070), (PRIMARY, 40000), SIP).build();
    let (v, _) = run(&net, "sipvip_ext", &inbound);
    assert_eq!(
        v, XDP_PASS,
        "to the member's own address: the kernel forwards it"
    );
    for _ in 0..2 {
        let (v, out) = run(&net, "sipvip_int", &opened);
        assert_eq!(
            (v, src(&out)),
            (XDP_REDIRECT, PRIMARY),
            "pass-through after the flow is recorded"
        );
    }
    assert!(
        cached(&net, "passthrough"),
        "the pass-through flow is cached"
    );
    // The datapath's own generation moved on with that record; a service's steering reads
    // no such record, and its entry still answers.
    let (v, out) = run(&net, "sipvip_ext", &steer);
    assert_eq!((v, dst(&out)), (XDP_REDIRECT, PRIMARY));
    assert!(cached(&net, "steered"), "steering stays cached");

    // A flow from the member's pass-through port, forwarded untouched and cached; the port
    // taken out of the member's pass-through ports, its next packets are SNATed; put back,
    // untouched again. Then the VIP's SNAT turned off: every member flow leaves untouched.
    let tserver = Ip4::udp(
        PRIMARY_MAC,
        INT_MAC,
        (PRIMARY, TSERVER_PORT),
        (PHONE, 5071),
        SIP,
    )
    .build();
    // A member's frame sent twice (the second answered by the entry the first left, if it
    // may be kept): each leaves redirected from `want`.
    let twice = |net: &FixtureNet, frame: &[u8], want: Ipv4Addr, what: &str| {
        for n in 0..2 {
            let (v, out) = run(net, "sipvip_int", frame);
            assert_eq!((v, src(&out)), (XDP_REDIRECT, want), "{what}, packet {n}");
        }
    };
    let original = net.spec.clone();
    twice(&net, &tserver, PRIMARY, "pass-through port");
    let live = net.dp.cached_flows().expect("flow cache").0;
    assert!(
        live.iter()
            .any(|(k, e)| k.sport_be == TSERVER_PORT.to_be()
                && e.action == sipvip_common::FLOW_FORWARD),
        "the pass-through port's flow is cached: {live:?}"
    );
    for m in &mut net.spec.members {
        m.passthrough_ports.clear();
    }
    net.dp.install_vip(&net.spec).expect("no pass-through port");
    twice(&net, &tserver, VIP, "no longer a pass-through port");
    net.spec = original.clone();
    net.dp
        .install_vip(&net.spec)
        .expect("pass-through port back");
    twice(&net, &tserver, PRIMARY, "a pass-through port again");
    let fresh = Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 40002), (PHONE, 5070), SIP).build();
    twice(&net, &fresh, VIP, "a new member-opened flow");
    net.spec.snat = false;
    net.dp.install_vip(&net.spec).expect("SNAT off");
    for frame in [&fresh, &tserver, &fresh] {
        let (v, out) = run(&net, "sipvip_int", frame);
        assert_eq!((v, src(&out)), (XDP_REDIRECT, PRIMARY), "SNAT off");
    }
    net.spec = original;
    net.dp.install_vip(&net.spec).expect("SNAT on");
    twice(&net, &fresh, VIP, "SNAT on again");
}

/// The flow cache is per CPU: with one slot (both ways of its one bucket), every flow takes
/// it from the one before, and each packet still gets its own flow's decision, never the slot's
/// other flow's. A SNATed flow, an excluded one that differs from it only in its destination
/// address, and a second SNATed flow that differs from the first only in its source port
/// take turns; every output's checksums are re-verified
/// from scratch. Every packet is counted once, under its reason and (SNATed) in the VIP's
/// traffic: a cached packet counts in the slot, whose counts move to the VIP's value when
/// the next flow takes it.
#[test]
fn flows_that_share_a_flow_cache_slot_each_get_their_own_decision() {
    let _cpu = sipvip_tests::bench::PinnedToCpu0::new();
    let net = net_with_flow_slots(1);
    let src = |out: &[u8]| Ipv4Addr::new(out[26], out[27], out[28], out[29]);
    let snat_a = Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 40000), (PHONE, 5070), SIP);
    let excluded = Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 40000), (CONFIG, 5070), SIP);
    let snat_b = Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 40001), (PHONE, 5070), SIP);
    let flows = [
        (&snat_a, (PHONE, 40000), VIP, PHONE_MAC, "snat"),
        (&excluded, (CONFIG, 40000), PRIMARY, CONFIG_MAC, "excluded"),
        (&snat_b, (PHONE, 40001), VIP, PHONE_MAC, "snat"),
    ];
    let (mut snat_packets, mut snat_bytes) = (0, 0);
    for round in 0..4 {
        for (i, (frame, (dst, sport), want_src, want_dmac, reason)) in flows.iter().enumerate() {
            // Twice in a row: the second packet takes the slot the first left.
            for n in 0..2 {
                let before = net.dp.reasons().unwrap().get(*reason).copied();
                let (v, out) = net
                    .run("sipvip_int", net.int_ifindex, &frame.build())
                    .expect("test run");
                let what = format!("round {round}, flow {i}, packet {n}");
                assert_eq!(v, XDP_REDIRECT, "{what}");
                frame::verify_checksums(&out).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(
                    (src(&out), &out[..6]),
                    (*want_src, &want_dmac[..]),
                    "{what}"
                );
                assert_eq!(
                    net.dp.reasons().unwrap().get(*reason).copied(),
                    Some(before.unwrap_or(0) + 1),
                    "{what}: counted as {reason}"
                );
                if *reason == "snat" {
                    snat_packets += 1;
                    snat_bytes += out.len() as u64;
                }
                let c = net.dp.vip_counters(VIP_ID).unwrap();
                assert_eq!(
                    (c.vip_out.packets, c.vip_out.bytes),
                    (snat_packets, snat_bytes),
                    "{what}: the VIP's outbound traffic"
                );
            }
            let (live, held) = net.dp.cached_flows().expect("flow cache");
            assert_eq!(held, 1, "one slot on the one CPU: {live:?}");
            let key = &live.first().expect("the last flow is cached").0;
            assert_eq!(
                (key.src_be, key.dst_be, key.sport_be),
                (be32(PRIMARY), be32(*dst), be16(*sport)),
                "the slot holds the flow that took it last"
            );
        }
    }
}

/// A bucket of the flow cache has two ways: a flow's own slot and the one beside it. Two
/// flows whose own slots are one are both kept, the second in the other way, and both are
/// answered from the cache: their replies' conntrack entries, deleted behind the datapath's
/// back, stay deleted after a packet each (the rules would put an entry back at once; a
/// cached packet looks only every `FLOW_REFRESH_EVERY` packets). A third such flow takes
/// its own slot from the first (both ways held live entries) and leaves the second in its
/// way, which answers all its packets; the three taking turns each get their own decision,
/// checksums re-verified from scratch (`redirected`). With one slot, both ways are that slot
/// (`flows_that_share_a_flow_cache_slot_each_get_their_own_decision`).
#[test]
fn flows_whose_own_slots_are_one_take_both_ways_of_the_bucket() {
    let _cpu = sipvip_tests::bench::PinnedToCpu0::new();
    let net = net_with_flow_slots(2);
    let key = |sport| member_flow_key(&net, sport);
    let own = |sport| sipvip_common::flow_way(sipvip_common::flow_slot(&key(sport)), 1, 0);
    // Ports no other test's flow uses, whose own slot is the first's.
    let ports: Vec<u16> = (47_400..47_600)
        .filter(|p| own(*p) == own(47_400))
        .take(3)
        .collect();
    let [a, b, c] = ports[..] else {
        panic!("three ports of one own slot: {ports:?}")
    };
    let send = |sport| member_opened(&net, PRIMARY_MAC, PRIMARY, sport);
    let cached = |sport| net.dp.cached_flow(&key(sport)).unwrap().is_some();
    // Answered from the cache: the replies' entry, deleted, stays deleted after a packet.
    let from_cache = |sport, what: &str| {
        let (k, _) = snat_entry(&net, sport).unwrap_or_else(|| panic!("{what}: an entry"));
        assert!(delete_conntrack_entry(&k) >= 1, "{what}: deleted");
        send(sport);
        assert!(
            snat_entry(&net, sport).is_none(),
            "{what}: the packet took the rules' path"
        );
    };
    for p in [a, a, b, b] {
        send(p);
    }
    assert!(cached(a) && cached(b), "both flows are cached");
    assert_eq!(net.dp.cached_flows().unwrap().1, 2, "in both ways");
    from_cache(a, "the first flow, in its own slot");
    from_cache(b, "the second flow, in the other way");
    for round in 0..3 {
        for p in [a, b, c] {
            send(p);
            assert!(
                cached(p),
                "round {round}: port {p}'s flow is cached after its packet"
            );
        }
    }
    assert!(
        cached(b) && cached(a) != cached(c),
        "the third flow and the first take turns"
    );
    assert!(
        snat_entry(&net, b).is_none(),
        "the second flow's packets all came from the cache, its entry still deleted"
    );
}

/// A member-opened flow's cached packets make sure of its replies' conntrack entry every
/// `FLOW_REFRESH_EVERY` packets: deleted behind the datapath's back (as the conntrack LRU
/// evicts an entry, with no new flow cache generation), the entry is back within that many
/// of the flow's packets, and a reply then goes back to the member. Every output's
/// checksums are re-verified from scratch.
#[test]
fn a_cached_flow_puts_back_its_replies_conntrack_entry_within_flow_refresh_every_packets() {
    let _cpu = sipvip_tests::bench::PinnedToCpu0::new();
    let net = net();
    // A port no other test's flow uses: the entry is deleted from every loaded conntrack
    // map (other tests' datapaths have their own), which leaves theirs untouched.
    const SPORT: u16 = 47_321;
    let send = || member_opened(&net, PRIMARY_MAC, PRIMARY, SPORT);
    let reply_entry = || snat_entry(&net, SPORT);
    // The first packet (the rules) records the entry and leaves the flow cached.
    send();
    let (key, written) = reply_entry().expect("the replies' entry");
    send();
    let deleted = delete_conntrack_entry(&key);
    assert!(deleted >= 1, "the entry was in a loaded conntrack map");
    assert!(reply_entry().is_none(), "deleted");
    let mut back_after = None;
    for n in 1..=u32::from(sipvip_common::FLOW_REFRESH_EVERY) {
        send();
        if reply_entry().is_some() {
            back_after = Some(n);
            break;
        }
    }
    let n = back_after.expect("the entry is back within FLOW_REFRESH_EVERY packets");
    assert_eq!(
        reply_entry().map(|(_, v)| v),
        Some(written),
        "the cached path puts back the entry the rules wrote (the member and its slot)"
    );
    assert!(
        n > 1,
        "cached packets do not look the entry up every time (back after {n})"
    );
    // The phone's reply goes back to the member.
    let out = phone_reply(&net, SPORT);
    assert_eq!(
        out[30..34],
        PRIMARY.octets(),
        "the reply reaches the member"
    );
}

/// Two members open a flow with the same ports to the same peer, so both SNAT to one
/// VIP flow and one conntrack entry says which member its replies go to: the last to send,
/// as on the rules' path alone. The primary's flow is cached; the backup's packet takes the
/// entry over, which invalidates the cached decisions; the primary's next packet takes the
/// rules' path, which takes the entry back; the peer's reply then reaches the primary, and
/// an ICMP error the primary sends about that reply leaves SNATed. Before, the takeover
/// left the primary's cached decision in place, whose packets refresh the entry only every
/// `FLOW_REFRESH_EVERY` packets: the entry stayed the backup's (this test failed at "the
/// takeover left no cached decision", and without that check at "the primary took it
/// back"), and the differential's churn run with seed 0x5eed1208 saw the primary's ICMP
/// error pass untranslated (`pass_icmp`) where the model SNATs it.
#[test]
fn a_member_takes_its_flows_replies_back_from_another_member() {
    let _cpu = sipvip_tests::bench::PinnedToCpu0::new();
    let net = net();
    // A port no other test's flow uses.
    const SPORT: u16 = 47_323;
    let send = |mac, addr| member_opened(&net, mac, addr, SPORT);
    let owner = || snat_entry(&net, SPORT).map(|(_, v)| Ipv4Addr::from(u32::from_be(v.member_be)));
    send(PRIMARY_MAC, PRIMARY);
    send(PRIMARY_MAC, PRIMARY);
    let key = member_flow_key(&net, SPORT);
    assert!(
        net.dp.cached_flow(&key).unwrap().is_some(),
        "the primary's flow is cached"
    );
    assert_eq!(owner(), Some(PRIMARY));
    send(BACKUP_MAC, BACKUP);
    assert_eq!(owner(), Some(BACKUP), "the backup took the entry over");
    assert!(
        net.dp.cached_flow(&key).unwrap().is_none(),
        "the takeover left no cached decision of the primary's"
    );
    send(PRIMARY_MAC, PRIMARY);
    assert_eq!(owner(), Some(PRIMARY), "the primary took it back");
    let out = phone_reply(&net, SPORT);
    assert_eq!(
        out[30..34],
        PRIMARY.octets(),
        "the reply reaches the primary"
    );
    // The primary's port is closed: its ICMP error about the reply leaves from the VIP.
    let error = frame::icmp_error_reply(&out, 3, 3, 0, PRIMARY);
    let before = net.dp.reasons().unwrap().get("icmp_error_out").copied();
    let out = redirected(&net, "sipvip_int", &error);
    assert_eq!(out[26..30], VIP.octets(), "the error leaves from the VIP");
    assert_eq!(
        net.dp.reasons().unwrap().get("icmp_error_out").copied(),
        Some(before.unwrap_or(0) + 1)
    );
}

/// Runs `frame` through `prog` on its side's interface: redirected, with checksums that
/// re-verify from scratch. Returns the frame sent.
fn redirected(net: &FixtureNet, prog: &'static str, frame: &[u8]) -> Vec<u8> {
    let ifindex = if prog == "sipvip_ext" {
        net.ext_ifindex
    } else {
        net.int_ifindex
    };
    let (v, out) = net.run(prog, ifindex, frame).expect("test run");
    assert_eq!(v, XDP_REDIRECT);
    frame::verify_checksums(&out).unwrap_or_else(|e| panic!("checksums: {e}"));
    out
}

/// A packet of the flow a member opens from `sport` to the phone's port 5070: SNATed.
fn member_opened(net: &FixtureNet, mac: frame::Mac, addr: Ipv4Addr, sport: u16) {
    let frame = Ip4::udp(mac, INT_MAC, (addr, sport), (PHONE, 5070), SIP).build();
    let out = redirected(net, "sipvip_int", &frame);
    assert_eq!(out[26..30], VIP.octets(), "SNATed");
}

/// The flow cache's key of the flow the primary opens from `sport` to the phone's port 5070
/// (`member_opened`'s, from the primary).
fn member_flow_key(net: &FixtureNet, sport: u16) -> sipvip_common::FlowKey {
    sipvip_common::FlowKey {
        src_be: be32(PRIMARY),
        dst_be: be32(PHONE),
        sport_be: be16(sport),
        dport_be: be16(5070),
        proto: IPPROTO_UDP,
        hook: sipvip_common::FLOW_HOOK_INT,
        _pad: 0,
        ifindex: net.int_ifindex,
    }
}

/// A fixture network whose flow cache has `flows` slots per CPU.
fn net_with_flow_slots(flows: u32) -> FixtureNet {
    FixtureNet::new(&sipvip::datapath::MapSizes {
        flows,
        ..Default::default()
    })
    .expect("fixture namespace")
}

/// The conntrack entry that sends replies to `VIP:sport` to a member (`CT_SNAT`).
fn snat_entry(net: &FixtureNet, sport: u16) -> Option<(CtKey, CtValue)> {
    ct(net)
        .into_iter()
        .find(|(k, _)| k.kind == CT_SNAT && k.port_a_be == be16(sport))
}

/// The phone's reply to `VIP:sport`: steered to a member. Returns the frame sent.
fn phone_reply(net: &FixtureNet, sport: u16) -> Vec<u8> {
    let reply = Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5070), (VIP, sport), SIP).build();
    redirected(net, "sipvip_ext", &reply)
}

/// Deletes `key` from every loaded IPv4 conntrack map (`SV_CT_V1`), as the kernel's LRU
/// evicts an entry: behind user space's back. Returns how many maps held it.
fn delete_conntrack_entry(key: &CtKey) -> usize {
    let mut n = 0;
    for info in aya::maps::loaded_maps().filter_map(|m| m.ok()) {
        if info.name_as_str() != Some(sipvip_common::map_names::CONNTRACK) {
            continue;
        }
        let Ok(data) = aya::maps::MapData::from_id(info.id()) else {
            continue;
        };
        let mut map: aya::maps::HashMap<_, CtKey, CtValue> =
            aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).expect("conntrack");
        if map.remove(key).is_ok() {
            n += 1;
        }
    }
    n
}

/// The VIP index (`SV_VIPIDX_V1`): VIPs whose addresses share a home slot fill its probe
/// slots; one more is refused with its address and the datapath keeps serving the others;
/// a VIP removed from the middle of the chain leaves a hole the others are still found
/// across, which the next VIP fills; and flips beyond the record slots' count (each change
/// takes a free slot, round-robin) always leave the record the packets see. The member
/// index (`SV_MEMIDX_V1`) refuses a member the same way.
#[test]
fn the_address_indexes_fill_their_probe_slots_and_flips_go_through_record_slots() {
    use sipvip_common::{index_slot, vip_index_slot, MEMBER_INDEX_SLOTS, VIP_PROBES};
    let mut net = net();
    let home = vip_index_slot(be32(VIP));
    // Lab addresses with the fixture VIP's home slot.
    let same: Vec<Ipv4Addr> = (0..1u32 << 17)
        .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i))
        .filter(|a| *a != VIP && vip_index_slot(be32(*a)) == home)
        .take(VIP_PROBES as usize)
        .collect();
    assert_eq!(
        same.len(),
        VIP_PROBES as usize,
        "addresses sharing a home slot"
    );
    let spec_at = |addr: Ipv4Addr, id: u32| {
        let mut s = net.spec.clone();
        s.addr = Some(addr);
        s.addr6 = None;
        for m in &mut s.members {
            m.addr6 = None;
        }
        s.id = id;
        s
    };
    let steered = |net: &FixtureNet, name: &str, addr: Ipv4Addr| {
        let f = Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (addr, 5060), SIP);
        let out = to_member(&f, PRIMARY, PRIMARY_MAC, None);
        expect(
            net,
            name,
            Side::Ext,
            &f.build(),
            XDP_REDIRECT,
            Some(&out.build()),
            "steered",
        );
    };
    // The fixture VIP holds the home slot; three more fill the chain.
    let full = VIP_PROBES as usize - 1;
    for (i, a) in same[..full].iter().enumerate() {
        let spec = spec_at(*a, 10 + i as u32);
        net.dp.install_vip(&spec).unwrap();
    }
    let refused = spec_at(same[full], 20);
    let err = net.dp.install_vip(&refused).unwrap_err().to_string();
    assert!(
        err.contains(&same[full].to_string())
            && err.contains("no room in the datapath's VIP index"),
        "{err}"
    );
    steered(
        &net,
        "the fixture VIP, with its home slot's chain full",
        VIP,
    );
    for a in &same[..full] {
        steered(&net, "a VIP further along the chain", *a);
    }

    // A hole in the middle of the chain: the VIPs after it are still found.
    net.dp.remove_vip4(same[0]).unwrap();
    let f = Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (same[0], 5060), SIP);
    expect(
        &net,
        "a removed VIP",
        Side::Ext,
        &f.build(),
        XDP_PASS,
        None,
        "pass_not_vip",
    );
    steered(
        &net,
        "the last VIP of the chain, past the hole",
        same[full - 1],
    );
    net.dp.install_vip(&refused).unwrap();
    steered(&net, "the VIP that was refused, in the hole", same[full]);

    // The member index: members whose addresses share the home slot of the primary's fill
    // its chain; one more is refused, naming it, and the primary is still found.
    let mhome = index_slot(be32(PRIMARY), MEMBER_INDEX_SLOTS);
    let msame: Vec<Ipv4Addr> = (0..1u32 << 17)
        .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i))
        .filter(|a| ![PRIMARY, BACKUP].contains(a))
        .filter(|a| index_slot(be32(*a), MEMBER_INDEX_SLOTS) == mhome)
        .take(VIP_PROBES as usize)
        .collect();
    let mut crowded = spec_at(Ipv4Addr::new(198, 18, 9, 9), 30);
    crowded.members = msame
        .iter()
        .map(|a| sipvip::datapath::MemberSpec {
            addr: Some(*a),
            addr6: None,
            passthrough_ports: Vec::new(),
            ports: Vec::new(),
            local: false,
        })
        .collect();
    let err = net.dp.install_vip(&crowded).unwrap_err().to_string();
    let last = msame[VIP_PROBES as usize - 1];
    assert!(
        err.contains(&format!(
            "member {last}: no room in the datapath's member index"
        )),
        "{err}"
    );
    let out = net
        .run(
            "sipvip_int",
            net.int_ifindex,
            &Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 5060), (PHONE, 5062), SIP).build(),
        )
        .unwrap();
    assert_eq!(
        out.0, XDP_REDIRECT,
        "the primary's traffic, with its chain full"
    );

    // Flips through every record slot, twice over.
    let flips = 4 * sipvip_common::default_sizes::VIPS as usize + 3;
    for i in 0..flips {
        let (member, mac) = if i % 2 == 0 {
            (BACKUP, BACKUP_MAC)
        } else {
            (PRIMARY, PRIMARY_MAC)
        };
        net.dp.set_active(&net.spec, Some(member)).unwrap();
        assert_eq!(
            net.dp.vip_record(VIP).unwrap().active_be,
            be32(member),
            "flip {i}"
        );
        if i % 97 == 0 || i + 1 == flips {
            let f = phone_udp(5060);
            let out = to_member(&f, member, mac, None);
            expect(
                &net,
                "after a flip",
                Side::Ext,
                &f.build(),
                XDP_REDIRECT,
                Some(&out.build()),
                "steered",
            );
        }
    }
}
