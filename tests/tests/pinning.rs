//! Pinning and adoption of the datapath, and the debug-log object.

use std::sync::Mutex;

use sipvip::datapath::{Datapath, DatapathError, MapSizes};
use sipvip_tests::{
    check::XDP_REDIRECT,
    frame::Ip4,
    netns::{require_root, sh},
    topo::*,
};

/// A private bpffs, unmounted on drop.
struct Bpffs(std::path::PathBuf);

impl Bpffs {
    fn new(tag: &str) -> Bpffs {
        let p = std::env::temp_dir().join(format!("svt-bpffs-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        sh(&format!("mount -t bpf bpf {}", p.display())).unwrap();
        Bpffs(p)
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = sh(&format!("umount {}", self.0.display()));
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn small() -> MapSizes {
    MapSizes {
        conntrack: 4096,
        frags: 1024,
        exclusions: 1024,
        flows: 1024,
        ..MapSizes::default()
    }
}

#[test]
fn a_pinned_datapath_is_adopted_with_its_state_or_refused_when_its_layout_differs() {
    require_root();
    let fs = Bpffs::new("adopt");
    let dir = fs.0.join("sipvip");
    assert!(
        Datapath::adopt(&small(), &dir).unwrap().is_none(),
        "nothing pinned yet"
    );
    {
        let mut dp = Datapath::load_pinned(&small(), &dir, false).unwrap();
        dp.install_vip(&vip_spec()).unwrap();
        dp.add_exclusion(CONFIG.into(), 32).unwrap();
    }
    // The loader is gone; the maps live on in their pins, with their contents.
    let mut dp = Datapath::adopt(&small(), &dir).unwrap().expect("adopted");
    let rec = dp.vip_record(VIP).unwrap();
    assert_eq!(rec.vip_id, VIP_ID);
    assert_eq!(rec.active_be, sipvip::datapath::be32(PRIMARY));
    dp.set_active(&vip_spec(), Some(BACKUP)).unwrap();
    drop(dp);

    // Another build with other sizes must refuse, naming the difference.
    let other = MapSizes {
        conntrack: 8192,
        ..small()
    };
    match Datapath::adopt(&other, &dir) {
        Err(e @ DatapathError::Layout { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("map SV_CT_V1: max entries is 4096, this build expects 8192"),
                "{m}"
            );
            assert!(m.contains("--replace"), "{m}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("adopted a datapath with another layout"),
    }
    // An earlier build's pins, whose VIP records were a hash map: refused with the remedy.
    use sipvip_common::map_names::{VIPS, VIPS_HASH};
    std::fs::rename(dir.join(VIPS), dir.join(VIPS_HASH)).unwrap();
    match Datapath::adopt(&small(), &dir) {
        Err(e @ DatapathError::Layout { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("map SV_VIPS_V3 is missing (an earlier build pinned SV_VIPS_V2)")
                    && m.contains("--replace"),
                "{m}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("adopted an earlier build's pins"),
    }
    let removed = Datapath::remove_pins(&dir).unwrap();
    assert!(
        removed.contains(&VIPS_HASH.to_string())
            && removed.contains(&"prog_sipvip_ext".to_string()),
        "{removed:?}"
    );
    assert!(!dir.exists());
}

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;
impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        LINES.lock().unwrap().push(r.args().to_string());
    }
    fn flush(&self) {}
}

#[test]
fn the_debug_object_logs_every_verdict_and_the_release_one_has_no_log_map() {
    require_root();
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let net = FixtureNet::new(&small()).unwrap();
    let _in = net.ns.enter().unwrap();
    let mut dp = Datapath::load_debug(&small()).unwrap();
    dp.add_egress(net.ext_ifindex).unwrap();
    dp.add_egress(net.int_ifindex).unwrap();
    dp.install_vip(&vip_spec()).unwrap();
    let mut logger = dp.take_logger().expect("a logger");
    let frame = Ip4::udp(PHONE_MAC, EXT_MAC, (PHONE, 5062), (VIP, 5060), b"x").build();
    let (v, _) = run_xdp(
        dp.program(sipvip_common::program_names::EXTERNAL).unwrap(),
        net.ext_ifindex,
        &frame,
    )
    .unwrap();
    assert_eq!(v, XDP_REDIRECT);
    logger.flush();
    // aya logs its own loading through `log` too; keep the datapath's records.
    let lines: Vec<String> = LINES
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("sipvip "))
        .cloned()
        .collect();
    assert_eq!(
        lines,
        vec![format!(
            "sipvip ext: verdict 4 reason {}",
            sipvip_common::Reason::Steered as u32
        )]
    );
    // The release object has no logger: nothing to read.
    let mut release = Datapath::load(&small()).unwrap();
    assert!(release.take_logger().is_none());
}

#[test]
fn a_pin_directory_off_bpffs_is_refused_with_the_remedy() {
    require_root();
    let dir = std::env::temp_dir().join(format!("sipvip-not-bpffs-{}", std::process::id()));
    let e = sipvip::datapath::mount_bpffs(&dir.join("pins"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("is not on a bpf filesystem") && e.contains("hostPath"),
        "{e}"
    );
}
