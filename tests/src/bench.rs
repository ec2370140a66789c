//! Benchmark plumbing: the generator -> gateway -> sink namespaces, the live-frames traffic
//! generator, sink counters, CPU accounting and the kernel's per-program run-time statistics.

use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::{
    maps::{Array, DevMap, MapData, PerCpuArray, ProgramArray},
    programs::{ProgramFd, SchedClassifier, TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};

use crate::{frame::mac_str, netns::Netns};

pub const GW_EXT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const EXT_HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 100);
pub const GW_INT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
pub const MEMBER: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 11);
/// Inbound flows come from 198.18.64.0 + n; outbound flows go to 198.18.128.0 + n.
pub const PHONES_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 0);
pub const FAR_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 0);
pub const FLOWS: u32 = 4096;

pub use sipvip_common::bench::{FloorCfg, GenCfg, Template, TEMPLATE_BYTES};

pub fn be32(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

pub fn mac_of(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let s = ns.exec(&format!("cat /sys/class/net/{dev}/address"))?;
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(s.trim().split(':')) {
        *o = u8::from_str_radix(p, 16)?;
    }
    Ok(m)
}

/// gateway (ext0, int0) between an external host (e0) and a member host (i0).
pub struct BenchNet {
    pub gw: Netns,
    pub ext: Netns,
    pub int: Netns,
    pub mac: Macs,
}

#[derive(Clone, Copy, Debug)]
pub struct Macs {
    pub ext0: [u8; 6],
    pub int0: [u8; 6],
    pub e0: [u8; 6],
    pub i0: [u8; 6],
}

impl BenchNet {
    pub fn new() -> Result<BenchNet> {
        crate::netns::require_root();
        let gw = Netns::new("bgw")?;
        let ext = Netns::new("bext")?;
        let int = Netns::new("bint")?;
        gw.exec(&format!(
            "sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv4.conf.all.rp_filter=0 && \
             sysctl -qw net.ipv4.conf.default.rp_filter=0 && sysctl -qw net.ipv4.conf.all.accept_local=1 && \
             ip link add ext0 type veth peer name e0 netns {e} && ip link add int0 type veth peer name i0 netns {i} && \
             ip addr add {GW_EXT}/24 dev ext0 && ip addr add {VIP}/32 dev ext0 && ip addr add {GW_INT}/24 dev int0 && \
             ip link set ext0 up && ip link set int0 up && ip route add 198.18.128.0/17 via {EXT_HOST}",
            e = ext.name,
            i = int.name
        ))?;
        ext.exec(&format!("ip addr add {EXT_HOST}/24 dev e0 && ip link set e0 up && ip route add 198.18.2.0/24 via {GW_EXT}"))?;
        int.exec(&format!("ip addr add {MEMBER}/24 dev i0 && ip link set i0 up && ip route add default via {GW_INT}"))?;
        let mac = Macs {
            ext0: mac_of(&gw, "ext0")?,
            int0: mac_of(&gw, "int0")?,
            e0: mac_of(&ext, "e0")?,
            i0: mac_of(&int, "i0")?,
        };
        // Static neighbours: the measurement must not wait on ARP.
        gw.exec(&format!(
            "ip neigh replace {EXT_HOST} lladdr {} dev ext0 nud permanent && ip neigh replace {MEMBER} lladdr {} dev int0 nud permanent",
            mac_str(&mac.e0),
            mac_str(&mac.i0)
        ))?;
        Ok(BenchNet { gw, ext, int, mac })
    }

    /// Removes every XDP program and nftables rule from the gateway.
    pub fn reset_gateway(&self) -> Result<()> {
        self.gw.exec("ip link set ext0 xdp off; ip link set int0 xdp off; nft flush ruleset 2>/dev/null; true")?;
        Ok(())
    }
}

/// Points a floor program of a bench object at its next hop: slot `slot` of `BENCH_DEV` and
/// `BENCH_FLOOR` (0 for `bench_floor`, 1 for `bench_floor_out`) gets `ifindex` and `cfg`.
pub fn point_floor(ebpf: &mut Ebpf, slot: u32, ifindex: u32, cfg: FloorCfg) -> Result<()> {
    let mut dev: DevMap<&mut MapData> =
        DevMap::try_from(ebpf.map_mut("BENCH_DEV").context("dev")?)?;
    dev.set(slot, ifindex, None, 0)?;
    let mut floor: Array<&mut MapData, FloorCfg> =
        Array::try_from(ebpf.map_mut("BENCH_FLOOR").context("floor")?)?;
    floor.set(slot, cfg, 0)?;
    Ok(())
}

/// One host's generator and sink (the bench object loaded in its namespace).
pub struct Host {
    pub ebpf: Ebpf,
    pub ifindex: u32,
}

impl Host {
    /// Loads the bench object in `ns`, attaches the sink to `dev` (which also lets the
    /// gateway redirect into it) and points the generator at `dev`.
    pub fn new(ns: &Netns, dev: &str) -> Result<Host> {
        let _g = ns.enter()?;
        let mut ebpf = Ebpf::load(sipvip::datapath::BENCH_OBJECT)?;
        for p in ["bench_gen", "bench_sink"] {
            let prog: &mut Xdp = ebpf.program_mut(p).context("bench program")?.try_into()?;
            prog.load()?;
        }
        let sink: &mut Xdp = ebpf.program_mut("bench_sink").context("sink")?.try_into()?;
        sink.attach(dev, XdpMode::Driver)?;
        let ifindex = ns.ifindex(dev)?;
        let mut devmap: DevMap<&mut MapData> =
            DevMap::try_from(ebpf.map_mut("BENCH_DEV").context("devmap")?)?;
        devmap.set(0, ifindex, None, 0)?;
        Ok(Host { ebpf, ifindex })
    }

    pub fn received(&self) -> Result<u64> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("BENCH_COUNT").context("count")?)?;
        Ok(m.get(&0, 0)?.iter().sum())
    }

    /// Frames the sink received without the rewrite `set_expect` named.
    pub fn bad(&self) -> Result<u64> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map("BENCH_BAD").context("bad")?)?;
        Ok(m.get(&0, 0)?.iter().sum())
    }

    /// What the sink counts as a frame with the expected rewrite.
    pub fn set_expect(&mut self, e: sipvip_common::bench::Expect) -> Result<()> {
        let mut m: Array<&mut MapData, sipvip_common::bench::Expect> =
            Array::try_from(self.ebpf.map_mut("BENCH_EXPECT").context("expect")?)?;
        m.set(0, e, 0)?;
        Ok(())
    }

    pub fn set_gen(&mut self, cfg: GenCfg) -> Result<()> {
        let mut m: Array<&mut MapData, GenCfg> =
            Array::try_from(self.ebpf.map_mut("BENCH_GEN").context("gen")?)?;
        m.set(0, cfg, 0)?;
        Ok(())
    }
}

