//! The zygote: one init helper per shim, exec'd when the shim starts (spawn.rs: through its
//! read-only executable), that forks every later helper, a container's init or an exec.
//!
//! Why: exec'ing our binary for each helper cost about 1 ms of every Create and exec, measured
//! on a VM: the exec itself, glibc's start-up (dozens of CPUIDs, each trapped by the
//! hypervisor) and leaving the throwaway mount namespace (an expedited RCU grace period). A fork
//! of the single-threaded zygote is a fresh single-threaded process, so it may run ordinary
//! Rust, and it inherits the zygote's read-only /proc/self/exe.
//!
//! On the zygote's socket the runtime sends 8 bytes (the clone flags) with the helper's fds
//! 0-3, on cgroup v2 its cgroup directory, and for the shim's first helper the socket of a
//! spare network namespace (spare_net.rs; bit 63 of the request), which the zygote clones it
//! in, in place of CLONE_NEWNET (SCM_RIGHTS, one sendmsg); the zygote answers 8 bytes, the
//! helper's pid (bit 62 set where it is in the spare) or -errno of clone3. CLONE_PARENT makes
//! each helper the shim's own child, so the shim's one reaper reaps it as before, and its exit
//! signal is the zygote's, SIGCHLD. A zygote that is gone (killed, or it failed to start) only means helpers are
//! exec'd one by one again ([`spawn_helper`]).
//!
//! The zygote sleeps on an eventfd (its fd 0, the doorbell), which the runtime rings after
//! each request, not on its socket. A write to a unix socket wakes its reader as a "sync"
//! wake-up: the scheduler takes the writer for about to sleep and puts the reader on the
//! writer's core, where it preempts the writer. Here the writer does not sleep: the rest of
//! Create (cgroups, state, the plan) is meant to run on one core while the zygote's clone3
//! runs on the other, and traces showed it waiting out the whole clone3 (0.3-0.5 ms) behind
//! the zygote on the same core, the other one idle. An eventfd's wake-up carries no such hint.
//! That alone is not enough: the scheduler still often places the woken zygote on the
//! ringing core (its last one) and lets it preempt the ringer. So the runtime also moves it
//! away from that core before it rings (affinity.rs) and names the core in the request's high
//! 32 bits (plus one; 0 for none), which the zygote adds back before its clone3: helpers never
//! inherit the narrowed affinity.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::error::{Result, RuntimeError};
use crate::spawn::{self, CloneArgs, HOST_MNT_FD, SYNC_FD};

/// argv[1] that makes `main` run the zygote.
pub const ZYGOTE_ARG: &str = "__crt_zygote";

const CLONE_PARENT: u64 = libc::CLONE_PARENT as u64;
/// stdin, stdout, stderr, the helper's channel, on v2 its cgroup, and a spare network
/// namespace's socket.
const MAX_FDS: usize = 6;
/// In a request: its last fd is a spare network namespace's socket (spare_net.rs), to clone the
/// helper in, in place of CLONE_NEWNET.
const SPARE_NET: u64 = 1 << 63;
/// In an answer (a pid): the helper was cloned in the spare network namespace.
const IN_SPARE_NET: i64 = 1 << 62;

struct Zygote {
    pid: i32,
    sock: UnixStream,
    doorbell: OwnedFd,
}

/// The zygote's fd for the doorbell eventfd (in place of a stdin it never reads). Every helper
/// gets its own fd 0, so none inherits it.
const DOORBELL_FD: RawFd = 0;

/// The shim's zygote; `None` before [`start`] and once it is gone.
static ZYGOTE: Mutex<Option<Zygote>> = Mutex::new(None);

fn zygote() -> MutexGuard<'static, Option<Zygote>> {
    ZYGOTE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Start the zygote; the shim daemon calls this once, first thing. A failure costs only time:
/// helpers are then exec'd one by one. `owner` (the shim's bundle) names it in `ps`.
pub fn start(owner: &str) -> Result<()> {
    let (ours, theirs) = UnixStream::pair().map_err(crate::error::io("socketpair"))?;
    // SAFETY: eventfd with valid flags; the fd is ours on success.
    let doorbell = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_SEMAPHORE) };
    if doorbell < 0 {
        return Err(RuntimeError::Io {
            op: "eventfd",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: eventfd just returned it.
    let doorbell = unsafe { OwnedFd::from_raw_fd(doorbell) };
    let pid = spawn::spawn_zygote(doorbell.as_fd(), theirs.as_fd(), owner)?;
    // Its start-up off this core (affinity.rs); its first request undoes this.
    crate::affinity::zygote_away_from_this_cpu(pid);
    *zygote() = Some(Zygote {
        pid,
        sock: ours,
        doorbell,
    });
    Ok(())
}

/// Let the zygote go (it exits when its socket closes) and wait for it, so a shim leaves no
/// process behind. Only once the shim's reaper has stopped: then nobody else waits.
pub fn stop() {
    let Some(z) = zygote().take() else { return };
    drop(z.sock);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(z.pid), None);
}

/// The zygote's pid, while it serves.
pub fn pid() -> Option<i32> {
    zygote().as_ref().map(|z| z.pid)
}

/// A helper asked for, its pid not read yet ([`Spawning::pid`]); what happens in between (on
/// v1 the rest of Create up to the plan) overlaps the helper's clone3. Other requests wait
/// meanwhile: the zygote's answers are read in the order they were asked for.
pub(crate) struct Spawning {
    flags: u64,
    state: SpawnState,
}

enum SpawnState {
    /// The zygote's answer is pending; the guard keeps other requests out until it is read.
    Asked(MutexGuard<'static, Option<Zygote>>),
    Exec(i32),
    Done,
}

/// Start a helper in new namespaces `ns_flags` (on v2 in `cgroup`, which must exist) with
/// `stdio` as its fds 0-2 and `sync` as fd 3: forked by the zygote, or exec'd when there is
/// none.
pub(crate) fn spawn_helper(
    ns_flags: i32,
    cgroup: Option<BorrowedFd<'_>>,
    stdio: [BorrowedFd<'_>; 3],
    sync: BorrowedFd<'_>,
) -> Result<Spawning> {
    let flags = ns_flags as u32 as u64;
    // Used up by the first helper, whichever way it starts.
    let spare = crate::spare_net::take(ns_flags);
    let mut g = zygote();
    if let Some(z) = g.as_mut() {
        let mut fds = vec![
            stdio[0].as_raw_fd(),
            stdio[1].as_raw_fd(),
            stdio[2].as_raw_fd(),
            sync.as_raw_fd(),
        ];
        fds.extend(cgroup.map(|c| c.as_raw_fd()));
        fds.extend(spare.as_ref().map(|s| s.as_raw_fd()));
        let away = crate::affinity::zygote_away_from_this_cpu(z.pid);
        let request = flags
            | away.map_or(0, |cpu| (u64::from(cpu) + 1) << 32)
            | if spare.is_some() { SPARE_NET } else { 0 };
        match send_request(&z.sock, request, &fds).and_then(|()| ring(z.doorbell.as_fd())) {
            Ok(()) => {
                return Ok(Spawning {
                    flags,
                    state: SpawnState::Asked(g),
                })
            }
            Err(e) => {
                log::warn!(
                    "zygote {} gone ({e}): helpers are exec'd from now on",
                    z.pid
                );
                *g = None;
            }
        }
    }
    drop(g);
    let pid = spawn::spawn_init(ns_flags, cgroup, stdio, sync)?;
    Ok(Spawning {
        flags,
        state: SpawnState::Exec(pid),
    })
}

impl Spawning {
    /// The helper's pid, as the caller's pid namespace sees it.
    pub(crate) fn pid(mut self) -> Result<i32> {
        match std::mem::replace(&mut self.state, SpawnState::Done) {
            SpawnState::Exec(pid) => Ok(pid),
            SpawnState::Asked(mut g) => {
                let answer = g.as_ref().map(|z| read_answer(&z.sock));
                match answer {
                    Some(Ok(v)) if v > 0 => {
                        let pid = (v & !IN_SPARE_NET) as i32;
                        if v & IN_SPARE_NET != 0 {
                            log::debug!(
                                "helper {pid} cloned in the network namespace made at start"
                            );
                        }
                        Ok(pid)
                    }
                    Some(Ok(v)) => Err(RuntimeError::Sys {
                        op: "clone3",
                        path: format!("flags {:#x}", self.flags | CLONE_PARENT),
                        source: nix::errno::Errno::from_raw((-v) as i32),
                    }),
                    Some(Err(e)) => {
                        *g = None;
                        Err(RuntimeError::Init(format!(
                            "the zygote died while starting a helper: {e}"
                        )))
                    }
                    None => Err(RuntimeError::Init("no zygote".into())),
                }
            }
            SpawnState::Done => Err(RuntimeError::Init("helper pid read twice".into())),
        }
    }
}

impl Drop for Spawning {
    /// An answer left unread would be taken for the next request's: read it. The helper, if
    /// any, exits when it reads EOF on its channel, which the caller dropped.
    fn drop(&mut self) {
        if let SpawnState::Asked(g) = &mut self.state {
            if let Some(z) = g.as_ref() {
                if read_answer(&z.sock).is_err() {
                    **g = None;
                }
            }
        }
    }
}

fn send_request(sock: &UnixStream, flags: u64, fds: &[RawFd]) -> std::io::Result<()> {
    let buf = flags.to_le_bytes();
    let cmsg = [ControlMessage::ScmRights(fds)];
    let n = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&buf)],
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    // A stream socket takes 8 bytes in one go; the rest, if ever, without the fds again.
    (&*sock).write_all(&buf[n..])
}

/// Wake the zygote for the request just sent.
fn ring(doorbell: BorrowedFd<'_>) -> std::io::Result<()> {
    let one = 1u64.to_ne_bytes();
    // SAFETY: write of 8 bytes from a live buffer to an eventfd we hold.
    if unsafe { libc::write(doorbell.as_raw_fd(), one.as_ptr().cast(), one.len()) } != 8 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn read_answer(sock: &UnixStream) -> std::io::Result<i64> {
    let mut buf = [0u8; 8];
    (&*sock).read_exact(&mut buf)?;
    Ok(i64::from_le_bytes(buf))
}

/// Entry point when argv[1] is [`ZYGOTE_ARG`]. Never returns: exits when the shim closes its
/// socket.
pub fn main() -> ! {
    // As the helpers it forks: nothing may open its /proc files (its exe is our binary).
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // SAFETY: fds 3 and 4 were placed by spawn_self and are ours alone.
    let sock = unsafe { UnixStream::from_raw_fd(SYNC_FD) };
    let mut host = Some(unsafe { OwnedFd::from_raw_fd(HOST_MNT_FD) });
    release_code_pages();
    loop {
        match wait_for_request(
            &sock,
            if host.is_some() {
                LEAVE_WHEN_IDLE_MS
            } else {
                -1
            },
        ) {
            Wake::Idle => {
                leave_throwaway_namespace(&mut host);
                continue;
            }
            Wake::Gone => std::process::exit(0),
            Wake::Request => {}
        }
        let (request, mut fds) = match recv_request(&sock) {
            Ok(Some(r)) => r,
            _ => std::process::exit(0),
        };
        let (flags, away) = (request & 0xffff_ffff, (request & !SPARE_NET) >> 32);
        if away > 0 {
            crate::affinity::add_back((away - 1) as u32);
        }
        let spare = (request & SPARE_NET != 0).then(|| fds.pop()).flatten();
        let answer = fork_helper(flags, &fds, host.as_ref(), spare.as_ref());
        drop(spare);
        drop(fds);
        if (&sock).write_all(&answer.to_le_bytes()).is_err() {
            std::process::exit(0);
        }
        leave_throwaway_namespace(&mut host);
        release_code_pages();
    }
}

/// Unmap from this process the pages of our binary's read-only segments (code, constants) that
/// start-up and the last request faulted in: they stay in the page cache, which the shim maps
/// too, and the zygote, asleep nearly always, faults back the few a request runs. Its memory is
/// then what is its own (relocated data, heap, stack), not another copy of the shim's
/// page-table view of the binary. Writable segments are left alone: MADV_DONTNEED would throw
/// away their relocations.
fn release_code_pages() {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        _data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader hands us a valid dl_phdr_info for the duration of the call.
        let info = unsafe { &*info };
        let page = 4096u64;
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_W != 0 {
                continue;
            }
            let start = info.dlpi_addr + ph.p_vaddr;
            // Inward to whole pages: a page a writable segment might share is never touched.
            let (lo, hi) = (
                start.div_ceil(page) * page,
                (start + ph.p_memsz) / page * page,
            );
            if hi > lo {
                // SAFETY: a range of our own read-only file mapping; its pages refault from
                // the file unchanged.
                unsafe {
                    libc::madvise(
                        lo as *mut libc::c_void,
                        (hi - lo) as usize,
                        libc::MADV_DONTNEED,
                    )
                };
            }
        }
        // Only the first object: the static binary itself (no others are loaded).
        1
    }
    // SAFETY: dl_iterate_phdr with a callback that only reads what it is given.
    unsafe { libc::dl_iterate_phdr(Some(each), std::ptr::null_mut()) };
}

