//! The one place a decision is carried out: the only code that writes packet memory,
//! updates checksums, writes the state a packet leaves behind, counts, and forwards. The
//! rules decide ([`crate::rules`]); nothing here decides anything but how to fall back when
//! a helper refuses. See docs/architecture.md, "The code".

pub(crate) mod answer;
mod count;
pub(crate) mod csum;
mod mem;

use sipvip_common::{Disposition, Reason};

pub(crate) use self::mem::{store, store_addr};
use self::{csum::Delta, mem::store_mac};
use crate::{
    family::Family,
    hook::{Frame, Verdict},
    maps::PT_PORTS,
    packet::{ipv4::IP_CSUM, Ip},
    rules::{self, Action, Decision, Link, Pending, Record},
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
    count::bump(reason);
    match reason.disposition() {
        Disposition::Drop => Verdict::Drop,
        Disposition::Pass | Disposition::Handled => Verdict::Pass,
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
            count::traffic(d.account, p.len);
            if send_to {
                send(f, p, d.link, ip, d.reason)
            } else if d.link_due {
                to_kernel(f, p, ip, Reason::PassFib)
            } else {
                to_kernel(f, p, ip, d.reason)
            }
        }
        Action::Forward => {
            if !f.redirect(d.link.ifindex) {
                return Ok(stop(Reason::PassFib));
            }
            send(f, p, d.link, Delta::new(), d.reason)
        }
        Action::HandOver => {
            send(f, p, d.link, Delta::new(), d.reason)?;
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
        A::insert_flow(k, v);
    }
    if r.has(Record::FRAGMENT) {
        let (k, v) = &pd.fragment;
        // An LRU map makes room; if the write fails anyway, the later fragments are orphans.
        A::insert_fragment(k, v);
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
) -> Result<Verdict, Reason> {
    if A::HEADER_CSUM {
        let e = |_| Reason::DropMalformedIp;
        let c: u16 = f.load(p.l3 + IP_CSUM).map_err(e)?;
        store(f, p.l3 + IP_CSUM, ip.apply(c)).map_err(e)?;
    }
    Ok(stop(reason))
}

/// Sends the (possibly rewritten) packet to its link, whose redirect was asked for: the
/// TTL (hop limit) decremented, the IPv4 header checksum written once (the rewrite's delta
/// `ip` and the TTL's together), the MACs set, counted as `handled`.
#[inline(always)]
fn send<F: Frame, A: Family>(
    f: &F,
    p: &Ip<A>,
    link: Link,
    ip: Delta,
    handled: Reason,
) -> Result<Verdict, Reason> {
    let e = |_| Reason::DropMalformedIp;
    let l3 = p.l3;
    let ttl_word: u16 = f.load(l3 + A::TTL_WORD).map_err(e)?;
    let mut b = ttl_word.to_ne_bytes();
    b[A::TTL_BYTE] = b[A::TTL_BYTE].wrapping_sub(1);
    let new_word = u16::from_ne_bytes(b);
    store(f, l3 + A::TTL_WORD, new_word).map_err(e)?;
    if A::HEADER_CSUM {
        let c: u16 = f.load(l3 + IP_CSUM).map_err(e)?;
        let mut d = ip;
        d.word(ttl_word, new_word);
        store(f, l3 + IP_CSUM, d.apply(c)).map_err(e)?;
    }
    store_mac(f, 0, link.dmac).map_err(e)?;
    store_mac(f, 6, link.smac).map_err(e)?;
    count::bump(handled);
    Ok(Verdict::Redirect)
}
