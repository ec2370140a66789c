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
