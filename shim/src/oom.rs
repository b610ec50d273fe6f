//! One epoll (polled by the server's loop) watches every container's OOM fd from the runtime, so a process the
//! OOM killer takes while its container runs on is reported at once with TaskOOM (CRI and
//! Docker count these), not only when the init exits.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

pub struct OomWatcher {
    epoll: Epoll,
    watches: Mutex<HashMap<u64, (String, OwnedFd)>>,
    next: AtomicU64,
}

impl OomWatcher {
    pub fn new() -> std::io::Result<OomWatcher> {
        Ok(OomWatcher {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            watches: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (String, OwnedFd)>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watch `fd` for container `id`; the returned token removes it again.
    pub fn add(&self, id: &str, fd: OwnedFd) -> std::io::Result<u64> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        self.epoll
            .add(&fd, EpollEvent::new(EpollFlags::EPOLLIN, token))?;
        self.lock().insert(token, (id.to_string(), fd));
        Ok(token)
    }

    pub fn remove(&self, token: u64) {
        if let Some((_, fd)) = self.lock().remove(&token) {
            let _ = self.epoll.delete(&fd);
        }
    }

    /// The epoll fd, readable when some container has OOM activity.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    /// The containers with OOM activity now (their fds read empty).
    pub fn ready(&self) -> Vec<String> {
        let mut events = [EpollEvent::empty(); 16];
        let n = match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(_) => return Vec::new(),
        };
        let watches = self.lock();
        let mut ids = Vec::new();
        for ev in &events[..n] {
            if let Some((id, fd)) = watches.get(&ev.data()) {
                drain(fd.as_fd());
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
        }
        ids
    }
}

/// Read a nonblocking eventfd or inotify fd until it is empty.
fn drain(fd: std::os::fd::BorrowedFd<'_>) {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: read into a local buffer from an fd we hold.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_container_whose_fd_fired_and_forgets_removed_ones() {
        let w = OomWatcher::new().unwrap();
        let efd = |_: ()| -> OwnedFd {
            // SAFETY: eventfd with flags; the fd is ours.
            unsafe {
                std::os::fd::FromRawFd::from_raw_fd(libc::eventfd(
                    0,
                    libc::EFD_CLOEXEC | libc::EFD_NONBLOCK,
                ))
            }
        };
        let (a, b) = (efd(()), efd(()));
        let a_raw = a.as_raw_fd();
        let b_raw = b.as_raw_fd();
        let _ta = w.add("a", a).unwrap();
        let tb = w.add("b", b).unwrap();
        let one: u64 = 1;
        // SAFETY: 8-byte writes to our eventfds.
        unsafe { libc::write(b_raw, (&one as *const u64).cast(), 8) };
        assert_eq!(w.ready(), vec!["b".to_string()]);
        w.remove(tb);
        unsafe { libc::write(a_raw, (&one as *const u64).cast(), 8) };
        assert_eq!(w.ready(), vec!["a".to_string()]);
        assert!(w.ready().is_empty());
    }
}
