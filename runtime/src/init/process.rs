//! The user's process: limits, credentials, capabilities, executable lookup and the final exec.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::caps::CapSets;
use std::os::fd::FromRawFd;

use crate::channel::{Channel, Msg};
use crate::seccomp::SeccompProgram;
use crate::spec::{ProcessPlan, DEFAULT_PATH};

type R<T> = std::result::Result<T, String>;

fn errno(op: &str) -> String {
    format!("{op}: {}", std::io::Error::last_os_error())
}

pub fn set_rlimits(p: &ProcessPlan) -> R<()> {
    for r in &p.rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: plain syscall with a valid struct.
        if unsafe { libc::setrlimit(r.resource as _, &lim) } != 0 {
            return Err(errno(&format!("setrlimit({})", r.resource)));
        }
    }
    Ok(())
}

/// Join the container's own session keyring (`name`, made if it does not exist), as runc does:
/// the container must not see the keys of the runtime's session. The init also makes it
/// searchable by the container's users (by uid, or by "other" in a user namespace, where the
/// owner is not mapped). Kernels without keyrings (ENOSYS) go on without, as under runc.
pub fn join_session_keyring(name: &str, init: bool, userns: bool) -> R<()> {
    const KEYCTL_DESCRIBE: libc::c_int = 6;
    const KEYCTL_SETPERM: libc::c_int = 5;
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_int = 1;
    let c = std::ffi::CString::new(name).map_err(|_| format!("keyring name {name:?}"))?;
    // SAFETY: keyctl with a valid C string.
    let id = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, c.as_ptr()) };
    if id < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            return Ok(());
        }
        return Err(format!("join session keyring {name}: {e}"));
    }
    if !init {
        return Ok(());
    }
    let mut buf = [0u8; 512];
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    let n = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_DESCRIBE,
            id,
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(errno(&format!("describe session keyring {name}")));
    }
    // "type;uid;gid;perm;description"
    let text = String::from_utf8_lossy(&buf[..(n as usize).min(buf.len())]).to_string();
    let perm = text
        .split(';')
        .nth(3)
        .and_then(|p| u32::from_str_radix(p, 16).ok())
        .ok_or_else(|| format!("session keyring {name}: unexpected description {text:?}"))?;
    let search = if userns { 0x08 } else { 0x08_0000 };
    // SAFETY: plain keyctl with integers.
    if unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, id, perm | search) } < 0 {
        return Err(errno(&format!("set permissions of session keyring {name}")));
    }
    Ok(())
}

/// Raise the hard limits the spec asks above the current ones, soft limits unchanged: the
/// exact limits are set in `set_rlimits` at the end of setup, but raising a hard limit takes
/// the host's CAP_SYS_RESOURCE, which is gone inside a user namespace.
pub fn raise_hard_limits(p: &ProcessPlan) -> R<()> {
    for r in &p.rlimits {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls with a valid struct.
        unsafe {
            if libc::getrlimit(r.resource as _, &mut cur) != 0 {
                return Err(errno(&format!("getrlimit({})", r.resource)));
            }
            if r.hard > cur.rlim_max {
                cur.rlim_max = r.hard;
                if libc::setrlimit(r.resource as _, &cur) != 0 {
                    return Err(errno(&format!("setrlimit({})", r.resource)));
                }
            }
        }
    }
    Ok(())
}

/// Returns a log line when the kernel refused the value but the one in force already equals it.
pub fn set_oom_score_adj(value: i32) -> R<Option<String>> {
    const P: &str = "/proc/self/oom_score_adj";
    match std::fs::write(P, value.to_string()) {
        Ok(()) => Ok(None),
        Err(e) => {
            let current = std::fs::read_to_string(P)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            if current == Some(value) {
                Ok(Some(format!(
                    "oom_score_adj {value}: kernel refused the write ({e}); it is already in force"
                )))
            } else {
                Err(format!(
                    "write {value} to oom_score_adj (now {current:?}): {e}"
                ))
            }
        }
    }
}

fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drop the bounding set first (needs CAP_SETPCAP, which the later capset may remove), then
/// switch user keeping capabilities, then install the spec's sets.
pub fn set_credentials(p: &ProcessPlan) -> R<()> {
    let last = cap_last_cap();
    let known: u64 = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    if let Some(c) = &p.caps {
        for cap in 0..=last {
            if c.bounding & (1 << cap) == 0 {
                // SAFETY: prctl with integer arguments.
                if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0
                {
                    return Err(errno(&format!(
                        "drop capability {cap} from the bounding set"
                    )));
                }
            }
        }
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    }
    let groups: Vec<libc::gid_t> = p.additional_gids.clone();
    // SAFETY: valid pointer and length.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(errno(&format!("setgroups({:?})", groups)));
    }
    // SAFETY: plain syscalls.
    if unsafe { libc::setresgid(p.gid, p.gid, p.gid) } != 0 {
        return Err(errno(&format!("setresgid({})", p.gid)));
    }
    if unsafe { libc::setresuid(p.uid, p.uid, p.uid) } != 0 {
        return Err(errno(&format!("setresuid({})", p.uid)));
    }
    if let Some(c) = &p.caps {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
        capset(c, known)?;
        // SAFETY: prctl with integer arguments.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
        }
        for cap in 0..=last {
            if c.ambient & (1 << cap) != 0 {
                // SAFETY: prctl with integer arguments.
                let r = unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                };
                if r != 0 {
                    return Err(errno(&format!("raise ambient capability {cap}")));
                }
            }
        }
    }
    Ok(())
}

fn capset(c: &CapSets, known: u64) -> R<()> {
    let mut hdr = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let (e, p, i) = (
        c.effective & known,
        c.permitted & known,
        c.inheritable & known,
    );
    let data = [
        CapData {
            effective: e as u32,
            permitted: p as u32,
            inheritable: i as u32,
        },
        CapData {
            effective: (e >> 32) as u32,
            permitted: (p >> 32) as u32,
            inheritable: (i >> 32) as u32,
        },
    ];
    // SAFETY: capset with a v3 header and two data words, as the ABI requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(errno("capset"));
    }
    Ok(())
}

pub fn env_path(env: &[String]) -> String {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string()
}

fn is_executable(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access with a valid C string.
    p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

/// Go's exec.LookPath, so the errors read like runc's.
pub fn lookup(arg0: &str, path_var: &str) -> R<PathBuf> {
    if arg0.contains('/') {
        let p = PathBuf::from(arg0);
        return match std::fs::metadata(&p) {
            Err(e) => Err(format!("exec: {arg0:?}: stat {arg0}: {}", io_text(&e))),
            Ok(m) if m.is_dir() => Err(format!("exec: {arg0:?}: is a directory")),
            Ok(_) if !is_executable(&p) => Err(format!("exec: {arg0:?}: permission denied")),
            Ok(_) => Ok(p),
        };
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(arg0);
        if is_executable(&cand) {
            return Ok(cand);
        }
    }
    Err(format!(
        "exec: {arg0:?}: executable file not found in $PATH"
    ))
}

fn io_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::Error::from_raw(code).desc().to_lowercase(),
        None => e.to_string(),
    }
}

