//! The transport protocols sipvip serves and probes: one enum for services and monitors.

use serde::Deserialize;

/// UDP or TCP (`"udp"`, `"tcp"` in the configuration).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
}

impl Protocol {
    /// The protocol of an IP protocol number, if it is one of ours.
    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            sipvip_common::IPPROTO_UDP => Some(Protocol::Udp),
            sipvip_common::IPPROTO_TCP => Some(Protocol::Tcp),
            _ => None,
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Udp => sipvip_common::IPPROTO_UDP,
            Protocol::Tcp => sipvip_common::IPPROTO_TCP,
        }
    }

    /// `"udp"` or `"tcp"`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        }
    }
}
