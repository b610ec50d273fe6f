//! cgroup v2: a single leaf directory under the cgroup2 mount.

use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::fs::{self, knob_error};
use super::path::check_leaf;
use super::v1::{check_page_size, check_pid, pids_max, rdma_max};
use super::{CgroupError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    mount_point: PathBuf,
    leaf: PathBuf,
}

fn invalid(field: &str, reason: impl Into<String>) -> CgroupError {
    CgroupError::InvalidValue {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn unsupported(field: &str, reason: &str) -> CgroupError {
    CgroupError::Unsupported {
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// v1's cpu.shares (2..262144, default 1024) to v2's cpu.weight (1..10000,
/// default 100), with runc's linear formula. 0 stays 0 ("not set").
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    // Clamp first: the kernel clamps v1 shares the same way, and below 2
    // the formula would underflow.
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// blkio weight (10..1000) to io.weight (1..10000), as runc. 0 stays 0.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// The spec's swap is v1's memory+swap; v2's memory.swap.max is swap alone.
/// Same rules as runc's ConvertMemorySwapToCgroupV2Value. `Ok(None)`: leave
/// memory.swap.max alone.
pub fn swap_to_v2(swap: i64, memory: i64) -> std::result::Result<Option<String>, String> {
    // v1 compatibility: unlimited memory with swap unset means unlimited
    // memory and swap.
    if memory == -1 && swap == 0 {
        return Ok(Some("max".into()));
    }
    match swap {
        -1 => return Ok(Some("max".into())),
        0 => return Ok(None),
        _ => {}
    }
    if memory == 0 || memory == -1 {
        return Err("a swap limit needs a memory limit".into());
    }
    if memory < 0 {
        return Err(format!("invalid memory limit {memory}"));
    }
    if swap < memory {
        return Err(format!(
            "swap ({swap}) is memory+swap and must be >= the memory limit ({memory})"
        ));
    }
    Ok(Some((swap - memory).to_string()))
}

/// cpu.max "QUOTA PERIOD": quota absent/0/negative => "max"; period absent
/// => only the quota is written and the kernel keeps its period.
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    let quota = quota.filter(|&q| q != 0);
    let period = period.filter(|&p| p != 0);
    if quota.is_none() && period.is_none() {
        return None;
    }
    let mut s = match quota {
        Some(q) if q > 0 => q.to_string(),
        _ => "max".to_string(),
    };
    if let Some(p) = period {
        s.push_str(&format!(" {p}"));
    }
    Some(s)
}

/// -1 (or any negative) is "unlimited" in the spec; v2 spells it "max".
fn limit_str(v: i64) -> String {
    if v < 0 {
        "max".to_string()
    } else {
        v.to_string()
    }
}

/// A unified key becomes a file name in the leaf: one plain component.
fn check_unified_key(key: &str) -> Result<()> {
    if key.is_empty() || key == "." || key == ".." || key.contains('/') || key.contains('\0') {
        return Err(invalid(
            &format!("linux.resources.unified[{key:?}]"),
            "key must be a plain cgroup file name",
        ));
    }
    Ok(())
}

impl Manager {
    pub fn new(mount_point: PathBuf, leaf: PathBuf) -> Manager {
        Manager { mount_point, leaf }
    }

    pub fn leaf(&self) -> &Path {
        &self.leaf
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The leaf must be strictly below the mount point before we mkdir,
    /// move, signal or remove anything (see `check_leaf`).
    fn check(&self) -> Result<()> {
        check_leaf(&self.mount_point, &self.leaf)
    }

    pub fn create(&self) -> Result<()> {
        self.check()?;
        // check() proved the prefix.
        let rel = self
            .leaf
            .strip_prefix(&self.mount_point)
            .unwrap_or(&self.leaf);
        let mut dir = self.mount_point.clone();
        for c in rel.components() {
            // `dir` is an ancestor of the leaf: its children get every
            // controller it has, since which ones `apply` needs is not known
            // yet (runc does the same).
            enable_subtree_controllers(&dir)?;
            dir.push(c);
            fs::mkdir(&dir)?;
        }
        Ok(())
    }

    /// Write `file` in the leaf for spec `field`; a missing file becomes
    /// ControllerMissing when the leaf lacks `controller`, else KnobMissing.
    fn set(&self, field: &str, controller: &str, file: &str, value: &str) -> Result<()> {
        let path = self.leaf.join(file);
        fs::write_file(&path, value).map_err(|e| self.missing(field, controller, &path, e))
    }

    fn missing(&self, field: &str, controller: &str, path: &Path, err: CgroupError) -> CgroupError {
        let err = knob_error(field, path, err);
        if matches!(err, CgroupError::KnobMissing { .. })
            && controller != "cgroup"
            && !self.controller_available(controller)
        {
            return CgroupError::ControllerMissing {
                field: field.to_string(),
                controller: controller.to_string(),
                dir: self.leaf.clone(),
            };
        }
        err
    }

    /// Is `controller` enabled for the leaf? If that cannot be read, say
    /// yes and let the caller report the missing file instead.
    fn controller_available(&self, controller: &str) -> bool {
        match fs::read_file(&self.leaf.join("cgroup.controllers")) {
            Ok(s) => s.split_whitespace().any(|c| c == controller),
            Err(_) => true,
        }
    }

    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        // Validate before writing anything.
        let mut unified: Vec<(&String, &String)> = r.unified().iter().flatten().collect();
        unified.sort();
        for (k, _) in &unified {
            check_unified_key(k)?;
        }
        let device_rules = match r.devices().as_ref().filter(|d| !d.is_empty()) {
            None => None,
            Some(d) => Some(
                d.iter()
                    .map(super::devices_bpf::rule)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|reason| invalid("linux.resources.devices", reason))?,
            ),
        };
        if let Some(m) = r.memory() {
            self.apply_memory(m)?;
        }
        if let Some(c) = r.cpu() {
            self.apply_cpu(c)?;
        }
        if let Some(p) = r.pids() {
            self.set(
                "linux.resources.pids.limit",
                "pids",
                "pids.max",
                &pids_max(p.limit()),
            )?;
        }
        if let Some(b) = r.block_io() {
            self.apply_io(b)?;
        }
        for h in r.hugepage_limits().iter().flatten() {
            let field = format!("linux.resources.hugepageLimits[{}]", h.page_size());
            check_page_size(&field, h.page_size())?;
            // 0 is written: it means "no huge pages of this size".
            self.set(
                &field,
                "hugetlb",
                &format!("hugetlb.{}.max", h.page_size()),
                &limit_str(h.limit()),
            )?;
        }
        if let Some(n) = r.network() {
            if n.class_id().is_some_and(|id| id != 0)
                || n.priorities().as_ref().is_some_and(|p| !p.is_empty())
            {
                return Err(unsupported(
                    "linux.resources.network",
                    "net_cls/net_prio exist only in cgroup v1",
                ));
            }
        }
        if let Some(rdma) = r.rdma() {
            let mut devs: Vec<_> = rdma.iter().collect();
            devs.sort_by(|a, b| a.0.cmp(b.0));
            for (dev, limits) in devs {
                let field = format!("linux.resources.rdma[{dev}]");
                if let Some(value) = rdma_max(&field, dev, limits)? {
                    self.set(&field, "rdma", "rdma.max", &value)?;
                }
            }
        }
        // Last, so that an explicit unified value wins over a converted one.
        for (k, v) in unified {
            let controller = k.split('.').next().unwrap_or(k);
            self.set(&format!("linux.resources.unified[{k:?}]"), controller, k, v)?;
        }
        if let Some(rules) = device_rules {
            let dir = self.dir_fd()?;
            super::devices_bpf::attach(&rules, std::os::fd::AsFd::as_fd(&dir)).map_err(
                |source| CgroupError::Write {
                    path: self.leaf.clone(),
                    value: "eBPF device filter (linux.resources.devices)".to_string(),
                    source,
                },
            )?;
        }
        Ok(())
    }

    fn apply_memory(&self, m: &LinuxMemory) -> Result<()> {
        let limit = m.limit().unwrap_or(0);
        if limit != 0 {
            self.set(
                "linux.resources.memory.limit",
                "memory",
                "memory.max",
                &limit_str(limit),
            )?;
        }
        let field = "linux.resources.memory.swap";
        match swap_to_v2(m.swap().unwrap_or(0), limit) {
            Err(reason) => return Err(invalid(field, reason)),
            Ok(None) => {}
            Ok(Some(v)) => match self.set(field, "memory", "memory.swap.max", &v) {
                // No swap accounting in this kernel: "unlimited" is what it
                // does anyway. Any real limit (0 included) is an error.
                Err(CgroupError::KnobMissing { .. }) if v == "max" => {
                    log::debug!("cgroup: no memory.swap.max; swap is unlimited already");
                }
                other => other?,
            },
        }
        if let Some(v) = m.reservation().filter(|&v| v != 0) {
            self.set(
                "linux.resources.memory.reservation",
                "memory",
                "memory.low",
                &limit_str(v),
            )?;
        }
        if m.kernel().is_some_and(|v| v != 0) {
            return Err(unsupported(
                "linux.resources.memory.kernel",
                "cgroup v2 has no separate kernel memory limit (it is charged to memory.max)",
            ));
        }
        if m.kernel_tcp().is_some_and(|v| v != 0) {
            return Err(unsupported(
                "linux.resources.memory.kernelTCP",
                "cgroup v2 has no separate kernel TCP memory limit",
            ));
        }
        if m.swappiness().is_some() {
            return Err(unsupported(
                "linux.resources.memory.swappiness",
                "cgroup v2 has no per-cgroup swappiness (memory.swappiness is v1 only)",
            ));
        }
        if m.disable_oom_killer() == Some(true) {
            return Err(unsupported(
                "linux.resources.memory.disableOOMKiller",
                "cgroup v2 cannot disable the OOM killer",
            ));
        }
        if m.use_hierarchy() == Some(false) {
            return Err(unsupported(
                "linux.resources.memory.useHierarchy",
                "cgroup v2 is always hierarchical",
            ));
        }
        Ok(())
    }

    fn apply_cpu(&self, c: &LinuxCpu) -> Result<()> {
        if let Some(s) = c.shares().filter(|&s| s != 0) {
            self.set(
                "linux.resources.cpu.shares",
                "cpu",
                "cpu.weight",
                &shares_to_weight(s).to_string(),
            )?;
        }
        if let Some(v) = cpu_max(c.quota(), c.period()) {
            let field = if c.quota().is_some_and(|q| q != 0) {
                "linux.resources.cpu.quota"
            } else {
                "linux.resources.cpu.period"
            };
            self.set(field, "cpu", "cpu.max", &v)?;
        }
        // After cpu.max: the kernel refuses a burst above the quota.
        if let Some(b) = c.burst().filter(|&b| b != 0) {
            self.set(
                "linux.resources.cpu.burst",
                "cpu",
                "cpu.max.burst",
                &b.to_string(),
            )?;
        }
        if let Some(i) = c.idle().filter(|&i| i != 0) {
            self.set(
                "linux.resources.cpu.idle",
                "cpu",
                "cpu.idle",
                &i.to_string(),
            )?;
        }
        if c.realtime_runtime().is_some_and(|v| v != 0) {
            return Err(unsupported(
                "linux.resources.cpu.realtimeRuntime",
                "cgroup v2 has no realtime cpu bandwidth knobs",
            ));
        }
        if c.realtime_period().is_some_and(|v| v != 0) {
            return Err(unsupported(
                "linux.resources.cpu.realtimePeriod",
                "cgroup v2 has no realtime cpu bandwidth knobs",
            ));
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            self.set("linux.resources.cpu.cpus", "cpuset", "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            self.set("linux.resources.cpu.mems", "cpuset", "cpuset.mems", mems)?;
        }
        Ok(())
    }

    fn apply_io(&self, b: &LinuxBlockIo) -> Result<()> {
        if let Some(w) = b.weight().filter(|&w| w != 0) {
            self.set_weight(
                "linux.resources.blockIO.weight",
                &blkio_weight_to_io_weight(w).to_string(),
                &w.to_string(),
            )?;
        }
        if b.leaf_weight().is_some_and(|w| w != 0) {
            return Err(unsupported(
                "linux.resources.blockIO.leafWeight",
                "cgroup v2 has no leaf weights",
            ));
        }
        for d in b.weight_device().iter().flatten() {
            let dev = format!("{}:{}", d.major(), d.minor());
            if let Some(w) = d.weight().filter(|&w| w != 0) {
                self.set_weight(
                    &format!("linux.resources.blockIO.weightDevice[{dev}].weight"),
                    &format!("{dev} {}", blkio_weight_to_io_weight(w)),
                    &format!("{dev} {w}"),
                )?;
            }
            if d.leaf_weight().is_some_and(|w| w != 0) {
                return Err(unsupported(
                    &format!("linux.resources.blockIO.weightDevice[{dev}].leafWeight"),
                    "cgroup v2 has no leaf weights",
                ));
            }
        }
        let throttles = [
            (
                "throttleReadBpsDevice",
                "rbps",
                b.throttle_read_bps_device(),
            ),
            (
                "throttleWriteBpsDevice",
                "wbps",
                b.throttle_write_bps_device(),
            ),
            (
                "throttleReadIOPSDevice",
                "riops",
                b.throttle_read_iops_device(),
            ),
            (
                "throttleWriteIOPSDevice",
                "wiops",
                b.throttle_write_iops_device(),
            ),
        ];
        for (name, key, list) in throttles {
            for d in list.iter().flatten().filter(|d| d.rate() != 0) {
                let dev = format!("{}:{}", d.major(), d.minor());
                self.set(
                    &format!("linux.resources.blockIO.{name}[{dev}]"),
                    "io",
                    "io.max",
                    &format!("{dev} {key}={}", d.rate()),
                )?;
            }
        }
        Ok(())
    }

    /// io.weight takes the converted 1..10000 value; kernels whose only
    /// proportional scheduler is BFQ have io.bfq.weight instead, which takes
    /// the original 1..1000 one (runc does the same).
    fn set_weight(&self, field: &str, io_value: &str, bfq_value: &str) -> Result<()> {
        let io = self.leaf.join("io.weight");
        let bfq = self.leaf.join("io.bfq.weight");
        if !io.exists() && bfq.exists() {
            return self.set(field, "io", "io.bfq.weight", bfq_value);
        }
        self.set(field, "io", "io.weight", io_value)
    }

    pub fn add_pid(&self, pid: i32) -> Result<()> {
        check_pid(pid)?;
        self.check()?;
        fs::write_file(&self.leaf.join("cgroup.procs"), &pid.to_string())
    }

    /// chown the leaf and the files the kernel lists as delegatable
    /// (/sys/kernel/cgroup/delegate; the three always there when it is missing).
    pub fn delegate(&self, uid: u32, gid: u32) -> Result<()> {
        self.check()?;
        let files = std::fs::read_to_string("/sys/kernel/cgroup/delegate")
            .unwrap_or_else(|_| "cgroup.procs\ncgroup.threads\ncgroup.subtree_control\n".into());
        let own = |path: PathBuf| {
            nix::unistd::chown(&path, Some(uid.into()), Some(gid.into()))
                .map_err(|source| CgroupError::Chown { path, source })
        };
        own(self.leaf.clone())?;
        for f in files.lines().map(str::trim).filter(|f| !f.is_empty()) {
            let path = self.leaf.join(f);
            // Files of controllers this cgroup lacks (memory.oom.group, ...) are not there.
            if path.exists() {
                own(path)?;
            }
        }
        Ok(())
    }

    pub fn dir_fd(&self) -> Result<OwnedFd> {
        OpenOptions::new()
            .read(true)
            // Rust adds O_CLOEXEC itself.
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.leaf)
            .map(OwnedFd::from)
            .map_err(|source| CgroupError::Open {
                path: self.leaf.clone(),
                source,
            })
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        self.check()?;
        fs::pids_recursive(&self.leaf)
    }

    pub fn kill_all(&self, signal: Signal) -> Result<()> {
        self.check()?;
        if signal == Signal::SIGKILL {
            // cgroup.kill (5.14+) kills the whole subtree atomically, forks
            // in flight included.
            let kill = self.leaf.join("cgroup.kill");
            if kill.exists() {
                return fs::write_file(&kill, "1");
            }
        }
        let pids = self.pids()?;
        fs::signal_pids(&self.leaf, &pids, signal)
    }

    pub fn destroy(&self) -> Result<()> {
        self.check()?;
        fs::remove_tree(&self.leaf)
    }
}

/// Enable, for `dir`'s children, every controller `dir` has.
fn enable_subtree_controllers(dir: &Path) -> Result<()> {
    let available = fs::read_file(&dir.join("cgroup.controllers"))?;
    let subtree = dir.join("cgroup.subtree_control");
    let enabled = fs::read_file(&subtree)?;
    let missing: Vec<&str> = available
        .split_whitespace()
        .filter(|c| !enabled.split_whitespace().any(|e| e == *c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let all = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    if let Err(e) = fs::write_file(&subtree, &all) {
        // One controller can refuse (cpu with a realtime task around, or
        // all of them when `dir` holds processes: "no internal processes")
        // and fail the whole write. Enable what can be enabled; `apply`
        // reports a missing controller for the fields that need it.
        log::debug!("cgroup: {e}; enabling controllers one by one");
        for c in missing {
            if let Err(e) = fs::write_file(&subtree, &format!("+{c}")) {
                log::warn!(
                    "cgroup: controller {c} stays off below {}: {e}",
                    dir.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fs::record;
    use super::super::test_util::Fixture;
    use super::super::Manager as Any;
    use super::*;

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).expect("resources json")
    }

    fn mgr(fx: &Fixture, path: &str) -> Manager {
        match Any::with_host(&fx.host, Some(path), "x").unwrap() {
            Any::V2(m) => m,
            Any::V1(_) => panic!("fixture is v2"),
        }
    }

    fn writes(fx: &Fixture) -> Vec<(String, String)> {
        record::take()
            .into_iter()
            .map(|(p, v)| {
                let rel = p.strip_prefix(&fx.root).unwrap_or(&p);
                (rel.display().to_string(), v)
            })
            .collect()
    }

    fn w(p: &str, v: &str) -> (String, String) {
        (p.to_string(), v.to_string())
    }

    /// A leaf "c" with the given controllers and knob files.
    fn leaf(fx: &Fixture, controllers: &str, knobs: &[&str]) -> Manager {
        let m = mgr(fx, "/c");
        fx.put("c/cgroup.controllers", controllers);
        fx.knobs("c", knobs);
        record::take();
        m
    }

    #[test]
    fn shares_to_weight_matches_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(512), 20);
        assert_eq!(shares_to_weight(262_144), 10_000);
        // Out of range values clamp instead of underflowing/overflowing.
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
    }

    #[test]
    fn blkio_weight_conversion() {
        assert_eq!(blkio_weight_to_io_weight(0), 0);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(5), 1);
    }

    #[test]
    fn swap_conversion() {
        let mib = 1 << 20;
        assert_eq!(swap_to_v2(0, 0), Ok(None));
        assert_eq!(swap_to_v2(0, 100 * mib), Ok(None));
        assert_eq!(swap_to_v2(-1, 100 * mib), Ok(Some("max".into())));
        assert_eq!(swap_to_v2(0, -1), Ok(Some("max".into())));
        assert_eq!(
            swap_to_v2(300 * mib, 100 * mib),
            Ok(Some((200 * mib).to_string()))
        );
        // Equal: no swap at all.
        assert_eq!(swap_to_v2(100 * mib, 100 * mib), Ok(Some("0".into())));
        assert!(swap_to_v2(50 * mib, 100 * mib).is_err());
        assert!(swap_to_v2(100 * mib, 0).is_err());
        assert!(swap_to_v2(100 * mib, -1).is_err());
        assert!(swap_to_v2(100, -5).is_err());
    }

    #[test]
    fn cpu_max_formatting() {
        assert_eq!(cpu_max(None, None), None);
        assert_eq!(cpu_max(Some(0), Some(0)), None);
        assert_eq!(
            cpu_max(Some(50_000), Some(100_000)).as_deref(),
            Some("50000 100000")
        );
        assert_eq!(
            cpu_max(Some(-1), Some(100_000)).as_deref(),
            Some("max 100000")
        );
        assert_eq!(cpu_max(None, Some(100_000)).as_deref(), Some("max 100000"));
        assert_eq!(cpu_max(Some(20_000), None).as_deref(), Some("20000"));
    }

    #[test]
    fn create_enables_controllers_from_the_root_down() {
        let fx = Fixture::v2();
        fx.put("cgroup.controllers", "cpuset cpu io memory pids\n");
        fx.put("cgroup.subtree_control", "memory\n");
        // "a" exists already (as cgroupfs would show it) with fewer controllers.
        fx.put("a/cgroup.controllers", "cpu memory pids\n");
        fx.put("a/cgroup.subtree_control", "");
        let m = mgr(&fx, "/a/b");
        record::take();
        m.create().unwrap();
        assert_eq!(
            writes(&fx),
            vec![
                w("cgroup.subtree_control", "+cpuset +cpu +io +pids"),
                w("a/cgroup.subtree_control", "+cpu +memory +pids"),
            ]
        );
        assert!(fx.root.join("a/b").is_dir());
        // The leaf's own subtree_control is never touched.
        assert!(!fx.root.join("a/b/cgroup.subtree_control").exists());
        // Nothing to enable the second time round (the fixture kept what we
        // wrote, minus the "+" signs a real kernel would drop).
        fx.put("cgroup.subtree_control", "cpuset cpu io memory pids");
        fx.put("a/cgroup.subtree_control", "cpu memory pids");
        m.create().unwrap();
        assert!(writes(&fx).is_empty());
    }

    #[test]
    fn memory_files_and_values() {
        let fx = Fixture::v2();
        let m = leaf(
            &fx,
            "memory",
            &["memory.max", "memory.swap.max", "memory.low"],
        );
        m.apply(&res(
            r#"{"memory":{"limit":268435456,"swap":536870912,"reservation":1048576}}"#,
        ))
        .unwrap();
        assert_eq!(
            writes(&fx),
            vec![
                w("c/memory.max", "268435456"),
                w("c/memory.swap.max", "268435456"),
                w("c/memory.low", "1048576"),
            ]
        );
        m.apply(&res(r#"{"memory":{"limit":-1}}"#)).unwrap();
        assert_eq!(
            writes(&fx),
            vec![w("c/memory.max", "max"), w("c/memory.swap.max", "max")]
        );
        let err = m.apply(&res(r#"{"memory":{"swap":100}}"#)).unwrap_err();
        assert!(matches!(err, CgroupError::InvalidValue { .. }), "{err}");
    }

    #[test]
    fn missing_swap_accounting() {
        let fx = Fixture::v2();
        let m = leaf(&fx, "memory", &["memory.max"]);
        // Unlimited swap needs no knob...
        m.apply(&res(r#"{"memory":{"limit":100,"swap":-1}}"#))
            .unwrap();
        // ...but "no swap" does.
        let err = m
            .apply(&res(r#"{"memory":{"limit":100,"swap":100}}"#))
            .unwrap_err();
        assert!(
            matches!(&err, CgroupError::KnobMissing { field, path }
                if field == "linux.resources.memory.swap" && path.ends_with("memory.swap.max")),
            "{err}"
        );
    }

    #[test]
    fn v1_only_memory_fields_are_errors() {
        let fx = Fixture::v2();
        let m = leaf(&fx, "memory", &["memory.max"]);
        for (json, field) in [
            (
                r#"{"memory":{"kernel":1}}"#,
                "linux.resources.memory.kernel",
            ),
            (
                r#"{"memory":{"kernelTCP":1}}"#,
                "linux.resources.memory.kernelTCP",
            ),
            (
                r#"{"memory":{"swappiness":10}}"#,
                "linux.resources.memory.swappiness",
            ),
            (
                r#"{"memory":{"disableOOMKiller":true}}"#,
                "linux.resources.memory.disableOOMKiller",
            ),
            (
                r#"{"cpu":{"realtimeRuntime":5}}"#,
                "linux.resources.cpu.realtimeRuntime",
            ),
            (
                r#"{"blockIO":{"leafWeight":5}}"#,
                "linux.resources.blockIO.leafWeight",
            ),
            (r#"{"network":{"classID":5}}"#, "linux.resources.network"),
        ] {
            let err = m.apply(&res(json)).unwrap_err();
            assert!(
                matches!(&err, CgroupError::Unsupported { field: f, .. } if f == field),
                "{json}: {err}"
            );
        }
        // Explicitly "not set" values are fine.
        m.apply(&res(
            r#"{"memory":{"kernel":0,"disableOOMKiller":false,"useHierarchy":true}}"#,
        ))
        .unwrap();
    }

    #[test]
    fn cpu_cpuset_pids_io_hugetlb_unified() {
        let fx = Fixture::v2();
        let m = leaf(
            &fx,
            "cpuset cpu io memory hugetlb pids",
            &[
                "cpu.weight",
                "cpu.max",
                "cpu.max.burst",
                "cpu.idle",
                "cpuset.cpus",
                "cpuset.mems",
                "pids.max",
                "io.weight",
                "io.max",
                "hugetlb.2MB.max",
                "memory.high",
            ],
        );
        m.apply(&res(
            r#"{"cpu":{"shares":1024,"quota":50000,"period":100000,"burst":1000,
                "cpus":"0-1","mems":"0"},
               "pids":{"limit":0},
               "blockIO":{"weight":500,"weightDevice":[{"major":8,"minor":0,"weight":1000}],
                 "throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}],
                 "throttleWriteIOPSDevice":[{"major":8,"minor":0,"rate":100}]},
               "hugepageLimits":[{"pageSize":"2MB","limit":-1}],
               "unified":{"memory.high":"1073741824","cpu.weight":"77"}}"#,
        ))
        .unwrap();
        assert_eq!(
            writes(&fx),
            vec![
                w("c/cpu.weight", "39"),
                w("c/cpu.max", "50000 100000"),
                w("c/cpu.max.burst", "1000"),
                w("c/cpuset.cpus", "0-1"),
                w("c/cpuset.mems", "0"),
                w("c/pids.max", "max"),
                w("c/io.weight", "4950"),
                w("c/io.weight", "8:0 10000"),
                w("c/io.max", "8:0 rbps=1048576"),
                w("c/io.max", "8:0 wiops=100"),
                w("c/hugetlb.2MB.max", "max"),
                // unified last, sorted, overriding cpu.weight
                w("c/cpu.weight", "77"),
                w("c/memory.high", "1073741824"),
            ]
        );
    }

    #[test]
    fn io_weight_falls_back_to_bfq() {
        let fx = Fixture::v2();
        let m = leaf(&fx, "io", &["io.bfq.weight"]);
        m.apply(&res(r#"{"blockIO":{"weight":500}}"#)).unwrap();
        assert_eq!(writes(&fx), vec![w("c/io.bfq.weight", "500")]);
    }

    #[test]
    fn missing_controller_vs_missing_knob() {
        let fx = Fixture::v2();
        let m = leaf(&fx, "cpu memory", &["cpu.weight", "memory.max"]);
        let err = m.apply(&res(r#"{"pids":{"limit":5}}"#)).unwrap_err();
        assert!(
            matches!(&err, CgroupError::ControllerMissing { field, controller, .. }
                if field == "linux.resources.pids.limit" && controller == "pids"),
            "{err}"
        );
        let err = m.apply(&res(r#"{"cpu":{"burst":5}}"#)).unwrap_err();
        assert!(
            matches!(&err, CgroupError::KnobMissing { field, path }
                if field == "linux.resources.cpu.burst" && path.ends_with("cpu.max.burst")),
            "{err}"
        );
        let err = m
            .apply(&res(r#"{"unified":{"hugetlb.1GB.max":"0"}}"#))
            .unwrap_err();
        assert!(
            matches!(&err, CgroupError::ControllerMissing { controller, .. } if controller == "hugetlb"),
            "{err}"
        );
    }

    #[test]
    fn unified_keys_must_be_plain_names_and_are_checked_first() {
        let fx = Fixture::v2();
        let m = leaf(&fx, "memory", &["memory.max"]);
        for bad in ["../memory.max", "a/b", "", ".."] {
            let json = format!(r#"{{"memory":{{"limit":5}},"unified":{{"{bad}":"1"}}}}"#);
            let err = m.apply(&res(&json)).unwrap_err();
            assert!(
                matches!(err, CgroupError::InvalidValue { .. }),
                "{bad}: {err}"
            );
        }
        // Nothing was written for the rejected specs.
        assert!(writes(&fx).is_empty());
    }

    #[test]
    fn pids_kill_add_and_destroy() {
        let fx = Fixture::v2();
        let m = mgr(&fx, "/a/c");
        fx.put("cgroup.controllers", "");
        fx.put("cgroup.subtree_control", "");
        fx.put("a/cgroup.controllers", "");
        fx.put("a/cgroup.subtree_control", "");
        m.create().unwrap();
        fx.put("a/c/cgroup.procs", "");
        record::take();
        m.add_pid(77).unwrap();
        assert_eq!(writes(&fx), vec![w("a/c/cgroup.procs", "77")]);
        assert!(m.add_pid(-1).is_err());

        fx.put("a/c/cgroup.procs", "2147483646\n");
        fx.put("a/c/x/cgroup.procs", "2147483645\n");
        assert_eq!(m.pids().unwrap(), vec![2147483645, 2147483646]);
        // No cgroup.kill here: falls back to signalling (ESRCH is fine).
        m.kill_all(Signal::SIGKILL).unwrap();
        assert!(writes(&fx).is_empty());
        // With cgroup.kill, SIGKILL goes through it...
        fx.put("a/c/cgroup.kill", "");
        m.kill_all(Signal::SIGKILL).unwrap();
        assert_eq!(writes(&fx), vec![w("a/c/cgroup.kill", "1")]);
        // ...other signals do not.
        m.kill_all(Signal::SIGTERM).unwrap();
        assert!(writes(&fx).is_empty());

        for f in ["cgroup.procs", "cgroup.kill", "x/cgroup.procs"] {
            std::fs::remove_file(fx.root.join("a/c").join(f)).unwrap();
        }
        m.destroy().unwrap();
        assert!(!fx.root.join("a/c").exists());
        assert!(fx.root.join("a").is_dir());
        m.destroy().unwrap();
        assert!(m.pids().unwrap().is_empty());
        m.kill_all(Signal::SIGKILL).unwrap();
    }
}
