use sipvip::datapath::MapSizes;
use sipvip_common::program_names::{EXTERNAL, EXTERNAL6, INTERNAL, INTERNAL6, NODE_OUT, NODE_OUT6};
use sipvip_tests::topo::FixtureNet;

#[test]
fn loads_with_production_sizes() {
    let net = FixtureNet::new(&MapSizes::default()).expect("fixture");
    let rec = net.dp.vip_record(sipvip_tests::topo::VIP).unwrap();
    assert_eq!(rec.vip_id, sipvip_tests::topo::VIP_ID);
    // The verifier's work per program (bpf_prog_info.verified_insns; its limit is 1,000,000
    // per program): printed for the docs, with `-- --nocapture`.
    for name in [EXTERNAL, INTERNAL, EXTERNAL6, INTERNAL6] {
        let info = net.dp.program(name).unwrap().info().unwrap();
        println!(
            "{name}: {:?} instructions verified",
            info.verified_instruction_count()
        );
    }
    for name in [NODE_OUT, NODE_OUT6] {
        let info = net.dp.tc_program(name).unwrap().info().unwrap();
        println!(
            "{name}: {:?} instructions verified",
            info.verified_instruction_count()
        );
    }
}
