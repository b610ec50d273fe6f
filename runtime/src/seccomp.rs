//! linux.seccomp → a BPF program. Compiled once, in the shim, at create: a bad profile fails
//! Create with a clear error before any process exists, and the init helper (and every exec)
//! only has to load the bytes. Semantics follow runc: unknown syscall names are skipped (profiles
//! name syscalls newer than the host's libseccomp), rules whose action is the default are
//! skipped, several conditions on one argument are ORed (one rule each), errnoRet defaults to
//! EPERM, and loading never sets no_new_privs behind the spec's back.

use std::io::{Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompFilterFlag as F, LinuxSeccompOperator as Op,
};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// What the init helper loads with seccomp(2).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeccompProgram {
    /// `struct sock_filter` instructions, 8 bytes each, native endian.
    pub bpf: Vec<u8>,
    /// SECCOMP_FILTER_FLAG_* for seccomp(2).
    pub flags: u32,
    /// With SCMP_ACT_NOTIFY rules: where the notification fd goes (linux.seccomp.listenerPath)
    /// and the metadata sent with it. The helper loads with NEW_LISTENER and hands the fd back.
    pub listener: Option<(PathBuf, String)>,
}

impl SeccompProgram {
    pub fn has_listener(&self) -> bool {
        self.flags & FLAG_NEW_LISTENER != 0
    }
}

/// Hand a notification fd to the spec's listener: a unix socket, one message with the OCI
/// ContainerProcessState JSON and the fd as SCM_RIGHTS (runc's protocol).
pub fn send_to_listener(
    path: &Path,
    metadata: &str,
    pid: i32,
    state: serde_json::Value,
    fd: std::os::fd::BorrowedFd<'_>,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let io = |e: std::io::Error| bad(format!("listenerPath {}: {e}", path.display()));
    let sock = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
    let msg = serde_json::json!({
        "ociVersion": "1.2.0",
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": metadata,
        "state": state,
    });
    let body = serde_json::to_vec(&msg).map_err(|e| bad(e.to_string()))?;
    let fds = [fd.as_raw_fd()];
    nix::sys::socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(&body)],
        &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .map_err(|e| io(e.into()))?;
    Ok(())
}

const FLAG_TSYNC: u32 = 1;
const FLAG_LOG: u32 = 2;
const FLAG_SPEC_ALLOW: u32 = 4;
const FLAG_NEW_LISTENER: u32 = 8;
const FLAG_WAIT_KILLABLE_RECV: u32 = 32;

fn bad(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidSpec(format!("linux.seccomp: {}", msg.into()))
}

fn lib(what: &str) -> impl FnOnce(libseccomp::error::SeccompError) -> RuntimeError + '_ {
    move |e| bad(format!("{what}: {e}"))
}

fn action(a: A, errno_ret: Option<u32>, what: &str) -> Result<ScmpAction> {
    let ret = errno_ret.unwrap_or(libc::EPERM as u32);
    Ok(match a {
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActErrno => ScmpAction::Errno(
            i32::try_from(ret).map_err(|_| bad(format!("{what}: errnoRet {ret} out of range")))?,
        ),
        A::ScmpActTrace => ScmpAction::Trace(
            u16::try_from(ret).map_err(|_| bad(format!("{what}: errnoRet {ret} out of range")))?,
        ),
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActAllow => ScmpAction::Allow,
        A::ScmpActNotify => ScmpAction::Notify,
    })
}

fn compare(op: Op, value: u64, value_two: u64) -> (ScmpCompareOp, u64) {
    match op {
        Op::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        Op::ScmpCmpLt => (ScmpCompareOp::Less, value),
        Op::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        Op::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        Op::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        Op::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        // OCI: `value` is the mask, `valueTwo` what the masked argument must equal.
        Op::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two),
    }
}