pub struct Prepared {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

pub fn prepare(p: &ProcessPlan, path: &Path) -> R<Prepared> {
    let c =
        |s: &[u8]| CString::new(s).map_err(|_| "process.args/env contain a NUL byte".to_string());
    Ok(Prepared {
        path: c(path.as_os_str().as_bytes())?,
        argv: p.args.iter().map(|a| c(a.as_bytes())).collect::<R<_>>()?,
        envp: p.env.iter().map(|a| c(a.as_bytes())).collect::<R<_>>()?,
    })
}

/// Rust ignores SIGPIPE and the shim blocks signals: the user's program gets clean defaults.
/// Done before Ready, not after Start: some 65 system calls off Start's path. Nothing of ours
/// until the exec needs them otherwise: a signal that now ends the helper before Start (a kill
/// of the created container) ends what would have been its program, as with runc.
///
/// Every signal, 32-34 too: the C library keeps those for itself and refuses to touch them,
/// so the kernel's call is made directly (an ignored one would stay ignored in the program).
pub fn reset_signals() {
    /// The kernel's struct sigaction (x86_64 and aarch64 layout); zeroed, it is SIG_DFL.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: resetting dispositions and the mask of this single-threaded process.
    unsafe {
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// The last steps before exec, and exec itself. Returns only on failure.
pub fn exec(p: &ProcessPlan, prep: &Prepared, ch: &mut Channel) -> String {
    // SAFETY: umask never fails.
    unsafe { libc::umask(p.umask.unwrap_or(0o022) as libc::mode_t) };
    if p.no_new_privileges {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return errno("prctl(PR_SET_NO_NEW_PRIVS)");
        }
    }
    let mut argv: Vec<*const libc::c_char> = prep.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = prep.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    if p.no_new_privileges {
        // With no_new_privs seccomp needs no privilege: load it last, so the filter sees no
        // syscall of ours but execve.
        if let Some(sc) = &p.seccomp {
            if let Err(e) = load_seccomp(sc, ch) {
                return e;
            }
        }
    }
    // SAFETY: NUL-terminated arrays of valid C strings.
    unsafe { libc::execve(prep.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let err = std::io::Error::last_os_error();
    format!("exec {}: {}", prep.path.to_string_lossy(), io_text(&err))
}

/// process.scheduler and process.ioPriority, before credentials drop (a realtime policy or an
/// RT I/O class takes CAP_SYS_NICE / CAP_SYS_ADMIN).
pub fn set_scheduling(p: &ProcessPlan) -> R<()> {
    if let Some(s) = &p.scheduler {
        #[repr(C)]
        struct SchedAttr {
            size: u32,
            policy: u32,
            flags: u64,
            nice: i32,
            priority: u32,
            runtime: u64,
            deadline: u64,
            period: u64,
        }
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: s.policy,
            flags: s.flags,
            nice: s.nice,
            priority: s.priority,
            runtime: s.runtime,
            deadline: s.deadline,
            period: s.period,
        };
        // SAFETY: sched_setattr on ourselves with a sched_attr of the size it states.
        if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) } != 0 {
            return Err(errno("apply process.scheduler (sched_setattr)"));
        }
    }
    if let Some(v) = p.io_priority {
        const IOPRIO_WHO_PROCESS: libc::c_int = 1;
        // SAFETY: ioprio_set on ourselves with integer arguments.
        if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, v) } != 0 {
            return Err(errno("apply process.ioPriority (ioprio_set)"));
        }
    }
    Ok(())
}

/// Load the container's seccomp filter into this process, and hand its user-notification fd (if
/// it has SCMP_ACT_NOTIFY rules) to the runtime for the spec's listener.
pub fn load_seccomp(sc: &SeccompProgram, ch: &mut Channel) -> R<()> {
    let filter: Vec<libc::sock_filter> = sc
        .bpf
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let len = u16::try_from(filter.len())
        .map_err(|_| format!("seccomp filter of {} instructions", filter.len()))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) with a valid program that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            sc.flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(errno("load the linux.seccomp filter"));
    }
    if sc.has_listener() {
        // SAFETY: with NEW_LISTENER, seccomp(2) returned a new fd that is ours.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(rc as i32) };
        ch.send_fd(&Msg::SeccompListener, std::os::fd::AsFd::as_fd(&fd))
            .map_err(|e| format!("hand over the seccomp listener fd: {e}"))?;
    }
    Ok(())
}

/// The AppArmor profile and SELinux label the program runs under, both taking effect at exec
/// (set only where the host runs the module: see `lsm.rs`).
pub fn set_lsm_exec_labels(p: &ProcessPlan) -> R<()> {
    if let Some(profile) = &p.apparmor_profile {
        let line = format!("exec {profile}");
        let mut last = String::new();
        for attr in [
            "/proc/thread-self/attr/apparmor/exec",
            "/proc/thread-self/attr/exec",
        ] {
            match std::fs::write(attr, &line) {
                Ok(()) => {
                    last.clear();
                    break;
                }
                Err(e) => last = format!("{attr}: {e}"),
            }
        }
        if !last.is_empty() {
            return Err(format!(
                "apply process.apparmorProfile {profile:?} ({last})"
            ));
        }
    }
    if let Some(label) = &p.selinux_label {
        std::fs::write("/proc/thread-self/attr/exec", label)
            .map_err(|e| format!("apply process.selinuxLabel {label:?}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_reads_like_go() {
        assert_eq!(
            lookup("sh", "/nonexistent:/bin").unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            lookup("nosuchbinary", "/bin:/usr/bin").unwrap_err(),
            "exec: \"nosuchbinary\": executable file not found in $PATH"
        );
        assert!(lookup("/nonexistent/x", "")
            .unwrap_err()
            .contains("no such file or directory"));
    }

    #[test]
    fn path_from_env_or_default() {
        assert_eq!(env_path(&["A=1".into(), "PATH=/x".into()]), "/x");
        assert_eq!(env_path(&[]), DEFAULT_PATH);
    }
}
