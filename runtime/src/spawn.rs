//! Starting the init helper: one clone3 that creates the container's new namespaces (and, on
//! cgroup v2, lands directly in its cgroup), then an exec of our own binary.
//!
//! The shim is multi-threaded, so the child between clone3 and execve may only make raw,
//! async-signal-safe syscalls: no allocation, no locks. Everything it touches is prepared
//! before the clone.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

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