/// Compile the spec's filter.
pub fn compile(s: &LinuxSeccomp) -> Result<SeccompProgram> {
    let default = action(s.default_action(), s.default_errno_ret(), "defaultAction")?;
    let mut ctx = ScmpFilterContext::new(default).map_err(lib("new filter"))?;
    // The spec's noNewPrivileges decides that, not the filter.
    ctx.set_ctl_nnp(false)
        .map_err(lib("no_new_privs attribute"))?;
    for arch in s.architectures().as_deref().unwrap_or_default() {
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let a = ScmpArch::from_str(&name).map_err(lib(&format!("architecture {name}")))?;
        ctx.add_arch(a)
            .map_err(lib(&format!("architecture {name}")))?;
    }
    let mut flags = 0;
    for f in s.flags().as_deref().unwrap_or_default() {
        flags |= match f {
            F::SeccompFilterFlagTsync => FLAG_TSYNC,
            F::SeccompFilterFlagLog => FLAG_LOG,
            F::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            F::SeccompFilterFlagWaitKillableRecv => FLAG_WAIT_KILLABLE_RECV,
        };
    }
    for (i, rule) in s
        .syscalls()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let what = format!("syscalls[{i}]");
        let act = action(rule.action(), rule.errno_ret(), &what)?;
        if act == default {
            continue;
        }
        let conds: Vec<ScmpArgCompare> = rule
            .args()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                if a.index() > 5 {
                    return Err(bad(format!("{what}: argument index {} > 5", a.index())));
                }
                let (op, datum) = compare(a.op(), a.value(), a.value_two().unwrap_or(0));
                Ok(ScmpArgCompare::new(a.index() as u32, op, datum))
            })
            .collect::<Result<_>>()?;
        let mut indexes: Vec<usize> = rule
            .args()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|a| a.index())
            .collect();
        indexes.sort_unstable();
        let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
        for name in rule.names() {
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                log::debug!("seccomp: {name} unknown to libseccomp here, rule skipped");
                continue;
            };
            let add = |ctx: &mut ScmpFilterContext, c: &[ScmpArgCompare]| {
                if c.is_empty() {
                    ctx.add_rule(act, sc).map(|_| ())
                } else {
                    ctx.add_rule_conditional(act, sc, c).map(|_| ())
                }
            };
            let res = if repeated {
                conds
                    .iter()
                    .try_for_each(|c| add(&mut ctx, std::slice::from_ref(c)))
            } else {
                add(&mut ctx, &conds)
            };
            res.map_err(lib(&format!("{what} ({name})")))?;
        }
    }
    let notify = s
        .syscalls()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|r| r.action() == A::ScmpActNotify)
        || s.default_action() == A::ScmpActNotify;
    let listener = match (notify, s.listener_path()) {
        (true, Some(p)) if p.is_absolute() => {
            flags |= FLAG_NEW_LISTENER;
            Some((p.clone(), s.listener_metadata().clone().unwrap_or_default()))
        }
        (true, Some(p)) => {
            return Err(bad(format!("listenerPath {} is not absolute", p.display())))
        }
        (true, None) => return Err(bad("SCMP_ACT_NOTIFY needs a listenerPath")),
        (false, _) => None,
    };
    if flags & FLAG_WAIT_KILLABLE_RECV != 0 && listener.is_none() {
        return Err(bad(
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs SCMP_ACT_NOTIFY rules",
        ));
    }
    Ok(SeccompProgram {
        bpf: export(&ctx)?,
        flags,
        listener,
    })
}

/// libseccomp 2.5 exports only to an fd: a memfd, read back.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| bad(format!("export BPF: {e}"));
    // SAFETY: memfd_create with a static name; a new fd is ours on success.
    let fd = unsafe { libc::memfd_create(c"crt-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    // SAFETY: just created.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    ctx.export_bpf(&f).map_err(lib("export BPF"))?;
    f.rewind().map_err(io)?;
    let mut bpf = Vec::new();
    f.read_to_end(&mut bpf).map_err(io)?;
    if bpf.is_empty() || bpf.len() % 8 != 0 {
        return Err(bad(format!("export BPF: {} bytes", bpf.len())));
    }
    Ok(bpf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seccomp(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn compiles_every_action_operator_and_flag() {
        let p = compile(&seccomp(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
                {"names": ["keyctl"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["personality"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["chmod"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"},
                          {"index": 1, "value": 448, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_TRAP",
                 "args": [{"index": 0, "value": 268435456, "valueTwo": 268435456,
                           "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["ptrace"], "action": "SCMP_ACT_TRACE"},
                {"names": ["acct"], "action": "SCMP_ACT_LOG"},
                {"names": ["swapon"], "action": "SCMP_ACT_KILL"},
                {"names": ["swapoff"], "action": "SCMP_ACT_KILL_THREAD"},
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["ioctl"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 1, "value": 1, "op": "SCMP_CMP_NE"},
                          {"index": 2, "value": 2, "op": "SCMP_CMP_LT"},
                          {"index": 3, "value": 3, "op": "SCMP_CMP_LE"},
                          {"index": 4, "value": 4, "op": "SCMP_CMP_GE"},
                          {"index": 5, "value": 5, "op": "SCMP_CMP_GT"}]}
            ]
        })))
        .unwrap();
        assert_eq!(p.flags, FLAG_LOG | FLAG_SPEC_ALLOW);
        assert!(p.bpf.len() > 8 * 20, "{} bytes", p.bpf.len());
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let notify = compile(&seccomp(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        })))
        .unwrap_err()
        .to_string();
        assert!(notify.contains("listenerPath"), "{notify}");
        let ok = compile(&seccomp(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/l.sock", "listenerMetadata": "m",
            "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        })))
        .unwrap();
        assert!(ok.has_listener());
        assert_eq!(
            ok.listener,
            Some((PathBuf::from("/run/l.sock"), "m".to_string()))
        );
        let index = compile(&seccomp(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]
        })))
        .unwrap_err()
        .to_string();
        assert!(index.contains("argument index 6"), "{index}");
    }
}
