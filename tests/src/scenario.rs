//! The contact-centre scenario on the lab: SIP servers, registrations and calls through the VIP
//! (sipp), the device-group checks, and the HA switchover. Used by `cargo xtask lab` and by
//! the end-to-end tests.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    lab::{command_in, Lab, BACKUP, CONFIG, PHONE, PRIMARY, SBC, TLIB, VIP},
    netns::Netns,
};

fn sipp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp")
}

/// What a device group saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    pub group: &'static str,
    pub who: String,
    /// The address the group's peer appeared to have.
    pub saw: Ipv4Addr,
    pub expected: Ipv4Addr,
}

impl std::fmt::Display for GroupView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<28} saw {:<14} {}",
            format!("{} {}", self.group, self.who),
            self.saw.to_string(),
            if self.saw == self.expected {
                "as expected".to_string()
            } else {
                format!("EXPECTED {}", self.expected)
            }
        )
    }
}

fn udp_in(ns: &Netns, addr: (Ipv4Addr, u16)) -> Result<UdpSocket> {
    let _g = ns.enter()?;
    let s = UdpSocket::bind(SocketAddr::from(addr))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(s)
}

fn options(from: SocketAddr, to: Ipv4Addr, tag: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:{to}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-lab-{tag}\r\nMax-Forwards: 70\r\n\
         From: <sip:lab@{}>;tag={tag}\r\nTo: <sip:{to}>\r\nCall-ID: lab-{tag}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        from.ip()
    )
    .into_bytes()
}

/// Checks each device group's rule and reports what it saw:
/// A and B reach the active member through the VIP and hear back from the VIP; C is
/// reached from the member's physical address (no SNAT); D talks to the physical address.
pub fn device_groups(lab: &Lab, active: Ipv4Addr) -> Result<Vec<GroupView>> {
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // Fresh Call-IDs every run: a SIP server ignores a request of a transaction it has seen.
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut out = Vec::new();
    let active_ns = if active == PRIMARY {
        &lab.primary
    } else {
        &lab.backup
    };

    // A: a phone's OPTIONS to the VIP is answered by the SIP server, from the VIP.
    let phone = udp_in(&lab.client, (PHONE, 5090))?;
    phone.send_to(
        &options(phone.local_addr()?, VIP, &format!("a{run}")),
        (VIP, 5060),
    )?;
    let mut buf = [0u8; 2048];
    let (_, from) = phone
        .recv_from(&mut buf)
        .context("group A: no answer through the VIP")?;
    out.push(GroupView {
        group: "A (agent phone)",
        who: PHONE.to_string(),
        saw: ip(from),
        expected: VIP,
    });

    // B: the SIP server sends a request to the SBC; the SBC sees it from the VIP.
    let sbc = udp_in(&lab.client, (SBC, 5060))?;
    let member = udp_in(active_ns, (active, 0))?;
    member.send_to(
        &options(member.local_addr()?, SBC, &format!("b{run}")),
        (SBC, 5060),
    )?;
    let (_, from) = sbc
        .recv_from(&mut buf)
        .context("group B: nothing from the SIP server")?;
    out.push(GroupView {
        group: "B (SBC / media gateway)",
        who: SBC.to_string(),
        saw: ip(from),
        expected: VIP,
    });

    // C: the SIP server connects to the Configuration Server: no SNAT.
    let cfgsrv = {
        let _g = lab.client.enter()?;
        TcpListener::bind((CONFIG, 2020))?
    };
    let c = {
        let _g = active_ns.enter()?;
        TcpStream::connect_timeout(&SocketAddr::from((CONFIG, 2020)), Duration::from_secs(2))
            .context("group C: connect to the config server")?
    };
    let (_, peer) = cfgsrv.accept()?;
    drop(c);
    out.push(GroupView {
        group: "C (Configuration Server)",
        who: CONFIG.to_string(),
        saw: ip(peer),
        expected: active,
    });

    // D: a T-Lib client connects to the member's physical address and hears from it.
    let tserver = {
        let _g = active_ns.enter()?;
        TcpListener::bind((active, 3000))?
    };
    let mut tlib = {
        let _g = lab.client.enter()?;
        let s = crate::netns::tcp_connect_from(
            TLIB,
            std::net::SocketAddrV4::new(active, 3000),
            Duration::from_secs(2),
        )
        .context("group D: connect to the T-Server")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s
    };
    let (mut srv, peer) = tserver.accept()?;
    srv.write_all(b"EventRegistered")?;
    let mut b = [0u8; 32];
    let n = tlib.read(&mut b)?;
    if &b[..n] != b"EventRegistered" || peer.ip() != TLIB {
        bail!("group D: T-Server saw {peer}, client read {:?}", &b[..n]);
    }
    out.push(GroupView {
        group: "D (T-Lib client)",
        who: TLIB.to_string(),
        saw: ip(tlib.peer_addr()?),
        expected: active,
    });
    Ok(out)
}

