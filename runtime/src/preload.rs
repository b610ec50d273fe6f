//! A Create's reading of its bundle, done while the shim waits for that Create.
//!
//! containerd starts a shim in its first container's bundle, config.json already written, and
//! sends Create right after. In the Create that reading was on the serial chain to the plan the
//! helper waits for: config.json's parse and plan (about 0.13 ms on a VM) and the host's cgroup
//! layout (/proc/self/mountinfo and /proc/self/cgroup, about 0.1 ms). So a thread of the shim
//! with nothing else to do yet reads both first ([`preload`]), and the Create takes them
//! ([`take`]) for that same bundle path and a byte-for-byte identical config.json only;
//! anything else, and it reads as it always did. A parse that fails is not kept: the Create's
//! own parse reports it.
//!
//! The Create does not queue behind the preload: it asks for its helper first (on the
//! namespaces alone, container.rs), then takes the preload, waiting for one under way on the
//! other core. One not started by then is not started at all.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::cgroups::Host;
use crate::spec::{self, Loaded};

/// What [`preload`] read, for the Create of `bundle`.
pub(crate) struct Preloaded {
    bundle: PathBuf,
    data: Vec<u8>,
    pub loaded: Loaded,
    /// `None` where it could not be read: the Create reads it then.
    pub host: Option<Host>,
}

enum State {
    /// Not started.
    Idle,
    Running,
    Done(Box<Preloaded>),
    /// Taken, or given up: nothing more to do.
    Over,
}

static STATE: Mutex<State> = Mutex::new(State::Idle);
static DONE: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read and plan `bundle`'s config.json, and the host's cgroup layout, for a Create of it to
/// come; nothing where a Create came first. Best effort.
pub fn preload(bundle: &Path) {
    {
        let mut s = state();
        if !matches!(*s, State::Idle) {
            return;
        }
        *s = State::Running;
    }
    let read = || -> Option<Preloaded> {
        let data = spec::read(bundle).ok()?;
        let loaded = spec::parse(bundle, &data).ok()?;
        Some(Preloaded {
            bundle: bundle.to_path_buf(),
            data,
            loaded,
            host: Host::detect().ok(),
        })
    };
    // Whatever happens in between (a panic included), a Create waiting is let go.
    struct Finish(Option<Preloaded>);
    impl Drop for Finish {
        fn drop(&mut self) {
            *state() = match self.0.take() {
                Some(p) => State::Done(Box::new(p)),
                None => State::Over,
            };
            DONE.notify_all();
        }
    }
    let mut finish = Finish(None);
    finish.0 = read();
}

/// The preload of `bundle`, if its config.json was `data` then too; one under way is waited
/// for. Used up by the first call either way: only the first Create of a shim can be its own
/// bundle's.
pub(crate) fn take(bundle: &Path, data: &[u8]) -> Option<Preloaded> {
    let mut s = state();
    while matches!(*s, State::Running) {
        s = DONE.wait(s).unwrap_or_else(|p| p.into_inner());
    }
    match std::mem::replace(&mut *s, State::Over) {
        State::Done(p) => (p.bundle == bundle && p.data == data).then_some(*p),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reset() {
        *state() = State::Idle;
    }

    // One test: the preload is process-wide, and tests run on threads of one process.
    #[test]
    fn taken_once_and_only_for_the_same_bundle_and_bytes() {
        let dir = std::env::temp_dir().join(format!("crt-preload-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let config = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
            "process":{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}},
            "linux":{"namespaces":[{"type":"mount"},{"type":"network"}],"cgroupsPath":"/crt/x"}}"#;
        std::fs::write(dir.join("config.json"), config).unwrap();
        let data = spec::read(&dir).unwrap();
        if let Err(e) = spec::parse(&dir, &data) {
            panic!("the test's config.json: {e}");
        }

        preload(&dir);
        let p = take(&dir, &data).expect("preloaded");
        assert_eq!(p.loaded.cgroups_path.as_deref(), Some("/crt/x"));
        assert!(p.loaded.plan.has_new_ns(libc::CLONE_NEWNET));
        assert!(take(&dir, &data).is_none(), "used up");
        preload(&dir);
        assert!(
            take(&dir, &data).is_none(),
            "not started once a Create took it"
        );

        reset();
        preload(&dir);
        let mut changed = data.clone();
        changed.push(b' ');
        assert!(take(&dir, &changed).is_none(), "config.json changed since");
        assert!(take(&dir, &data).is_none(), "used up by the miss too");

        reset();
        preload(&dir);
        assert!(
            take(&dir.join("other"), &data).is_none(),
            "another bundle path"
        );

        // One under way on another thread is waited for.
        reset();
        *state() = State::Running;
        let (d, bytes) = (dir.clone(), data.clone());
        let other = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let loaded = spec::parse(&d, &bytes).unwrap();
            *state() = State::Done(Box::new(Preloaded {
                bundle: d,
                data: bytes,
                loaded,
                host: None,
            }));
            DONE.notify_all();
        });
        let asked = std::time::Instant::now();
        assert!(take(&dir, &data).is_some(), "the preload under way");
        assert!(asked.elapsed() >= std::time::Duration::from_millis(90));
        other.join().unwrap();

        reset();
        std::fs::write(dir.join("config.json"), "{").unwrap();
        preload(&dir);
        assert!(
            take(&dir, b"{").is_none(),
            "a parse that failed is not kept"
        );

        std::fs::remove_dir_all(&dir).unwrap();
    }
}
