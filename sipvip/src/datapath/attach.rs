//! Attaching the programs to interfaces, pinned or not.

use std::path::{Path, PathBuf};

use aya::programs::{
    links::{FdLink, PinnedLink},
    tc::{
        NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions, TcError, TcHandle,
    },
    xdp::XdpLinkId,
    LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
};

use super::{pin_err, xdp_mut, AttachMode, Datapath, DatapathError, Result};

/// How the TC program is attached (`interfaces.tc_attach`).
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TcAttach {
    /// tcx where the kernel has it (Linux 6.6+), else clsact.
    #[default]
    Auto,
    Tcx,
    Clsact,
}

/// The clsact filter's priority and handle: fixed, so that a restart finds its own filter
/// (and `sipvip down` removes it) rather than adding another.
pub const CLSACT_PRIORITY: u16 = 0x5356;
const CLSACT_HANDLE: TcHandle = TcHandle::new(0x5356, 1);

/// Detaches the clsact egress filter at our priority and handle on `ifname`, if there is one
/// (nothing is left to mark it on bpffs, which holds pins only: `sipvip down` calls this for
/// the interfaces its pinned XDP links name).
pub(super) fn detach_clsact(ifname: &str) {
    // Dropping the link detaches the filter; where there is none, that fails quietly.
    if let Ok(link) = SchedClassifierLink::attached(
        ifname,
        TcAttachType::Egress,
        CLSACT_PRIORITY,
        CLSACT_HANDLE,
        None,
    ) {
        drop(link);
    }
}

/// Where the link of `program` on `ifname` is pinned under `dir`.
pub fn link_pin(dir: &Path, program: &str, ifname: &str) -> PathBuf {
    dir.join(format!("link_{program}_{ifname}"))
}

impl Datapath {
    /// Attaches `program` to `ifname` unless a pinned link already does, and pins the link
    /// under `dir`. `native_only` false falls back to generic XDP with a warning. Returns
    /// whether it attached now (false: adopted).
    pub fn attach_pinned(
        &mut self,
        program: &'static str,
        ifname: &str,
        mode: AttachMode,
        dir: &Path,
    ) -> Result<bool> {
        let link_path = link_pin(dir, program, ifname);
        if PinnedLink::from_pin(&link_path).is_ok() {
            return Ok(false);
        }
        let prog_path = dir.join(format!("prog_{program}"));
        let mut pinned;
        let prog: &mut Xdp = match self.ebpf.as_mut() {
            Some(ebpf) => xdp_mut(ebpf, program)?,
            None => {
                pinned = Xdp::from_pin(&prog_path, aya_obj::programs::XdpAttachType::Interface)
                    .map_err(|source| DatapathError::Program {
                        name: program,
                        source,
                    })?;
                &mut pinned
            }
        };
        let first = match mode {
            AttachMode::Generic => XdpMode::Skb,
            _ => XdpMode::Driver,
        };
        let id = match prog.attach(ifname, first) {
            Ok(id) => id,
            Err(e) if mode == AttachMode::Auto => {
                tracing::warn!(interface = ifname, program, error = %e, "native XDP unsupported here; falling back to generic XDP");
                prog.attach(ifname, XdpMode::Skb)
                    .map_err(|source| DatapathError::Program {
                        name: program,
                        source,
                    })?
            }
            Err(source) => {
                return Err(DatapathError::Program {
                    name: program,
                    source,
                })
            }
        };
        let link = prog
            .take_link(id)
            .map_err(|source| DatapathError::Program {
                name: program,
                source,
            })?;
        pin_link(FdLink::try_from(link), dir, program, ifname)?;
        Ok(true)
    }

