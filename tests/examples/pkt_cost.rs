//! Per-packet cost of each datapath path through BPF_PROG_TEST_RUN (repeat = 1,000,000),
//! next to the empty program. A measurement, not a test: run it as root with
//! `cargo run --release -p sipvip-tests --example pkt_cost`.

use aya::programs::{TestRun, TestRunAttrs, TestRunOptions};
use sipvip::datapath::MapSizes;
use sipvip_common::program_names;
use sipvip_tests::{frame::Ip4, topo::*};

fn main() -> anyhow::Result<()> {
    let net = FixtureNet::new(&MapSizes::default())?;
    let _in = net.ns.enter()?;
    let sip = [b'x'; 400];
    let cases: Vec<(&str, &'static str, u32, Vec<u8>)> = vec![
        (
            "empty program (XDP_PASS)",
            program_names::PASS,
            net.ext_ifindex,
            Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, 5060), &sip).build(),
        ),
        (
            "inbound steer udp/5060",
            program_names::EXTERNAL,
            net.ext_ifindex,
            Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, 5060), &sip).build(),
        ),
        (
            "outbound SNAT, exclusion miss",
            program_names::INTERNAL,
            net.int_ifindex,
            Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 5060), (PHONE, 5062), &sip).build(),
        ),
        (
            "outbound, exclusion hit",
            program_names::INTERNAL,
            net.int_ifindex,
            Ip4::udp(PRIMARY_MAC, INT_MAC, (PRIMARY, 5060), (CONFIG, 5062), &sip).build(),
        ),
        (
            "outbound pass-through port",
            program_names::INTERNAL,
            net.int_ifindex,
            Ip4::tcp(
                PRIMARY_MAC,
                INT_MAC,
                (PRIMARY, TSERVER_PORT),
                (TLIB, 50000),
                0x18,
                &sip,
            )
            .build(),
        ),
        (
            "inbound later fragment",
            program_names::EXTERNAL,
            net.ext_ifindex,
            Ip4::udp(
                PHONE_MAC,
                EXT_MAC,
                (PHONE, 5062),
                (VIP, 5060),
                &[b'y'; 3000],
            )
            .fragments(1200)[1]
                .clone(),
        ),
    ];
    let repeat = 1_000_000;
    for (name, prog, ifindex, frame) in &cases {
        let p = net.dp.program(prog)?;
        let md: [u32; 6] = [0, frame.len() as u32, 0, *ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
        // Live frames: every repetition starts from the original frame (a non-live repeat
        // would run the program again on its own output), and redirects really happen.
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat,
            attrs: TestRunAttrs::new().xdp_live_frames(64),
            ..TestRunOptions::default()
        })?;
        let (v, _) = run_xdp(p, *ifindex, frame)?;
        println!(
            "{name:32} verdict {v} {:>6.1} ns/packet",
            r.duration.as_nanos() as f64
        );
    }
    Ok(())
}
