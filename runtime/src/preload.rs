//! A Create's reading of its bundle, done while the shim waits for that Create.
//!
//! containerd starts a shim in its first container's bundle, config.json already written, and
//! sends Create right after. Until then the shim's first call thread has nothing to do, and in
//! the Create the reading was the start of the serial chain to the plan the helper waits for:
//! config.json's parse and plan (about 0.13 ms on a VM) and the host's cgroup layout
//! (/proc/self/mountinfo and /proc/self/cgroup, about 0.1 ms). So that thread does both first
//! ([`preload`]), and the Create takes them ([`take`]) for that same bundle path and a
//! byte-for-byte identical config.json only; anything else, and it reads as it always did. A
//! parse that fails is not kept: the Create's own parse reports it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::cgroups::Host;
use crate::spec::{self, Loaded};

/// What [`preload`] read, for the Create of `bundle`.
pub(crate) struct Preloaded {
    bundle: PathBuf,
    data: Vec<u8>,
    /// `spec::early_clone_flags` of `data`.
    pub early_flags: Option<i32>,
    pub loaded: Loaded,
    /// `None` where it could not be read: the Create reads it then.
    pub host: Option<Host>,
}

static PRELOADED: Mutex<Option<Preloaded>> = Mutex::new(None);

/// Read and plan `bundle`'s config.json, and the host's cgroup layout, for a Create of it to
/// come. Best effort.
pub fn preload(bundle: &Path) {
    let Ok(data) = spec::read(bundle) else { return };
    let Ok(loaded) = spec::parse(bundle, &data) else {
        return;
    };
    let early_flags = spec::early_clone_flags(&data);
    let host = Host::detect().ok();
    *PRELOADED.lock().unwrap_or_else(|p| p.into_inner()) = Some(Preloaded {
        bundle: bundle.to_path_buf(),
        data,
        early_flags,
        loaded,
        host,
    });
}

/// The preload of `bundle`, if its config.json was `data` then too. Used up by the first call
/// either way: only the first Create of a shim can be its own bundle's.
pub(crate) fn take(bundle: &Path, data: &[u8]) -> Option<Preloaded> {
    let p = PRELOADED.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    (p.bundle == bundle && p.data == data).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(p.early_flags, spec::early_clone_flags(&data));
        assert_eq!(p.loaded.cgroups_path.as_deref(), Some("/crt/x"));
        assert!(p.loaded.plan.has_new_ns(libc::CLONE_NEWNET));
        assert!(take(&dir, &data).is_none(), "used up");

        preload(&dir);
        let mut changed = data.clone();
        changed.push(b' ');
        assert!(take(&dir, &changed).is_none(), "config.json changed since");
        assert!(take(&dir, &data).is_none(), "used up by the miss too");

        preload(&dir);
        assert!(
            take(&dir.join("other"), &data).is_none(),
            "another bundle path"
        );

        std::fs::write(dir.join("config.json"), "{").unwrap();
        preload(&dir);
        assert!(
            take(&dir, b"{").is_none(),
            "a parse that failed is not kept"
        );

        std::fs::remove_dir_all(&dir).unwrap();
    }
}
