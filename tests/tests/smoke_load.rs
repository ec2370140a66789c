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