/// How long a fresh zygote waits for its first request before it leaves its throwaway mount
/// namespace anyway.
const LEAVE_WHEN_IDLE_MS: i32 = 100;

/// Back to the runtime's mount namespace, out of the throwaway one of our read-only
/// executable where spawn.rs had to make one (else this setns changes nothing), so that no copy of the host's mounts lives as long as the shim (each
/// would take every later host mount by propagation). Leaving destroys that namespace, which
/// waits for an expedited RCU grace period, 0.3-1.3 ms on a VM: so it is done after the first
/// answer (or when idle), off the path of the shim's first Create, whose helper goes back by
/// itself, cheaply while we still hold the namespace.
fn leave_throwaway_namespace(host: &mut Option<OwnedFd>) {
    if let Some(h) = host.take() {
        if nix::sched::setns(&h, nix::sched::CloneFlags::CLONE_NEWNS).is_err() {
            std::process::exit(1);
        }
    }
}

/// Enter the spare network namespace `spare` sends (spare_net.rs); our own one, to go back to,
/// where that worked. `None` where the maker failed or we could not enter it: the helper is then
/// cloned with CLONE_NEWNET.
fn enter_spare_net(spare: &OwnedFd) -> Option<OwnedFd> {
    let ns = crate::spare_net::receive(spare)?;
    let ours = OwnedFd::from(std::fs::File::open("/proc/self/ns/net").ok()?);
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
    Some(ours)
}

