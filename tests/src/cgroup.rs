//! Which cgroup layout the host has, and where a process's cgroup files are.

use std::fs;
use std::path::{Path, PathBuf};

use crate::util::host_mounts;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The host's cgroup layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1 (possibly hybrid): one mount per hierarchy, e.g. `/sys/fs/cgroup/memory`.
    V1,
    /// Pure cgroup v2: `/sys/fs/cgroup` itself is a cgroup2 mount.
    V2,
}

/// cgroup2 at /sys/fs/cgroup (what `stat -f -c %T /sys/fs/cgroup` calls cgroup2fs) => V2.
pub fn cgroup_mode() -> CgroupMode {
    let v2 = host_mounts()
        .iter()
        .any(|m| m.mount_point == CGROUP_ROOT && m.fs_type == "cgroup2");
    if v2 {
        CgroupMode::V2
    } else {
        CgroupMode::V1
    }
}

/// Mount point of the v1 hierarchy that has `controller` (e.g. "memory", "pids").
pub fn v1_mount(controller: &str) -> Option<PathBuf> {
    host_mounts()
        .into_iter()
        .find(|m| m.fs_type == "cgroup" && m.super_opts.split(',').any(|o| o == controller))
        .map(|m| PathBuf::from(m.mount_point))
}

/// The cgroup path of `pid` for `controller` (v1) or the unified one (v2), as in /proc/<pid>/cgroup.
pub fn proc_cgroup_path(pid: u32, controller: &str) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        let matches = match cgroup_mode() {
            CgroupMode::V2 => ctrls.is_empty(),
            CgroupMode::V1 => ctrls.split(',').any(|c| c == controller),
        };
        if matches {
            return Some(path.to_string());
        }
    }
    None
}

/// Host directory of `pid`'s cgroup for `controller` (v1: under that hierarchy; v2: unified).
pub fn host_cgroup_dir(pid: u32, controller: &str) -> Option<PathBuf> {
    let path = proc_cgroup_path(pid, controller)?;
    let base = match cgroup_mode() {
        CgroupMode::V2 => PathBuf::from(CGROUP_ROOT),
        CgroupMode::V1 => v1_mount(controller)?,
    };
    Some(base.join(path.trim_start_matches('/')))
}

/// Every cgroup directory (any hierarchy, any depth) whose name is one of `names`.
pub fn find_cgroup_dirs(names: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    walk(Path::new(CGROUP_ROOT), names, &mut found, 0);
    found
}

fn walk(dir: &Path, names: &[&str], found: &mut Vec<PathBuf>, depth: usize) {
    if depth > 32 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_dir() || ft.is_symlink() {
            continue;
        }
        let p = e.path();
        if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
            if names.contains(&n) {
                found.push(p.clone());
            }
        }
        walk(&p, names, found, depth + 1);
    }
}

/// Removes cgroup dirs (deepest first); for cleanup after a failed test. Errors are ignored.
pub fn remove_cgroup_dirs(mut dirs: Vec<PathBuf>) {
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        // children first (a runtime may have made sub-cgroups)
        let mut sub = Vec::new();
        walk_all(&d, &mut sub);
        sub.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for s in sub {
            let _ = fs::remove_dir(&s);
        }
        let _ = fs::remove_dir(&d);
    }
}

fn walk_all(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_type()
            .map(|t| t.is_dir() && !t.is_symlink())
            .unwrap_or(false)
        {
            out.push(e.path());
            walk_all(&e.path(), out);
        }
    }
}
