//! The probers. Each runs on its own, sends a probe every interval and reports
//! [`Observation`]s; it never decides up or down itself.

use std::{
    collections::VecDeque,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    sync::mpsc,
    time::{Instant, MissedTickBehavior},
};

use super::{
    sip::{code_is_up, matches, parse_response, OptionsRequest, Probe},
    HardDown, MonitorKey, Observation, Report,
};
use crate::proto::Protocol;

/// Where probers send their reports: any event type a report converts into (the
/// supervisor's, in the daemon).
pub trait ReportSink: From<Report> + Send + 'static {}
impl<E: From<Report> + Send + 'static> ReportSink for E {}

/// What to probe.
#[derive(Clone, Debug)]
pub enum ProbeKind {
    Sip {
        transport: Protocol,
        port: u16,
        request_uri: Option<String>,
        from: Option<String>,
        headers: Vec<String>,
        accept: Vec<u16>,
        reject: Vec<u16>,
    },
    Tcp {
        port: u16,
    },
    Icmp,
}

#[derive(Clone, Debug)]
pub struct ProbeSpec {
    pub key: MonitorKey,
    /// The member's address the instance probes (its IPv6 one for a `key.v6` instance).
    pub target: IpAddr,
    pub interval: Duration,
    /// Also the health's timeout: one value for the prober and for `Health` (see
    /// `ProbeSpec::health`).
    pub timeout: Duration,
    /// BIG-IP `time-until-up` style counts, for `Health`.
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub kind: ProbeKind,
}

impl ProbeSpec {
    /// The health state this monitor instance starts with.
    pub fn health(&self, now: Instant, up: bool) -> super::Health {
        super::Health::new(now, self.timeout, self.rise, self.fall, up)
    }
}

/// Replies that did not count, for the operator.
#[derive(Debug, Default)]
pub struct ProbeStats {
    pub sent: AtomicU64,
    pub malformed: AtomicU64,
    pub unmatched: AtomicU64,
}

fn hard(e: &io::Error) -> Option<HardDown> {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Some(HardDown::PortUnreachable),
        Some(libc::EHOSTUNREACH) | Some(libc::ENETUNREACH) => Some(HardDown::HostUnreachable),
        _ => None,
    }
}

/// Runs one prober until the channel closes.
pub async fn run<E: ReportSink>(
    spec: ProbeSpec,
    tx: mpsc::Sender<E>,
    instance: String,
    stats: Arc<ProbeStats>,
) {
    let r = match &spec.kind {
        ProbeKind::Sip {
            transport: Protocol::Udp,
            ..
        } => sip_udp(&spec, &tx, &instance, &stats).await,
        ProbeKind::Sip {
            transport: Protocol::Tcp,
            ..
        } => sip_tcp(&spec, &tx, &instance, &stats).await,
        ProbeKind::Tcp { port } => tcp_connect(&spec, *port, &tx).await,
        ProbeKind::Icmp => icmp(spec.clone(), tx.clone()).await,
    };
    if let Err(e) = r {
        tracing::error!(target = %spec.target, error = %e, "monitor stopped");
    }
}

/// A probe every `every`; a late tick delays the next ones rather than bursting.
fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

async fn report<E: ReportSink>(tx: &mpsc::Sender<E>, key: MonitorKey, obs: Observation) -> bool {
    tx.send(E::from(Report { key, obs })).await.is_ok()
}

struct Outstanding {
    probe: Probe,
    sent: Instant,
    missed: bool,
}

/// Late replies still count until the probe is `timeout` old; each probe unanswered for a
/// whole interval is reported once as missed.
async fn expire<E: ReportSink>(
    out: &mut VecDeque<Outstanding>,
    spec: &ProbeSpec,
    tx: &mpsc::Sender<E>,
) -> bool {
    let now = Instant::now();
    for o in out.iter_mut() {
        if !o.missed && now >= o.sent + spec.interval {
            o.missed = true;
            if !report(tx, spec.key, Observation::Missed).await {
                return false;
            }
        }
    }
    while out
        .front()
        .is_some_and(|o| now >= o.sent + spec.timeout.max(spec.interval))
    {
        out.pop_front();
    }
    true
}

fn request<'a>(
    spec: &'a ProbeSpec,
    local: SocketAddr,
    target: SocketAddr,
    instance: &'a str,
    cseq: u32,
) -> OptionsRequest<'a> {
    let ProbeKind::Sip {
        transport,
        request_uri,
        from,
        headers,
        ..
    } = &spec.kind
    else {
        unreachable!("SIP probe")
    };
    OptionsRequest {
        transport: transport.name(),
        local,
        target,
        request_uri: request_uri.as_deref(),
        from: from.as_deref(),
        headers,
        instance,
        cseq,
    }
}

fn verdict(spec: &ProbeSpec, code: u16, rtt: Duration) -> Observation {
    let ProbeKind::Sip { accept, reject, .. } = &spec.kind else {
        unreachable!("SIP probe")
    };
    Observation::Reply {
        code,
        up: code_is_up(code, accept, reject),
        rtt,
    }
}

