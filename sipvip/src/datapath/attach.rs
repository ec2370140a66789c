//! Attaching the programs to interfaces, pinned or not.

use std::path::{Path, PathBuf};

use aya::programs::{links::PinnedLink, xdp::XdpLinkId, Xdp, XdpMode};

use super::{pin_err, xdp_mut, AttachMode, Datapath, DatapathError, Result};

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
        let fd_link =
            aya::programs::links::FdLink::try_from(link).map_err(|e| DatapathError::Layout {
                dir: dir.to_path_buf(),
                what: format!("{program} on {ifname} is not a bpf_link and cannot be pinned: {e}"),
            })?;
        fd_link
            .pin(&link_path)
            .map_err(|e| pin_err(&link_path, e))?;
        Ok(true)
    }

    /// A loaded program, e.g. for BPF_PROG_TEST_RUN.
    pub fn program(&self, name: &'static str) -> Result<&Xdp> {
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
