//! A snapshot of the container's cgroup counters for Task.Stats (`ctr task metrics`, CRI stats),
//! in neutral form: the shim turns it into containerd's cgroups v1 or v2 Metrics message.
//! Counters whose file the host lacks read as 0: stats describe, they do not enforce.

use std::collections::BTreeMap;
use std::path::Path;

use super::fs::read_file;
use super::{Manager, Result};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub v2: bool,
    pub pids_current: u64,
    /// 0 = no limit.
    pub pids_limit: u64,
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub cpu_per_cpu_ns: Vec<u64>,
    pub cpu_periods: u64,
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_ns: u64,
    pub memory_usage: u64,
    /// As the kernel reports it (v1: a huge number; v2 "max": u64::MAX).
    pub memory_limit: u64,
    pub memory_max_usage: u64,
    pub memory_failcnt: u64,
    pub swap_usage: u64,
    pub swap_limit: u64,
    /// memory.stat as the kernel writes it (v1 and v2 use different keys).
    pub memory_stat: BTreeMap<String, u64>,
    /// v2 memory.events, or v1 memory.oom_control.
    pub memory_events: BTreeMap<String, u64>,
}

fn read(dir: &Path, file: &str) -> String {
    read_file(&dir.join(file)).unwrap_or_default()
}

/// A single number; "max" and anything unreadable are 0.
fn num(dir: &Path, file: &str) -> u64 {
    read(dir, file).trim().parse().unwrap_or(0)
}

/// "key value" lines.
pub(crate) fn keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// A v2 limit file: "max" is reported as u64::MAX, as containerd's cgroups library does.
fn limit(dir: &Path, file: &str) -> u64 {
    match read(dir, file).trim() {
        "max" => u64::MAX,
        v => v.parse().unwrap_or(0),
    }
}

