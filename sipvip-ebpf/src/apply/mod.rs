//! The one place a decision is carried out: the only code that writes packet memory,
//! updates checksums, writes the state a packet leaves behind, counts, and forwards. The
//! rules decide ([`crate::rules`]); nothing here decides anything but how to fall back when
//! a helper refuses. See docs/architecture.md, "The code".

pub(crate) mod answer;
pub(crate) mod count;
pub(crate) mod csum;
mod mem;

use sipvip_common::{
    cell_member, CtKey, CtValue, Disposition, FlowKey, FlowSlot, Reason, CT_PASSTHROUGH,
    FLOW_SIDE_SRC, FLOW_STATE_REFRESH, FLOW_STATE_REQUIRE, FLOW_TRANSLATE, IPPROTO_UDP,
};

pub(crate) use self::mem::{store, store_addr};
use self::{
    csum::Delta,
    mem::{addr_words, mac_words, store_macs},
};
use crate::{
    csum::Folded,
    family::Family,
    hook::{Frame, Verdict},
    maps::PT_PORTS,
    packet::{
        ipv4::IP_CSUM,
        plain::{self, Plain},
        Ip,
    },
    rules::{self, lookup::snat_flow, Account, Action, Decision, Link, Pending, Record},
};

/// Carries out a side's decision (or counts the reason it stopped for) and returns the
/// program's verdict and the reason counted.
#[inline(always)]
pub fn run<F: Frame, A: Family>(
    f: &F,
    p: &Ip<A>,
    decided: Result<(), Reason>,
    d: &Decision<A>,
) -> (u32, Reason) {
    let reason = match decided {
        Ok(()) => match apply(f, p, *d) {
            Ok(v) => return (f.verdict(v), d.reason),
            Err(r) => r,
        },
        Err(r) => r,
    };
    stopped(f, reason)
}

/// Counts the reason a packet stopped for before any rule, and gives its verdict.
#[inline(always)]
pub fn stopped<F: Frame>(f: &F, reason: Reason) -> (u32, Reason) {
    (f.verdict(stop(reason)), reason)
}

/// Counts `reason` and gives its verdict: to the kernel as the packet is now, or dropped.
#[inline(always)]
fn stop(reason: Reason) -> Verdict {
    stop_counted(reason, Tally::Reason)
}

/// [`stop`], the reason counted as `tally` says.
#[inline(always)]
fn stop_counted(reason: Reason, tally: Tally) -> Verdict {
    tally.count(reason);
    match reason.disposition() {
        Disposition::Drop => Verdict::Drop,
        Disposition::Pass | Disposition::Handled => Verdict::Pass,
    }
}

/// Where a packet's reason is counted: alone (`SV_REASONS_V1`), or with the packet's
/// traffic in its VIP's cell (`count::traffic`: one lookup for both).
#[derive(Clone, Copy)]
enum Tally {
    Reason,
    Traffic(Account, u32),
}

impl Tally {
    #[inline(always)]
    fn count(self, reason: Reason) {
        match self {
            Tally::Reason => count::bump(reason),
            Tally::Traffic(a, bytes) => count::traffic(a, bytes, reason as u8),
        }
    }
}

#[inline(always)]
fn apply<F: Frame, A: Family>(f: &F, p: &Ip<A>, d: Decision<A>) -> Result<Verdict, Reason> {
    let pending = if d.record == Record::NONE {
        None
    } else {
        let pending = rules::pending::<A>();
        if let Some(pd) = pending {
            record(d.record, pd);
        }
        pending
    };
    match d.action {
        Action::Stop => Ok(stop(d.reason)),
        Action::Translate => {
            // The redirect is asked for first: if it is refused, the packet still goes on
            // translated, through the kernel.
            let send_to = d.link_due && f.redirect(d.link.ifindex);
            if d.record.has(Record::QUOTE) {
                let q = pending.ok_or(Reason::DropMalformedIp)?.quote;
                A::rewrite_quote(f, p, q)?;
            }
            let ip = csum::rewrite(f, p, d.rewrite)?;
            // Its traffic and its reason, counted together once it has gone out.
            let tally = Tally::Traffic(d.account, p.len);
            if send_to {
                send(f, p, d.link, ip, d.reason, tally)
            } else if d.link_due {
                to_kernel(f, p, ip, Reason::PassFib, tally)
            } else {
                to_kernel(f, p, ip, d.reason, tally)
            }
        }
        Action::Forward => {
            if !f.redirect(d.link.ifindex) {
                return Ok(stop(Reason::PassFib));
            }
            send(f, p, d.link, Delta::new(), d.reason, Tally::Reason)
        }
        Action::HandOver => {
            send(f, p, d.link, Delta::new(), d.reason, Tally::Reason)?;
            Ok(Verdict::Bounce)
        }
        Action::EchoReply => {
            let v = A::echo_reply(f, p)?;
            count::bump(d.reason);
            Ok(v)
        }
        Action::Error => {
            let e = pending.ok_or(Reason::DropMalformedIp)?.error;
            let v = A::send_error(f, p, e)?;
            count::bump(d.reason);
            Ok(v)
        }
    }
}