extern "C" fn wake(_: i32) {}

/// Runs the live-frames generator of `host` (in `ns`) on its own thread until `stop`;
/// returns the thread handle. One long BPF_PROG_TEST_RUN call, interrupted by a signal.
pub fn generate(
    ns: &Netns,
    host: &Host,
    frame_len: usize,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    // SAFETY: installing a no-op handler (without SA_RESTART) so SIGUSR1 interrupts the syscall.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = wake as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let ns_file = std::fs::File::open(format!("/run/netns/{}", ns.name))?;
    let ifindex = host.ifindex;
    // The program object is not Send; the thread re-opens it from the same loaded object
    // through a raw pointer that outlives the thread (joined before `host` is dropped).
    let ebpf_ptr = &host.ebpf as *const Ebpf as usize;
    let frame = vec![0u8; frame_len];
    Ok(std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only.
        unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
        // SAFETY: the caller joins this thread before dropping the Host.
        let ebpf = unsafe { &*(ebpf_ptr as *const Ebpf) };
        let prog: &Xdp = ebpf
            .program("bench_gen")
            .expect("gen")
            .try_into()
            .expect("xdp");
        let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
        while !stop.load(Ordering::SeqCst) {
            let _ = prog.test_run(TestRunOptions {
                data_in: Some(&frame),
                ctx_in: Some(&ctx),
                repeat: u32::MAX,
                attrs: TestRunAttrs::new().xdp_live_frames(64),
                ..TestRunOptions::default()
            });
        }
    }))
}

