//! SIP OPTIONS probes (RFC 3261): building the request and matching replies.
//!
//! Each probe carries a fresh branch (`z9hG4bK` + random, with a per-instance part), so two
//! gateways probing the same server can never take each other's replies (F5 bug 669978).

use std::{fmt::Write as _, net::SocketAddr};

use rand::Rng;

/// What identifies one probe's transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub branch: String,
    pub call_id: String,
    pub cseq: u32,
    /// The request bytes.
    pub bytes: Vec<u8>,
}

/// Everything the request needs.
#[derive(Clone, Debug)]
pub struct OptionsRequest<'a> {
    pub transport: &'a str,
    /// Where the probe is sent from (Via, Contact).
    pub local: SocketAddr,
    /// The member's address and port.
    pub target: SocketAddr,
    pub request_uri: Option<&'a str>,
    pub from: Option<&'a str>,
    pub headers: &'a [String],
    /// Random per daemon instance.
    pub instance: &'a str,
    pub cseq: u32,
}

pub const USER_AGENT: &str = concat!("sipvip/", env!("CARGO_PKG_VERSION"));

/// A random token of `n` lowercase hex digits.
pub fn token(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap())
        .collect()
}

impl OptionsRequest<'_> {
    pub fn build(&self) -> Probe {
        let branch = format!("z9hG4bK-sv{}-{}", self.instance, token(16));
        let call_id = format!("{}-{}@sipvip", token(20), self.instance);
        let tag = token(10);
        let uri = self
            .request_uri
            .map(str::to_string)
            .unwrap_or_else(|| format!("sip:{}", self.target));
        let from = self
            .from
            .map(str::to_string)
            .unwrap_or_else(|| match self.local.ip() {
                // An IPv6 host in a SIP URI is bracketed (RFC 3261, 25.1).
                std::net::IpAddr::V6(a) => format!("<sip:sipvip@[{a}]>"),
                a => format!("<sip:sipvip@{a}>"),
            });
        let transport = self.transport.to_ascii_uppercase();
        let mut m = String::with_capacity(512);
        let _ = write!(m, "OPTIONS {uri} SIP/2.0\r\n");
        let _ = write!(
            m,
            "Via: SIP/2.0/{transport} {};branch={branch};rport\r\n",
            self.local
        );
        m.push_str("Max-Forwards: 70\r\n");
        let _ = write!(m, "From: {from};tag={tag}\r\n");
        let _ = write!(m, "To: <{uri}>\r\n");
        let _ = write!(m, "Call-ID: {call_id}\r\n");
        let _ = write!(m, "CSeq: {} OPTIONS\r\n", self.cseq);
        let _ = write!(
            m,
            "Contact: <sip:sipvip@{};transport={}>\r\n",
            self.local, self.transport
        );
        let _ = write!(m, "User-Agent: {USER_AGENT}\r\n");
        m.push_str("Accept: application/sdp\r\n");
        for h in self.headers {
            let _ = write!(m, "{h}\r\n");
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        Probe {
            branch,
            call_id,
            cseq: self.cseq,
            bytes: m.into_bytes(),
        }
    }
}

/// A parsed SIP response (only what matching needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub branch: Option<String>,
    pub call_id: Option<String>,
    pub cseq: Option<(u32, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not UTF-8")]
    NotText,
    #[error("no status line")]
    Empty,
    #[error("not a SIP/2.0 response: {0:?}")]
    NotResponse(String),
    #[error("bad status code in {0:?}")]
    BadCode(String),
    #[error("headers not terminated")]
    Truncated,
}

/// Compact header forms (RFC 3261 section 7.3.3).
fn canonical(name: &str) -> String {
    match name.to_ascii_lowercase().as_str() {
        "v" => "via".into(),
        "i" => "call-id".into(),
        n => n.into(),
    }
}

