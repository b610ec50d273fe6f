//! Starting the init helper: one clone3 that creates the container's new namespaces (and, on
//! cgroup v2, lands directly in its cgroup), then an exec of our own binary.
//!
//! The shim is multi-threaded, so the child between clone3 and execve may only make raw,
//! async-signal-safe syscalls: no allocation, no locks. Everything it touches is prepared
//! before the clone.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Result, RuntimeError};

/// argv[1] that makes `main` run the init helper.
pub const INIT_ARG: &str = "__crt_init";
/// The sync socket's fd number in the helper.
pub const SYNC_FD: RawFd = 3;

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
const CLONE_PIDFD: u64 = 0x1000;
/// The most fds [`spawn_program`] places.
pub const MAX_PROGRAM_FDS: usize = 8;

/// Clone with `ns_flags` and exec the helper with `stdio` as fds 0-2 and `sync` as fd 3.
/// Returns the helper's pid (as seen from the caller's pid namespace).
pub fn spawn_init(
    ns_flags: i32,
    cgroup: Option<BorrowedFd<'_>>,
    stdio: [BorrowedFd<'_>; 3],
    sync: BorrowedFd<'_>,
) -> Result<i32> {
    let exe = CString::new("/proc/self/exe").map_err(|_| RuntimeError::Init("exe path".into()))?;
    let arg0 =
        CString::new("containerd-shim-crt-v1").map_err(|_| RuntimeError::Init("argv".into()))?;
    let arg1 = CString::new(INIT_ARG).map_err(|_| RuntimeError::Init("argv".into()))?;
    let argv: [*const libc::c_char; 3] = [arg0.as_ptr(), arg1.as_ptr(), std::ptr::null()];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let fds: [RawFd; 4] = [
        stdio[0].as_raw_fd(),
        stdio[1].as_raw_fd(),
        stdio[2].as_raw_fd(),
        sync.as_raw_fd(),
    ];

    let mut args = CloneArgs {
        flags: ns_flags as u32 as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: clone3 without CLONE_VM behaves like fork; the child only runs `exec_child`,
    // which makes raw syscalls on memory prepared above and never returns.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        unsafe { exec_child(&fds, exe.as_ptr(), argv.as_ptr(), envp.as_ptr()) }
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

/// Runs in the cloned child: async-signal-safe calls only.
unsafe fn exec_child(
    fds: &[RawFd; 4],
    exe: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    // Move every source above the target range first, so no dup2 clobbers a later source.
    let mut high = [0 as RawFd; 4];
    for (i, fd) in fds.iter().enumerate() {
        high[i] = libc::fcntl(*fd, libc::F_DUPFD, 16);
        if high[i] < 0 {
            libc::_exit(126);
        }
    }
    for (i, fd) in high.iter().enumerate() {
        if libc::dup2(*fd, i as RawFd) < 0 {
            libc::_exit(126);
        }
    }
    // Nothing of the shim's (ttrpc sockets, other containers' fifos) may reach the container.
    libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
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
    let mut cargs = vec![exe.clone()];
    for a in args {
        cargs.push(CString::new(a.as_bytes()).map_err(|_| bad("args"))?);
    }
    let cenv: Vec<CString> = env
        .iter()
        .map(|e| CString::new(e.as_bytes()).map_err(|_| bad("env")))
        .collect::<Result<_>>()?;
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = cenv.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
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
    // SAFETY: as in spawn_init: fork-like clone3; the child runs only `exec_program`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
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
    let mut high = [0 as RawFd; MAX_PROGRAM_FDS];
    for i in 0..n {
        high[i] = libc::fcntl(fds[i], libc::F_DUPFD_CLOEXEC, 64);
        if high[i] < 0 {
            fail(err);
        }
    }
    let err_high = libc::fcntl(err, libc::F_DUPFD_CLOEXEC, 64);
    if err_high < 0 {
        fail(err);
    }
    for (i, fd) in high.iter().enumerate().take(n) {
        if libc::dup2(*fd, i as RawFd) < 0 {
            fail(err_high);
        }
    }
    if libc::dup3(err_high, n as RawFd, libc::O_CLOEXEC) < 0 {
        fail(err_high);
    }
    libc::syscall(libc::SYS_close_range, n as u32 + 1, u32::MAX, 0u32);
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    libc::execve(exe, argv, envp);
    fail(n as RawFd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

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
