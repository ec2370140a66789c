//! Failover timing for `cargo xtask bench`: N failovers in the lab at the seed's monitor
//! settings and at an aggressive one, for a dead SIP process (ICMP) and a dead host (link
//! down), with the time from the primary's death to the flip and the packets a steady probe
//! stream loses.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::{
    lab::{Lab, PHONE, VIP},
    scenario::{self, epoch},
};

/// Sends OPTIONS to the VIP every `every` and records which were answered.
struct Stream {
    sent: Arc<Mutex<BTreeMap<u64, f64>>>,
    answered: Arc<Mutex<BTreeMap<u64, f64>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn start(lab: &Lab, every: Duration) -> Result<Stream> {
        let sock = {
            let _g = lab.client.enter()?;
            UdpSocket::bind(SocketAddr::from((PHONE, 5095)))?
        };
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let rx = sock.try_clone()?;
        let (sent, answered) = (
            Arc::new(Mutex::new(BTreeMap::new())),
            Arc::new(Mutex::new(BTreeMap::new())),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (sent.clone(), stop.clone());
        let tx_thread = std::thread::spawn(move || {
            let mut seq = 0u64;
            while !st2.load(Ordering::Relaxed) {
                seq += 1;
                let m = format!(
                    "OPTIONS sip:{VIP}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE}:5095;branch=z9hG4bK-st{seq}\r\n\
                     From: <sip:probe@{PHONE}>;tag=s\r\nTo: <sip:{VIP}>\r\nCall-ID: stream-{seq}\r\nCSeq: 1 OPTIONS\r\n\
                     Content-Length: 0\r\n\r\n"
                );
                s2.lock().unwrap().insert(seq, epoch());
                let _ = sock.send_to(m.as_bytes(), (VIP, 5060));
                std::thread::sleep(every);
            }
        });
        let (a2, st3) = (answered.clone(), stop.clone());
        let rx_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st3.load(Ordering::Relaxed) {
                if let Ok((n, _)) = rx.recv_from(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if let Some(seq) = text
                        .split("Call-ID: stream-")
                        .nth(1)
                        .and_then(|r| r.split("\r\n").next()?.parse::<u64>().ok())
                    {
                        a2.lock().unwrap().insert(seq, epoch());
                    }
                }
            }
        });
        Ok(Stream {
            sent,
            answered,
            stop,
            threads: vec![tx_thread, rx_thread],
        })
    }

    /// Probes sent in `[from, to]` that were never answered.
    fn lost(&self, from: f64, to: f64) -> u64 {
        let sent = self.sent.lock().unwrap();
        let answered = self.answered.lock().unwrap();
        sent.iter()
            .filter(|(s, t)| **t >= from && **t <= to && !answered.contains_key(s))
            .count() as u64
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Seconds since the epoch of a tracing timestamp such as `2026-11-22T03:16:06.961158Z`.
pub fn parse_ts(ts: &str) -> Option<f64> {
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, mi, s) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + s)
}

/// The daemon's failover events to `to` (epoch seconds), from its log.
fn flips_to(lab: &Lab, to: &str) -> Vec<f64> {
    lab.daemon_log(0)
        .lines()
        .filter(|l| l.contains("active member changed") && l.contains(&format!("to={to}")))
        .filter_map(|l| parse_ts(l.split_whitespace().next()?))
        .collect()
}

fn dist(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return json!(null);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    json!({"n": v.len(), "min": v[0], "median": q(0.5), "p99": q(0.99), "max": v[v.len() - 1]})
}

/// Runs `n` failovers per setting and mode.
pub fn run_all(n: usize) -> Result<Value> {
    let mut out = Vec::new();
    for (label, interval, timeout) in [
        ("seed 1s/4s", "1s", "4s"),
        ("aggressive 100ms/250ms", "100ms", "250ms"),
    ] {
        let mut lab = Lab::new("fb")?;
        scenario::start_sip_server(&mut lab, "primary")?;
        scenario::start_sip_server(&mut lab, "backup")?;
        let cfg = lab.write_config(&lab.config(interval, timeout, ""))?;
        lab.start_daemon(&cfg)?;
        if lab
            .wait_active("primary", Duration::from_secs(10))
            .is_none()
        {
            bail!("the primary never became active");
        }
        let stream = Stream::start(&lab, Duration::from_millis(5))?;
        for mode in ["process down (ICMP)", "host down (link)"] {
            let (mut times, mut lost) = (Vec::new(), Vec::new());
            for _ in 0..n {
                crate::netns::interrupted()?;
                let before = flips_to(&lab, "backup").len();
                let killed = epoch();
                if mode.starts_with("process") {
                    lab.stop("sipp-primary", libc::SIGKILL)?;
                } else {
                    lab.primary.exec("ip link set p0 down")?;
                }
                let flipped = lab.wait_for(Duration::from_secs(15), || {
                    flips_to(&lab, "backup").len() > before
                });
                if flipped.is_none() {
                    bail!("{label} {mode}: no failover within 15 s");
                }
                std::thread::sleep(Duration::from_millis(300));
                let t = flips_to(&lab, "backup").last().copied().unwrap_or(killed);
                times.push(((t - killed) * 1000.0).max(0.0));
                lost.push(stream.lost(killed - 0.01, t + 0.2) as f64);
                // Restore the primary and fail back by hand.
                if mode.starts_with("process") {
                    scenario::start_sip_server(&mut lab, "primary")?;
                } else {
                    lab.primary.exec("ip link set p0 up")?;
                }
                lab.wait_for(Duration::from_secs(15), || lab.member_up("primary"));
                let _ = lab.sipvip(&["failover", "vsVipHa01", "--to", "primary"])?;
                lab.wait_active("primary", Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(200));
            }
            println!(
                "  {label:<24} {mode:<20} flip ms {}  lost probes {}",
                dist(times.clone()),
                dist(lost.clone())
            );
            out.push(
                json!({"setting": label, "interval": interval, "timeout": timeout, "mode": mode,
                "death_to_flip_ms": dist(times), "lost_probes_5ms_stream": dist(lost)}),
            );
        }
        drop(stream);
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert_eq!(super::parse_ts("1970-01-01T00:00:01.5Z"), Some(1.5));
        assert_eq!(
            super::parse_ts("2026-11-22T03:16:06.000000Z"),
            Some(1_795_317_366.0)
        );
    }
}