/// Matches a datagram against the outstanding probes.
fn answer(
    out: &mut VecDeque<Outstanding>,
    target: SocketAddr,
    from: SocketAddr,
    data: &[u8],
    stats: &ProbeStats,
) -> Option<(u16, Duration)> {
    let r = match parse_response(data) {
        Ok(r) => r,
        Err(e) => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, error = %e, "malformed reply ignored");
            return None;
        }
    };
    match out
        .iter()
        .position(|o| matches(&o.probe, target, from, &r).is_ok())
    {
        Some(i) => {
            let o = out.remove(i)?;
            Some((r.code, o.sent.elapsed()))
        }
        None => {
            stats.unmatched.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, code = r.code, "unmatched reply ignored");
            None
        }
    }
}

async fn sip_udp<E: ReportSink>(
    spec: &ProbeSpec,
    tx: &mpsc::Sender<E>,
    instance: &str,
    stats: &ProbeStats,
) -> io::Result<()> {
    let ProbeKind::Sip { port, .. } = spec.kind else {
        unreachable!()
    };
    let target = SocketAddr::from((spec.target, port));
    // A connected socket: the kernel reports ICMP port/host unreachable for it, and drops
    // datagrams from any other source.
    let any: IpAddr = if target.is_ipv6() {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    let sock = UdpSocket::bind((any, 0)).await?;
    sock.connect(target).await?;
    let local = sock.local_addr()?;
    let mut tick = ticker(spec.interval);
    let mut out: VecDeque<Outstanding> = VecDeque::new();
    let mut cseq: u32 = 1;
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !expire(&mut out, spec, tx).await {
                    return Ok(());
                }
                let probe = request(spec, local, target, instance, cseq).build();
                cseq = cseq.wrapping_add(1).max(1);
                stats.sent.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = sock.send(&probe.bytes).await {
                    if let Some(h) = hard(&e) {
                        if !report(tx, spec.key, Observation::Hard(h)).await { return Ok(()); }
                    }
                    continue;
                }
                out.push_back(Outstanding { probe, sent: Instant::now(), missed: false });
            }
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    if let Some((code, rtt)) = answer(&mut out, target, from, &buf[..n], stats) {
                        if !report(tx, spec.key, verdict(spec, code, rtt)).await { return Ok(()); }
                    }
                }
                Err(e) => {
                    if let Some(h) = hard(&e) {
                        out.clear();
                        if !report(tx, spec.key, Observation::Hard(h)).await { return Ok(()); }
                    }
                }
            }
        }
    }
}

/// Reads one SIP message (headers and Content-Length body) from a stream.
async fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    loop {
        // Skip CRLF keep-alives.
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let body = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .or_else(|| l.strip_prefix("l:"))
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let total = end + 4 + body;
            if buf.len() >= total {
                return Ok(buf.drain(..total).collect());
            }
        }
        if buf.len() > 65536 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "SIP message too long",
            ));
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn sip_tcp<E: ReportSink>(
    spec: &ProbeSpec,
    tx: &mpsc::Sender<E>,
    instance: &str,
    stats: &ProbeStats,
) -> io::Result<()> {
    let ProbeKind::Sip { port, .. } = spec.kind else {
        unreachable!()
    };
    let target = SocketAddr::from((spec.target, port));
    let mut tick = ticker(spec.interval);
    let mut conn: Option<(TcpStream, Vec<u8>)> = None;
    let mut cseq: u32 = 1;
    loop {
        tick.tick().await;
        let started = Instant::now();
        let obs = async {
            if conn.is_none() {
                let s = tokio::time::timeout(spec.interval, TcpStream::connect(target))
                    .await
                    .map_err(|_| None)?
                    .map_err(|e| {
                        if e.kind() == io::ErrorKind::ConnectionRefused {
                            Some(HardDown::Refused)
                        } else {
                            hard(&e)
                        }
                    })?;
                conn = Some((s, Vec::new()));
            }
            let (s, buf) = conn.as_mut().ok_or(None)?;
            let local = s.local_addr().map_err(|_| None)?;
            let probe = request(spec, local, target, instance, cseq).build();
            cseq = cseq.wrapping_add(1).max(1);
            stats.sent.fetch_add(1, Ordering::Relaxed);
            s.write_all(&probe.bytes).await.map_err(|_| None)?;
            let deadline = started + spec.interval;
            loop {
                let msg = tokio::time::timeout_at(deadline, read_message(s, buf))
                    .await
                    .map_err(|_| None)?
                    .map_err(|_| None)?;
                let mut out = VecDeque::from([Outstanding {
                    probe: probe.clone(),
                    sent: started,
                    missed: false,
                }]);
                if let Some((code, rtt)) = answer(&mut out, target, target, &msg, stats) {
                    return Ok::<_, Option<HardDown>>(verdict(spec, code, rtt));
                }
            }
        }
        .await;
        let obs = match obs {
            Ok(o) => o,
            Err(h) => {
                conn = None;
                h.map(Observation::Hard).unwrap_or(Observation::Missed)
            }
        };
        if !report(tx, spec.key, obs).await {
            return Ok(());
        }
    }
}

