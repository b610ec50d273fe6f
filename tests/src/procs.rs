//! Looking at host processes through /proc.

use std::fs;
use std::path::PathBuf;

/// A snapshot of one host process.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    /// argv, NUL-separated in /proc, split here.
    pub args: Vec<String>,
    /// `readlink /proc/<pid>/exe` (without a trailing " (deleted)").
    pub exe: Option<PathBuf>,
    /// Raw `/proc/<pid>/environ` (NUL-separated).
    pub environ: String,
    /// Raw `/proc/<pid>/cgroup`.
    pub cgroup: String,
}

impl Proc {
    pub fn cmdline(&self) -> String {
        self.args.join(" ")
    }

    pub fn exe_name(&self) -> String {
        self.exe
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Value of `-flag value` in argv (Go flag style, as containerd passes to shims).
    pub fn flag(&self, name: &str) -> Option<&str> {
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            if a == name {
                return it.next().map(|s| s.as_str());
            }
        }
        None
    }

    /// Paths of this process's cgroups (one per hierarchy line `id:controllers:path`).
    pub fn cgroup_paths(&self) -> Vec<String> {
        self.cgroup
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_string))
            .collect()
    }
}

fn read_lossy(p: String) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Reads one process; `None` if it is gone.
pub fn read_proc(pid: u32) -> Option<Proc> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args = raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| {
        let s = p.to_string_lossy();
        PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s))
    });
    Some(Proc {
        pid,
        args,
        exe,
        environ: read_lossy(format!("/proc/{pid}/environ")),
        cgroup: read_lossy(format!("/proc/{pid}/cgroup")),
    })
}

/// All processes (thread-group leaders) on the host, except the calling process.
pub fn all_procs() -> Vec<Proc> {
    let me = std::process::id();
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Some(p) = read_proc(pid) {
            v.push(p);
        }
    }
    v
}

/// Start time (clock ticks since boot, field 22 of /proc/<pid>/stat): together with the pid it
/// identifies a process across pid reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    // after ')' the fields start at field 3 (state); starttime is field 22
    after.split(' ').nth(22 - 3)?.parse().ok()
}

/// True while the process `pid` that started at `start` still exists (and is not a zombie).
pub fn alive(pid: u32, start: u64) -> bool {
    if start_time(pid) != Some(start) {
        return false;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..i + 3))
        .unwrap_or("");
    state != "Z" && !state.is_empty()
}

/// Parent pid (field 4 of /proc/<pid>/stat).
pub fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok()
}

/// argv[1] of crt's zygote, the helper each crt shim keeps to fork its init and exec helpers.
pub const ZYGOTE_ARG: &str = "__crt_zygote";

/// The zygote of shim `shim`: its child whose argv[1] is [`ZYGOTE_ARG`].
pub fn zygote_of(shim: u32) -> Option<u32> {
    all_procs()
        .into_iter()
        .find(|p| {
            p.args.get(1).map(String::as_str) == Some(ZYGOTE_ARG) && parent(p.pid) == Some(shim)
        })
        .map(|p| p.pid)
}

/// The `NSpid:` line of /proc/<pid>/status: the pid in each nested pid namespace, outermost first.
pub fn ns_pids(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|r| {
            r.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Number of open fds of a process (`None` if it is gone).
pub fn fd_count(pid: u32) -> Option<usize> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|rd| rd.count())
}

/// Pids of every process that has namespace `ns` (as `readlink /proc/PID/ns/...` shows it, e.g.
/// `mnt:[4026532712]`) as its own or holds an fd to it.
pub fn ns_holders(ns: &str) -> Vec<u32> {
    let kind = ns.split(':').next().unwrap_or_default();
    let is = |p: std::path::PathBuf| fs::read_link(p).is_ok_and(|l| l.to_string_lossy() == ns);
    all_procs()
        .into_iter()
        .map(|p| p.pid)
        .filter(|pid| {
            is(format!("/proc/{pid}/ns/{kind}").into())
                || fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|d| d.flatten().any(|e| is(e.path())))
                    .unwrap_or(false)
        })
        .collect()
}
