//! Running one fixture: input frame, expected verdict, expected output frame, expected counter.

use std::collections::BTreeMap;

use crate::{frame::verify_checksums, topo::FixtureNet};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "ABORTED",
        XDP_DROP => "DROP",
        XDP_PASS => "PASS",
        XDP_TX => "TX",
        XDP_REDIRECT => "REDIRECT",
        _ => "?",
    }
}

/// Which side a frame arrives on.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    Ext,
    Int,
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join("")
}

fn diff(
    a: &BTreeMap<&'static str, u64>,
    b: &BTreeMap<&'static str, u64>,
) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for (k, v) in b {
        let before = a.get(k).copied().unwrap_or(0);
        if *v != before {
            out.insert(*k, v - before);
        }
    }
    out
}

/// Runs `input` and asserts the verdict, the output bytes (`None`: unchanged), that exactly
/// one reason counter moved by one (`reason`), and that every checksum of the output is
/// valid from scratch (unless `malformed`).
pub fn expect(
    net: &FixtureNet,
    name: &str,
    side: Side,
    input: &[u8],
    verdict: u32,
    output: Option<&[u8]>,
    reason: &'static str,
) -> Vec<u8> {
    let (prog, ifindex) = match side {
        Side::Ext => (sipvip_common::program_names::EXTERNAL, net.ext_ifindex),
        Side::Int => (sipvip_common::program_names::INTERNAL, net.int_ifindex),
    };
    let before = net.dp.reasons().expect("read reasons");
    let (v, out) = net.run(prog, ifindex, input).expect("test run");
    let after = net.dp.reasons().expect("read reasons");
    let moved = diff(&before, &after);
    assert_eq!(
        verdict_name(v),
        verdict_name(verdict),
        "{name}: verdict (counters moved: {moved:?})"
    );
    let want = output.unwrap_or(input);
    assert_eq!(
        hex(&out),
        hex(want),
        "{name}: output frame (counters moved: {moved:?})"
    );
    let mut expected = BTreeMap::new();
    expected.insert(reason, 1u64);
    assert_eq!(moved, expected, "{name}: counters");
    if verdict != XDP_DROP {
        if let Err(e) = verify_checksums(&out) {
            // Unchanged malformed input is allowed to stay malformed.
            assert!(output.is_none(), "{name}: {e}");
        }
    }
    out
}
