//! The create/start handshake between the runtime (in the shim) and the init helper.
//!
//! ```text
//!  runtime                               init helper (pid 1 of the container)
//!    | --- Plan | Exec --------------------> |  (on v1 the helper joins its cgroup first)
//!    |                                       |  namespaces, rootfs, pivot_root, credentials
//!    | <-- Log* ---------------------------- |  (things worth a line in the shim's log)
//!    | <-- Pid ----------------------------- |  (only after a fork into a joined pid ns)
//!    | <-- Hooks ---------------------------- |  (before pivot_root, when there are
//!    | --- Continue ------------------------> |   prestart/createRuntime hooks to run)
//!    | <-- Console + pty master fd --------- |  (only for process.terminal)
//!    | <-- Ready | Error ------------------- |  Create returns here
//!    | --- Start ---------------------------> |  (Start)
//!    | <-- EOF (exec done: fd is CLOEXEC) -- |  or Error (exec failed)
//! ```
//! Frames are a little-endian u32 length and a postcard body over a stream socketpair, so a plan
//! of any size fits. A frame may carry one fd (SCM_RIGHTS) with its first byte: a stream socket
//! never merges data across a sendmsg that carries rights, so the fd arrives with its frame.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use serde::{Deserialize, Serialize};

use crate::spec::{ExecPlan, Plan};

#[derive(Debug, Serialize, Deserialize)]
pub enum Msg {
    Plan(Box<Plan>),
    Exec(Box<ExecPlan>),
    Log(String),
    /// The container's init when the helper had to fork (joining a pid namespace).
    Pid(i32),
    /// The pty master of a process.terminal process rides with this frame.
    Console,
    /// The container's /dev is made (before pivot_root and the prestart/createRuntime hooks):
    /// the runtime applies the device rules now, as runc does before those hooks, while the
    /// helper goes on, and answers Continue or Error. The helper reads the answer before the
    /// hooks, or else once its rootfs is set up, before anything that opens a device.
    Devices,
    /// The helper waits before pivot_root while the runtime runs prestart/createRuntime hooks.
    Hooks,
    /// The helper unshared its user namespace: the runtime writes its uid/gid maps.
    IdMaps,
    Continue,
    /// The container's cgroup is made (a plan's `cgroup_late`): its `tasks` files, opened,
    /// ride with this frame.
    Cgroups,
    /// A seccomp user-notification fd rides with this frame, for the spec's listenerPath.
    SeccompListener,
    /// Set up; `movable`: the helper can add a core back to its affinity after Start, so the
    /// runtime may take one first (affinity.rs). Not when a seccomp filter is already loaded:
    /// it may refuse, or kill for, sched_setaffinity.
    Ready {
        movable: bool,
    },
    /// `cpu`: the core the runtime took out of the helper's affinity (affinity.rs), to add
    /// back before anything else.
    Start {
        cpu: Option<u32>,
    },
    Error(String),
}

pub struct Channel {
    sock: UnixStream,
    /// The fds that arrived with the last frame.
    fds: Vec<OwnedFd>,
    /// What the helper's Ready said of its affinity.
    pub(crate) movable: bool,
}

const MAX_FRAME: u32 = 64 << 20;
/// The most fds one frame carries: a plan's cgroup v1 `tasks` files, one per hierarchy.
pub const MAX_FDS: usize = 32;

