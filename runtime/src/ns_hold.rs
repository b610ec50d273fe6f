//! When a container's namespaces go. The last reference to a namespace tears it down, and what
//! the kernel does then is not free: a mount namespace's teardown waits for an expedited RCU
//! grace period before its mounts are freed, a network namespace's (`cleanup_net`, on a
//! kworker) runs every network subsystem's exit and waits for grace periods of its own. Left to
//! the init, both ran at its exit, on the cores that then report the exit (Wait) and answer the
//! Delete that follows: traced, `cleanup_net` preempted the Delete's call thread for 80 µs.
//!
//! So the runtime holds both from create on and lets them go off the caller's path: the mount
//! namespace at the exit, on a thread of its own (the container's filesystems, volumes among
//! them, must not stay mounted after it stopped, nor still be mounted when Delete answers and
//! containerd unmounts the rootfs); the network namespace once Delete has answered, or
//! [`NET_LINGER`] after the exit when no Delete comes. A network namespace holds nothing
//! outside it that containerd waits for; it only outlives its init for that moment.

use std::os::fd::OwnedFd;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

/// How long an exited container's network namespace is kept for the Delete that usually
/// follows within milliseconds (containerd's CRI deletes a task on its exit event, `ctr run
/// --rm` right after its Wait). Without a Delete it goes then: a stopped container's namespace,
/// its interfaces with it, is not kept for as long as the container is.
pub const NET_LINGER: Duration = Duration::from_millis(100);

/// A reference to `pid`'s namespace `kind` (`mnt`, `net`); `None` where it cannot be opened,
/// which only puts its teardown back on the exit's path.
pub fn open(pid: i32, kind: &str) -> Option<OwnedFd> {
    let path = format!("/proc/{pid}/ns/{kind}");
    std::fs::File::open(&path)
        .map_err(|e| log::debug!("open {path}: {e}"))
        .ok()
        .map(OwnedFd::from)
}

/// A held mount namespace at the init's exit, and what tells when it is gone.
pub fn mount_hold(ns: OwnedFd) -> (Unmounting, Gone) {
    let (tx, rx) = channel();
    (Unmounting { ns, done: tx }, Gone(rx))
}

/// A mount namespace to let go at once.
pub struct Unmounting {
    ns: OwnedFd,
    /// Dropped once the namespace is.
    done: Sender<()>,
}

/// Tells when a mount namespace let go by [`let_go`] is gone, its mounts released.
pub struct Gone(Receiver<()>);

impl Gone {
    /// Wait up to `limit` for the namespace to be gone; false if it was not by then.
    pub fn wait(self, limit: Duration) -> bool {
        // A message never comes: the sender's drop (Disconnected) is the news.
        matches!(
            self.0.recv_timeout(limit),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        )
    }
}

/// A held network namespace at the init's exit, and the end of its hold: dropping the
/// [`Release`] (or [`NET_LINGER`] passing) lets it go.
pub fn net_hold(ns: OwnedFd) -> (Lingering, Release) {
    let (tx, rx) = channel();
    (
        Lingering { ns, until: rx },
        Release {
            _signal: Some(tx),
            ns: None,
        },
    )
}

/// A network namespace kept until its [`Release`] drops or the linger ends.
pub struct Lingering {
    ns: OwnedFd,
    until: Receiver<()>,
}

/// Lets a held network namespace go when dropped: after the Delete's answer.
#[must_use = "the namespace goes when this drops: keep it until the Delete has answered"]
#[derive(Default)]
pub struct Release {
    /// Tells the thread holding the namespace to let it go (by its drop).
    _signal: Option<Sender<()>>,
    /// Or the namespace itself, where no thread holds it. Dropping it costs the caller nothing:
    /// the teardown runs on a kworker.
    ns: Option<OwnedFd>,
}

impl Release {
    /// Hold `ns` too, until this drops.
    pub fn hold(&mut self, ns: Option<OwnedFd>) {
        if ns.is_some() {
            self.ns = ns;
        }
    }
}

/// Let `mount` go now and `net` at its release or after `linger`, on a thread of their own;
/// where no thread can start, both go here.
pub fn let_go(mount: Option<Unmounting>, net: Option<Lingering>, linger: Duration) {
    if mount.is_none() && net.is_none() {
        return;
    }
    let held = move || {
        if let Some(m) = mount {
            // The close returns once the kernel's teardown is done: the last reference to the
            // namespace unmounts its tree, waits out a grace period, and releases the mounts
            // (their superblocks through task work, run as the close returns).
            drop(m.ns);
            drop(m.done);
        }
        if let Some(n) = net {
            // A message never comes: the sender's drop (Disconnected) is the release.
            let _ = n.until.recv_timeout(linger);
            drop(n.ns);
        }
    };
    // Where no thread can start, the closure, and the fds, are dropped right here.
    let _ = std::thread::Builder::new()
        .name("unmount".into())
        // It only closes fds: not the 2 MiB stack (and its munmap) of a default thread.
        .stack_size(64 << 10)
        .spawn(held);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    /// A pipe's write end stands for a namespace: its read end sees EOF once it is closed.
    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe().expect("pipe")
    }

    /// Whether `r` reports EOF (the held end closed) within `ms`.
    fn closed_within(r: &OwnedFd, ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd we own.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        n == 1 && p.revents & libc::POLLHUP != 0
    }

    #[test]
    fn the_network_namespace_goes_when_its_release_drops() {
        let (mnt_r, mnt_w) = pipe();
        let (net_r, net_w) = pipe();
        let (unmounting, gone) = mount_hold(mnt_w);
        let (lingering, release) = net_hold(net_w);
        let_go(Some(unmounting), Some(lingering), Duration::from_secs(30));
        assert!(
            gone.wait(Duration::from_secs(5)),
            "told when the mount namespace is gone"
        );
        assert!(
            closed_within(&mnt_r, 0),
            "the mount namespace is let go at once"
        );
        assert!(
            !closed_within(&net_r, 200),
            "the network namespace is held until released"
        );
        drop(release);
        assert!(
            closed_within(&net_r, 5_000),
            "released, the network namespace goes"
        );
    }

    #[test]
    fn without_a_release_the_network_namespace_goes_after_its_linger() {
        let (net_r, net_w) = pipe();
        let (lingering, release) = net_hold(net_w);
        let started = Instant::now();
        let_go(None, Some(lingering), Duration::from_millis(300));
        assert!(closed_within(&net_r, 10_000), "the linger ends the hold");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "held for its linger"
        );
        drop(release);
    }

    #[test]
    fn gone_waits_for_the_mount_namespace() {
        let (mnt_r, mnt_w) = pipe();
        let (unmounting, gone) = mount_hold(mnt_w);
        let (net_r, net_w) = pipe();
        let (lingering, release) = net_hold(net_w);
        // Let go only later: until then no news, and the fd stays open.
        let held = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let_go(Some(unmounting), Some(lingering), Duration::from_secs(30));
        });
        let started = Instant::now();
        assert!(gone.wait(Duration::from_secs(10)), "the namespace went");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "told only once it was let go"
        );
        assert!(closed_within(&mnt_r, 0), "gone means closed");
        held.join().expect("the thread letting go");
        drop(release);
        assert!(closed_within(&net_r, 5_000));
    }
}