/// Parses a response; never panics on any input.
pub fn parse_response(bytes: &[u8]) -> Result<Response, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::NotText)?;
    // CRLF keep-alives and the like are not responses.
    let text = text.trim_start_matches(['\r', '\n']);
    let head = match text.find("\r\n\r\n") {
        Some(i) => &text[..i],
        None if text.contains("\n\n") => &text[..text.find("\n\n").unwrap_or(text.len())],
        None => return Err(ParseError::Truncated),
    };
    let mut lines = head.lines();
    let status = lines.next().ok_or(ParseError::Empty)?.trim_end();
    let mut parts = status.splitn(3, ' ');
    if parts.next() != Some("SIP/2.0") {
        return Err(ParseError::NotResponse(status.chars().take(40).collect()));
    }
    let code: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .filter(|c| (100..=699).contains(c))
        .ok_or_else(|| ParseError::BadCode(status.chars().take(40).collect()))?;
    let mut r = Response {
        code,
        branch: None,
        call_id: None,
        cseq: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match canonical(name.trim()).as_str() {
            // The topmost Via is ours.
            "via" if r.branch.is_none() => {
                let first = value.split(',').next().unwrap_or("");
                r.branch = first
                    .split(';')
                    .skip(1)
                    .filter_map(|p| p.trim().split_once('='))
                    .find(|(k, _)| k.eq_ignore_ascii_case("branch"))
                    .map(|(_, v)| v.trim().to_string());
            }
            "call-id" => r.call_id = Some(value.to_string()),
            "cseq" => {
                let mut it = value.split_whitespace();
                if let (Some(n), Some(m)) = (it.next().and_then(|n| n.parse().ok()), it.next()) {
                    r.cseq = Some((n, m.to_ascii_uppercase()));
                }
            }
            _ => {}
        }
    }
    Ok(r)
}

/// Why a reply does not count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("from {got}, probed {want}")]
    WrongSource { got: SocketAddr, want: SocketAddr },
    #[error("branch {0:?} is not ours")]
    Branch(Option<String>),
    #[error("Call-ID {0:?} is not ours")]
    CallId(Option<String>),
    #[error("CSeq {0:?} is not ours")]
    CSeq(Option<(u32, String)>),
    #[error("provisional {0}")]
    Provisional(u16),
}

/// Whether a response answers `probe` sent to `target`.
pub fn matches(
    probe: &Probe,
    target: SocketAddr,
    from: SocketAddr,
    r: &Response,
) -> Result<(), Mismatch> {
    if from != target {
        return Err(Mismatch::WrongSource {
            got: from,
            want: target,
        });
    }
    if r.branch.as_deref() != Some(probe.branch.as_str()) {
        return Err(Mismatch::Branch(r.branch.clone()));
    }
    if r.call_id.as_deref() != Some(probe.call_id.as_str()) {
        return Err(Mismatch::CallId(r.call_id.clone()));
    }
    if r.cseq.as_ref() != Some(&(probe.cseq, "OPTIONS".to_string())) {
        return Err(Mismatch::CSeq(r.cseq.clone()));
    }
    if r.code < 200 {
        return Err(Mismatch::Provisional(r.code));
    }
    Ok(())
}

