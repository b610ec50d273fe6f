//! Against the real cgroup fs of whatever host runs the tests (v1 or v2).
//! Needs root; skips with a printed reason otherwise. Creates
//! /crt-unit-test-<pid>/ctr in every hierarchy and removes it all again.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nix::sys::signal::Signal;

use super::{Host, Manager, MountSource};

/// Removes what the test created even when an assertion fails halfway.
struct Cleanup {
    manager: Manager,
    parents: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.manager.kill_all(Signal::SIGKILL);
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.manager.destroy();
        for p in &self.parents {
            let _ = std::fs::remove_dir(p);
        }
    }
}

fn sources(m: &Manager) -> Vec<PathBuf> {
    m.mount_sources()
        .into_iter()
        .map(|s| match s {
            MountSource::V1 { source, .. } | MountSource::V2 { source } => source,
        })
        .collect()
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

fn sleeper() -> Child {
    Command::new("sleep")
        .arg("1000")
        .spawn()
        .expect("spawn sleep")
}

#[test]
fn real_host_lifecycle() {
    // SAFETY: geteuid has no preconditions and cannot fail. (nix's wrapper
    // needs its "user" feature, which this crate does not enable.)
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP real_host_lifecycle: needs root to create cgroups");
        return;
    }
    let host = match Host::detect() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("SKIP real_host_lifecycle: no usable cgroup fs: {e}");
            return;
        }
    };
    let id = format!("crt-unit-test-{}", std::process::id());
    let manager = Manager::with_host(&host, Some(&format!("/{id}/ctr")), &id).unwrap();
    let leaves = sources(&manager);
    let mut guard = Cleanup {
        manager: manager.clone(),
        parents: leaves
            .iter()
            .filter_map(|l| l.parent().map(Path::to_path_buf))
            .collect(),
        children: Vec::new(),
    };
    eprintln!(
        "real_host_lifecycle: {} host, leaves {leaves:?}",
        if manager.is_v2() {
            "cgroup v2"
        } else {
            "cgroup v1"
        }
    );

    manager.create().unwrap();
    for l in &leaves {
        assert!(l.is_dir(), "{} not created", l.display());
    }

    let resources = serde_json::from_str(
        r#"{"memory":{"limit":268435456,"swap":536870912},
            "pids":{"limit":64},
            "cpu":{"shares":512,"quota":50000,"period":100000,"cpus":"0","mems":"0"},
            "devices":[{"allow":false,"access":"rwm"},
                       {"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]}"#,
    )
    .unwrap();
    manager.apply(&resources).unwrap();

    match &manager {
        Manager::V1(m) => {
            let mem = m.leaf("memory").expect("memory hierarchy");
            assert_eq!(read(mem, "memory.limit_in_bytes"), "268435456");
            if mem.join("memory.memsw.limit_in_bytes").exists() {
                assert_eq!(read(mem, "memory.memsw.limit_in_bytes"), "536870912");
            }
            assert_eq!(read(m.leaf("pids").expect("pids"), "pids.max"), "64");
            let cpu = m.leaf("cpu").expect("cpu hierarchy");
            assert_eq!(read(cpu, "cpu.shares"), "512");
            assert_eq!(read(cpu, "cpu.cfs_quota_us"), "50000");
            assert_eq!(read(cpu, "cpu.cfs_period_us"), "100000");
            assert_eq!(read(m.leaf("cpuset").expect("cpuset"), "cpuset.cpus"), "0");
            assert_eq!(
                read(m.leaf("devices").expect("devices"), "devices.list"),
                "c 1:3 rwm"
            );
            assert!(manager.dir_fd().unwrap().is_none());
        }
        Manager::V2(m) => {
            let leaf = m.leaf();
            assert_eq!(read(leaf, "memory.max"), "268435456");
            assert_eq!(read(leaf, "memory.swap.max"), "268435456");
            assert_eq!(read(leaf, "pids.max"), "64");
            assert_eq!(read(leaf, "cpu.weight"), "20");
            assert_eq!(read(leaf, "cpu.max"), "50000 100000");
            assert_eq!(read(leaf, "cpuset.cpus"), "0");
            assert!(manager.dir_fd().unwrap().is_some());
        }
    }

    // A process moved in shows up in pids() and in its /proc/PID/cgroup.
    guard.children.push(sleeper());
    let pid = guard.children[0].id() as i32;
    manager.add_pid(pid).unwrap();
    assert!(manager.pids().unwrap().contains(&pid));
    let self_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(self_cgroup.contains(&format!("/{id}/ctr")), "{self_cgroup}");

    manager.kill_all(Signal::SIGKILL).unwrap();
    let status = guard.children[0].wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");

    // destroy with a live process inside: the EBUSY retry kills it.
    guard.children.push(sleeper());
    let pid2 = guard.children[1].id() as i32;
    manager.add_pid(pid2).unwrap();
    manager.destroy().unwrap();
    let status = guard.children[1].wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");

    for l in &leaves {
        assert!(!l.exists(), "{} left behind", l.display());
        // The ancestor existed before destroy and is not ours to remove.
        let parent = l.parent().unwrap();
        assert!(parent.is_dir(), "{} removed", parent.display());
    }
    manager.destroy().unwrap();
    assert!(manager.pids().unwrap().is_empty());

    for p in &guard.parents {
        std::fs::remove_dir(p).unwrap_or_else(|e| panic!("rmdir {}: {e}", p.display()));
        assert!(!p.exists());
    }
}