/// A frame's body is postcard, not JSON: both ends are the same build (the helper runs from
/// our /proc/self/exe), so nothing needs to describe itself, and the init helper decodes its
/// plan cold, on Create's path: 1.8 KB in 27 µs against JSON's 4 KB in 65.
fn frame(msg: &Msg) -> std::io::Result<Vec<u8>> {
    let body = postcard::to_allocvec(msg).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

impl Channel {
    pub fn new(sock: UnixStream) -> Channel {
        Channel {
            sock,
            fds: Vec::new(),
            movable: false,
        }
    }

    pub fn send(&mut self, msg: &Msg) -> std::io::Result<()> {
        self.sock.write_all(&frame(msg)?)
    }

    /// Send `msg` with `fd` attached.
    pub fn send_fd(&mut self, msg: &Msg, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        self.send_fds(msg, &[fd])
    }

    /// Send `msg` with `fds` (at most [`MAX_FDS`]) attached.
    pub fn send_fds(&mut self, msg: &Msg, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        if fds.len() > MAX_FDS {
            return Err(std::io::Error::other(format!(
                "{} fds in one frame",
                fds.len()
            )));
        }
        let frame = frame(msg)?;
        let fds: Vec<std::os::fd::RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let n = sendmsg::<()>(
            self.sock.as_raw_fd(),
            &[IoSlice::new(&frame)],
            &cmsg,
            MsgFlags::empty(),
            None,
        )?;
        self.sock.write_all(&frame[n..])
    }

    /// Sleep in poll, not in recvmsg, until a frame or EOF is there. A reader asleep in a
    /// unix stream socket's recvmsg is woken by anything on the socket's wait queue, the
    /// peer reading what we sent included ("space to write"), and that wake-up is a sync one,
    /// which puts us on the peer's core. Traced: Start's runtime, woken so as the helper read
    /// Start, sat 1 ms runnable behind the container's program on the helper's core while
    /// the other core idled, and only then saw the exec's EOF. poll's wait is keyed: only
    /// data or a hang-up wake it.
    fn wait_readable(&self) -> std::io::Result<()> {
        let mut p = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut p, 1, -1) } >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// The (first) fd that came with the last frame received, if any.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        (!self.fds.is_empty()).then(|| self.fds.remove(0))
    }

    /// Every fd that came with the last frame received, in the order sent.
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    /// `None` when the other end closed the socket.
    pub fn recv(&mut self) -> std::io::Result<Option<Msg>> {
        self.wait_readable()?;
        self.fds.clear();
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < len.len() {
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; MAX_FDS]);
            let mut iov = [IoSliceMut::new(&mut len[got..])];
            let m = recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            for c in m.cmsgs()? {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    for fd in fds {
                        // SAFETY: the kernel just installed this fd for us.
                        self.fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
            if m.bytes == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            got += m.bytes;
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME {
            return Err(std::io::Error::other(format!("frame of {len} bytes")));
        }
        let mut body = vec![0u8; len as usize];
        self.sock.read_exact(&mut body)?;
        postcard::from_bytes(&body)
            .map(Some)
            .map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_eof_is_none() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        a.send(&Msg::Error("x".repeat(100_000))).unwrap();
        a.send(&Msg::Ready { movable: true }).unwrap();
        drop(a);
        match b.recv().unwrap() {
            Some(Msg::Error(s)) => assert_eq!(s.len(), 100_000),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            b.recv().unwrap(),
            Some(Msg::Ready { movable: true })
        ));
        assert!(b.recv().unwrap().is_none());
    }

    /// This thread's voluntary context switches so far.
    fn sleeps() -> i64 {
        // SAFETY: getrusage fills the struct we pass.
        unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut u), 0);
            u.ru_nvcsw
        }
    }

    #[test]
    fn a_waiting_reader_sleeps_until_a_frame_comes_not_when_its_peer_reads() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        let peer = std::thread::spawn(move || {
            // Let the other side fall asleep in recv first, then read what it sent (which
            // frees its socket's buffer space: a wake-up on its wait queue), then answer.
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(matches!(b.recv().unwrap(), Some(Msg::Devices)));
            std::thread::sleep(std::time::Duration::from_millis(100));
            b.send(&Msg::Continue).unwrap();
        });
        a.send(&Msg::Devices).unwrap();
        let before = sleeps();
        assert!(matches!(a.recv().unwrap(), Some(Msg::Continue)));
        let slept = sleeps() - before;
        peer.join().unwrap();
        assert_eq!(slept, 1, "woken before the answer came");
    }

    #[test]
    fn several_fds_travel_with_their_frame_in_order() {
        use std::os::fd::AsFd;
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        let pipes: Vec<_> = (0..3).map(|_| std::io::pipe().unwrap()).collect();
        let readers: Vec<_> = pipes.iter().map(|(r, _)| r.as_fd()).collect();
        a.send_fds(&Msg::Continue, &readers).unwrap();
        assert!(matches!(b.recv().unwrap(), Some(Msg::Continue)));
        let got = b.take_fds();
        assert_eq!(got.len(), 3);
        for (i, ((_, w), fd)) in pipes.into_iter().zip(got).enumerate() {
            let mut w = w;
            w.write_all(&[i as u8]).unwrap();
            let mut buf = [0u8; 1];
            std::fs::File::from(fd).read_exact(&mut buf).unwrap();
            assert_eq!(buf[0], i as u8, "fd {i} out of order");
        }
        // The next frame's fds are its own.
        a.send(&Msg::Continue).unwrap();
        assert!(matches!(b.recv().unwrap(), Some(Msg::Continue)));
        assert!(b.take_fds().is_empty());
    }

    #[test]
    fn an_fd_travels_with_its_frame() {
        use std::os::fd::AsFd;
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        let (r, mut w) = std::io::pipe().unwrap();
        a.send(&Msg::Log("before".into())).unwrap();
        a.send_fd(&Msg::Console, r.as_fd()).unwrap();
        drop(r);
        assert!(matches!(b.recv().unwrap(), Some(Msg::Log(_))));
        assert!(b.take_fd().is_none());
        assert!(matches!(b.recv().unwrap(), Some(Msg::Console)));
        let got = b.take_fd().expect("fd with the Console frame");
        w.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        std::fs::File::from(got).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
    }
}
