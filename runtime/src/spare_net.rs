//! A network namespace made while the shim starts, for its first container.
//!
//! A new network namespace is the dearest part of a container's start: the kernel registers
//! every network subsystem (and its sysctls) in it, 0.25-0.55 ms on a VM against 6-20 µs for
//! any other kind, and bringing its `lo` up costs another 0.05 ms. In a Create both sit on the
//! one serial chain to Ready (the zygote's clone3, then the helper's set-up).
//!
//! The bundle is there before the shim starts: `start` reads its config.json anyway (for the
//! shim's group). Where it asks for a new network namespace (and no user namespace, which
//! would have to own it), `start` forks a small process that makes one, brings `lo` up and
//! sends the namespace back on a socket the daemon inherits, then exits. It runs on the other
//! core while `start` binds its socket and forks the daemon, and while the daemon starts its
//! zygote; by the time the first Create asks for a helper it is usually done. The zygote then
//! clones that helper inside it, in place of CLONE_NEWNET (zygote.rs). The container gets a
//! namespace as fresh as a cloned one: nothing else ever ran in it, and nobody else holds it.
//!
//! The spare is for the first helper only: whatever that helper is, the offer is used up, and
//! a namespace it did not take is dropped with the socket. It never outlives the daemon.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

/// The daemon's end of a spare being made; its peer, the maker, sends the namespace.
pub struct SpareNet(UnixStream);

/// The offer, until the first helper takes it.
static OFFER: Mutex<Option<SpareNet>> = Mutex::new(None);

/// How long the zygote waits for a spare still being made. The maker needs about 0.5 ms; a
/// wait this long only means it is stuck, and the helper then gets a namespace of its own.
const WAIT: Duration = Duration::from_millis(100);

/// In `start`, before it forks the daemon, from the bundle's config.json: where it asks for a
/// new network namespace, fork the process that makes one; its receiving end, for the daemon.
/// `None` where none is wanted or the fork failed: the helper then clones one, as always.
///
/// Only in a single-threaded process: the maker is a plain fork that goes on in Rust.
pub fn prepare(config: &[u8]) -> Option<SpareNet> {
    let flags = crate::spec::early_clone_flags(config)?;
    if flags & libc::CLONE_NEWNET == 0 {
        return None;
    }
    let (ours, theirs) = UnixStream::pair().ok()?;
    // SAFETY: fork in a single-threaded process (the caller's contract); the child only makes
    // the namespace and exits.
    match unsafe { libc::fork() } {
        -1 => None,
        0 => {
            drop(ours);
            let code = make(theirs.as_raw_fd());
            // SAFETY: _exit, not exit: nothing of the parent's (stdio buffers) is flushed twice.
            unsafe { libc::_exit(code) }
        }
        pid => {
            drop(theirs);
            // Its work runs beside ours, not after it on this core.
            crate::affinity::away_from_this_cpu(pid);
            Some(SpareNet(ours))
        }
    }
}

/// The maker: a new network namespace with `lo` up, sent on `sock`. Its exit status is for
/// nobody (it is reaped by whoever inherits it once `start` exits); a failure only means no
/// spare, which the daemon sees as EOF.
fn make(sock: RawFd) -> i32 {
    // containerd reads `start`'s stdout and stderr to EOF: keep neither open, nor anything
    // else of `start`'s (its listener is not bound yet).
    // SAFETY: closing fds of this fresh single-threaded child, all but `sock`.
    unsafe {
        if sock > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, (sock - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (sock + 1) as u32, u32::MAX, 0u32);
    }
    if nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
        return 1;
    }
    if crate::init::net::loopback_up().is_err() {
        return 1;
    }
    let Ok(ns) = std::fs::File::open("/proc/self/ns/net") else {
        return 1;
    };
    let fds = [ns.as_raw_fd()];
    let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    match nix::sys::socket::sendmsg::<()>(
        sock,
        &[std::io::IoSlice::new(b"n")],
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    ) {
        Ok(1) => 0,
        _ => 1,
    }
}

/// In the daemon: the spare `start` prepared, for the first helper.
pub fn offer(spare: SpareNet) {
    *OFFER.lock().unwrap_or_else(|p| p.into_inner()) = Some(spare);
}

