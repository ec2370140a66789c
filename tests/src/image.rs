//! The container image under Debian's podman, as the DaemonSet runs it: built once per test
//! run by deploy/image/build.sh, run in a namespace's network with the manifest's
//! capabilities, and removed again by a guard.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use anyhow::{bail, Context, Result};

use crate::{lab::workspace, netns::Netns};

/// podman as this machine kind runs it (runc: crun fails on the kernel's hybrid cgroups).
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc", "--cgroup-manager=cgroupfs"]);
    c
}

fn ok(o: Output, what: &str) -> Result<String> {
    if !o.status.success() {
        bail!(
            "{what}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Builds the image once per test process (`cargo xtask image` runs the same script) and
/// returns its tag. Fails, and says what is missing, without podman.
pub fn image() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        assert!(
            crate::netns::which("podman").is_some(),
            "podman is missing (Debian packages podman and runc): `cargo xtask setup` installs them"
        );
        let tag = "sipvip:test".to_string();
        let o = Command::new(workspace().join("deploy/image/build.sh"))
            .arg(&tag)
            .output()
            .expect("run deploy/image/build.sh");
        ok(o, "building the image").unwrap();
        tag
    })
    .clone()
}

/// `podman run` of the image in `ns`'s network, with `mounts` at the same paths, the
/// ulimits this machine kind's runc accepts, and `how` and `security` options.
fn run_in(
    ns: &Netns,
    how: &[&str],
    security: &[String],
    mounts: &[&Path],
    args: &[&str],
) -> Command {
    let mut c = podman();
    c.arg("run")
        .args(how)
        .arg(format!("--network=ns:/run/netns/{}", ns.name))
        .args(security)
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]);
    for m in mounts {
        c.arg("-v").arg(format!("{0}:{0}", m.display()));
    }
    c.arg(image()).args(args);
    c
}

/// A container of the image, removed (forcibly) when dropped.
pub struct Container {
    pub name: String,
}

impl Container {
    /// Runs the image detached in `ns`'s network with the capabilities `caps` (after
    /// dropping all), the host paths `mounts` at the same paths, and `args` for the
    /// binary. Seccomp is unconfined, as the kubelet runs a pod that names no profile.
    pub fn run(
        name: &str,
        ns: &Netns,
        caps: &[String],
        mounts: &[&Path],
        args: &[&str],
    ) -> Result<Container> {
        let mut security = vec!["--cap-drop".to_string(), "ALL".into()];
        for cap in caps {
            security.extend(["--cap-add".to_string(), cap.clone()]);
        }
        security.extend(["--security-opt".to_string(), "seccomp=unconfined".into()]);
        let mut c = run_in(ns, &["-d", "--name", name], &security, mounts, args);
        let container = Container {
            name: name.to_string(),
        };
        ok(c.output().context("podman run")?, "podman run")?;
        Ok(container)
    }

    /// Runs the image once to its end, privileged, in `ns`'s network (the DaemonSet's init
    /// container); returns its output.
    pub fn run_privileged_once(ns: &Netns, mounts: &[&Path], args: &[&str]) -> Result<String> {
        let mut c = run_in(ns, &["--rm"], &["--privileged".to_string()], mounts, args);
        ok(c.output().context("podman run")?, "podman run (init)")
    }

    /// Stops it the way the kubelet does: SIGTERM, then SIGKILL after the grace period.
    pub fn stop(&self, grace_s: u32) -> Result<()> {
        let o = podman()
            .args(["stop", "-t", &grace_s.to_string(), &self.name])
            .output()?;
        ok(o, "podman stop").map(|_| ())
    }

    pub fn logs(&self) -> String {
        podman()
            .args(["logs", &self.name])
            .output()
            .map(|o| {
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                )
            })
            .unwrap_or_default()
    }

    /// The container's main process, as the host sees it.
    pub fn pid(&self) -> Result<u32> {
        let o = podman()
            .args(["inspect", "-f", "{{.State.Pid}}", &self.name])
            .output()?;
        Ok(ok(o, "podman inspect")?.parse()?)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
    }
}

/// Where the workspace's deploy/ folder is.
pub fn deploy() -> PathBuf {
    workspace().join("deploy")
}

/// A Python expression's value over a YAML file, as JSON (PyYAML comes with
/// kubernetes-validate, which `cargo xtask setup` installs).
pub fn yaml_query(file: &Path, expr: &str) -> serde_json::Value {
    let script = format!(
        "import json, sys, yaml\ndocs = list(yaml.safe_load_all(open(sys.argv[1])))\nprint(json.dumps({expr}))"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .arg(file)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3 with PyYAML (installed with kubernetes-validate by `cargo xtask setup`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The capabilities the DaemonSet's container adds (after dropping ALL), as podman and
/// setpriv name them (lower case, no CAP_).
pub fn daemonset_capabilities() -> Vec<String> {
    let sc = yaml_query(
        &deploy().join("kubernetes/daemonset.yaml"),
        "docs[0]['spec']['template']['spec']['containers'][0]['securityContext']",
    );
    assert_eq!(sc["privileged"], false, "{sc}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{sc}"
    );
    sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_lowercase())
        .collect()
}