/// Stops a generator thread started by [`generate`].
pub fn stop(handle: std::thread::JoinHandle<()>, flag: &AtomicBool) {
    use std::os::unix::thread::JoinHandleExt;
    flag.store(true, Ordering::SeqCst);
    let t = Instant::now();
    while !handle.is_finished() && t.elapsed() < Duration::from_secs(5) {
        // SAFETY: signalling a thread of ours that is still running.
        unsafe { libc::pthread_kill(handle.as_pthread_t(), libc::SIGUSR1) };
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = handle.join();
}

/// Busy CPU time (user+system+softirq+irq), in seconds, summed over all CPUs.
pub fn cpu_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let ticks = f.first().copied().unwrap_or(0.0)
        + f.get(1).copied().unwrap_or(0.0)
        + f.get(2).copied().unwrap_or(0.0)
        + f.get(5).copied().unwrap_or(0.0)
        + f.get(6).copied().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

/// Keeps the calling thread on CPU 0 until dropped, then gives it back its CPU set: for
/// measurements and tests that use the datapath's per-CPU state (the next-hop cache).
pub struct PinnedToCpu0(libc::cpu_set_t);

impl PinnedToCpu0 {
    pub fn new() -> Self {
        // SAFETY: cpu_set_t is plain data; both calls act on this thread only.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old);
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut one);
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one),
                0,
                "sched_setaffinity"
            );
            PinnedToCpu0(old)
        }
    }
}

impl Default for PinnedToCpu0 {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinnedToCpu0 {
    fn drop(&mut self) {
        // SAFETY: restoring the set saved in `new`, for this thread.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): what it ran, kernel time included,
/// and not what other tasks ran while the kernel let them (a BPF_PROG_TEST_RUN loop
/// yields when asked to, and its own timer leaves those spells out too).
struct ThreadClock(std::time::Duration);

impl ThreadClock {
    fn read() -> std::time::Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out-pointer; the clock exists on every Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn now() -> Self {
        ThreadClock(Self::read())
    }

    fn elapsed(&self) -> std::time::Duration {
        Self::read().saturating_sub(self.0)
    }
}

/// A run's ns per repetition, if its verdict is `expect` (a path that went elsewhere is an
/// error rather than a wrong figure): the CPU time this thread spent in the one
/// BPF_PROG_TEST_RUN call (`cpu`, [`ThreadClock`]) over the repeat count. The kernel's own
/// figure (`TestRunResult::duration`) times the runs' loop alone but gives whole
/// nanoseconds per run, rounded down: a step of 3-5% at these costs, which moved a path's
/// ratio to the floor by as much. The thread's clock also leaves out time the virtual
/// machine lost to its host, which the kernel's loop timer counts (README, "Per-packet
/// cost"; `SIPVIP_BENCH_BOTH_CLOCKS` prints both). Wall-clock time would not do: it counts
/// what other tasks ran while the loop yielded to them.
fn measured(
    r: aya::programs::TestRunResult,
    expect: u32,
    cpu: std::time::Duration,
    repeat: u32,
) -> Result<f64> {
    anyhow::ensure!(
        r.return_value == expect,
        "verdict {} where {expect} was expected: the frame did not take the path measured",
        r.return_value
    );
    let ns = cpu.as_nanos() as f64 / f64::from(repeat.max(1));
    // The two clocks side by side, call by call (README, "Per-packet cost").
    if std::env::var_os("SIPVIP_BENCH_BOTH_CLOCKS").is_some() {
        eprintln!(
            "cost: thread {ns:.2} ns, kernel {} ns",
            r.duration.as_nanos()
        );
    }
    Ok(ns)
}

/// Per-packet cost with BPF_PROG_TEST_RUN and a repeat count: `bench_reset` restores the
/// frame's headers from a template and tail-calls the program under test, so every one of the
/// repeated runs takes the same path on the same input. Runs in the caller's network
/// namespace, which must hold the ingress device given to [`CostHarness::cost`].
pub struct CostHarness {
    pub ebpf: Ebpf,
}

/// One path's cost over several rounds: nanoseconds per run (see `measured`).
#[derive(Clone, Debug)]
pub struct Cost {
    /// The median of the rounds.
    pub ns: f64,
    pub min_ns: f64,
    pub max_ns: f64,
    /// The median over rounds of this path's cost divided by the floor program's cost in the
    /// same round (side by side, so a slow spell of the machine hits both).
    pub vs_floor: f64,
    /// The same net of the harness: `(path - empty) / (floor - empty)` per round (NaN for a
    /// path of many flows, whose harness is not the empty program's).
    pub vs_floor_net: f64,
    /// A path of many flows in turn: the median over rounds of its cost divided by the same
    /// path's with one flow (the floor's figure, `vs_floor`, is then the floor's through the
    /// same harness).
    pub vs_one_flow: Option<f64>,
    /// With a baseline object: the median over rounds of this path's cost divided by the
    /// same path's on the baseline in the same round.
    pub vs_baseline: Option<f64>,
    /// The mean of the same per-round ratios, the highest and lowest tenth left out: less
    /// moved by a single round than the median. (Before 2026-12-04's thirteenth session the
    /// costs were the kernel's whole nanoseconds, and this mean was the finer figure.)
    pub vs_baseline_trimmed_mean: Option<f64>,
    /// The same median within each load of the programs (`--cost-loads`): how far apart
    /// loads land tells how much of `vs_baseline` is placement.
    pub vs_baseline_per_load: Vec<f64>,
    pub runs: u64,
}

impl CostHarness {
    /// Loads the bench object (reset harness, empty and floor programs) in the current
    /// namespace.
    pub fn new() -> Result<CostHarness> {
        let mut ebpf = Ebpf::load(sipvip::datapath::BENCH_OBJECT)?;
        for p in [
            "bench_reset",
            "bench_reset_flows",
            "bench_empty",
            "bench_floor",
        ] {
            let prog: &mut Xdp = ebpf.program_mut(p).context("bench program")?.try_into()?;
            prog.load()?;
        }
        for p in ["bench_reset_tc", "bench_empty_tc"] {
            let prog: &mut SchedClassifier =
                ebpf.program_mut(p).context("bench program")?.try_into()?;
            prog.load()?;
        }
        Ok(CostHarness { ebpf })
    }

    /// A TC program of the bench object itself (`bench_empty_tc`).
    pub fn own_tc(&self, name: &str) -> Result<ProgramFd> {
        let p: &SchedClassifier = self
            .ebpf
            .program(name)
            .context("bench program")?
            .try_into()?;
        Ok(p.fd()?.try_clone()?)
    }

    /// [`CostHarness::cost`] for a TC program (`bench_reset_tc` restores the headers and
    /// tail-calls it): the frame runs as an skb of the current namespace's loopback device,
    /// as a TC egress program sees what the node sends.
    pub fn cost_tc(
        &mut self,
        target: &ProgramFd,
        frame: &[u8],
        expect: u32,
        repeat: u32,
    ) -> Result<f64> {
        self.prepare(frame, "BENCH_PROGS_TC", target)?;
        let prog: &SchedClassifier = self
            .ebpf
            .program("bench_reset_tc")
            .context("reset")?
            .try_into()?;
        let t = ThreadClock::now();
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })?;
        measured(r, expect, t.elapsed(), repeat)
    }

