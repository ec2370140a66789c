//! `cargo xtask lab`: a contact-centre network in namespaces, with real SIP software, and the
//! HA switchover the seed is about. Tears everything down on exit, Ctrl-C included, unless
//! `--keep` is given.

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use sipvip_tests::{
    lab::{Lab, BACKUP, PRIMARY, TLIB, VIP},
    scenario::{self, epoch, window, Calls},
};

fn stopped() -> Result<()> {
    sipvip_tests::netns::interrupted()
}

struct Args {
    keep: bool,
    fast: bool,
    rate: u32,
}

fn args() -> Args {
    let mut a = Args {
        keep: false,
        fast: false,
        rate: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--keep" => a.keep = true,
            "--fast" => a.fast = true,
            "--rate" => a.rate = it.next().and_then(|r| r.parse().ok()).unwrap_or(10),
            "-h" | "--help" => {
                println!(
                    "sipvip-lab [--keep] [--fast] [--rate CALLS_PER_S]\n  --keep  leave the lab up and print how to enter and remove it\n  \
                     --fast  monitor at 200 ms / 1 s instead of the seed's 1 s / 4 s"
                );
                std::process::exit(0);
            }
            other => {
                eprintln!("unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    a
}

fn main() -> Result<()> {
    let a = args();
    sipvip_tests::netns::catch_interrupts();
    let mut lab = Lab::new("lab")?;
    let r = run(&mut lab, &a);
    if a.keep && r.is_ok() {
        println!("\nThe lab stays up. Enter a namespace:");
        for (role, ns) in [
            ("gateway", &lab.gw),
            ("client (groups A-D)", &lab.client),
            ("primary", &lab.primary),
            ("backup", &lab.backup),
        ] {
            println!("  {role:<20} ip netns exec {} bash", ns.name);
        }
        println!(
            "  status               {} status --socket {}",
            sipvip_tests::lab::sipvip_bin().display(),
            lab.socket().display()
        );
        println!("Tear it all down:\n  {}", lab.teardown_command());
        lab.keep();
        return Ok(());
    }
    drop(lab);
    println!("lab torn down: namespaces, links, pins and processes removed");
    r
}

fn run(lab: &mut Lab, a: &Args) -> Result<()> {
    let (interval, timeout) = if a.fast {
        ("200ms", "1s")
    } else {
        ("1s", "4s")
    };
    println!("sipvip lab: gateway, client (phones {PHONE_DESC}), primary {PRIMARY}, backup {BACKUP}, VIP {VIP}");
    println!("monitor: SIP OPTIONS over UDP, interval {interval}, timeout {timeout}");
    scenario::start_sip_server(lab, "primary")?;
    // The backup ignores UDP until it is promoted, as a Genesys backup does.
    let silent = {
        let _g = lab.backup.enter()?;
        UdpSocket::bind((BACKUP, 5060))?
    };
    let cfg = lab.write_config(&lab.config(interval, timeout, ""))?;
    lab.start_daemon(&cfg)?;
    let up = lab.wait_active("primary", Duration::from_secs(10));
    if up.is_none() {
        bail!(
            "the primary never became active; daemon log:\n{}",
            lab.daemon_log(0)
        );
    }
    stopped()?;
    println!("\n== sipvip status ==\n{}", status_table(lab));

    println!("== device groups, primary active ==");
    for g in scenario::device_groups(lab, PRIMARY)? {
        println!("  {g}");
    }
    let registered = scenario::register_agents(lab, 20)?;
    println!("\n== 20 agents register through the VIP: {registered} registered ==");
    stopped()?;

    // Group D holds a T-Lib connection to the primary's physical address through it all.
    let tserver = {
        let _g = lab.primary.enter()?;
        std::net::TcpListener::bind((PRIMARY, 3001))?
    };
    let mut tlib = {
        let _g = lab.client.enter()?;
        sipvip_tests::netns::tcp_connect_from(
            TLIB,
            std::net::SocketAddrV4::new(PRIMARY, 3001),
            Duration::from_secs(2),
        )?
    };
    tlib.set_read_timeout(Some(Duration::from_secs(2)))?;
    let (mut tsrv, _) = tserver.accept()?;

    // Calls throughout, the primary dies at `kill_at`.
    let before_s = 6.0;
    let after_s = 8.0;
    let hold = Duration::from_millis(1000);
    let total = (f64::from(a.rate) * (before_s + after_s + 6.0)) as u32;
    println!(
        "\n== calls: {} per second, {} ms each, from the agent phones to the VIP ==",
        a.rate,
        hold.as_millis()
    );
    let calls = Calls::start(lab, a.rate, hold, total)?;
    let start = epoch();
    let t0 = Instant::now();
    let live = |lab: &Lab, calls: &Calls, phase: &str| {
        let rows = calls.snapshot();
        let last = rows.last().copied().unwrap_or_default();
        println!(
            "  t={:>4.1}s {phase:<7} active={:<8} calls attempted {:>4} ok {:>4} failed {:>3}",
            t0.elapsed().as_secs_f64(),
            lab.active().ok().flatten().unwrap_or_else(|| "none".into()),
            last.attempted,
            last.ok,
            last.failed
        );
    };
    while t0.elapsed() < Duration::from_secs_f64(before_s) {
        stopped()?;
        std::thread::sleep(Duration::from_secs(1));
        live(lab, &calls, "before");
    }

    println!("\n== switchover: the primary's SIP process is killed; the backup is promoted ==");
    drop(silent);
    let kill_epoch = epoch();
    let killed = Instant::now();
    lab.stop("sipp-primary", libc::SIGKILL)?;
    scenario::start_sip_server(lab, "backup")?;
    let flipped = lab.wait_active("backup", Duration::from_secs(10));
    let failover = flipped.map(|_| killed.elapsed());
    let flip_epoch = epoch();
    match failover {
        Some(d) => println!(
            "  VIP {VIP} now steers to the backup, {:.0} ms after the kill",
            d.as_secs_f64() * 1000.0
        ),
        None => println!("  the VIP did NOT move to the backup within 10 s"),
    }
    let during_end = flip_epoch + 2.0;
    while t0.elapsed() < Duration::from_secs_f64(before_s + after_s) {
        stopped()?;
        std::thread::sleep(Duration::from_secs(1));
        live(
            lab,
            &calls,
            if epoch() < during_end {
                "during"
            } else {
                "after"
            },
        );
    }
    let rows = calls.finish(Duration::from_secs(15))?;
    let end = epoch() + 1.0;

    println!("\n== results ==");
    match failover {
        Some(d) => println!(
            "failover time (primary killed -> VIP on the backup): {:.0} ms",
            d.as_secs_f64() * 1000.0
        ),
        None => println!("failover time: no failover"),
    }
    if let Some(line) = lab
        .daemon_log(0)
        .lines()
        .find(|l| l.contains("active member changed") && l.contains("to=backup"))
    {
        println!("daemon event: {}", line.trim());
    }
    println!("calls per phase (attempted: by start; ok/failed: by end)   attempted     ok  failed");
    for (name, from, to) in [
        ("before", start - 1.0, kill_epoch),
        ("during", kill_epoch, during_end),
        ("after", during_end, end),
    ] {
        let (att, ok, failed) = window(&rows, from, to);
        println!("  {name:<56} {att:>9} {ok:>6} {failed:>7}");
    }
    let tlib_ok = {
        use std::io::{Read, Write};
        let mut b = [0u8; 32];
        tsrv.write_all(b"EventDNISChanged").is_ok()
            && tlib
                .read(&mut b)
                .map(|n| &b[..n] == b"EventDNISChanged")
                .unwrap_or(false)
            && tlib.peer_addr().map(|p| p.ip() == PRIMARY).unwrap_or(false)
    };
    println!(
        "T-Lib connection {TLIB} -> {PRIMARY}:3001, opened before the switchover: {}",
        if tlib_ok {
            "still up, physical address both ways"
        } else {
            "BROKEN"
        }
    );
    println!("\n== device groups, backup active ==");
    for g in scenario::device_groups(lab, BACKUP)? {
        println!("  {g}");
    }
    println!("\n== sipvip status ==\n{}", status_table(lab));
    Ok(())
}

const PHONE_DESC: &str =
    "198.18.1.10, SBC 198.18.1.20, T-Lib 198.18.1.30, config server 198.18.1.50";

fn status_table(lab: &Lab) -> String {
    lab.sipvip(&["status"])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("(status failed: {e})"))
}
