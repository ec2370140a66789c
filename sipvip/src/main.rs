//! The sipvip command line.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use sipvip::{
    api::{Request, Response},
    config::{default_pin_dir, default_socket, Config},
};

mod daemon;

#[derive(Parser)]
#[command(
    name = "sipvip",
    version,
    about = "XDP VIP steering, SNAT and failover for a hot-standby SIP server pair"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon: load or adopt the pinned datapath, monitor the members, fail over.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Replace a pinned datapath whose layout differs from this build's.
        #[arg(long)]
        replace: bool,
        /// Log as JSON lines.
        #[arg(long)]
        json_logs: bool,
        /// Load the datapath built with per-packet debug logs (aya-log) and print them.
        /// Never for production traffic: one log line per packet.
        #[arg(long)]
        datapath_debug: bool,
        /// Reload when the config file's content changes, checked every second (a
        /// Kubernetes ConfigMap volume swaps its `..data` symlink). A broken new file is
        /// rejected like any reload: the running configuration stays.
        #[arg(long)]
        watch_config: bool,
    },
    /// Validate a config file and print every problem.
    Check { file: PathBuf },
    /// Set the node's kernel settings the datapath needs for this config (accept_local,
    /// rp_filter, ip_forward_use_pmtu), then exit. The daemon sets them too; in a container,
    /// where /proc/sys is read-only, a privileged init container runs this first.
    NodeSysctls {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Detach the datapath and remove its pins.
    Down {
        /// The bpffs directory (default: the config's admin.pin_dir, else /sys/fs/bpf/sipvip).
        #[arg(long)]
        pin_dir: Option<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Show VIPs, members, monitors and counters.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_os_t = default_socket())]
        socket: PathBuf,
    },
    /// Force a member offline (BIG-IP "Forced Offline") or enable it again.
    Member {
        #[arg(value_parser = ["disable", "enable"])]
        action: String,
        name: String,
        #[arg(long, default_value_os_t = default_socket())]
        socket: PathBuf,
    },
    /// Make MEMBER the VIP's active member now.
    Failover {
        vip: String,
        #[arg(long)]
        to: String,
        #[arg(long, default_value_os_t = default_socket())]
        socket: PathBuf,
    },
    /// Reload the daemon's config (as SIGHUP does), reporting whether it was accepted.
    Reload {
        #[arg(long, default_value_os_t = default_socket())]
        socket: PathBuf,
    },
    /// Translate a BIG-IP bigip.conf (tmsh) into a sipvip config, with a report of what was
    /// translated, approximated and ignored.
    ImportBigip {
        file: PathBuf,
        /// Only objects of this partition (folder), e.g. Common.
        #[arg(long)]
        partition: Option<String>,
        /// Write the config here instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Print the map layout the embedded datapath uses.
    Layout,
    /// keepalived's notify hooks: this gateway's VRRP state (ha.mode = "keepalived"). As
    /// master the daemon announces every VIP at once, and on every failover and refresh.
    HaState {
        #[arg(value_parser = ["master", "backup", "fault", "stop"])]
        state: String,
        #[arg(long, default_value_os_t = default_socket())]
        socket: PathBuf,
    },
    /// Send gratuitous ARP and unsolicited Neighbor Advertisements for every VIP now.
    Announce {
        #[arg(long, default_value_os_t = default_socket())]
        socket: PathBuf,
    },
    /// Show what the datapath does to each packet, live: one line per packet (or JSON, or a
    /// pcapng capture), filtered in the kernel; ends after --count events or --duration, or
    /// when interrupted. One trace at a time.
    Trace {
        /// Packets to or from this VIP (before or after translation).
        #[arg(long)]
        vip: Option<String>,
        /// Packets to or from this member.
        #[arg(long)]
        member: Option<String>,
        /// Packets with an address in ADDR[/LEN].
        #[arg(long)]
        host: Option<String>,
        /// Packets with this source or destination port (before or after translation).
        #[arg(long)]
        port: Option<u16>,
        #[arg(long, value_parser = ["udp", "tcp", "icmp"])]
        proto: Option<String>,
        /// Only these reasons (labels as in `sipvip stats`) or classes (handled, pass,
        /// drop); repeatable.
        #[arg(long = "reason")]
        reasons: Vec<String>,
        /// in: the external side (toward the members); out: from the members.
        #[arg(long, value_parser = ["in", "out"])]
        direction: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long, e.g. 10s.
        #[arg(long)]
        duration: Option<String>,
        /// Bytes of each frame captured (before and after the rewrite each).
        #[arg(long, default_value_t = sipvip::trace::DEFAULT_SNAP)]
        snap: u32,
        /// Events per second on each CPU, limited in the kernel (the rest counted).
        #[arg(long, default_value_t = sipvip::trace::DEFAULT_RATE)]
        rate: u32,
        /// JSON lines instead of human lines.
        #[arg(long)]
        json: bool,
        /// Also write the frames (before and after) to this pcapng file.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// Decode each packet's SIP start line and Call-ID.
        #[arg(long)]
        sip: bool,
        /// Only the SIP messages of this Call-ID (implies --sip; filtered here, after the
        /// kernel's filters: name --port to keep the rest out of the kernel's events).
        #[arg(long)]
        call_id: Option<String>,
        #[arg(long, default_value_os_t = default_socket())]
        socket: PathBuf,
    },
    /// Exit 0 when the daemon answers and its datapath is attached with readable maps, else
    /// 1 with the reason (keepalived's track_script).
    Health {
        #[arg(long, default_value_os_t = default_socket())]
        socket: PathBuf,
    },
    /// Print the keepalived.conf that makes this gateway one of an active/standby pair with
    /// this config (ha.mode = "keepalived").
    KeepalivedConfig {
        #[arg(long, short)]
        config: PathBuf,
        /// This gateway's VRRP priority (1-254): the higher starts as master.
        #[arg(long, default_value_t = 100)]
        priority: u8,
        /// The external interface's virtual router id; internal interfaces take the next.
        #[arg(long, default_value_t = 51)]
        router_id: u8,
        /// VRRP advertisement interval, e.g. 200ms or 1s (failover after about 3 of them).
        #[arg(long, default_value = "1s")]
        advert: String,
        /// A floating address, IFACE=ADDR/LEN (the members' default gateway on an internal
        /// interface, the routers' next hop on the external one), besides `ha.floating`'s;
        /// repeatable.
        #[arg(long)]
        floating: Vec<String>,
        /// The sipvip binary keepalived runs (default: this one).
        #[arg(long)]
        sipvip: Option<PathBuf>,
    },
}