    /// The frame's headers as the harness's template, and `target` in its program array.
    fn prepare(&mut self, frame: &[u8], progs: &str, target: &ProgramFd) -> Result<()> {
        self.set_template(frame)?;
        let mut a: ProgramArray<&mut MapData> =
            ProgramArray::try_from(self.ebpf.map_mut(progs).context("prog array")?)?;
        a.set(0, target, 0)?;
        Ok(())
    }

    fn set_template(&mut self, frame: &[u8]) -> Result<()> {
        anyhow::ensure!(
            frame.len() >= TEMPLATE_BYTES,
            "frame shorter than the template"
        );
        let mut t = Template {
            bytes: [0; TEMPLATE_BYTES],
        };
        t.bytes.copy_from_slice(&frame[..TEMPLATE_BYTES]);
        let mut m: Array<&mut MapData, Template> =
            Array::try_from(self.ebpf.map_mut("BENCH_TMPL").context("template map")?)?;
        m.set(0, t, 0)?;
        Ok(())
    }

    /// What `bench_reset_flows` hands its target, run by run: `runs` single runs of `frame`
    /// with `flows` flows in turn, each through the empty program (which leaves the frame as
    /// the harness made it); the frames out.
    pub fn flows_harness_output(
        &mut self,
        frame: &[u8],
        flows: u32,
        runs: usize,
    ) -> Result<Vec<Vec<u8>>> {
        let empty = self.own("bench_empty")?;
        let reset = self.prepare_flows(frame, &empty, flows)?;
        let prog: &Xdp = self.ebpf.program(reset).context("reset")?.try_into()?;
        let mut out = Vec::new();
        for _ in 0..runs {
            let mut buf = vec![0u8; frame.len()];
            let r = prog.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut buf),
                ..TestRunOptions::default()
            })?;
            anyhow::ensure!(
                r.return_value == crate::check::XDP_PASS,
                "verdict {}",
                r.return_value
            );
            out.push(buf);
        }
        Ok(out)
    }

    /// `prepare` for `flows` flows in turn (a power of two): the harness program to run,
    /// `bench_reset` for one flow, else `bench_reset_flows` with the count in `BENCH_FLOWS`.
    fn prepare_flows(
        &mut self,
        frame: &[u8],
        target: &ProgramFd,
        flows: u32,
    ) -> Result<&'static str> {
        anyhow::ensure!(
            flows.is_power_of_two(),
            "{flows} flows: a power of two, at least 1"
        );
        self.prepare(frame, "BENCH_PROGS", target)?;
        if flows == 1 {
            return Ok("bench_reset");
        }
        let mut m: Array<&mut MapData, u32> =
            Array::try_from(self.ebpf.map_mut("BENCH_FLOWS").context("flows map")?)?;
        m.set(0, flows, 0)?;
        Ok("bench_reset_flows")
    }

    /// A program of the bench object itself (`bench_empty`, `bench_floor`).
    pub fn own(&self, name: &str) -> Result<ProgramFd> {
        let p: &Xdp = self
            .ebpf
            .program(name)
            .context("bench program")?
            .try_into()?;
        Ok(p.fd()?.try_clone()?)
    }

    /// Runs `target` on `frame` (at least TEMPLATE_BYTES long) as if it arrived on `ifindex`,
    /// `repeat` times in one BPF_PROG_TEST_RUN call, and returns the ns per run (see
    /// `measured`). The verdict must be `expect`, so a path that goes elsewhere is an error
    /// rather than a wrong figure. With `flows` above 1 (a power of two; a UDP frame), the
    /// runs are that many flows in turn (`bench_reset_flows`: the source port's low bits
    /// vary), each run once first, untimed, so the timed runs find what a flow's first packet
    /// leaves.
    pub fn cost(
        &mut self,
        target: &ProgramFd,
        ifindex: u32,
        frame: &[u8],
        expect: u32,
        repeat: u32,
        flows: u32,
    ) -> Result<f64> {
        let reset = self.prepare_flows(frame, target, flows)?;
        let prog: &Xdp = self.ebpf.program(reset).context("reset")?.try_into()?;
        let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = md.iter().flat_map(|v| v.to_ne_bytes()).collect();
        if flows > 1 {
            let r = prog.test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: flows,
                ..TestRunOptions::default()
            })?;
            anyhow::ensure!(
                r.return_value == expect,
                "verdict {} where {expect} was expected, with {flows} flows",
                r.return_value
            );
        }
        let t = ThreadClock::now();
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat,
            ..TestRunOptions::default()
        })?;
        measured(r, expect, t.elapsed(), repeat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's outbound flows (the member's port 5060 to `FLOWS` destinations from
    /// `FAR_BASE`, UDP port 5060, as `bench_gen` sends them) each take a flow cache slot of
    /// their own at the cache's default size, whatever the internal interface's index: the
    /// outbound cases time a hit per packet, not flows taking each other's slot.
    #[test]
    fn the_outbound_flows_take_a_flow_cache_slot_each() {
        let mask = sipvip::datapath::MapSizes::default().flows - 1;
        for ifindex in 1..=256 {
            let mut seen = std::collections::HashSet::new();
            for n in 0..FLOWS {
                let key = sipvip_common::FlowKey {
                    src_be: be32(MEMBER),
                    dst_be: be32(Ipv4Addr::from(u32::from(FAR_BASE) + n)),
                    sport_be: 5060u16.to_be(),
                    dport_be: 5060u16.to_be(),
                    proto: sipvip_common::IPPROTO_UDP,
                    hook: sipvip_common::FLOW_HOOK_INT,
                    _pad: 0,
                    ifindex,
                };
                let slot = sipvip_common::flow_slot(&key) & mask;
                assert!(
                    seen.insert(slot),
                    "ifindex {ifindex}: flow {n} shares slot {slot}"
                );
            }
        }
    }
}
