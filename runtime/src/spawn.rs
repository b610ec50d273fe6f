//! Starting the init helper: one clone3 that creates the container's new namespaces (and, on
//! cgroup v2, lands directly in its cgroup), then an exec of our own binary.
//!
//! The shim is multi-threaded, so the child between clone3 and execve may only make raw,
//! async-signal-safe syscalls: no allocation, no locks. Everything it touches is prepared
//! before the clone.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Result, RuntimeError};

/// argv[1] that makes `main` run the init helper.
pub const INIT_ARG: &str = "__crt_init";
/// The sync socket's fd number in the helper.
pub const SYNC_FD: RawFd = 3;
/// The runtime's mount namespace in the helper: where the helper starts in a throwaway mount
/// namespace (for its read-only executable, when no detached one could be made) it goes back to
/// this one to make the container's, so the container's mounts keep their propagation relation
/// to the host's.
pub const HOST_MNT_FD: RawFd = 4;

#[repr(C)]
#[derive(Default)]
pub(crate) struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// `clone3(2)` without CLONE_VM: fork-like. Async-signal-safe (a raw syscall), so a child may
/// call it too. 0 in the child, the pid in the parent, -1 with errno on failure.
pub(crate) unsafe fn clone3(args: &CloneArgs) -> libc::c_long {
    libc::syscall(
        libc::SYS_clone3,
        args as *const CloneArgs,
        std::mem::size_of::<CloneArgs>(),
    )
}

/// Strings as execve(2) takes them: NUL-terminated, in a NULL-terminated pointer array, all
/// allocated before a fork so the child allocates nothing.
struct CArray {
    _strings: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

impl CArray {
    /// `None` when a string holds a NUL byte.
    fn new<S: AsRef<[u8]>>(items: impl IntoIterator<Item = S>) -> Option<CArray> {
        let strings = items
            .into_iter()
            .map(|s| CString::new(s.as_ref()).ok())
            .collect::<Option<Vec<_>>>()?;
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Some(CArray {
            _strings: strings,
            ptrs,
        })
    }

