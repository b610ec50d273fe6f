//! A live OOM signal for the container's cgroup: an fd that turns readable when the kernel's
//! OOM killer acts in it, so TaskOOM goes out when a process is killed, not only when the init
//! exits. v1: an eventfd registered on memory.oom_control through cgroup.event_control. v2: an
//! inotify watch on memory.events (which the kernel updates on every OOM event). The caller
//! compares [`Manager::oom_kills`] to tell real kills from other changes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::{CgroupError, Manager, Result};

fn open_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Open {
        path: path.to_path_buf(),
        source,
    }
}

impl Manager {
    /// A nonblocking fd that is readable after OOM activity; `None` without a memory
    /// controller. Read it empty before waiting again.
    pub fn oom_events(&self) -> Result<Option<OwnedFd>> {
        match self {
            Manager::V1(m) => match m.leaf_of("memory") {
                Some(dir) => v1_eventfd(dir).map(Some),
                None => Ok(None),
            },
            Manager::V2(m) => v2_inotify(m.leaf()).map(Some),
        }
    }
}

fn v1_eventfd(dir: &Path) -> Result<OwnedFd> {
    let control = dir.join("memory.oom_control");
    let f = std::fs::File::open(&control).map_err(open_err(&control))?;
    // SAFETY: eventfd with flags only; a new fd is ours on success.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(open_err(&control)(io::Error::last_os_error()));
    }
    // SAFETY: just created.
    let efd = unsafe { OwnedFd::from_raw_fd(efd) };
    let reg = dir.join("cgroup.event_control");
    let line = format!("{} {}", efd.as_raw_fd(), f.as_raw_fd());
    std::fs::write(&reg, &line).map_err(|source| CgroupError::Write {
        path: reg.clone(),
        value: line.clone(),
        source,
    })?;
    Ok(efd)
}

fn v2_inotify(dir: &Path) -> Result<OwnedFd> {
    let events = dir.join("memory.events");
    // SAFETY: inotify_init1 with flags only; a new fd is ours on success.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(open_err(&events)(io::Error::last_os_error()));
    }
    // SAFETY: just created.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let c = std::ffi::CString::new(events.as_os_str().as_encoded_bytes())
        .map_err(|_| open_err(&events)(io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: a valid inotify fd and NUL-terminated path.
    if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) } < 0 {
        return Err(open_err(&events)(io::Error::last_os_error()));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::test_util::TempDir;

    #[test]
    fn v2_watch_fires_on_memory_events_change() {
        let t = TempDir::new();
        let f = t.path().join("memory.events");
        std::fs::write(&f, "oom 0\noom_kill 0\n").unwrap();
        let fd = v2_inotify(t.path()).unwrap();
        let mut buf = [0u8; 4096];
        // SAFETY: read into a local buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n < 0, "nothing happened yet");
        std::fs::write(&f, "oom 1\noom_kill 1\n").unwrap();
        // SAFETY: as above.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n > 0, "a change to memory.events must wake the watcher");
    }
}