/// Carries out a flow's cached decision (`crate::flow`) on a packet of the flow (a plain
/// frame, `h`): the same rewrite, link and counters as the rules' decision for its first
/// packet, with the checksum deltas computed then. None when the packet is not one the
/// entry fits (TTL, a longer packet than the next hop was found for, a pass-through flow
/// whose conntrack entry is gone, a refused redirect): the rules then decide, before
/// anything was written. The packet is counted in the slot (`FlowSlot::packets`), as its
/// entry's. The flow's key is the lane's (`key`), or with None the slot's (`FlowSlot::key`,
/// which the lane found equal to the packet's), read where it is needed: the lane's key need
/// not then be kept across the redirect's helper call, which clobbers the registers (its
/// fields were spilled to the stack and reloaded). The internal side's flows take the
/// slot's (2-4% less time per cached packet); a service's steering the lane's, whose
/// source fields are constants (1% less than the slot's).
#[inline(always)]
pub fn cached<F: Frame>(
    f: &F,
    h: &Plain,
    s: &mut FlowSlot,
    key: Option<&FlowKey>,
) -> Option<(u32, Reason)> {
    // The entry borrowed mutably though only read: borrowed shared, the hits measured
    // 1.02x as long (LLVM's code for them differs).
    let (e, k) = (&mut s.entry, key.unwrap_or(&s.key));
    if h.ttl <= 1 || h.tot_len > e.max_len {
        return None;
    }
    let ct = |kind| CtKey {
        addr_a_be: k.src_be,
        addr_b_be: k.dst_be,
        port_a_be: k.sport_be,
        port_b_be: k.dport_be,
        proto: k.proto,
        kind,
        _pad: 0,
    };
    if e.state == FLOW_STATE_REQUIRE && u32::flow(&ct(CT_PASSTHROUGH)).is_none() {
        return None;
    }
    if !f.redirect_cached(e.ifindex) {
        return None;
    }
    // Nothing fails from here: the frame's headers were checked whole (`packet::plain`).
    // Counted in the slot, as its entry's: a translated packet's traffic in its VIP's cell
    // and its reason, a forwarded packet's reason (`FlowSlot`; `flow::remember` moves the
    // counts on). The entry's reason is one `remember` checked (`flow::reason`), named
    // only for the debug log (a release build drops the lookup).
    s.packets += 1;
    if e.state == FLOW_STATE_REFRESH && refresh_due(s.packets) {
        // The rules' `snat_flow`: the replies' entry, unless it is there already.
        let member = CtValue {
            member_be: k.src_be,
            // The member's slot, from its counter cell.
            slot: cell_member(usize::from(e.cell)) as u32,
        };
        if let Some((key, value, takeover)) =
            snat_flow(k.proto, e.addr_be, k.sport_be, k.dst_be, k.dport_be, member)
        {
            write_flow(&key, &value, takeover);
        }
    }
    if e.action == FLOW_TRANSLATE {
        let (addr_w, port_w, old_port) = if e.side == FLOW_SIDE_SRC {
            (plain::W_SRC, plain::W_SPORT, k.sport_be)
        } else {
            (plain::W_DST, plain::W_DPORT, k.dport_be)
        };
        let [hi, lo] = addr_words(e.addr_be);
        h.set(addr_w, hi);
        h.set(addr_w + 1, lo);
        if e.port_be != old_port {
            h.set(port_w, e.port_be);
        }
        let csum_w = h.l4_csum_word();
        // The entry's deltas were folded to 16 bits when it was written (`flow::remember`).
        let c = Folded(e.l4_delta as u16).apply_l4(h.proto == IPPROTO_UDP, h.word(csum_w));
        h.set(csum_w, c);
        s.bytes += u64::from(h.len);
    }
    h.set(plain::W_TTL, ttl_decremented::<u32>(h.word(plain::W_TTL)));
    h.set(
        plain::W_IP_CSUM,
        Folded(e.ip_delta as u16).apply(h.word(plain::W_IP_CSUM)),
    );
    for (i, w) in mac_words(e.dmac, e.smac).into_iter().enumerate() {
        h.set(i, w);
    }
    Some((
        f.verdict(Verdict::Redirect),
        crate::flow::reason(e.reason).unwrap_or(Reason::Steered),
    ))
}