enum Wake {
    /// The doorbell rang: a request is on the socket.
    Request,
    /// Nothing within the timeout.
    Idle,
    /// The shim closed its end.
    Gone,
}

/// Sleep until the doorbell rings (taking one ring), the shim goes away, or `ms` pass (-1:
/// no limit). The socket is watched for its hang-up only: data on it must not be what wakes
/// us (see the module's doc).
fn wait_for_request(sock: &UnixStream, ms: i32) -> Wake {
    let mut p = [
        libc::pollfd {
            fd: DOORBELL_FD,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: two valid pollfds.
        match unsafe { libc::poll(p.as_mut_ptr(), 2, ms) } {
            -1 if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            -1 => return Wake::Gone,
            0 => return Wake::Idle,
            _ if p[1].revents != 0 => return Wake::Gone,
            _ => {
                let mut ring = [0u8; 8];
                // SAFETY: read of 8 bytes into a live buffer from our eventfd (a semaphore:
                // one ring per request).
                if unsafe { libc::read(DOORBELL_FD, ring.as_mut_ptr().cast(), 8) } != 8 {
                    return Wake::Gone;
                }
                return Wake::Request;
            }
        }
    }
}

/// `None` when the shim closed the socket.
fn recv_request(sock: &UnixStream) -> std::io::Result<Option<(u64, Vec<OwnedFd>)>> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < buf.len() {
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf[got..])];
        let m = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in m.cmsgs()? {
            if let ControlMessageOwned::ScmRights(got_fds) = c {
                // SAFETY: the kernel just installed these fds for us.
                fds.extend(
                    got_fds
                        .into_iter()
                        .map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
                );
            }
        }
        if m.bytes == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += m.bytes;
    }
    Ok(Some((u64::from_le_bytes(buf), fds)))
}

/// clone3 one helper: the child places its fds and runs the init helper; the zygote gets the
/// pid or -errno. `host`: the runtime's mount namespace while we are still in the throwaway
/// one; the helper then goes back to it by itself, as an exec'd one does. `spare`: a spare
/// network namespace's socket, for a helper cloned with CLONE_NEWNET.
fn fork_helper(
    mut flags: u64,
    fds: &[OwnedFd],
    host: Option<&OwnedFd>,
    spare: Option<&OwnedFd>,
) -> i64 {
    if fds.len() < 4 || fds.len() > MAX_FDS - 1 {
        return -(libc::EINVAL as i64);
    }
    // The helper is cloned inside the spare instead, which we leave right after the clone3.
    let ours = match spare.filter(|_| flags & libc::CLONE_NEWNET as u64 != 0) {
        Some(s) => enter_spare_net(s),
        None => None,
    };
    let in_spare = ours.is_some();
    if in_spare {
        flags &= !(libc::CLONE_NEWNET as u64);
    }
    let mut args = CloneArgs {
        flags: flags | CLONE_PARENT,
        // CLONE_PARENT takes the zygote's own exit signal; clone3 wants 0 here.
        exit_signal: 0,
        ..Default::default()
    };
    if let Some(cg) = fds.get(4) {
        args.flags |= spawn::CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    let mut raw: Vec<RawFd> = fds[..4].iter().map(|f| f.as_raw_fd()).collect();
    raw.extend(host.map(|h| h.as_raw_fd()));
    // SAFETY: a fork of this single-threaded process; the child continues as a fresh helper.
    let ret = unsafe { spawn::clone3(&args) };
    let err = (ret < 0).then(std::io::Error::last_os_error);
    if ret != 0 {
        if let Some(ours) = ours {
            // Later helpers must not start in this container's network namespace; a zygote
            // that cannot leave it goes (helpers are then exec'd from the shim).
            if nix::sched::setns(ours, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                std::process::exit(1);
            }
        }
    }
    if ret == 0 {
        // SAFETY: our own fds; from here on this process is the helper.
        unsafe {
            if !spawn::place_fds(&raw) {
                libc::_exit(126);
            }
            libc::syscall(libc::SYS_close_range, raw.len() as u32, u32::MAX, 0u32);
        }
        if host.is_some() {
            crate::init::main();
        }
        crate::init::main_forked();
    }
    if let Some(e) = err {
        -(e.raw_os_error().unwrap_or(libc::EIO) as i64)
    } else if in_spare {
        ret | IN_SPARE_NET
    } else {
        ret
    }
}