    /// Attaches the TC program `program` to `ifname`'s egress unless it already is, and
    /// records it under `dir`, as [`Datapath::attach_pinned`] does for XDP. With tcx (Linux
    /// 6.6+: `how` Tcx, or Auto where the kernel has it) the link is a bpf_link, pinned, and
    /// runs beside any other tcx program (a CNI's). With clsact (`how` Clsact, or Auto on an
    /// older kernel) it is a direct-action filter at a fixed priority and handle
    /// ([`CLSACT_PRIORITY`]), which the kernel keeps after this process exits; `sipvip down`
    /// removes it from the interface the external XDP link names. Returns whether it
    /// attached now (false: adopted).
    pub fn attach_tc_egress_pinned(
        &mut self,
        program: &'static str,
        ifname: &str,
        dir: &Path,
        how: TcAttach,
    ) -> Result<bool> {
        let link_path = link_pin(dir, program, ifname);
        if PinnedLink::from_pin(&link_path).is_ok() {
            return Ok(false);
        }
        let err = |source| DatapathError::Program {
            name: program,
            source,
        };
        let prog_path = dir.join(format!("prog_{program}"));
        let mut pinned;
        let prog: &mut SchedClassifier = match self.ebpf {
            Some(_) => tc_mut(&mut self.ebpf, program)?,
            None => {
                pinned = SchedClassifier::from_pin(&prog_path).map_err(err)?;
                &mut pinned
            }
        };
        let tcx = match how {
            TcAttach::Tcx => true,
            TcAttach::Clsact => false,
            TcAttach::Auto => aya::util::KernelVersion::current()
                .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0)),
        };
        if tcx {
            let id = prog
                .attach_with_options(
                    ifname,
                    TcAttachType::Egress,
                    TcAttachOptions::TcxOrder(LinkOrder::default()),
                )
                .map_err(err)?;
            let link = prog.take_link(id).map_err(err)?;
            pin_link(FdLink::try_from(link), dir, program, ifname)?;
            return Ok(true);
        }
        // clsact: the qdisc may be there already (a CNI's, or ours from an earlier run).
        let _ = aya::programs::tc::qdisc_add_clsact(ifname);
        let attached = prog.attach_with_options(
            ifname,
            TcAttachType::Egress,
            TcAttachOptions::Netlink(NlOptions {
                priority: CLSACT_PRIORITY,
                handle: CLSACT_HANDLE,
                ..NlOptions::default()
            }),
        );
        let now = match attached {
            Ok(id) => {
                // The filter stays in the kernel when this process exits: the link is let go
                // of without detaching it.
                let link = prog.take_link(id).map_err(err)?;
                std::mem::forget(link);
                true
            }
            // Our priority and handle are taken: an earlier run's filter, adopted.
            Err(ProgramError::TcError(TcError::NetlinkError(e)))
                if e.raw_os_error() == Some(libc::EEXIST) =>
            {
                false
            }
            Err(e) => return Err(err(e)),
        };
        Ok(now)
    }

    /// A loaded XDP program, e.g. for BPF_PROG_TEST_RUN.
    pub fn program(&self, name: &'static str) -> Result<&Xdp> {
        self.loaded(name)
    }

    /// A loaded TC program (on-node mode's `sipvip_node_out`), e.g. for BPF_PROG_TEST_RUN.
    pub fn tc_program(&self, name: &'static str) -> Result<&SchedClassifier> {
        self.loaded(name)
    }

    fn loaded<'a, T>(&'a self, name: &'static str) -> Result<&'a T>
    where
        &'a T: TryFrom<&'a aya::programs::Program, Error = ProgramError>,
    {
        self.ebpf
            .as_ref()
            .ok_or(DatapathError::MissingProgram(name))?
            .program(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })
    }

    /// Attaches a program to an interface.
    pub fn attach(
        &mut self,
        program: &'static str,
        ifname: &str,
        mode: XdpMode,
    ) -> Result<XdpLinkId> {
        let ebpf = self
            .ebpf
            .as_mut()
            .ok_or(DatapathError::MissingProgram(program))?;
        xdp_mut(ebpf, program)?
            .attach(ifname, mode)
            .map_err(|source| DatapathError::Program {
                name: program,
                source,
            })
    }

    /// Attaches a TC program to `ifname`'s egress (tcx), unpinned (the bench).
    pub fn attach_tc_egress(
        &mut self,
        program: &'static str,
        ifname: &str,
    ) -> Result<SchedClassifierLinkId> {
        let err = |source| DatapathError::Program {
            name: program,
            source,
        };
        let prog = tc_mut(&mut self.ebpf, program)?;
        prog.attach_with_options(
            ifname,
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(err)
    }

    /// Detaches what [`Datapath::attach_tc_egress`] attached.
    pub fn detach_tc(&mut self, program: &'static str, link: SchedClassifierLinkId) -> Result<()> {
        let err = |source| DatapathError::Program {
            name: program,
            source,
        };
        let prog = tc_mut(&mut self.ebpf, program)?;
        prog.detach(link).map_err(err)
    }

    /// Detaches what [`Datapath::attach`] attached.
    pub fn detach(&mut self, program: &'static str, link: XdpLinkId) -> Result<()> {
        let ebpf = self
            .ebpf
            .as_mut()
            .ok_or(DatapathError::MissingProgram(program))?;
        xdp_mut(ebpf, program)?
            .detach(link)
            .map_err(|source| DatapathError::Program {
                name: program,
                source,
            })
    }
}

/// A loaded TC program, for attaching and detaching.
fn tc_mut<'a>(
    ebpf: &'a mut Option<aya::Ebpf>,
    program: &'static str,
) -> Result<&'a mut SchedClassifier> {
    ebpf.as_mut()
        .ok_or(DatapathError::MissingProgram(program))?
        .program_mut(program)
        .ok_or(DatapathError::MissingProgram(program))?
        .try_into()
        .map_err(|source| DatapathError::Program {
            name: program,
            source,
        })
}

/// Pins an attachment's bpf_link where [`link_pin`] says (a link that is not a bpf_link, such
/// as a netlink-attached one, cannot be pinned).
fn pin_link<E: std::fmt::Display>(
    link: std::result::Result<FdLink, E>,
    dir: &Path,
    program: &'static str,
    ifname: &str,
) -> Result<()> {
    let fd_link = link.map_err(|e| DatapathError::Layout {
        dir: dir.to_path_buf(),
        what: format!("{program} on {ifname} is not a bpf_link and cannot be pinned: {e}"),
    })?;
    let path = link_pin(dir, program, ifname);
    fd_link.pin(&path).map_err(|e| pin_err(&path, e))?;
    Ok(())
}
