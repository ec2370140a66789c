//! The Kubernetes manifests (deploy/kubernetes): valid against the OpenAPI schemas of two
//! Kubernetes versions, the ConfigMap's configuration valid for `sipvip check`, and the
//! DaemonSet's capabilities enough for the daemon: it runs in the lab with exactly those.

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use sipvip_tests::{
    image::{daemonset_capabilities, yaml_query},
    lab::{sipvip_bin, Lab, PHONE, VIP},
    scenario,
};

/// The Kubernetes versions whose schemas the manifests must satisfy (kubernetes-validate
/// ships them; `cargo xtask setup` installs it).
const VERSIONS: [&str; 2] = ["1.36.0", "1.37.0"];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every manifest: the kustomization's resources and the examples.
fn manifests() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = kustomization_resources()
        .iter()
        .map(|r| deploy().join(r))
        .collect();
    for e in std::fs::read_dir(deploy().join("example")).unwrap() {
        out.push(e.unwrap().path());
    }
    out
}

fn kustomization_resources() -> Vec<String> {
    let v = yaml_query(&deploy().join("kustomization.yaml"), "docs[0]['resources']");
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

fn validate(files: &[PathBuf], version: &str) -> std::process::Output {
    Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", version])
        .args(files)
        .output()
        .expect("kubernetes-validate (PyPI) is missing: `cargo xtask setup` installs it")
}

#[test]
fn every_manifest_is_valid_for_two_kubernetes_versions() {
    let files = manifests();
    assert!(files.len() >= 5, "{files:?}");
    for v in VERSIONS {
        let out = validate(&files, v);
        assert!(
            out.status.success(),
            "Kubernetes {v}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The kustomization names every manifest of the folder.
    let mut listed = kustomization_resources();
    listed.sort();
    let mut present: Vec<String> = std::fs::read_dir(deploy())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    present.sort();
    assert_eq!(listed, present);
    // The check has teeth: a misspelt field fails it.
    let bad = std::env::temp_dir().join(format!("sipvip-bad-{}.yaml", std::process::id()));
    let text = std::fs::read_to_string(deploy().join("daemonset.yaml")).unwrap();
    std::fs::write(&bad, text.replace("hostNetwork:", "hostNetwrk:")).unwrap();
    let out = validate(std::slice::from_ref(&bad), VERSIONS[1]);
    let _ = std::fs::remove_file(&bad);
    assert!(!out.status.success(), "a misspelt field passed");
}

#[test]
fn the_configmap_holds_a_valid_configuration() {
    let text = yaml_query(
        &deploy().join("configmap.yaml"),
        "docs[0]['data']['sipvip.toml']",
    );
    let file = std::env::temp_dir().join(format!("sipvip-cm-{}.toml", std::process::id()));
    std::fs::write(&file, text.as_str().unwrap()).unwrap();
    let out = Command::new(sipvip_bin())
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The daemon is started the way the DaemonSet says: watching the mounted ConfigMap.
    let args = yaml_query(
        &deploy().join("daemonset.yaml"),
        "docs[0]['spec']['template']['spec']['containers'][0]['args']",
    );
    let args: Vec<&str> = args
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--watch-config"), "{args:?}");
}

#[test]
fn the_daemonset_capabilities_are_enough_for_the_daemon() {
    let caps = daemonset_capabilities();
    let set = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut lab = Lab::new("cap").expect("lab");
    scenario::start_sip_server(&mut lab, "primary").unwrap();
    scenario::start_sip_server(&mut lab, "backup").unwrap();
    // The on-node mode, as the ConfigMap runs it: XDP and TC egress on the uplink, the VIP
    // claimed by the node.
    let text = lab.node_config("200ms", "1000ms") + "\n[ownership]\nclaim_after = \"200ms\"\n";
    assert!(text.contains("mode = \"node\""));
    let cfg = lab.write_config(&text).unwrap();
    // Only these capabilities, for the daemon and whatever it runs (ethtool).
    let wrapper = [
        "setpriv",
        "--bounding-set",
        set.as_str(),
        "--inh-caps",
        set.as_str(),
        "--",
    ];
    lab.start_daemon_under(&cfg, &[], &wrapper).unwrap();
    let status = std::fs::read_to_string(format!(
        "/proc/{}/status",
        lab.children.last().unwrap().1.id()
    ))
    .unwrap();
    let eff = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap()
        .to_string();
    eprintln!("daemon {eff} (from {caps:?})");
    assert!(
        lab.wait_active("primary", Duration::from_secs(5)).is_some(),
        "{}",
        lab.daemon_log(0)
    );
    // The HTTP listener binds in its own task, a moment after the control socket answers.
    let healthy = lab.wait_for(Duration::from_secs(5), || {
        lab.http_get("/healthz")
            .is_ok_and(|(s, _)| s.contains(" 200 "))
    });
    assert!(healthy.is_some(), "{:?}", lab.http_get("/healthz"));
    // Traffic through the VIP.
    let phone = {
        let _g = lab.client.enter().unwrap();
        let s = UdpSocket::bind(SocketAddr::from((PHONE, 5062))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    };
    let msg = format!(
        "OPTIONS sip:{VIP} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE}:5062;branch=z9hG4bK-cap\r\nFrom: <sip:p@{PHONE}>;tag=c\r\nTo: <sip:{VIP}>\r\nCall-ID: cap@phone\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let t = Instant::now();
    let mut from = None;
    let mut buf = [0u8; 2048];
    while from.is_none() && t.elapsed() < Duration::from_secs(3) {
        phone.send_to(msg.as_bytes(), (VIP, 5060)).unwrap();
        if let Ok((n, f)) = phone.recv_from(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200") {
                from = Some(f);
            }
        }
    }
    assert_eq!(
        from,
        Some(SocketAddr::from((VIP, 5060))),
        "{}",
        lab.daemon_log(0)
    );
    let log = lab.daemon_log(0);
    assert!(!log.contains("Operation not permitted"), "{log}");
    assert!(log.contains("attached sipvip_node_out"), "{log}");
    assert!(log.contains("vip_claimed"), "{log}");
}
