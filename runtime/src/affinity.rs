//! Waking a process on another core than the waker's.
//!
//! Two hand-offs wake a process and then keep their own core busy: the runtime asking the
//! zygote for a helper (the rest of Create runs beside the helper's clone3) and Start
//! releasing a helper to exec (the runtime then waits for the exec's proof and replies, while
//! the helper's program starts). The scheduler tends to put the woken process on the waker's
//! core, its last one, where it preempts the waker even with the other core idle; the waker
//! then waits out the clone3 (0.3-0.5 ms), or the whole program, seen in traces on a 2-core VM.
//! So the waker first takes its own core out of the process's affinity and tells it which;
//! the process, once awake, adds that core back, before it forks or execs anything. The
//! zygote's own start-up (an exec and the C library's start, 0.2 ms) is sent away from the
//! shim's core the same way, out of the way of the Create that containerd sends as soon as
//! `start` has answered; its first request puts its affinity right.

use std::mem::size_of;

/// `pid`'s CPU affinity (0: this thread's).
fn affinity_of(pid: i32) -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes only the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(pid, size_of::<libc::cpu_set_t>(), &mut set) == 0).then_some(set)
    }
}

/// Give `pid` the affinity `set` less the core this thread is on, where `set` has another;
/// with `always`, `set` itself otherwise. The core taken out, for [`add_back`].
fn narrow(pid: i32, mut set: libc::cpu_set_t, always: bool) -> Option<u32> {
    // SAFETY: sched_getcpu takes nothing; the set is plain data passed with its size.
    unsafe {
        let cpu = u32::try_from(libc::sched_getcpu()).ok();
        let away = cpu.filter(|&c| {
            libc::CPU_COUNT(&set) >= 2
                && (c as usize) < libc::CPU_SETSIZE as usize
                && libc::CPU_ISSET(c as usize, &set)
        });
        if let Some(c) = away {
            libc::CPU_CLR(c as usize, &mut set);
        } else if !always {
            return None;
        }
        let ok = libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set) == 0;
        away.filter(|_| ok)
    }
}

/// Let `pid` run on any core it may run on but the one this thread is on; nothing where that
/// would leave it none. The core taken out, for [`add_back`]; `None` when nothing changed.
/// Best effort: the only cost of failing is the wait it avoids.
pub fn away_from_this_cpu(pid: i32) -> Option<u32> {
    narrow(pid, affinity_of(pid)?, false)
}

/// The zygote's affinity made this thread's (the shim's, which its helpers are to inherit),
/// less the core this thread is on: whatever an earlier narrowing left is undone, so the
/// zygote's [`add_back`] always restores the shim's whole affinity.
pub fn zygote_away_from_this_cpu(pid: i32) -> Option<u32> {
    narrow(pid, affinity_of(0)?, true)
}

/// Give this thread back the core [`away_from_this_cpu`] took. Whatever else changed its
/// affinity meanwhile (an update of its cpuset rewrites it) stays: the kernel keeps any
/// affinity within the cpuset.
pub fn add_back(cpu: u32) {
    let Some(mut set) = affinity_of(0) else {
        return;
    };
    if cpu as usize >= libc::CPU_SETSIZE as usize {
        return;
    }
    // SAFETY: a set read by `affinity_of`, passed back with its size.
    unsafe {
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    fn cpus(pid: i32) -> Vec<usize> {
        let set = affinity_of(pid).expect("sched_getaffinity");
        // SAFETY: reading a cpu_set_t.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    }

    /// A child that waits for the core to add back (or none), adds it, reports its CPU count
    /// and exits; its pid and our end of its socket.
    fn child_adding_back() -> (i32, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        // SAFETY: the child only reads, sets its affinity and writes, then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut b = [0u8; 4];
            let mut rx = &theirs;
            if rx.read_exact(&mut b).is_ok() && b != [0xff; 4] {
                add_back(u32::from_le_bytes(b));
            }
            let n = cpus(0).len() as u8;
            let _ = rx.write_all(&[n]);
            unsafe { libc::_exit(0) };
        }
        (pid, ours)
    }

    /// Tell the child which core was `taken`; its CPU count once it added it back, reaped.
    fn cpus_after_add_back(pid: i32, mut sock: UnixStream, taken: Option<u32>) -> usize {
        let msg = taken.map(u32::to_le_bytes).unwrap_or([0xff; 4]);
        sock.write_all(&msg).unwrap();
        let mut n = [0u8; 1];
        sock.read_exact(&mut n).unwrap();
        let mut st = 0;
        // SAFETY: reap our own child.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        n[0] as usize
    }

    #[test]
    fn a_process_moved_away_gets_the_core_back() {
        let mine = cpus(0);
        let (pid, sock) = child_adding_back();
        let taken = away_from_this_cpu(pid);
        let narrowed = cpus(pid);
        match taken {
            Some(cpu) => {
                assert!(mine.len() >= 2);
                assert!(!narrowed.contains(&(cpu as usize)));
                assert_eq!(narrowed.len(), mine.len() - 1);
            }
            None => assert_eq!(narrowed, mine, "nothing taken, nothing changed"),
        }
        if mine.len() >= 2 {
            assert!(taken.is_some(), "with {mine:?} one core is taken");
        }
        assert_eq!(
            cpus_after_add_back(pid, sock, taken),
            mine.len(),
            "the child got its core back"
        );
    }

    #[test]
    fn the_zygote_gets_the_shims_whole_affinity_back_after_any_narrowing() {
        let mine = cpus(0);
        if mine.len() < 2 {
            return;
        }
        let (pid, sock) = child_adding_back();
        // Left narrowed twice (as a start-up narrowing then a lost request could leave it).
        assert!(zygote_away_from_this_cpu(pid).is_some());
        let _ = away_from_this_cpu(pid);
        let taken = zygote_away_from_this_cpu(pid);
        assert_eq!(
            cpus_after_add_back(pid, sock, taken),
            mine.len(),
            "the zygote has every core again"
        );
    }
}