/// Whether a final status code means up: rejected codes first, then accepted ones (empty:
/// any code is up, the seed's "Additional Accepted Status Codes: Any").
pub fn code_is_up(code: u16, accept: &[u16], reject: &[u16]) -> bool {
    if reject.contains(&code) {
        return false;
    }
    accept.is_empty() || accept.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Probe {
        OptionsRequest {
            transport: "udp",
            local: "198.18.2.1:40000".parse().unwrap(),
            target: "198.18.2.11:5060".parse().unwrap(),
            request_uri: None,
            from: None,
            headers: &["X-Probe: sipvip".to_string()],
            instance: "ab12",
            cseq: 7,
        }
        .build()
    }

    fn reply_to(p: &Probe, code: u16) -> String {
        format!(
            "SIP/2.0 {code} OK\r\nVia: SIP/2.0/UDP 198.18.2.1:40000;branch={};rport=40000;received=198.18.2.1\r\n\
             From: <sip:sipvip@198.18.2.1>;tag=x\r\nTo: <sip:198.18.2.11:5060>;tag=y\r\nCall-ID: {}\r\n\
             CSeq: {} OPTIONS\r\nContent-Length: 0\r\n\r\n",
            p.branch, p.call_id, p.cseq
        )
    }

    #[test]
    fn options_request_has_every_rfc3261_header() {
        let p = req();
        let text = String::from_utf8(p.bytes.clone()).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "OPTIONS sip:198.18.2.11:5060 SIP/2.0");
        assert!(lines[1].starts_with("Via: SIP/2.0/UDP 198.18.2.1:40000;branch=z9hG4bK-svab12-"));
        assert!(lines[1].ends_with(";rport"));
        assert_eq!(lines[2], "Max-Forwards: 70");
        assert!(lines[3].starts_with("From: <sip:sipvip@198.18.2.1>;tag="));
        assert_eq!(lines[4], "To: <sip:198.18.2.11:5060>");
        assert_eq!(lines[5], format!("Call-ID: {}", p.call_id));
        assert_eq!(lines[6], "CSeq: 7 OPTIONS");
        assert_eq!(
            lines[7],
            "Contact: <sip:sipvip@198.18.2.1:40000;transport=udp>"
        );
        assert!(lines[8].starts_with("User-Agent: sipvip/"));
        assert!(text.contains("\r\nX-Probe: sipvip\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        // RFC 3261 magic cookie, and a fresh branch per probe.
        assert!(p.branch.starts_with("z9hG4bK"));
        assert_ne!(req().branch, p.branch);
        assert_ne!(req().call_id, p.call_id);
    }

    #[test]
    fn options_over_ipv6_bracket_the_addresses() {
        let headers = Vec::new();
        let p = OptionsRequest {
            transport: "udp",
            local: "[2001:db8:2::1]:40000".parse().unwrap(),
            target: "[2001:db8:2::11]:5060".parse().unwrap(),
            request_uri: None,
            from: None,
            headers: &headers,
            instance: "ab12",
            cseq: 1,
        }
        .build();
        let text = String::from_utf8(p.bytes).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "OPTIONS sip:[2001:db8:2::11]:5060 SIP/2.0");
        assert!(lines[1].starts_with("Via: SIP/2.0/UDP [2001:db8:2::1]:40000;branch="));
        assert!(lines[3].starts_with("From: <sip:sipvip@[2001:db8:2::1]>;tag="));
        assert_eq!(lines[4], "To: <sip:[2001:db8:2::11]:5060>");
        assert_eq!(
            lines[7],
            "Contact: <sip:sipvip@[2001:db8:2::1]:40000;transport=udp>"
        );
    }

    #[test]
    fn a_matching_reply_counts() {
        let p = req();
        let target = "198.18.2.11:5060".parse().unwrap();
        let r = parse_response(reply_to(&p, 200).as_bytes()).unwrap();
        assert_eq!(r.code, 200);
        assert_eq!(matches(&p, target, target, &r), Ok(()));
        // Any final code is a reply (the seed's "Any"); codes decide up or down.
        let r = parse_response(reply_to(&p, 503).as_bytes()).unwrap();
        assert_eq!(matches(&p, target, target, &r), Ok(()));
        assert!(code_is_up(503, &[], &[]));
        assert!(!code_is_up(503, &[], &[503]));
        assert!(!code_is_up(404, &[200], &[]));
    }

    #[test]
    fn compact_headers_and_multiple_vias() {
        let p = req();
        let text = format!(
            "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 198.18.2.1:40000;branch={},SIP/2.0/UDP x;branch=z9hG4bKother\r\ni: {}\r\nCSeq: 7 OPTIONS\r\n\r\n",
            p.branch, p.call_id
        );
        let r = parse_response(text.as_bytes()).unwrap();
        let t = "198.18.2.11:5060".parse().unwrap();
        assert_eq!(matches(&p, t, t, &r), Ok(()));
    }

    #[test]
    fn mismatches_are_rejected() {
        let p = req();
        let t: SocketAddr = "198.18.2.11:5060".parse().unwrap();
        let good = reply_to(&p, 200);
        let r = parse_response(good.as_bytes()).unwrap();
        let forger: SocketAddr = "198.18.1.66:5060".parse().unwrap();
        assert_eq!(
            matches(&p, t, forger, &r),
            Err(Mismatch::WrongSource {
                got: forger,
                want: t
            })
        );
        let other_port: SocketAddr = "198.18.2.11:5070".parse().unwrap();
        assert!(matches!(
            matches(&p, t, other_port, &r),
            Err(Mismatch::WrongSource { .. })
        ));

        let wrong_branch = good.replace(&p.branch, "z9hG4bK-someone-else");
        let r = parse_response(wrong_branch.as_bytes()).unwrap();
        assert!(matches!(matches(&p, t, t, &r), Err(Mismatch::Branch(_))));
        let wrong_call = good.replace(&p.call_id, "other@host");
        let r = parse_response(wrong_call.as_bytes()).unwrap();
        assert_eq!(
            matches(&p, t, t, &r),
            Err(Mismatch::CallId(Some("other@host".into())))
        );
        let wrong_cseq = good.replace("CSeq: 7 OPTIONS", "CSeq: 8 OPTIONS");
        let r = parse_response(wrong_cseq.as_bytes()).unwrap();
        assert!(matches!(matches(&p, t, t, &r), Err(Mismatch::CSeq(_))));
        let wrong_method = good.replace("CSeq: 7 OPTIONS", "CSeq: 7 INVITE");
        let r = parse_response(wrong_method.as_bytes()).unwrap();
        assert!(matches!(matches(&p, t, t, &r), Err(Mismatch::CSeq(_))));
        let trying = good.replace("SIP/2.0 200 OK", "SIP/2.0 100 Trying");
        let r = parse_response(trying.as_bytes()).unwrap();
        assert_eq!(matches(&p, t, t, &r), Err(Mismatch::Provisional(100)));
    }

    #[test]
    fn malformed_and_truncated_replies() {
        assert_eq!(parse_response(b"\xff\xfe"), Err(ParseError::NotText));
        assert_eq!(
            parse_response(b"SIP/2.0 200 OK\r\nVia: x"),
            Err(ParseError::Truncated)
        );
        assert_eq!(parse_response(b"\r\n\r\n"), Err(ParseError::Truncated));
        assert!(matches!(
            parse_response(b"OPTIONS sip:x SIP/2.0\r\n\r\n"),
            Err(ParseError::NotResponse(_))
        ));
        assert!(matches!(
            parse_response(b"SIP/2.0 abc OK\r\n\r\n"),
            Err(ParseError::BadCode(_))
        ));
        assert!(matches!(
            parse_response(b"SIP/2.0 999 Huh\r\n\r\n"),
            Err(ParseError::BadCode(_))
        ));
        // Headers missing: parses, but cannot match.
        let r = parse_response(b"SIP/2.0 200 OK\r\n\r\n").unwrap();
        assert_eq!(r.branch, None);
        let p = req();
        let t = "198.18.2.11:5060".parse().unwrap();
        assert_eq!(matches(&p, t, t, &r), Err(Mismatch::Branch(None)));
    }

    #[test]
    fn parser_never_panics_on_arbitrary_bytes() {
        use rand::{rngs::SmallRng, Rng, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(3261);
        let good = reply_to(&req(), 200).into_bytes();
        for _ in 0..20_000 {
            let mut b = if rng.gen_bool(0.5) {
                good.clone()
            } else {
                (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect()
            };
            for _ in 0..rng.gen_range(0..6) {
                if b.is_empty() {
                    break;
                }
                let i = rng.gen_range(0..b.len());
                match rng.gen_range(0..3) {
                    0 => b[i] = rng.gen(),
                    1 => b.truncate(i),
                    _ => b.insert(i, *b":;, \r\n=".get(rng.gen_range(0..7)).unwrap()),
                }
            }
            let _ = parse_response(&b);
        }
    }
}
