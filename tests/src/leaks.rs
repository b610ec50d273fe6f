//! The leak check run after every scenario.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::util::{has_component, host_mounts, poll, secs};
use crate::{cgroup, procs, Containerd};

/// Relaxations for scenarios where a runtime legitimately leaves something.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeakOptions {
    /// Do not flag shim socket files. The runc shim leaves its socket behind when it is killed
    /// with SIGKILL (it never gets to remove it, and its `delete` does not either).
    pub allow_stale_shim_sockets: bool,
}

/// Asserts (waiting up to 20 s, scaled, for asynchronous clean-up to finish) that containers
/// `ids` of instance `c` left nothing behind:
/// - no task, container or snapshot named after them;
/// - no process whose cmdline or environment mentions the instance dir (shims, init helpers),
///   other than containerd itself, and no process in a cgroup named after an id;
/// - no cgroup directory named after an id in any hierarchy under /sys/fs/cgroup;
/// - no mount (new since containerd started) under the instance dir or naming an id;
/// - no file or dir named after an id, and no FIFO/socket whose name contains one, under the
///   instance dir, /run/containerd and `CRT_TEST_STATE_DIRS` (bundle, work dir, runc/crt state,
///   ctr's FIFOs);
/// - no shim socket: the ones seen while the containers ran, the runc-style
///   `sha256(<address>/<ns>/<id>)` names, and (when no task is left) none at all in the 2.x
///   socket dir.
#[track_caller]
pub fn assert_no_leaks(c: &Containerd, ids: &[&str]) {
    assert_no_leaks_with(c, ids, LeakOptions::default())
}

#[track_caller]
pub fn assert_no_leaks_with(c: &Containerd, ids: &[&str], opts: LeakOptions) {
    assert!(!ids.is_empty(), "assert_no_leaks needs the ids to check");
    let mut last = Vec::new();
    let clean = poll(secs(20), || {
        last = find_leaks(c, ids, opts);
        last.is_empty().then_some(())
    });
    if clean.is_none() {
        panic!(
            "leaks after containers {:?} on {} (runtime {}):\n  - {}\n",
            ids,
            c.version.name(),
            c.runtime,
            last.join("\n  - ")
        );
    }
}

/// Everything [`assert_no_leaks`] would complain about right now.
pub fn find_leaks(c: &Containerd, ids: &[&str], opts: LeakOptions) -> Vec<String> {
    let mut leaks = Vec::new();
    let dir_s = format!("{}/", c.dir.display());

    // containerd's own view
    let tasks = c.ctr(&["task", "ls"]);
    let all_tasks = crate::parse_task_ls(&tasks.stdout);
    if !tasks.success() {
        leaks.push(format!("ctr task ls failed: {}", tasks.stderr_clean()));
    }
    for t in all_tasks.iter().filter(|t| ids.contains(&t.id.as_str())) {
        leaks.push(format!(
            "task {} still listed ({} pid {})",
            t.id, t.status, t.pid
        ));
    }
    let containers = c.ctr(&["containers", "ls", "-q"]);
    for l in containers.stdout.lines().map(str::trim) {
        if ids.contains(&l) {
            leaks.push(format!("container {l} still listed"));
        }
    }
    let snaps = c.ctr(&["snapshots", "ls"]);
    for l in snaps.stdout.lines().skip(1) {
        if let Some(k) = l.split_whitespace().next() {
            if ids.contains(&k) {
                leaks.push(format!("snapshot {k} still exists"));
            }
        }
    }

    // processes
    for p in procs::all_procs() {
        if p.pid == c.pid() {
            continue;
        }
        let cmd = p.cmdline();
        if cmd.contains(&dir_s) {
            leaks.push(format!(
                "process {} ({}) mentions {}: {cmd}",
                p.pid,
                p.exe_name(),
                c.dir.display()
            ));
        } else if p.environ.contains(&dir_s) {
            leaks.push(format!(
                "process {} ({}) has {} in its environment: {cmd}",
                p.pid,
                p.exe_name(),
                c.dir.display()
            ));
        } else if let Some(cg) = p
            .cgroup_paths()
            .into_iter()
            .find(|cg| ids.iter().any(|id| has_component(cg, id)))
        {
            leaks.push(format!(
                "process {} ({}) is still in cgroup {cg}: {cmd}",
                p.pid,
                p.exe_name()
            ));
        }
    }

    // cgroups
    for d in cgroup::find_cgroup_dirs(ids) {
        leaks.push(format!("cgroup {} still exists", d.display()));
    }

    // mounts
    for m in host_mounts() {
        if c.baseline_mounts.contains(&m.line) {
            continue;
        }
        let under = m.mount_point.starts_with(&dir_s) || m.source.starts_with(&dir_s);
        let named = ids.iter().any(|id| {
            has_component(&m.mount_point, id)
                || has_component(&m.root, id)
                || has_component(&m.source, id)
        });
        if under || named {
            leaks.push(format!("mount still present: {}", m.line));
        }
    }

    // files: bundle, work dir, runtime state, FIFOs, sockets
    let mut roots = vec![c.dir.clone(), PathBuf::from("/run/containerd")];
    if let Ok(extra) = std::env::var("CRT_TEST_STATE_DIRS") {
        roots.extend(
            extra
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        );
    }
    let harness = c.harness_dir();
    for r in &roots {
        walk_files(r, &harness, ids, &mut leaks, 0);
    }

    if !opts.allow_stale_shim_sockets {
        for id in ids {
            for p in c.hashed_socket_paths(id) {
                if p.exists() {
                    leaks.push(format!(
                        "shim socket {} (sha256 of {}/{}/{id}) still exists",
                        p.display(),
                        c.sock().display(),
                        c.ns
                    ));
                }
            }
        }
        for s in c.recorded_shim_sockets() {
            if s.exists() && all_tasks.is_empty() {
                leaks.push(format!(
                    "shim socket {} (seen while the task ran) still exists",
                    s.display()
                ));
            }
        }
        if tasks.success() && all_tasks.is_empty() {
            if let Ok(rd) = fs::read_dir(c.socket_dir()) {
                for e in rd.flatten() {
                    leaks.push(format!(
                        "{} left in the shim socket dir with no task running",
                        e.path().display()
                    ));
                }
            }
        }
    }
    leaks
}

fn walk_files(dir: &Path, skip: &Path, ids: &[&str], leaks: &mut Vec<String>, depth: usize) {
    if depth > 24 || dir == skip {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if ids.contains(&name.as_str()) {
            leaks.push(format!("{} still exists", p.display()));
            continue;
        }
        if (ft.is_fifo() || ft.is_socket()) && ids.iter().any(|id| name.contains(id)) {
            leaks.push(format!(
                "{} {} still exists",
                if ft.is_fifo() { "fifo" } else { "socket" },
                p.display()
            ));
            continue;
        }
        if ft.is_dir() && !ft.is_symlink() {
            walk_files(&p, skip, ids, leaks, depth + 1);
        }
    }
}