fn ip(a: SocketAddr) -> Ipv4Addr {
    match a {
        SocketAddr::V4(v) => *v.ip(),
        SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

/// Starts the lab's SIP server (sipp) answering OPTIONS, REGISTER and calls on `addr:5060`.
pub fn start_sip_server(lab: &mut Lab, which: &str) -> Result<()> {
    let addr = match which {
        "primary" => PRIMARY,
        "backup" => BACKUP,
        _ => bail!("no SIP server {which}"),
    };
    start_sip_server_at(lab, which, addr)
}

/// A SIP server in `which`'s namespace on `addr` (an address of that namespace), as a pod
/// recreated with a new address would be; its child is named `sipp-<which>`.
pub fn start_sip_server_at(lab: &mut Lab, which: &str, addr: std::net::Ipv4Addr) -> Result<()> {
    let ns = match which {
        "primary" => &lab.primary,
        "backup" => &lab.backup,
        _ => bail!("no SIP server {which}"),
    };
    let child = sip_server_in(ns, addr, 5060, &lab.dir)?;
    lab.children.push((format!("sipp-{which}"), child));
    Ok(())
}

/// The lab's SIP server (sipp UAS answering OPTIONS, REGISTER and calls over UDP) in `ns`
/// on `addr:port`, its files in `dir`, with sipp's handling of unexpected messages
/// ([`Unexpected::Abort`]).
pub fn sip_server_in(
    ns: &Netns,
    addr: impl Into<std::net::IpAddr>,
    port: u16,
    dir: &Path,
) -> Result<Child> {
    sip_server_with(ns, addr, port, dir, Unexpected::Abort)
}

/// How the lab's SIP server treats a message its scenario does not expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unexpected {
    /// sipp's default: the call is aborted, and a BYE of a dialog the server never set up
    /// is answered with 200 OK. A backup promoted while calls are in flight ends them so
    /// (the lab's and the tests' member switchovers).
    Abort,
    /// Ignored (`-default_behaviors all,-abortunexp`): a retransmitted INVITE arriving
    /// while the server waits for the ACK (its responses lost, in a gateway cut) is
    /// absorbed, as an INVITE server transaction does (RFC 3261, 17.2.1), and the 200 OK's
    /// own retransmissions complete the call; sipp's default aborts the call on it. An
    /// unknown dialog's BYE then goes unanswered.
    Ignore,
}

/// [`sip_server_in`] with the handling of unexpected messages chosen.
pub fn sip_server_with(
    ns: &Netns,
    addr: impl Into<std::net::IpAddr>,
    port: u16,
    dir: &Path,
    unexpected: Unexpected,
) -> Result<Child> {
    let addr: std::net::IpAddr = addr.into();
    let mut cmd = command_in(ns, Path::new("/usr/bin/sipp"))?;
    cmd.arg("-sf").arg(sipp_dir().join("sip_server.xml")).args([
        "-i",
        &addr.to_string(),
        "-p",
        &port.to_string(),
        "-t",
        "u1",
        "-nostdin",
    ]);
    if unexpected == Unexpected::Ignore {
        cmd.args(["-default_behaviors", "all,-abortunexp"]);
    }
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start sipp")
}

/// Registers `n` agents through the VIP; returns how many got 200 OK.
pub fn register_agents(lab: &Lab, n: usize) -> Result<usize> {
    register_agents_via(lab, VIP.into(), PHONE.into(), n)
}

/// Registers `n` agents from `phone` through `vip` (either family); returns how many got
/// 200 OK.
pub fn register_agents_via(
    lab: &Lab,
    vip: std::net::IpAddr,
    phone: std::net::IpAddr,
    n: usize,
) -> Result<usize> {
    register_agents_in(&lab.client, &lab.dir, vip, phone, n)
}

/// [`register_agents_via`] from the phones in `client`, sipp's files in `dir`.
pub fn register_agents_in(
    client: &Netns,
    dir: &Path,
    vip: std::net::IpAddr,
    phone: std::net::IpAddr,
    n: usize,
) -> Result<usize> {
    let stat = dir.join(format!("register-{}.csv", vip.is_ipv6()));
    let _ = std::fs::remove_file(&stat);
    let out = command_in(client, Path::new("/usr/bin/sipp"))?
        .arg(SocketAddr::from((vip, 5060)).to_string())
        .arg("-sf")
        .arg(sipp_dir().join("register.xml"))
        .args([
            "-i",
            &phone.to_string(),
            "-p",
            "5070",
            "-m",
            &n.to_string(),
            "-r",
            "50",
            "-nostdin",
            "-timeout",
            "10s",
        ])
        .arg("-trace_stat")
        .arg("-stf")
        .arg(&stat)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    let _ = out;
    let rows = read_stats(&stat)?;
    Ok(rows.last().map(|r| r.ok as usize).unwrap_or(0))
}

/// Calls from the agent phones through the VIP (sipp UAC), running in the background.
pub struct Calls {
    child: Child,
    pub stat: PathBuf,
}

/// One row of sipp's periodic statistics (cumulative counts).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StatRow {
    /// Seconds since the epoch.
    pub t: f64,
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
}