    fn as_ptr(&self) -> *const *const libc::c_char {
        self.ptrs.as_ptr()
    }
}

pub(crate) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const CLONE_PIDFD: u64 = 0x1000;
/// The most fds [`spawn_program`] places.
pub const MAX_PROGRAM_FDS: usize = 8;

/// Clone with `ns_flags` and exec the helper with `stdio` as fds 0-2 and `sync` as fd 3.
/// Returns the helper's pid (as seen from the caller's pid namespace). Used when no zygote
/// serves (zygote.rs): helpers normally are its forks.
pub fn spawn_init(
    ns_flags: i32,
    cgroup: Option<BorrowedFd<'_>>,
    stdio: [BorrowedFd<'_>; 3],
    sync: BorrowedFd<'_>,
) -> Result<i32> {
    let fds = [stdio[0], stdio[1], stdio[2], sync];
    spawn_self(&[INIT_ARG], ns_flags, cgroup, fds)
}

/// Start the zygote (zygote.rs) with its doorbell eventfd as fd 0 and `sync` as fd 3, in no
/// new namespace but the throwaway mount one; its fds 1-2 are /dev/null. `owner` goes to its
/// argv, for `ps`.
pub(crate) fn spawn_zygote(
    doorbell: BorrowedFd<'_>,
    sync: BorrowedFd<'_>,
    owner: &str,
) -> Result<i32> {
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|source| RuntimeError::Io {
            op: "open /dev/null",
            source,
        })?;
    let n = null.as_fd();
    spawn_self(
        &[crate::zygote::ZYGOTE_ARG, owner],
        0,
        None,
        [doorbell, n, n, sync],
    )
}

/// Clone with `ns_flags` (on v2 into `cgroup`) and exec our binary with `args` after argv[0],
/// `fds` as fds 0-3 and the runtime's mount namespace as [`HOST_MNT_FD`].
fn spawn_self(
    args: &[&str],
    ns_flags: i32,
    cgroup: Option<BorrowedFd<'_>>,
    fds: [BorrowedFd<'_>; 4],
) -> Result<i32> {
    // CVE-2019-5736: the helper runs inside the container until it execs the user's program,
    // and a `#!/proc/self/exe` entrypoint would run it there as the program. Its executable is
    // therefore our binary seen through a read-only bind mount: /proc/PID/exe can never be
    // opened for writing. The zygote's forks inherit its executable, so they are covered too.
    // Best a detached bind (no namespace holds it) exec'd through its fd; else one made in the
    // child's own throwaway mount namespace (never the host's).
    let sealed = sealed_exe();
    let real = std::fs::read_link("/proc/self/exe")
        .ok()
        .filter(|p| sealed.is_none() && p.is_absolute() && p.exists());
    let protect = real.is_some();
    if sealed.is_none() && !protect {
        log::warn!("our binary's path is gone (upgraded?): the init helper runs without a read-only executable");
    }
    let exe = CString::new(
        real.as_deref()
            .map(|p| p.as_os_str().as_bytes())
            .unwrap_or(b"/proc/self/exe"),
    )
    .map_err(|_| RuntimeError::Init("exe path".into()))?;
    let argv = CArray::new(std::iter::once("containerd-shim-crt-v1").chain(args.iter().copied()))
        .ok_or_else(|| RuntimeError::Init("argv".into()))?;
    let envp = CArray::new(Vec::<&str>::new()).ok_or_else(|| RuntimeError::Init("envp".into()))?;
    let host_mnt = std::fs::File::open("/proc/self/ns/mnt").map_err(|source| RuntimeError::Io {
        op: "open /proc/self/ns/mnt",
        source,
    })?;
    let fds: [RawFd; 6] = [
        fds[0].as_raw_fd(),
        fds[1].as_raw_fd(),
        fds[2].as_raw_fd(),
        fds[3].as_raw_fd(),
        host_mnt.as_raw_fd(),
        sealed.unwrap_or(-1),
    ];
    // Without a detached bind, a throwaway mount namespace for the read-only one; the
    // container's own is made (or joined) by the helper after it went back to HOST_MNT_FD
    // (with a detached bind, that is the namespace it is in).
    let throwaway = if protect { libc::CLONE_NEWNS } else { 0 };

    let mut args = CloneArgs {
        flags: (ns_flags | throwaway) as u32 as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: the child only runs `exec_child`, which makes raw syscalls on memory prepared
    // above and never returns.
    let ret = unsafe { clone3(&args) };
    if ret == 0 {
        unsafe { exec_child(&fds, protect, exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) }
    }
    if ret < 0 {
        return Err(RuntimeError::Sys {
            op: "clone3",
            path: format!("flags {:#x}", args.flags),
            source: nix::Error::last(),
        });
    }
    Ok(ret as i32)
}

/// A child in a user namespace that lives until the returned pipe end is closed: a new, still
/// unmapped one (`join` None), whose fd only a process can make, or the one `join` refers to,
/// so its maps can be read from /proc/<pid>/{uid,gid}_map (a namespace pinned by a bind mount,
/// as CRI's, has no process of its own). Safe from the multi-threaded shim: the child only
/// makes raw syscalls; the caller's reaper reaps it.
pub fn userns_holder(join: Option<BorrowedFd<'_>>) -> Result<(i32, OwnedFd)> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| RuntimeError::Sys {
            op: "pipe",
            path: "for a user namespace".into(),
            source,
        })
    };
    let (hold_r, hold_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let (hr, hw, rr, rw) = (
        hold_r.as_raw_fd(),
        hold_w.as_raw_fd(),
        ready_r.as_raw_fd(),
        ready_w.as_raw_fd(),
    );
    let nsfd = join.map(|f| f.as_raw_fd());
    let args = CloneArgs {
        flags: if nsfd.is_some() {
            0
        } else {
            libc::CLONE_NEWUSER as u64
        },
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: the child makes raw syscalls on fds it inherited and never returns.
    let ret = unsafe { clone3(&args) };
    if ret == 0 {
        unsafe {
            libc::close(hw);
            libc::close(rr);
            let ok: u8 = nsfd
                .is_none_or(|fd| libc::setns(fd, libc::CLONE_NEWUSER) == 0)
                .into();
            libc::write(rw, (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(hr, (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    if ret < 0 {
        return Err(RuntimeError::Sys {
            op: "clone3",
            path: "for a user namespace".into(),
            source: nix::Error::last(),
        });
    }
    drop(hold_r);
    drop(ready_w);
    let mut b = [0u8; 1];
    match nix::unistd::read(&ready_r, &mut b) {
        Ok(1) if b[0] == 1 => Ok((ret as i32, hold_w)),
        _ => Err(RuntimeError::Init(
            "no child came up in the user namespace (setns refused?)".into(),
        )),
    }
}

/// Make `fds[i]` fd number `i` (async-signal-safe: no allocation). Every source is first moved
/// above the target range, so no dup2 clobbers a source still to be placed; the copies are
/// close-on-exec. At most MAX_PROGRAM_FDS fds.
pub(crate) unsafe fn place_fds(fds: &[RawFd]) -> bool {
    let mut high = [0 as RawFd; MAX_PROGRAM_FDS];
    if fds.len() > MAX_PROGRAM_FDS {
        return false;
    }
    for (i, fd) in fds.iter().enumerate() {
        high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64);
        if high[i] < 0 {
            return false;
        }
    }
    for (i, fd) in high.iter().enumerate().take(fds.len()) {
        if libc::dup2(*fd, i as RawFd) < 0 {
            return false;
        }
    }
    true
}

/// A program started by the shim gets an empty signal mask (the shim blocks SIGCHLD) and the
/// default SIGPIPE (Rust ignores it); async-signal-safe.
unsafe fn reset_signals() {
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
}

/// Our binary on a detached read-only bind mount, as an O_PATH fd to exec through, made once
/// per process; `None` where the new mount API is refused (before Linux 5.12, or without
/// CAP_SYS_ADMIN over our mount namespace).
///
/// Why not a bind in a throwaway mount namespace for each child: the clone copies every host
/// mount, and leaving that namespace (or its child's exit) destroys it, which waits for an
/// expedited RCU grace period, 0.3-1.3 ms on a VM. The fd is kept for the process's life:
/// closing the last fd of a detached mount dissolves it, with the same wait. /proc/self/exe
/// pins the very binary this process runs, even once an upgrade replaced its path.
fn sealed_exe() -> Option<RawFd> {
    static SEALED: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    SEALED
        .get_or_init(|| {
            let made = crate::mount_api::clone_tree("/proc/self/exe", false).and_then(|fd| {
                crate::mount_api::set_attr(
                    fd.as_fd(),
                    false,
                    crate::mount_api::MOUNT_ATTR_RDONLY,
                    0,
                    None,
                    "our binary",
                )
                .map(|()| fd)
            });
            made.map_err(|e| log::info!("no detached read-only executable ({e}): helpers start in a throwaway mount namespace"))
                .ok()
        })
        .as_ref()
        .map(|fd| fd.as_raw_fd())
}

/// Where the detached executable's fd goes in the child, after fds 0-3 and HOST_MNT_FD.
const SEALED_FD: RawFd = 5;

/// Runs in the cloned child: async-signal-safe calls only.
unsafe fn exec_child(
    fds: &[RawFd; 6],
    protect: bool,
    exe: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    let sealed = fds[5] >= 0;
    if !place_fds(if sealed { &fds[..] } else { &fds[..5] }) {
        libc::_exit(126);
    }
    // Nothing of the shim's (ttrpc sockets, other containers' fifos) may reach the container;
    // the executable's fd is closed by the exec itself.
    let keep = if sealed { SEALED_FD + 1 } else { SEALED_FD };
    libc::syscall(libc::SYS_close_range, keep as u32, u32::MAX, 0u32);
    if sealed {
        if libc::fcntl(SEALED_FD, libc::F_SETFD, libc::FD_CLOEXEC) != 0 {
            libc::_exit(125);
        }
        libc::syscall(
            libc::SYS_execveat,
            SEALED_FD,
            c"".as_ptr(),
            argv,
            envp,
            libc::AT_EMPTY_PATH,
        );
        libc::_exit(127);
    }
    if protect {
        let none: *const libc::c_char = std::ptr::null();
        // Private first, so the bind never propagates to the host.
        if libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        ) != 0
            || libc::mount(exe, exe, none, libc::MS_BIND, std::ptr::null()) != 0
            || libc::mount(
                none,
                exe,
                none,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                std::ptr::null(),
            ) != 0
        {
            libc::_exit(125);
        }
    }
    libc::execve(exe, argv, envp);
    libc::_exit(127);
}

/// Start a plain host program (a logging binary, a hook) with `fds` as its fds 0, 1, 2, ... and
/// exactly the environment `env`. Nothing else of the shim's reaches it: its other fds are closed,
/// its signal mask and ignored signals reset. Returns its pid and a pidfd (taken atomically by
/// clone3, so signals can never reach a reused pid); the shim's reaper reaps it. An exec failure
/// comes back as an error naming the program, and nobody waits here: the reaper stays the only
/// one that calls waitpid.
pub fn spawn_program(
    path: &Path,
    args: &[String],
    env: &[String],
    fds: &[BorrowedFd<'_>],
) -> Result<(i32, OwnedFd)> {
    let bad = |what: &str| RuntimeError::Init(format!("{what} of {} contains NUL", path.display()));
    if fds.len() > MAX_PROGRAM_FDS {
        return Err(RuntimeError::Init(format!(
            "{}: too many fds ({})",
            path.display(),
            fds.len()
        )));
    }
    let exe = CString::new(path.as_os_str().as_bytes()).map_err(|_| bad("path"))?;
    let argv = CArray::new(
        std::iter::once(path.as_os_str().as_bytes()).chain(args.iter().map(|a| a.as_bytes())),
    )
    .ok_or_else(|| bad("args"))?;
    let envp = CArray::new(env).ok_or_else(|| bad("env"))?;
    let mut raw = [-1 as RawFd; MAX_PROGRAM_FDS];
    for (i, f) in fds.iter().enumerate() {
        raw[i] = f.as_raw_fd();
    }
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| RuntimeError::Sys {
            op: "pipe",
            path: path.display().to_string(),
            source,
        })?;
    let mut pidfd: RawFd = -1;
    let args = CloneArgs {
        flags: CLONE_PIDFD,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    let n = fds.len();
    let err_fd = err_w.as_raw_fd();
    // SAFETY: as in spawn_init; the child runs only `exec_program`.
    let ret = unsafe { clone3(&args) };
    if ret == 0 {
        unsafe { exec_program(&raw, n, err_fd, exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) }
    }
    if ret < 0 {
        return Err(RuntimeError::Sys {
            op: "clone3",
            path: path.display().to_string(),
            source: nix::Error::last(),
        });
    }
    drop(err_w);
    // SAFETY: clone3 with CLONE_PIDFD stored a new fd for us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let mut errno = [0u8; 4];
    let mut f = std::fs::File::from(err_r);
    let mut got = 0;
    while got < 4 {
        match f.read(&mut errno[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got == 4 {
        let e = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
        return Err(RuntimeError::Init(format!("exec {}: {e}", path.display())));
    }
    Ok((ret as i32, pidfd))
}

/// Runs in the cloned child of [`spawn_program`]: async-signal-safe calls only. On failure the
/// errno goes to `err` (close-on-exec, so success closes it unwritten).
unsafe fn exec_program(
    fds: &[RawFd; MAX_PROGRAM_FDS],
    n: usize,
    err: RawFd,
    exe: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    let fail = |fd: RawFd| -> ! {
        let e = *libc::__errno_location();
        libc::write(fd, &e as *const i32 as *const libc::c_void, 4);
        libc::_exit(127)
    };
    // The error pipe goes above the program's fds first, so placing them cannot clobber it.
    let err_high = libc::fcntl(err, libc::F_DUPFD_CLOEXEC, 64);
    if err_high < 0 {
        fail(err);
    }
    if !place_fds(&fds[..n]) {
        fail(err_high);
    }
    if libc::dup3(err_high, n as RawFd, libc::O_CLOEXEC) < 0 {
        fail(err_high);
    }
    libc::syscall(libc::SYS_close_range, n as u32 + 1, u32::MAX, 0u32);
    reset_signals();
    libc::execve(exe, argv, envp);
    fail(n as RawFd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_program_feeds_stdin_collects_output_status_and_times_out() {
        let sh = Path::new("/bin/sh");
        let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        let r = run_program(
            sh,
            &argv("cat; echo err >&2; echo \"$X\"; exit 3"),
            &["X=only".to_string()],
            b"state-json ",
            Some(std::time::Duration::from_secs(10)),
        )
        .unwrap();
        assert_eq!(r.status, Some(3));
        assert_eq!(String::from_utf8_lossy(&r.stdout), "state-json only\n");
        assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n");
        let t = std::time::Instant::now();
        let r = run_program(
            sh,
            &argv("sleep 30"),
            &[],
            b"",
            Some(std::time::Duration::from_millis(300)),
        )
        .unwrap();
        assert_eq!(r.status, None, "timed out");
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        let e = run_program(Path::new("/nonexistent/hook"), &[], &[], b"", None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/hook"), "{e}");
    }

    #[test]
    fn spawn_program_places_fds_and_env_and_reports_exec_errors() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let (r, w) = std::io::pipe().unwrap();
        let args = [
            "-c".to_string(),
            "echo \"$X:$PATH\" >&3; ls /proc/self/fd".to_string(),
        ];
        let (pid, _pidfd) = spawn_program(
            Path::new("/bin/sh"),
            &args,
            &["X=1".to_string()],
            &[null.as_fd(), null.as_fd(), null.as_fd(), w.as_fd()],
        )
        .unwrap();
        drop(w);
        let mut out = String::new();
        let mut r = std::fs::File::from(OwnedFd::from(r));
        r.read_to_string(&mut out).unwrap();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        // Only X in the environment (sh sets no PATH of its own in the env).
        assert!(out.starts_with("1:"), "{out}");
        let err = spawn_program(Path::new("/nonexistent/logger"), &[], &[], &[null.as_fd()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("exec /nonexistent/logger") && err.contains("No such file"),
            "{err}"
        );
    }
}

/// What a program run by [`run_program`] left.
#[derive(Debug)]
pub struct ProgramOutput {
    /// Its exit code (128+signal when killed); `None` when it outlived its timeout and was killed.
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Keep at most this much of a program's stdout and stderr.
const OUTPUT_CAP: usize = 64 * 1024;

/// Run a host program to completion (a hook): `stdin` on its stdin, exactly `env`, `argv` as its
/// argv (`[path]` when empty). The shim has one reaper that reaps every child, so this never
/// waits for the program itself: a forked intermediary (async-signal-safe code only) starts it,
/// waits for it and writes its pid and wait status to a pipe. The intermediary is the one the
/// shim's reaper collects.
pub fn run_program(
    path: &Path,
    argv: &[String],
    env: &[String],
    stdin: &[u8],
    timeout: Option<std::time::Duration>,
) -> Result<ProgramOutput> {
    let bad = |what: &str| RuntimeError::Init(format!("{what} of {} contains NUL", path.display()));
    let sys = |op: &'static str| {
        move |source: nix::Error| RuntimeError::Sys {
            op,
            path: path.display().to_string(),
            source,
        }
    };
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| bad("path"))?;
    if unsafe { libc::access(cpath.as_ptr(), libc::X_OK) } != 0 {
        return Err(RuntimeError::Sys {
            op: "exec",
            path: path.display().to_string(),
            source: nix::Error::last(),
        });
    }
    let argp = if argv.is_empty() {
        CArray::new([path.as_os_str().as_bytes()])
    } else {
        CArray::new(argv)
    }
    .ok_or_else(|| bad("args"))?;
    let envp = CArray::new(env).ok_or_else(|| bad("env"))?;
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"));
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (st_r, st_w) = pipe()?;
    let fds = [
        in_r.as_raw_fd(),
        out_w.as_raw_fd(),
        err_w.as_raw_fd(),
        st_w.as_raw_fd(),
    ];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: the child runs only `intermediary`, raw syscalls on memory prepared above, and
    // never returns.
    let ret = unsafe { clone3(&args) };
    if ret == 0 {
        unsafe { intermediary(&fds, cpath.as_ptr(), argp.as_ptr(), envp.as_ptr()) }
    }
    if ret < 0 {
        return Err(sys("clone3")(nix::Error::last()));
    }
    drop((in_r, out_w, err_w, st_w));
    let mut feed = std::fs::File::from(in_w);
    let data = stdin.to_vec();
    // A hook that never reads stdin must not block us: the state goes in from a thread.
    let feeder = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut feed, &data);
    });
    let out = collect(out_r, err_r, st_r, timeout);
    let _ = feeder.join();
    Ok(out)
}

/// Read stdout, stderr and the intermediary's report until the program ended (or its timeout,
/// then kill it and wait for the report of its death).
fn collect(
    out_r: OwnedFd,
    err_r: OwnedFd,
    st_r: OwnedFd,
    timeout: Option<std::time::Duration>,
) -> ProgramOutput {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let (mut stdout, mut stderr, mut report) = (Vec::new(), Vec::new(), Vec::new());
    let mut open = [true, true, true];
    let mut timed_out = false;
    let mut buf = [0u8; 8192];
    while open[2] {
        let wait = match deadline {
            Some(d) if !timed_out => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
            _ => PollTimeout::NONE,
        };
        let fds_all = [&out_r, &err_r, &st_r];
        let mut pfds: Vec<PollFd> = fds_all
            .iter()
            .enumerate()
            .filter(|(i, _)| open[*i])
            .map(|(_, f)| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        let which: Vec<usize> = (0..3).filter(|i| open[*i]).collect();
        match poll(&mut pfds, wait) {
            Ok(0) => {
                // The timeout: the intermediary has not reaped the program, so its pid (the
                // report's first 4 bytes) cannot have been reused.
                timed_out = true;
                if report.len() >= 4 {
                    let pid = i32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
                    // SAFETY: plain kill of a pid our intermediary still holds.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                continue;
            }
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => break,
        }
        for (k, p) in pfds.iter().enumerate() {
            if !p.any().unwrap_or(false) {
                continue;
            }
            let i = which[k];
            let n = nix::unistd::read(fds_all[i], &mut buf).unwrap_or(0);
            if n == 0 {
                open[i] = false;
                continue;
            }
            let sink = match i {
                0 => &mut stdout,
                1 => &mut stderr,
                _ => &mut report,
            };
            if sink.len() < OUTPUT_CAP {
                sink.extend_from_slice(&buf[..n]);
            }
        }
    }
    // What the program wrote before it ended is in the pipes; whatever it left running may
    // hold them open, so take only what is there.
    for (i, f) in [&out_r, &err_r].into_iter().enumerate() {
        if !open[i] {
            continue;
        }
        let _ = nix::fcntl::fcntl(
            f,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        loop {
            match nix::unistd::read(f, &mut buf) {
                Ok(n) if n > 0 => {
                    let sink = if i == 0 { &mut stdout } else { &mut stderr };
                    if sink.len() < OUTPUT_CAP {
                        sink.extend_from_slice(&buf[..n]);
                    }
                }
                _ => break,
            }
        }
    }
    let status = if report.len() >= 8 && !timed_out {
        let ws = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
        Some(if libc::WIFEXITED(ws) {
            libc::WEXITSTATUS(ws)
        } else {
            128 + libc::WTERMSIG(ws)
        })
    } else if report.len() >= 8 {
        None
    } else {
        Some(127)
    };
    ProgramOutput {
        status,
        stdout,
        stderr,
    }
}

/// The forked intermediary of [`run_program`]: async-signal-safe calls only. fds: the program's
/// stdin, stdout, stderr, then the report pipe.
unsafe fn intermediary(
    fds: &[RawFd; 4],
    exe: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    let pid = clone3(&args);
    if pid == 0 {
        if !place_fds(&fds[..3]) {
            libc::_exit(127);
        }
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        reset_signals();
        libc::execve(exe, argv, envp);
        libc::_exit(127);
    }
    let st = fds[3];
    // Nothing of the shim's stays open here while the program runs (a client's fifo, say).
    if st > 0 {
        libc::syscall(libc::SYS_close_range, 0u32, (st - 1) as u32, 0u32);
    }
    libc::syscall(libc::SYS_close_range, (st + 1) as u32, u32::MAX, 0u32);
    if pid < 0 {
        libc::_exit(1);
    }
    let p = pid as i32;
    libc::write(st, &p as *const i32 as *const libc::c_void, 4);
    let mut ws: libc::c_int = 0;
    while libc::waitpid(p, &mut ws, 0) < 0 && *libc::__errno_location() == libc::EINTR {}
    libc::write(st, &ws as *const i32 as *const libc::c_void, 4);
    libc::_exit(0)
}