/// For a helper cloned with `flags`: the spare to clone it in, in place of CLONE_NEWNET, where
/// `flags` make a new network namespace and a spare was offered. The first call uses the offer
/// up either way. The zygote receives the namespace ([`receive`]): a spare still being made
/// then holds up its clone3, not the rest of Create.
pub(crate) fn take(flags: i32) -> Option<SpareNet> {
    let spare = OFFER.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    (flags & libc::CLONE_NEWNET != 0).then_some(spare)
}

impl AsRawFd for SpareNet {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The namespace the maker sends on `sock` (a [`SpareNet`]'s), once it has (up to [`WAIT`]);
/// `None` where it failed: the helper is then cloned with a namespace of its own.
pub(crate) fn receive(sock: &OwnedFd) -> Option<OwnedFd> {
    receive_within(sock.as_raw_fd(), WAIT)
}

fn receive_within(sock: RawFd, wait: Duration) -> Option<OwnedFd> {
    let mut p = libc::pollfd {
        fd: sock,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd the caller holds.
    if unsafe { libc::poll(&mut p, 1, wait.as_millis() as i32) } != 1 {
        return None;
    }
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let m = recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    let mut ns = None;
    for c in m.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed this fd for us.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                ns.get_or_insert(fd);
            }
        }
    }
    ns
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn config(namespaces: &str) -> Vec<u8> {
        format!(r#"{{"linux": {{"namespaces": [{namespaces}]}}}}"#).into_bytes()
    }

    fn ns_ino(path: &str) -> u64 {
        std::fs::metadata(path).expect("stat ns").ino()
    }

    fn fd_ino(fd: &OwnedFd) -> u64 {
        ns_ino(&format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    #[test]
    fn none_is_made_unless_a_new_network_namespace_is_asked_for() {
        assert!(prepare(&config(r#"{"type": "pid"}, {"type": "mount"}"#)).is_none());
        assert!(prepare(&config(
            r#"{"type": "network", "path": "/proc/1/ns/net"}, {"type": "pid"}"#
        ))
        .is_none());
        // A user namespace must own the network one: not a namespace made beforehand.
        assert!(prepare(&config(r#"{"type": "network"}, {"type": "user"}"#)).is_none());
        assert!(prepare(b"not json").is_none());
    }

    #[test]
    fn a_spare_is_a_fresh_network_namespace_with_lo_up() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let spare = prepare(&config(r#"{"type": "network"}, {"type": "pid"}"#))
            .expect("a spare for a new network namespace");
        let ns = receive_within(spare.as_raw_fd(), Duration::from_secs(10)).expect("the namespace");
        assert_ne!(
            fd_ino(&ns),
            ns_ino("/proc/self/ns/net"),
            "not the namespace we are in"
        );
        // lo's state, read from inside it by a child (a thread's setns would do too, but
        // the test harness runs tests on threads of one process).
        let (r, w) = nix::unistd::pipe().expect("pipe");
        // SAFETY: the child only calls async-signal-safe functions and _exit.
        match unsafe { libc::fork() } {
            0 => unsafe {
                let mut ok = 0u8;
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                    let mut ifr: libc::ifreq = std::mem::zeroed();
                    ifr.ifr_name[0] = b'l' as libc::c_char;
                    ifr.ifr_name[1] = b'o' as libc::c_char;
                    if s >= 0 && libc::ioctl(s, libc::SIOCGIFFLAGS as _, &mut ifr) == 0 {
                        ok = (ifr.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0) as u8;
                    }
                }
                libc::write(w.as_raw_fd(), (&ok as *const u8).cast(), 1);
                libc::_exit(0);
            },
            pid => {
                drop(w);
                let mut got = [0u8; 1];
                let n = nix::unistd::read(&r, &mut got).expect("read");
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                assert_eq!((n, got[0]), (1, 1), "lo is up in the spare");
            }
        }
    }

    #[test]
    fn a_maker_that_fails_is_no_spare() {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        drop(theirs);
        assert!(receive_within(ours.as_raw_fd(), Duration::from_secs(5)).is_none());
    }
}
