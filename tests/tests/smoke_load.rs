use sipvip::datapath::MapSizes;
use sipvip_tests::topo::FixtureNet;

#[test]
fn loads_with_production_sizes() {
    let net = FixtureNet::new(&MapSizes::default()).expect("fixture");
    let rec = net.dp.vip_record(sipvip_tests::topo::VIP).unwrap();
    assert_eq!(rec.vip_id, sipvip_tests::topo::VIP_ID);
}