async fn tcp_connect<E: ReportSink>(
    spec: &ProbeSpec,
    port: u16,
    tx: &mpsc::Sender<E>,
) -> io::Result<()> {
    let target = SocketAddr::from((spec.target, port));
    let mut tick = ticker(spec.interval);
    loop {
        tick.tick().await;
        let t = Instant::now();
        let obs =
            match tokio::time::timeout(spec.interval.min(spec.timeout), TcpStream::connect(target))
                .await
            {
                Ok(Ok(_s)) => Observation::Reply {
                    code: 0,
                    up: true,
                    rtt: t.elapsed(),
                },
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    Observation::Hard(HardDown::Refused)
                }
                Ok(Err(e)) => hard(&e)
                    .map(Observation::Hard)
                    .unwrap_or(Observation::Missed),
                Err(_) => Observation::Missed,
            };
        if !report(tx, spec.key, obs).await {
            return Ok(());
        }
    }
}

/// ICMP echo over a raw socket, in a thread of its own.
async fn icmp<E: ReportSink>(spec: ProbeSpec, tx: mpsc::Sender<E>) -> io::Result<()> {
    tokio::task::spawn_blocking(move || icmp_blocking(&spec, &tx))
        .await
        .map_err(io::Error::other)?
}

fn icmp_blocking<E: ReportSink>(spec: &ProbeSpec, tx: &mpsc::Sender<E>) -> io::Result<()> {
    use socket2::{Domain, Protocol as SockProto, SockAddr, Socket, Type};
    let v6 = spec.target.is_ipv6();
    let sock = if v6 {
        Socket::new(Domain::IPV6, Type::RAW, Some(SockProto::ICMPV6))?
    } else {
        Socket::new(Domain::IPV4, Type::RAW, Some(SockProto::ICMPV4))?
    };
    // Echo request and reply, and the error that quotes a dead host's echo (destination
    // unreachable): ICMP or ICMPv6 (RFC 4443).
    let (request, reply, unreachable) = if v6 { (128, 129, 1) } else { (8, 0, 3) };
    let dst = SockAddr::from(SocketAddr::new(spec.target, 0));
    let id: u16 = rand::random();
    let mut seq: u16 = 0;
    let send_obs = |obs| {
        tx.blocking_send(E::from(Report { key: spec.key, obs }))
            .is_ok()
    };
    loop {
        seq = seq.wrapping_add(1);
        let mut pkt = [0u8; 16];
        pkt[0] = request;
        pkt[4..6].copy_from_slice(&id.to_be_bytes());
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        pkt[8..16].copy_from_slice(b"sipvip\0\0");
        if !v6 {
            // The kernel fills in an ICMPv6 checksum (it covers the pseudo-header); ICMP's
            // is ours.
            let c = crate::monitor::probe::inet_checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
        }
        let sent = std::time::Instant::now();
        let mut obs = Observation::Missed;
        if let Err(e) = sock.send_to(&pkt, &dst) {
            if let Some(h) = hard(&e) {
                obs = Observation::Hard(h);
            }
        } else {
            while obs == Observation::Missed {
                let left = spec.interval.saturating_sub(sent.elapsed());
                if left.is_zero() {
                    break;
                }
                sock.set_read_timeout(Some(left.max(Duration::from_micros(1))))?;
                let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    break;
                };
                // SAFETY: recv_from initialised the first n bytes.
                let b: Vec<u8> = buf[..n]
                    .iter()
                    .map(|x| unsafe { x.assume_init() })
                    .collect();
                // An IPv4 raw socket delivers the IP header too; an IPv6 one does not.
                let icmp = if v6 {
                    &b[..]
                } else {
                    let ihl = usize::from(b.first().copied().unwrap_or(0) & 15) * 4;
                    b.get(ihl..).unwrap_or(&[])
                };
                if icmp.len() < 8 {
                    continue;
                }
                let src = from.as_socket().map(|a| a.ip());
                let our = |i: &[u8]| {
                    i.len() >= 8 && i[4..6] == id.to_be_bytes() && i[6..8] == seq.to_be_bytes()
                };
                if icmp[0] == reply && src == Some(spec.target) && our(icmp) {
                    obs = Observation::Reply {
                        code: 0,
                        up: true,
                        rtt: sent.elapsed(),
                    };
                } else if icmp[0] == unreachable {
                    // The quoted echo: its destination must be the member.
                    let q = &icmp[8..];
                    let (qdst, ql4) = match spec.target {
                        IpAddr::V6(t) if q.len() >= 48 => (q[24..40] == t.octets(), &q[40..]),
                        IpAddr::V4(t) if q.len() >= 28 => {
                            let qihl = usize::from(q[0] & 15) * 4;
                            (q[16..20] == t.octets(), q.get(qihl..).unwrap_or(&[]))
                        }
                        _ => (false, &q[..0]),
                    };
                    if qdst && our(ql4) {
                        obs = Observation::Hard(HardDown::HostUnreachable);
                    }
                }
            }
        }
        if !send_obs(obs) {
            return Ok(());
        }
        let left = spec.interval.saturating_sub(sent.elapsed());
        std::thread::sleep(left);
    }
}

/// The Internet checksum.
pub fn inet_checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}