/// The family's header word that holds the TTL (hop limit), as loaded, with the TTL one
/// less.
#[inline(always)]
fn ttl_decremented<A: Family>(word: u16) -> u16 {
    let mut b = word.to_ne_bytes();
    b[A::TTL_BYTE] = b[A::TTL_BYTE].wrapping_sub(1);
    u16::from_ne_bytes(b)
}

/// Whether a member-opened flow's cached packet is the one (every `FLOW_REFRESH_EVERY`) that
/// makes sure of its replies' conntrack entry: by its slot's count of the entry's cached
/// packets with it (`FlowSlot::packets`, which starts from 0 with each entry).
#[inline(always)]
fn refresh_due(packets: u64) -> bool {
    const { assert!(sipvip_common::FLOW_REFRESH_EVERY.is_power_of_two()) };
    packets.is_multiple_of(u64::from(sipvip_common::FLOW_REFRESH_EVERY))
}

/// Writes the state the packet leaves behind: the pass-through port mark before the flow,
/// so the outbound side never sees the flow without the mark.
#[inline(always)]
fn record<A: Family>(r: Record, pd: &Pending<A>) {
    if r.has(Record::PORT_MARK) {
        let (i, bucket) = pd.port_mark;
        if let Some(pp) = PT_PORTS.get_ptr_mut(i) {
            // SAFETY: a byte of a map value; stores of 1 from any CPU are idempotent.
            if let Some(seen) = unsafe { (*pp).seen.get_mut(bucket as usize) } {
                *seen = 1;
            }
        }
    }
    if r.has(Record::FLOW) {
        let (k, v) = &pd.flow;
        write_flow(k, v, r.has(Record::TAKEOVER));
    }
    if r.has(Record::FRAGMENT) {
        let (k, v) = &pd.fragment;
        // An LRU map makes room; if the write fails anyway, the later fragments are orphans.
        A::insert_fragment(k, v);
    }
}

/// Writes a conntrack entry a decision (or a cached packet's refresh) asked for, and starts
/// a new datapath generation of the flow cache when the entry changes what a cached
/// decision rests on: a member's replies on a pass-through flow are no longer SNATed, or a
/// member-opened flow's replies now go to another member (`takeover`: the member whose
/// entry it was takes the rules' path again, which takes the entry back on its next packet,
/// as on the rules' path alone).
#[inline(always)]
fn write_flow<A: Family>(k: &CtKey<A>, v: &CtValue<A>, takeover: bool) {
    A::insert_flow(k, v);
    if k.kind == CT_PASSTHROUGH || takeover {
        crate::flow::bump_kernel();
    }
}

/// Hands the rewritten packet to the kernel: the IPv4 header checksum (`ip`, the delta of
/// the rewrite) is written alone, without the TTL and MAC edits (IPv6 has none to write).
#[inline(always)]
fn to_kernel<F: Frame, A: Family>(
    f: &F,
    p: &Ip<A>,
    ip: Delta,
    reason: Reason,
    tally: Tally,
) -> Result<Verdict, Reason> {
    if A::HEADER_CSUM {
        let e = |_| Reason::DropMalformedIp;
        let c: u16 = f.load(p.l3 + IP_CSUM).map_err(e)?;
        store(f, p.l3 + IP_CSUM, ip.apply(c)).map_err(e)?;
    }
    Ok(stop_counted(reason, tally))
}

/// Sends the (possibly rewritten) packet to its link, whose redirect was asked for: the
/// TTL (hop limit) decremented, the IPv4 header checksum written once (the rewrite's delta
/// `ip` and the TTL's together), the MACs set, counted as `handled` (as `tally` says).
#[inline(always)]
fn send<F: Frame, A: Family>(
    f: &F,
    p: &Ip<A>,
    link: Link,
    ip: Delta,
    handled: Reason,
    tally: Tally,
) -> Result<Verdict, Reason> {
    let e = |_| Reason::DropMalformedIp;
    let l3 = p.l3;
    if A::HEADER_CSUM {
        // IPv4: the TTL word and the header checksum after it, loaded and stored together.
        const { assert!(IP_CSUM == crate::packet::ipv4::IP_TTL + 2) };
        let [ttl_word, c]: [u16; 2] = f.load(l3 + A::TTL_WORD).map_err(e)?;
        let new_word = ttl_decremented::<A>(ttl_word);
        let mut d = ip;
        d.word(ttl_word, new_word);
        store(f, l3 + A::TTL_WORD, [new_word, d.apply(c)]).map_err(e)?;
    } else {
        let ttl_word: u16 = f.load(l3 + A::TTL_WORD).map_err(e)?;
        store(f, l3 + A::TTL_WORD, ttl_decremented::<A>(ttl_word)).map_err(e)?;
    }
    store_macs(f, link.dmac, link.smac).map_err(e)?;
    tally.count(handled);
    Ok(Verdict::Redirect)
}
