//! Every row of the fixture table (`sipvip_tests::table::ROWS`), in order, on one fixture
//! network: verdict, output bytes (checksums re-verified from scratch), the one reason
//! counter that moves, and the per-VIP counters.

use sipvip_tests::{fixtures::net, table::ROWS};

#[test]
fn every_row_of_the_fixture_table() {
    let net = net();
    for row in ROWS {
        row.run(&net)
            .unwrap_or_else(|e| panic!("{}: {e:#}", row.description));
    }
    // Service traffic creates no conntrack state: the one entry is the member-opened flow.
    let ct: Vec<_> = net.dp.conntrack().unwrap();
    assert_eq!(ct.len(), 1, "conntrack: {ct:?}");
    assert_eq!(ct[0].0.kind, sipvip_common::CT_SNAT);
    // A row's second packet goes through the flow cache when the first left an entry: the
    // cost paths' rows, run again (a pass-through flow recorded by a later row starts a new
    // generation), leave theirs, with the decisions the rules made (steering one per
    // service; a pass-through port's flow forwarded untouched, checking no conntrack entry).
    for row in ROWS.iter().filter(|r| r.cost.is_some()) {
        row.run(&net)
            .unwrap_or_else(|e| panic!("{}: {e:#}", row.description));
    }
    let (cached, _) = net.dp.cached_flows().unwrap();
    let reasons: Vec<u8> = cached.iter().map(|(_, e)| e.reason).collect();
    for r in [
        sipvip_common::Reason::Steered,
        sipvip_common::Reason::Snat,
        sipvip_common::Reason::Excluded,
        sipvip_common::Reason::Passthrough,
    ] {
        assert!(
            reasons.contains(&(r as u8)),
            "no cached flow counted {r:?}: {cached:?}"
        );
    }
    assert!(
        cached.iter().any(
            |(_, e)| e.reason == sipvip_common::Reason::Passthrough as u8
                && e.action == sipvip_common::FLOW_FORWARD
                && e.state == sipvip_common::FLOW_STATE_NONE
        ),
        "a pass-through port's flow is forwarded untouched, checking no conntrack entry: \
         {cached:?}"
    );
}

#[test]
fn every_cost_path_of_the_bench_is_a_row() {
    let costs: Vec<_> = ROWS.iter().filter_map(|r| r.cost).collect();
    for want in [
        "inbound steer",
        "outbound SNAT, exclusion miss",
        "outbound SNAT, exclusion hit",
        "outbound pass-through port",
        "inbound later fragment",
    ] {
        assert!(costs.contains(&want), "no row for the cost path {want:?}");
    }
    let mut sorted = costs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), costs.len(), "a cost path named twice");
}
