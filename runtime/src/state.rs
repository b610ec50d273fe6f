//! What `delete` needs after a shim crash, kept in the bundle directory: containerd scopes the
//! bundle to one instance, namespace and container, and removes it after `delete`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cgroups::CgroupState;
use crate::error::{Result, RuntimeError};

pub const FILE: &str = "crt-state.json";
/// The init's exit status, in decimal: a file of its own, so that recording it is one small
/// write, not a load, parse and rewrite of the state beside the reaper's reply to Wait.
pub const EXIT_FILE: &str = "crt-exit";

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct State {
    pub id: String,
    /// The init's pid and its start time (field 22 of /proc/PID/stat), to detect pid reuse.
    pub pid: i32,
    pub pid_start: u64,
    pub cgroup: Option<CgroupState>,
    /// The rootfs the runtime mounted from containerd's mount list, to unmount.
    pub rootfs_mount: Option<PathBuf>,
    /// Where an earlier version recorded the exit; this one writes [`EXIT_FILE`].
    pub exit_status: Option<i32>,
    /// poststop hooks still run by `delete` after a shim crash (they undo what createRuntime
    /// hooks set up).
    #[serde(default)]
    pub poststop: Vec<crate::hooks::Hook>,
    #[serde(default)]
    pub hook_state: crate::hooks::StateBase,
}

pub fn path(bundle: &Path) -> PathBuf {
    bundle.join(FILE)
}

pub fn save(bundle: &Path, s: &State) -> Result<()> {
    let p = path(bundle);
    let tmp = bundle.join(format!(".{FILE}.tmp"));
    let err = |msg: String| RuntimeError::State {
        path: p.clone(),
        msg,
    };
    let data = serde_json::to_vec(s).map_err(|e| err(e.to_string()))?;
    std::fs::write(&tmp, data).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, &p).map_err(|e| err(e.to_string()))
}

pub fn load(bundle: &Path) -> Result<Option<State>> {
    let p = path(bundle);
    match std::fs::read(&p) {
        Ok(d) => serde_json::from_slice(&d)
            .map(Some)
            .map_err(|e| RuntimeError::State {
                path: p,
                msg: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::State {
            path: p,
            msg: e.to_string(),
        }),
    }
}

pub fn remove(bundle: &Path) {
    let _ = std::fs::remove_file(bundle.join(EXIT_FILE));
    let _ = std::fs::remove_file(path(bundle));
}

/// Best effort: the state file stays the truth; a lost or torn write reads as no exit seen.
pub fn record_exit(bundle: &Path, status: i32) {
    if let Err(e) = std::fs::write(bundle.join(EXIT_FILE), status.to_string()) {
        log::warn!("{}: exit status not recorded: {e}", bundle.display());
    }
}

pub fn recorded_exit(bundle: &Path) -> Option<i32> {
    std::fs::read_to_string(bundle.join(EXIT_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Start time of a process, or None when it is gone.
pub fn pid_start(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and parens: fields count from the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let dir = std::env::temp_dir().join(format!("crt-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir).unwrap().is_none());
        let s = State {
            id: "x".into(),
            pid: 7,
            exit_status: Some(3),
            ..Default::default()
        };
        save(&dir, &s).unwrap();
        let l = load(&dir).unwrap().unwrap();
        assert_eq!((l.id.as_str(), l.pid, l.exit_status), ("x", 7, Some(3)));
        remove(&dir);
        assert!(load(&dir).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn start_time_of_self() {
        assert!(pid_start(std::process::id() as i32).is_some());
        assert!(pid_start(i32::MAX).is_none());
    }
}