impl Manager {
    /// The OOM killer's kill count in the container, from the one file that holds it (v1
    /// memory.oom_control, v2 memory.events): read before every exit is published, so it must
    /// stay cheap.
    pub fn oom_kills(&self) -> u64 {
        let text = match self {
            Manager::V1(m) => m.leaf_of("memory").map(|d| read(d, "memory.oom_control")),
            Manager::V2(m) => Some(read(m.leaf(), "memory.events")),
        };
        text.and_then(|t| keyed(&t).get("oom_kill").copied())
            .unwrap_or(0)
    }

    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        match self {
            Manager::V1(m) => {
                if let Some(d) = m.leaf_of("pids") {
                    s.pids_current = num(d, "pids.current");
                    s.pids_limit = num(d, "pids.max");
                }
                if let Some(d) = m.leaf_of("cpuacct") {
                    s.cpu_usage_ns = num(d, "cpuacct.usage");
                    s.cpu_per_cpu_ns = read(d, "cpuacct.usage_percpu")
                        .split_whitespace()
                        .filter_map(|v| v.parse().ok())
                        .collect();
                    // USER_HZ ticks; Linux fixes USER_HZ at 100 for user space.
                    let st = keyed(&read(d, "cpuacct.stat"));
                    s.cpu_user_ns = st.get("user").copied().unwrap_or(0) * 10_000_000;
                    s.cpu_system_ns = st.get("system").copied().unwrap_or(0) * 10_000_000;
                }
                if let Some(d) = m.leaf_of("cpu") {
                    let st = keyed(&read(d, "cpu.stat"));
                    s.cpu_periods = st.get("nr_periods").copied().unwrap_or(0);
                    s.cpu_throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
                    s.cpu_throttled_ns = st.get("throttled_time").copied().unwrap_or(0);
                }
                if let Some(d) = m.leaf_of("memory") {
                    s.memory_usage = num(d, "memory.usage_in_bytes");
                    s.memory_limit = num(d, "memory.limit_in_bytes");
                    s.memory_max_usage = num(d, "memory.max_usage_in_bytes");
                    s.memory_failcnt = num(d, "memory.failcnt");
                    s.swap_usage = num(d, "memory.memsw.usage_in_bytes");
                    s.swap_limit = num(d, "memory.memsw.limit_in_bytes");
                    s.memory_stat = keyed(&read(d, "memory.stat"));
                    s.memory_events = keyed(&read(d, "memory.oom_control"));
                }
            }
            Manager::V2(m) => {
                let d = m.leaf();
                s.v2 = true;
                s.pids_current = num(d, "pids.current");
                s.pids_limit = num(d, "pids.max");
                let cpu = keyed(&read(d, "cpu.stat"));
                let us = |k: &str| cpu.get(k).copied().unwrap_or(0) * 1000;
                s.cpu_usage_ns = us("usage_usec");
                s.cpu_user_ns = us("user_usec");
                s.cpu_system_ns = us("system_usec");
                s.cpu_throttled_ns = us("throttled_usec");
                s.cpu_periods = cpu.get("nr_periods").copied().unwrap_or(0);
                s.cpu_throttled_periods = cpu.get("nr_throttled").copied().unwrap_or(0);
                s.memory_usage = num(d, "memory.current");
                s.memory_limit = limit(d, "memory.max");
                s.memory_max_usage = num(d, "memory.peak");
                s.swap_usage = num(d, "memory.swap.current");
                s.swap_limit = limit(d, "memory.swap.max");
                s.memory_stat = keyed(&read(d, "memory.stat"));
                s.memory_events = keyed(&read(d, "memory.events"));
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::super::{v1, v2, Manager};

    #[test]
    fn v2_counters() {
        let t = TempDir::with_leaf();
        let d = t.path().to_path_buf();
        let w = |f: &str, v: &str| std::fs::write(d.join("leaf").join(f), v).unwrap();
        w("pids.current", "3\n");
        w("pids.max", "max\n");
        w("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 20\n");
        w("memory.current", "4096\n");
        w("memory.max", "67108864\n");
        w("memory.swap.max", "max\n");
        w("memory.stat", "anon 100\nfile 200\ninactive_file 50\n");
        w("memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n");
        let s = Manager::V2(v2::Manager::new(d.clone(), d.join("leaf")))
            .stats()
            .unwrap();
        assert!(s.v2);
        assert_eq!((s.pids_current, s.pids_limit), (3, 0));
        assert_eq!(
            (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_throttled_ns),
            (1_500_000, 1_000_000, 20_000)
        );
        assert_eq!((s.memory_usage, s.memory_limit), (4096, 67108864));
        assert_eq!(s.swap_limit, u64::MAX);
        assert_eq!(s.memory_stat.get("inactive_file"), Some(&50));
        assert_eq!(s.memory_events.get("oom_kill"), Some(&1));
        let m = Manager::V2(v2::Manager::new(d.clone(), d.join("leaf")));
        assert_eq!(m.oom_kills(), 1);
    }

    #[test]
    fn v1_counters_raw_as_the_kernel_reports() {
        let t = TempDir::with_leaf();
        let d = t.path().to_path_buf();
        let w = |f: &str, v: &str| std::fs::write(d.join("leaf").join(f), v).unwrap();
        w("memory.usage_in_bytes", "8192\n");
        w("memory.limit_in_bytes", "9223372036854771712\n");
        w("memory.stat", "cache 10\nrss 20\ntotal_inactive_file 5\n");
        w("cpuacct.usage", "123456\n");
        w("cpuacct.usage_percpu", "100000 23456 \n");
        w("cpuacct.stat", "user 2\nsystem 1\n");
        w(
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        let h = |c: &str| v1::Hierarchy {
            mount_point: d.clone(),
            controllers: vec![c.to_string()],
            leaf: d.join("leaf"),
        };
        let m = Manager::V1(v1::Manager::new(vec![h("memory"), h("cpuacct")]));
        let s = m.stats().unwrap();
        assert_eq!(
            (s.memory_usage, s.memory_limit),
            (8192, 9223372036854771712)
        );
        assert_eq!(s.memory_stat.get("rss"), Some(&20));
        assert_eq!(s.cpu_per_cpu_ns, vec![100000, 23456]);
        assert_eq!((s.cpu_user_ns, s.cpu_system_ns), (20_000_000, 10_000_000));
        assert_eq!(s.pids_current, 0, "no pids hierarchy: 0");
        assert_eq!(m.oom_kills(), 2);
    }
}