pub fn read_stats(path: &Path) -> Result<Vec<StatRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split(';').collect();
    let col = |name: &str| head.iter().position(|h| *h == name);
    let (Some(ct), Some(oc), Some(sc), Some(fc)) = (
        col("CurrentTime"),
        col("OutgoingCall(C)"),
        col("SuccessfulCall(C)"),
        col("FailedCall(C)"),
    ) else {
        bail!("unexpected sipp statistics header");
    };
    let mut rows = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split(';').collect();
        if f.len() <= fc.max(ct) {
            continue;
        }
        // CurrentTime is "date time epoch"; the last field is the epoch.
        let t = f[ct]
            .split_whitespace()
            .last()
            .and_then(|e| e.parse().ok())
            .unwrap_or(0.0);
        rows.push(StatRow {
            t,
            attempted: f[oc].trim().parse().unwrap_or(0),
            ok: f[sc].trim().parse().unwrap_or(0),
            failed: f[fc].trim().parse().unwrap_or(0),
        });
    }
    Ok(rows)
}

impl Calls {
    /// `rate` calls per second, each `hold` long, `total` calls in all.
    pub fn start(lab: &Lab, rate: u32, hold: Duration, total: u32) -> Result<Calls> {
        Calls::start_via(lab, VIP.into(), PHONE.into(), rate, hold, total)
    }

    /// [`Calls::start`] from `phone` through `vip` (either family).
    pub fn start_via(
        lab: &Lab,
        vip: std::net::IpAddr,
        phone: std::net::IpAddr,
        rate: u32,
        hold: Duration,
        total: u32,
    ) -> Result<Calls> {
        Calls::start_in(&lab.client, &lab.dir, vip, phone, rate, hold, total)
    }

    /// [`Calls::start_via`] from the phones in `client`, sipp's files in `dir`.
    pub fn start_in(
        client: &Netns,
        dir: &Path,
        vip: std::net::IpAddr,
        phone: std::net::IpAddr,
        rate: u32,
        hold: Duration,
        total: u32,
    ) -> Result<Calls> {
        let stat = dir.join(format!("calls-{}.csv", vip.is_ipv6()));
        let _ = std::fs::remove_file(&stat);
        let child = command_in(client, Path::new("/usr/bin/sipp"))?
            .arg(SocketAddr::from((vip, 5060)).to_string())
            .args(["-sn", "uac", "-i", &phone.to_string(), "-p", "5071"])
            .args([
                "-r",
                &rate.to_string(),
                "-m",
                &total.to_string(),
                "-d",
                &hold.as_millis().to_string(),
            ])
            .args(["-l", "1000", "-nostdin", "-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat)
            // A call lost in the switchover fails after 4 s instead of SIP's 32 s timer.
            .args(["-recv_timeout", "4000"])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start sipp UAC")?;
        Ok(Calls { child, stat })
    }

    /// Waits (bounded) for the calls to finish.
    pub fn finish(mut self, limit: Duration) -> Result<Vec<StatRow>> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.child.try_wait()?.is_some() {
                return read_stats(&self.stat);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: signalling our own child so it writes its final statistics.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR1) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        read_stats(&self.stat)
    }

    pub fn snapshot(&self) -> Vec<StatRow> {
        read_stats(&self.stat).unwrap_or_default()
    }
}

impl Drop for Calls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls attempted, succeeded and failed in `[from, to)` (epoch seconds), from cumulative rows.
pub fn window(rows: &[StatRow], from: f64, to: f64) -> (u64, u64, u64) {
    let at = |t: f64| {
        rows.iter()
            .rev()
            .find(|r| r.t <= t)
            .copied()
            .unwrap_or_default()
    };
    let (a, b) = (at(from), at(to));
    (b.attempted - a.attempted, b.ok - a.ok, b.failed - a.failed)
}

pub fn epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