fn ask(socket: &PathBuf, req: &Request) -> Result<Response> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connect to the daemon at {}", socket.display()))?;
    let mut line = serde_json::to_string(req)?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    let mut resp = String::new();
    BufReader::new(s).read_line(&mut resp)?;
    serde_json::from_str(&resp).context("daemon reply")
}

/// How `sipvip trace` shows what it gets, and when it stops.
struct TraceOutput {
    count: Option<u64>,
    duration: Option<std::time::Duration>,
    json: bool,
    pcap: Option<PathBuf>,
    sip: bool,
    call_id: Option<String>,
}

/// Runs a trace on the daemon's control socket until `o.count` events or `o.duration`; the
/// daemon removes the filter when the connection closes, however this process ends.
fn trace(socket: &PathBuf, req: &sipvip::trace::TraceRequest, o: TraceOutput) -> Result<ExitCode> {
    use sipvip::trace::Line;
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connect to the daemon at {}", socket.display()))?;
    let mut line = serde_json::to_string(&Request::Trace(req.clone()))?;
    line.push('\n');
    s.write_all(line.as_bytes())?;
    s.set_read_timeout(Some(std::time::Duration::from_millis(200)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let started = std::time::Instant::now();
    let mut buf = String::new();
    let mut answered = false;
    let mut pcap = match &o.pcap {
        Some(p) => Some(
            sipvip::trace::Pcap::new(
                std::io::BufWriter::new(
                    std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?,
                ),
                req.snap.unwrap_or(sipvip::trace::DEFAULT_SNAP),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        None => None,
    };
    let (mut shown, mut counts) = (0u64, None);
    let mut closing: Option<std::time::Instant> = None;
    let out = std::io::stdout();
    let mut out = out.lock();
    loop {
        let done = o.count.is_some_and(|c| shown >= c)
            || o.duration.is_some_and(|d| started.elapsed() >= d);
        if done && closing.is_none() {
            // The daemon ends the trace, removes its filter and sends its last counts.
            let _ = s.shutdown(std::net::Shutdown::Write);
            closing = Some(std::time::Instant::now());
        }
        if closing.is_some_and(|c| c.elapsed() > std::time::Duration::from_secs(3)) {
            break;
        }
        match r.read_line(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e).context("read from the daemon"),
        }
        let text = std::mem::take(&mut buf);
        if !answered {
            answered = true;
            let resp: Response = serde_json::from_str(&text).context("daemon reply")?;
            if !resp.ok {
                eprintln!("{}", resp.error.unwrap_or_else(|| "refused".into()));
                return Ok(ExitCode::FAILURE);
            }
            continue;
        }
        match serde_json::from_str::<Line>(&text) {
            Ok(Line::Event(rec)) => {
                if closing.is_some() {
                    continue;
                }
                let sip = o
                    .sip
                    .then(|| sipvip::trace::sip(&rec.frame_bytes()))
                    .flatten();
                if let Some(want) = &o.call_id {
                    if sip.as_ref().and_then(|(_, c)| c.as_deref()) != Some(want.as_str()) {
                        continue;
                    }
                }
                if o.json {
                    writeln!(out, "{}", text.trim_end())?;
                } else {
                    let extra = match &sip {
                        Some((start, call)) => format!(
                            "  \"{start}\"{}",
                            call.as_deref()
                                .map(|c| format!(" call-id={c}"))
                                .unwrap_or_default()
                        ),
                        None => String::new(),
                    };
                    writeln!(out, "{}{extra}", rec.line)?;
                }
                if let Some(p) = &mut pcap {
                    p.write(&rec).map_err(|e| anyhow::anyhow!("pcap: {e}"))?;
                }
                shown += 1;
            }
            Ok(c @ Line::Counts { .. }) => counts = Some(c),
            Err(e) => eprintln!("unreadable trace line: {e}"),
        }
    }
    out.flush()?;
    if let Some(p) = &mut pcap {
        p.flush().map_err(|e| anyhow::anyhow!("pcap: {e}"))?;
    }
    if let Some(Line::Counts {
        matched,
        emitted,
        rate_limited,
        lost,
    }) = counts
    {
        eprintln!(
            "{shown} events shown; the datapath matched {matched}, sent {emitted}, dropped {rate_limited} over the rate limit and lost {lost} (ring buffer full)"
        );
    } else {
        eprintln!("{shown} events shown");
    }
    Ok(ExitCode::SUCCESS)
}

fn simple(socket: &PathBuf, req: Request) -> Result<ExitCode> {
    simple_reply(ask(socket, &req)?)
}

fn simple_reply(r: Response) -> Result<ExitCode> {
    match (r.ok, r.message, r.error) {
        (true, m, _) => {
            println!("{}", m.unwrap_or_else(|| "ok".into()));
            Ok(ExitCode::SUCCESS)
        }
        (false, _, e) => {
            eprintln!("{}", e.unwrap_or_else(|| "failed".into()));
            Ok(ExitCode::FAILURE)
        }
    }
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run {
            config,
            replace,
            json_logs,
            datapath_debug,
            watch_config,
        } => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into());
            if json_logs {
                tracing_subscriber::fmt()
                    .json()
                    .with_env_filter(filter)
                    .with_writer(std::io::stderr)
                    .init();
            } else {
                use std::io::IsTerminal;
                tracing_subscriber::fmt()
                    .with_env_filter(filter)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .init();
            }
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(daemon::run(&config, replace, datapath_debug, watch_config))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { file } => match Config::load(&file) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} VIP(s), {} monitor(s), {} exclusion(s))",
                    file.display(),
                    cfg.vips.len(),
                    cfg.monitors.len(),
                    cfg.snat.exclusions.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprint!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Cmd::NodeSysctls { config } => {
            let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut failed = false;
            for s in sipvip::plan::node_sysctls(&cfg) {
                match sipvip::plan::apply_sysctl(&s) {
                    Ok(true) => println!("{} = {} (set)", s.path, s.value),
                    Ok(false) => println!("{} = {} (already)", s.path, s.value),
                    Err(e) => {
                        eprintln!("{}: cannot set {}: {e}", s.path, s.value);
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Down { pin_dir, config } => {
            let dir = match (pin_dir, config) {
                (Some(d), _) => d,
                (None, Some(c)) => {
                    Config::load(&c)
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .admin
                        .pin_dir
                }
                (None, None) => default_pin_dir(),
            };
            let removed = sipvip::datapath::Datapath::remove_pins(&dir)?;
            if removed.is_empty() {
                println!("nothing pinned in {}", dir.display());
            } else {
                println!(
                    "detached and removed {} pins from {}",
                    removed.len(),
                    dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json, socket } => {
            let r = ask(&socket, &Request::Status)?;
            let Some(s) = r.status else {
                bail!(r.error.unwrap_or_else(|| "no status".into()))
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", sipvip::api::table(&s));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Member {
            action,
            name,
            socket,
        } => {
            let req = if action == "disable" {
                Request::Disable { member: name }
            } else {
                Request::Enable { member: name }
            };
            simple(&socket, req)
        }
        Cmd::Failover { vip, to, socket } => simple(&socket, Request::Failover { vip, to }),
        Cmd::Reload { socket } => simple(&socket, Request::Reload),
        Cmd::ImportBigip {
            file,
            partition,
            out,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("read {}", file.display()))?;
            let imp = match sipvip::bigip::import(&text, partition.as_deref()) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return Ok(ExitCode::FAILURE);
                }
            };
            eprint!("{}", imp.report);
            match &out {
                Some(p) => std::fs::write(p, &imp.toml)
                    .with_context(|| format!("write {}", p.display()))?,
                None => print!("{}", imp.toml),
            }
            // The result must pass `sipvip check`.
            if let Err(e) = Config::parse(&imp.toml, "imported config") {
                eprint!("{e}");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::HaState { state, socket } => simple(&socket, Request::HaState { state }),
        Cmd::Announce { socket } => simple(&socket, Request::Announce),
        Cmd::Trace {
            vip,
            member,
            host,
            port,
            proto,
            reasons,
            direction,
            count,
            duration,
            snap,
            rate,
            json,
            pcap,
            sip,
            call_id,
            socket,
        } => {
            let req = sipvip::trace::TraceRequest {
                vip,
                member,
                host,
                port,
                proto,
                reasons,
                direction,
                snap: Some(snap),
                rate: Some(rate),
            };
            let duration = duration
                .map(|d| sipvip::config::parse_duration(&d))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--duration {e}"))?;
            trace(
                &socket,
                &req,
                TraceOutput {
                    count,
                    duration,
                    json,
                    pcap,
                    sip: sip || call_id.is_some(),
                    call_id,
                },
            )
        }
        Cmd::Health { socket } => match ask(&socket, &Request::Health) {
            Ok(r) => simple_reply(r),
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                Ok(ExitCode::FAILURE)
            }
        },
        Cmd::KeepalivedConfig {
            config,
            priority,
            router_id,
            advert,
            floating,
            sipvip,
        } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let mut floating = floating
                .iter()
                .map(|f| sipvip::keepalived::parse_floating(f))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("--floating {e}"))?;
            // The configuration's floating addresses (`ha.floating`, checked with it) first.
            let mut all: Vec<_> = cfg
                .ha
                .floating
                .iter()
                .filter_map(|f| sipvip::keepalived::parse_floating(f).ok())
                .collect();
            floating.retain(|f| !all.contains(f));
            all.append(&mut floating);
            let floating = all;
            let sipvip = match sipvip {
                Some(p) => p,
                None => std::env::current_exe().context("this binary's path")?,
            };
            let o = sipvip::keepalived::Options {
                sipvip: sipvip.display().to_string(),
                priority,
                router_id,
                advert: sipvip::config::parse_duration(&advert)
                    .map_err(|e| anyhow::anyhow!("--advert {e}"))?,
                floating,
            };
            match sipvip::keepalived::render(&cfg, &config, &o) {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::Layout => {
            for name in sipvip_common::map_names::ALL {
                println!("{name}");
            }
            println!("object: {} bytes", sipvip::datapath::OBJECT.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}
