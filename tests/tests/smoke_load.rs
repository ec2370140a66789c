use sipvip::datapath::MapSizes;
use sipvip_common::program_names::{EXTERNAL, EXTERNAL6, INTERNAL, INTERNAL6, NODE_OUT, NODE_OUT6};
use sipvip_tests::topo::FixtureNet;

#[test]
fn loads_with_production_sizes() {
    let net = FixtureNet::new(&MapSizes::default()).expect("fixture");
    let rec = net.dp.vip_record(sipvip_tests::topo::VIP).unwrap();
    assert_eq!(rec.vip_id, sipvip_tests::topo::VIP_ID);
    // The verifier's work per program (bpf_prog_info.verified_insns; its limit is 1,000,000
    // per program): printed for the docs, with `-- --nocapture`, and held under a budget
    // that leaves room to grow. A value that stays live across a whole program with
    // different contents (a flag, say) makes the verifier follow everything after it once
    // per value: a change that doubles a program's count fails here, with the count, before
    // a later rule pushes it past the limit.
    const BUDGET: u32 = 700_000;
    let mut counts = Vec::new();
    for name in [EXTERNAL, INTERNAL, EXTERNAL6, INTERNAL6] {
        let info = net.dp.program(name).unwrap().info().unwrap();
        counts.push((name, info.verified_instruction_count()));
    }
    for name in [NODE_OUT, NODE_OUT6] {
        let info = net.dp.tc_program(name).unwrap().info().unwrap();
        counts.push((name, info.verified_instruction_count()));
    }
    for (name, n) in counts {
        println!("{name}: {n:?} instructions verified");
        let n = n.unwrap_or_else(|| panic!("{name}: the kernel reports no verified count"));
        assert!(
            n < BUDGET,
            "{name}: {n} instructions verified, over the budget of {BUDGET} (the verifier's \
             limit is 1,000,000)"
        );
    }
}

/// The many-flows cost harness (`bench_reset_flows`) makes each run the next of its flows:
/// the member's source port takes every value of its low bits in turn, and every frame's
/// checksums verify from scratch, so the path it times sees valid packets of distinct flows.
#[test]
fn the_many_flows_cost_harness_sends_valid_frames_of_distinct_flows() {
    use sipvip_tests::{bench::CostHarness, frame::verify_checksums, table};
    let frame = {
        let mut f = (table::cost_row("outbound SNAT, exclusion miss")
            .expect("SNAT row")
            .input)();
        f.resize(f.len().max(64), 0);
        f
    };
    let sport = |f: &[u8]| u16::from_be_bytes([f[34], f[35]]);
    let base = sport(&frame);
    let mut h = CostHarness::new().expect("harness");
    const FLOWS: u32 = 16;
    let out = h
        .flows_harness_output(&frame, FLOWS, 2 * FLOWS as usize)
        .expect("harness runs");
    let mut seen = std::collections::BTreeSet::new();
    for (i, f) in out.iter().enumerate() {
        verify_checksums(f).unwrap_or_else(|e| panic!("run {i}: {e}"));
        let p = sport(f);
        assert_eq!(
            p & !(FLOWS as u16 - 1),
            base & !(FLOWS as u16 - 1),
            "run {i}: port {p}"
        );
        assert_eq!(
            f[..34],
            frame[..34],
            "run {i}: only the port and checksum change"
        );
        assert_eq!(f[36..40], frame[36..40], "run {i}");
        seen.insert(p);
        if i >= FLOWS as usize {
            assert_eq!(
                p,
                sport(&out[i - FLOWS as usize]),
                "run {i}: the flows come round"
            );
        }
    }
    assert_eq!(seen.len(), FLOWS as usize, "every flow in turn: {seen:?}");
}

/// The bench's floor programs, one per direction, do what the throughput table says of them:
/// `bench_floor` writes the member as destination (steering's path), `bench_floor_out` the
/// VIP as source (SNAT's path), each with its MACs and the IPv4 header checksum (checked from
/// scratch), leave every other byte alone and redirect. The floor leaves the UDP checksum
/// as it was, stale: it is less work than a correct NAT (which sipvip does), so a ratio to it
/// errs against sipvip.
#[test]
fn the_floor_programs_rewrite_their_own_directions_address() {
    use aya::{
        programs::{TestRun, TestRunOptions, Xdp},
        Ebpf,
    };
    use sipvip_tests::{
        bench::{point_floor, FloorCfg},
        check::XDP_REDIRECT,
        frame::checksum,
        table,
    };
    let mut ebpf = Ebpf::load(sipvip::datapath::BENCH_OBJECT).expect("bench object");
    for p in ["bench_floor", "bench_floor_out"] {
        let x: &mut Xdp = ebpf.program_mut(p).unwrap().try_into().unwrap();
        x.load().expect("load");
    }
    let (member, vip) = ([198u8, 18, 9, 1], [198u8, 18, 9, 2]);
    let (dmac, smac) = ([2u8, 0, 0, 0, 0, 0xd], [2u8, 0, 0, 0, 0, 0x5]);
    // Loopback as the redirect's device: BPF_PROG_TEST_RUN returns the verdict and sends
    // nothing.
    for (slot, addr) in [(0, member), (1, vip)] {
        let cfg = FloorCfg {
            dmac,
            smac,
            addr_be: u32::from_ne_bytes(addr),
        };
        point_floor(&mut ebpf, slot, 1, cfg).expect("floor maps");
    }
    for (prog, row, at, addr) in [
        ("bench_floor", "inbound steer", 30, member),
        ("bench_floor_out", "outbound SNAT, exclusion miss", 26, vip),
    ] {
        let frame = (table::cost_row(row).expect("row").input)();
        let p: &Xdp = ebpf.program(prog).unwrap().try_into().unwrap();
        let mut out = vec![0u8; frame.len()];
        let r = p
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .expect("test run");
        assert_eq!(r.return_value, XDP_REDIRECT, "{prog}: verdict");
        assert_eq!(out[..6], dmac, "{prog}: destination MAC");
        assert_eq!(out[6..12], smac, "{prog}: source MAC");
        assert_eq!(out[at..at + 4], addr, "{prog}: the address rewritten");
        assert_eq!(checksum(&[&out[14..34]]), 0, "{prog}: IPv4 header checksum");
        for (i, (a, b)) in frame.iter().zip(&out).enumerate() {
            let rewritten = i < 12 || (at..at + 4).contains(&i) || i == 24 || i == 25;
            assert!(
                rewritten || a == b,
                "{prog}: byte {i} changed ({a:#x} -> {b:#x})"
            );
        }
    }
}
