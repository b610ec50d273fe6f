//! cgroup v1: one leaf directory per mounted hierarchy.

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxResources};

use super::fs::{self, knob_error, set_knob, write_file_kept};
use super::path::check_leaf;
use super::{CgroupError, MountSource, Result, DEFAULT_CGROUP_ROOT};

/// One v1 hierarchy and the container's leaf in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// ["cpu", "cpuacct"], ["name=systemd"], ...
    pub controllers: Vec<String>,
    /// Absolute leaf dir, below `mount_point`.
    pub leaf: PathBuf,
}

impl Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }

    pub fn is_named(&self) -> bool {
        self.controllers.iter().any(|c| c.starts_with("name="))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Manager {
    hierarchies: Vec<Hierarchy>,
}

/// Zero means "not set" for the spec's numeric knobs.
fn nz_i(v: Option<i64>) -> Option<i64> {
    v.filter(|&v| v != 0)
}

fn nz_u(v: Option<u64>) -> Option<u64> {
    v.filter(|&v| v != 0)
}

fn nz_w(v: Option<u16>) -> Option<u16> {
    v.filter(|&v| v != 0)
}

fn invalid(field: &str, reason: impl Into<String>) -> CgroupError {
    CgroupError::InvalidValue {
        field: field.to_string(),
        reason: reason.into(),
    }
}

const MEM_LIMIT: &str = "linux.resources.memory.limit";
const MEM_SWAP: &str = "linux.resources.memory.swap";

impl Manager {
    /// The leaf in the hierarchy that has `controller`.
    pub(super) fn leaf_of(&self, controller: &str) -> Option<&std::path::Path> {
        self.hierarchies
            .iter()
            .find(|h| h.has(controller))
            .map(|h| h.leaf.as_path())
    }

    pub fn new(hierarchies: Vec<Hierarchy>) -> Manager {
        Manager { hierarchies }
    }

    pub fn hierarchies(&self) -> &[Hierarchy] {
        &self.hierarchies
    }

    /// The leaf in the hierarchy carrying `controller`, if mounted.
    pub fn leaf(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.has(controller))
            .map(|h| h.leaf.as_path())
    }

    fn dir_for(&self, field: &str, controller: &str) -> Result<&Path> {
        self.leaf(controller)
            .ok_or_else(|| CgroupError::ControllerMissing {
                field: field.to_string(),
                controller: controller.to_string(),
                dir: self
                    .hierarchies
                    .first()
                    .and_then(|h| h.mount_point.parent())
                    .unwrap_or(Path::new(DEFAULT_CGROUP_ROOT))
                    .to_path_buf(),
            })
    }

    /// Write `file` in `controller`'s leaf for spec `field`.
    fn set(&self, field: &str, controller: &str, file: &str, value: &str) -> Result<()> {
        let dir = self.dir_for(field, controller)?;
        set_knob(field, &dir.join(file), value)
    }

    /// Every leaf must be strictly below its mount point before we mkdir,
    /// move, signal or remove anything (see `check_leaf`).
    fn check(&self) -> Result<()> {
        self.hierarchies
            .iter()
            .try_for_each(|h| check_leaf(&h.mount_point, &h.leaf))
    }

    pub fn create(&self) -> Result<()> {
        self.check()?;
        for h in &self.hierarchies {
            // The parents nearly always exist (containerd's namespace, a pod's): the leaf
            // alone first, one mkdir where the walk below takes a mkdir and a stat per level,
            // nine hierarchies over. Should it fail (a parent missing), the walk makes the
            // parents, or names the error. In cpuset every level needs its cpus and mems
            // filled in: a leaf made so takes them from its parent, unless that has none
            // (made by someone who did not fill it in), which the walk then fills.
            let filled = |leaf: &Path| match leaf.parent() {
                Some(parent) => inherit_cpuset(parent, leaf),
                None => Ok(false),
            };
            if fs::mkdir(&h.leaf).is_ok() && (!h.has("cpuset") || filled(&h.leaf)?) {
                continue;
            }
            // check() proved the prefix.
            let rel = h.leaf.strip_prefix(&h.mount_point).unwrap_or(&h.leaf);
            let mut dir = h.mount_point.clone();
            for c in rel.components() {
                let parent = dir.clone();
                dir.push(c);
                fs::mkdir(&dir)?;
                if h.has("cpuset") {
                    inherit_cpuset(&parent, &dir)?;
                }
            }
        }
        Ok(())
    }

    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        // Checked first so that nothing is written for a spec we reject.
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            return Err(CgroupError::Unsupported {
                field: "linux.resources.unified".into(),
                reason: "it holds cgroup v2 files and this host uses cgroup v1".into(),
            });
        }
        if let Some(devices) = r.devices() {
            self.apply_devices(devices)?;
        }
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
            self.apply_blkio(b)?;
        }
        for h in r.hugepage_limits().iter().flatten() {
            let field = format!("linux.resources.hugepageLimits[{}]", h.page_size());
            check_page_size(&field, h.page_size())?;
            // Written even when 0: a zero hugetlb limit means "none
            // allowed" (kubelet sets that for every size not requested).
            self.set(
                &field,
                "hugetlb",
                &format!("hugetlb.{}.limit_in_bytes", h.page_size()),
                &h.limit().to_string(),
            )?;
        }
        if let Some(n) = r.network() {
            if let Some(id) = n.class_id().filter(|&id| id != 0) {
                self.set(
                    "linux.resources.network.classID",
                    "net_cls",
                    "net_cls.classid",
                    &id.to_string(),
                )?;
            }
            for p in n.priorities().iter().flatten() {
                let field = format!("linux.resources.network.priorities[{}]", p.name());
                if p.name().is_empty() || p.name().contains(char::is_whitespace) {
                    return Err(invalid(&field, "bad interface name"));
                }
                self.set(
                    &field,
                    "net_prio",
                    "net_prio.ifpriomap",
                    &format!("{} {}", p.name(), p.priority()),
                )?;
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
        Ok(())
    }

    fn apply_devices(&self, devices: &[LinuxDeviceCgroup]) -> Result<()> {
        // Spec order matters: the usual list starts with a deny-all
        // ("a *:* rwm") and then allows specific devices.
        let mut open = Vec::new();
        for (i, d) in devices.iter().enumerate() {
            let field = format!("linux.resources.devices[{i}]");
            let rule = device_rule(d).map_err(|reason| invalid(&field, reason))?;
            let file = if d.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            };
            let path = self.dir_for(&field, "devices")?.join(file);
            write_file_kept(&mut open, &path, &rule).map_err(|e| knob_error(&field, &path, e))?;
        }
        Ok(())
    }

    fn apply_memory(&self, m: &LinuxMemory) -> Result<()> {
        let limit = nz_i(m.limit());
        let mut swap = nz_i(m.swap());
        if limit.is_some() || swap.is_some() {
            let dir = self.dir_for(if limit.is_some() { MEM_LIMIT } else { MEM_SWAP }, "memory")?;
            let mem_path = dir.join("memory.limit_in_bytes");
            let memsw_path = dir.join("memory.memsw.limit_in_bytes");
            // As runc: unlimited memory without an explicit swap means
            // unlimited swap too; otherwise an existing lower memsw limit
            // would make raising memory to unlimited fail.
            if limit == Some(-1) && swap.is_none() && memsw_path.exists() {
                swap = Some(-1);
            }
            let set_mem = |v: i64| set_knob(MEM_LIMIT, &mem_path, &v.to_string());
            let set_swap = |v: i64| set_knob(MEM_SWAP, &memsw_path, &v.to_string());
            match (limit, swap) {
                (Some(l), Some(s)) => {
                    // The kernel keeps memsw >= memory at every step: when
                    // growing, raise memsw first; when shrinking, lower
                    // memory first.
                    let current = read_u64(&mem_path)?;
                    if s == -1 || current < s as u64 {
                        set_swap(s)?;
                        set_mem(l)?;
                    } else {
                        set_mem(l)?;
                        set_swap(s)?;
                    }
                }
                (Some(l), None) => set_mem(l)?,
                (None, Some(s)) => set_swap(s)?,
                (None, None) => {}
            }
        }
        if let Some(v) = nz_i(m.reservation()) {
            self.set(
                "linux.resources.memory.reservation",
                "memory",
                "memory.soft_limit_in_bytes",
                &v.to_string(),
            )?;
        }
        if let Some(v) = nz_i(m.kernel()) {
            self.set(
                "linux.resources.memory.kernel",
                "memory",
                "memory.kmem.limit_in_bytes",
                &v.to_string(),
            )?;
        }
        if let Some(v) = nz_i(m.kernel_tcp()) {
            self.set(
                "linux.resources.memory.kernelTCP",
                "memory",
                "memory.kmem.tcp.limit_in_bytes",
                &v.to_string(),
            )?;
        }
        // Some(0) is a real setting here ("avoid swapping"), as in runc.
        if let Some(v) = m.swappiness() {
            let field = "linux.resources.memory.swappiness";
            if v > 100 {
                return Err(invalid(field, format!("{v} is not in 0..=100")));
            }
            self.set(field, "memory", "memory.swappiness", &v.to_string())?;
        }
        if m.disable_oom_killer() == Some(true) {
            self.set(
                "linux.resources.memory.disableOOMKiller",
                "memory",
                "memory.oom_control",
                "1",
            )?;
        }
        if let Some(h) = m.use_hierarchy() {
            self.set(
                "linux.resources.memory.useHierarchy",
                "memory",
                "memory.use_hierarchy",
                if h { "1" } else { "0" },
            )?;
        }
        // checkBeforeUpdate only concerns `update` on v2; nothing to write.
        Ok(())
    }

    fn apply_cpu(&self, c: &LinuxCpu) -> Result<()> {
        if let Some(v) = nz_u(c.shares()) {
            self.set(
                "linux.resources.cpu.shares",
                "cpu",
                "cpu.shares",
                &v.to_string(),
            )?;
        }
        let quota = nz_i(c.quota());
        let mut period_retry = None;
        if let Some(p) = nz_u(c.period()) {
            let field = "linux.resources.cpu.period";
            let path = self.dir_for(field, "cpu")?.join("cpu.cfs_period_us");
            match fs::write_file(&path, &p.to_string()) {
                Ok(()) => {}
                // As runc: a period smaller than the current one can be
                // refused (EINVAL) because old_quota/new_period would exceed
                // the parent's limit; with a quota coming, retry after it.
                Err(e) if quota.is_some() && fs::is_write_errno(&e, libc::EINVAL) => {
                    period_retry = Some((path, p));
                }
                Err(e) => return Err(knob_error(field, &path, e)),
            }
        }
        if let Some(q) = quota {
            self.set(
                "linux.resources.cpu.quota",
                "cpu",
                "cpu.cfs_quota_us",
                &q.to_string(),
            )?;
            if let Some((path, p)) = period_retry {
                set_knob("linux.resources.cpu.period", &path, &p.to_string())?;
            }
        }
        // The runtime may not exceed the period, so the period goes first.
        if let Some(v) = nz_u(c.realtime_period()) {
            self.set(
                "linux.resources.cpu.realtimePeriod",
                "cpu",
                "cpu.rt_period_us",
                &v.to_string(),
            )?;
        }
        if let Some(v) = nz_i(c.realtime_runtime()) {
            self.set(
                "linux.resources.cpu.realtimeRuntime",
                "cpu",
                "cpu.rt_runtime_us",
                &v.to_string(),
            )?;
        }
        if let Some(v) = nz_u(c.burst()) {
            self.set(
                "linux.resources.cpu.burst",
                "cpu",
                "cpu.cfs_burst_us",
                &v.to_string(),
            )?;
        }
        if let Some(v) = nz_i(c.idle()) {
            self.set(
                "linux.resources.cpu.idle",
                "cpu",
                "cpu.idle",
                &v.to_string(),
            )?;
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            self.set("linux.resources.cpu.cpus", "cpuset", "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            self.set("linux.resources.cpu.mems", "cpuset", "cpuset.mems", mems)?;
        }
        Ok(())
    }

    fn apply_blkio(&self, b: &LinuxBlockIo) -> Result<()> {
        if let Some(w) = nz_w(b.weight()) {
            self.set_weight(
                "linux.resources.blockIO.weight",
                "blkio.weight",
                "blkio.bfq.weight",
                &w.to_string(),
            )?;
        }
        if let Some(w) = nz_w(b.leaf_weight()) {
            self.set(
                "linux.resources.blockIO.leafWeight",
                "blkio",
                "blkio.leaf_weight",
                &w.to_string(),
            )?;
        }
        for d in b.weight_device().iter().flatten() {
            let dev = format!("{}:{}", d.major(), d.minor());
            if let Some(w) = nz_w(d.weight()) {
                self.set_weight(
                    &format!("linux.resources.blockIO.weightDevice[{dev}].weight"),
                    "blkio.weight_device",
                    "blkio.bfq.weight_device",
                    &format!("{dev} {w}"),
                )?;
            }
            if let Some(w) = nz_w(d.leaf_weight()) {
                self.set(
                    &format!("linux.resources.blockIO.weightDevice[{dev}].leafWeight"),
                    "blkio",
                    "blkio.leaf_weight_device",
                    &format!("{dev} {w}"),
                )?;
            }
        }
        let throttles = [
            (
                "throttleReadBpsDevice",
                "blkio.throttle.read_bps_device",
                b.throttle_read_bps_device(),
            ),
            (
                "throttleWriteBpsDevice",
                "blkio.throttle.write_bps_device",
                b.throttle_write_bps_device(),
            ),
            (
                "throttleReadIOPSDevice",
                "blkio.throttle.read_iops_device",
                b.throttle_read_iops_device(),
            ),
            (
                "throttleWriteIOPSDevice",
                "blkio.throttle.write_iops_device",
                b.throttle_write_iops_device(),
            ),
        ];
        for (name, file, list) in throttles {
            // Rate 0 would just remove a rule: "not set".
            for d in list.iter().flatten().filter(|d| d.rate() != 0) {
                let dev = format!("{}:{}", d.major(), d.minor());
                self.set(
                    &format!("linux.resources.blockIO.{name}[{dev}]"),
                    "blkio",
                    file,
                    &format!("{dev} {}", d.rate()),
                )?;
            }
        }
        Ok(())
    }

    /// CFQ's blkio.weight* files are gone on kernels with only BFQ, which
    /// has blkio.bfq.weight* with the same 1..1000 range: use whichever
    /// exists (as runc does), and name the CFQ file when neither does.
    fn set_weight(&self, field: &str, cfq: &str, bfq: &str, value: &str) -> Result<()> {
        let dir = self.dir_for(field, "blkio")?;
        let (cfq, bfq) = (dir.join(cfq), dir.join(bfq));
        if !cfq.exists() && bfq.exists() {
            return set_knob(field, &bfq, value);
        }
        set_knob(field, &cfq, value)
    }

    /// Each hierarchy's `tasks` file, for [`super::join_self`].
    pub fn tasks_files(&self) -> Result<Vec<PathBuf>> {
        self.check()?;
        Ok(self
            .hierarchies
            .iter()
            .map(|h| h.leaf.join("tasks"))
            .collect())
    }

    pub fn add_pid(&self, pid: i32) -> Result<()> {
        check_pid(pid)?;
        self.check()?;
        for h in &self.hierarchies {
            fs::write_file(&h.leaf.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The hierarchy that best answers "which processes": pids (every task
    /// is charged there), else memory, else whichever is first.
    fn pid_hierarchy(&self) -> Option<&Hierarchy> {
        ["pids", "memory"]
            .iter()
            .find_map(|c| self.hierarchies.iter().find(|h| h.has(c)))
            .or_else(|| self.hierarchies.first())
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        self.check()?;
        match self.pid_hierarchy() {
            Some(h) => fs::pids_recursive(&h.leaf),
            None => Ok(Vec::new()),
        }
    }

    pub fn kill_all(&self, signal: Signal) -> Result<()> {
        self.check()?;
        let Some(h) = self.pid_hierarchy() else {
            return Ok(());
        };
        let pids = fs::pids_recursive(&h.leaf)?;
        fs::signal_pids(&h.leaf, &pids, signal)
    }

    pub fn destroy(&self) -> Result<()> {
        self.check()?;
        // Try every hierarchy even if one fails, so that one busy
        // hierarchy does not leave all the others behind; report the first.
        let mut first_err = None;
        for h in &self.hierarchies {
            if let Err(e) = fs::remove_tree(&h.leaf) {
                log::warn!("cgroup: {e}");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub fn mount_sources(&self) -> Vec<MountSource> {
        self.hierarchies
            .iter()
            .map(|h| MountSource::V1 {
                name: h
                    .mount_point
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| h.controllers.join(",")),
                controllers: h.controllers.clone(),
                source: h.leaf.clone(),
                named: h.is_named(),
            })
            .collect()
    }
}

/// cgroup.procs reads "0" as "the writer itself": never let that through.
pub(crate) fn check_pid(pid: i32) -> Result<()> {
    if pid <= 0 {
        return Err(invalid("pid", format!("{pid} is not a process id")));
    }
    Ok(())
}

/// A new v1 cpuset starts with empty cpus/mems (unless clone_children is
/// set), and adding a task to it then fails with ENOSPC: copy the parent's.
/// Fill in `dir`'s empty cpuset.cpus and cpuset.mems from `parent`'s; false (and nothing
/// written) where a value is wanted and `parent` has none either.
fn inherit_cpuset(parent: &Path, dir: &Path) -> Result<bool> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let path = dir.join(file);
        if fs::read_file(&path)?.trim().is_empty() {
            let value = fs::read_file(&parent.join(file))?;
            if value.trim().is_empty() {
                return Ok(false);
            }
            fs::write_file(&path, value.trim())?;
        }
    }
    Ok(true)
}

fn read_u64(path: &Path) -> Result<u64> {
    let text = fs::read_file(path)?;
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        reason: format!("not a number: {:?}", text.trim()),
    })
}

/// pids.max: a positive limit, else "max" (0 and -1 both mean unlimited).
pub(crate) fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}

/// "2MB", "1GB", "64KB": the size becomes part of a file name.
pub(crate) fn check_page_size(field: &str, size: &str) -> Result<()> {
    if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid(field, format!("bad page size {size:?}")));
    }
    Ok(())
}

/// rdma.max line ("mlx4_0 hca_handle=2 hca_object=2000"); None when the
/// entry limits nothing.
pub(crate) fn rdma_max(
    field: &str,
    dev: &str,
    limits: &oci_spec::runtime::LinuxRdma,
) -> Result<Option<String>> {
    if dev.is_empty() || dev.contains(char::is_whitespace) {
        return Err(invalid(field, "bad rdma device name"));
    }
    let mut line = dev.to_string();
    if let Some(h) = limits.hca_handles() {
        line.push_str(&format!(" hca_handle={h}"));
    }
    if let Some(o) = limits.hca_objects() {
        line.push_str(&format!(" hca_object={o}"));
    }
    Ok((line != dev).then_some(line))
}

/// A devices.allow/deny entry: "c 1:3 rwm", "a *:* rwm", "b 8:* r". Parsed by the same code
/// as the v2 eBPF filter's rules, so both hierarchies accept and refuse the same specs.
pub fn device_rule(d: &LinuxDeviceCgroup) -> std::result::Result<String, String> {
    Ok(super::devices_bpf::rule(d)?.v1_entry())
}

#[cfg(test)]
mod tests {
    use super::super::fs::record;
    use super::super::test_util::Fixture;
    use super::super::{CgroupError, Manager as Any};
    use super::*;

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).expect("resources json")
    }

    fn mgr(fx: &Fixture, path: &str) -> Manager {
        match Any::with_host(&fx.host, Some(path), "x").unwrap() {
            Any::V1(m) => m,
            Any::V2(_) => panic!("fixture is v1"),
        }
    }

    /// Writes since the last call, relative to the fixture root.
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

    const MEM_KNOBS: &[&str] = &[
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "memory.soft_limit_in_bytes",
        "memory.swappiness",
        "memory.oom_control",
        "memory.kmem.limit_in_bytes",
    ];

    #[test]
    fn create_makes_every_level_and_copies_cpuset_down() {
        let fx = Fixture::v1(&["cpuset", "memory", "systemd"]);
        fx.put("cpuset/cpuset.cpus", "0-3\n");
        fx.put("cpuset/cpuset.mems", "0\n");
        // A real cpuset dir comes with empty cpus/mems; "a" already exists
        // but is empty too (runc fills those as well).
        fx.knobs("cpuset/a", &["cpuset.cpus", "cpuset.mems"]);
        fx.knobs("cpuset/a/b", &["cpuset.cpus", "cpuset.mems"]);
        let m = mgr(&fx, "/a/b");
        m.create().unwrap();
        for h in ["cpuset", "memory", "systemd"] {
            assert!(fx.root.join(h).join("a/b").is_dir(), "{h}");
        }
        assert_eq!(fx.get("cpuset/a/cpuset.cpus"), "0-3");
        assert_eq!(fx.get("cpuset/a/b/cpuset.cpus"), "0-3");
        assert_eq!(fx.get("cpuset/a/b/cpuset.mems"), "0");
        // Idempotent, and non-empty cpusets are left alone.
        fx.put("cpuset/a/cpuset.cpus", "1");
        record::take();
        m.create().unwrap();
        assert!(writes(&fx).is_empty());
    }

    #[test]
    fn a_leaf_under_a_filled_parent_takes_its_cpuset_alone() {
        let fx = Fixture::v1(&["cpuset"]);
        fx.put("cpuset/cpuset.cpus", "0-3\n");
        fx.put("cpuset/cpuset.mems", "0\n");
        fx.knobs("cpuset/a", &["cpuset.cpus", "cpuset.mems"]);
        fx.put("cpuset/a/cpuset.cpus", "1\n");
        fx.put("cpuset/a/cpuset.mems", "0\n");
        fx.knobs("cpuset/a/b", &["cpuset.cpus", "cpuset.mems"]);
        record::take();
        mgr(&fx, "/a/b").create().unwrap();
        assert_eq!(
            writes(&fx),
            vec![
                w("cpuset/a/b/cpuset.cpus", "1"),
                w("cpuset/a/b/cpuset.mems", "0")
            ],
            "only the leaf is written, from its parent"
        );
    }

    #[test]
    fn relative_path_lands_under_own_memory_cgroup() {
        let fx = Fixture::v1_with_own(&["memory"], "/process_api/abc");
        let m = mgr(&fx, "crt/demo");
        assert_eq!(
            m.hierarchies()[0].leaf,
            fx.root.join("memory/process_api/abc/crt/demo")
        );
    }

    #[test]
    fn memory_values_and_order_when_growing() {
        let fx = Fixture::v1(&["memory"]);
        let m = mgr(&fx, "/c");
        fx.knobs("memory/c", MEM_KNOBS);
        fx.put("memory/c/memory.limit_in_bytes", "9223372036854771712\n");
        record::take();
        m.apply(&res(
            r#"{"memory":{"limit":268435456,"reservation":134217728,
                "swap":536870912,"swappiness":0,"disableOOMKiller":true}}"#,
        ))
        .unwrap();
        // Current limit (unlimited) is above the new swap: memory first.
        assert_eq!(
            writes(&fx),
            vec![
                w("memory/c/memory.limit_in_bytes", "268435456"),
                w("memory/c/memory.memsw.limit_in_bytes", "536870912"),
                w("memory/c/memory.soft_limit_in_bytes", "134217728"),
                w("memory/c/memory.swappiness", "0"),
                w("memory/c/memory.oom_control", "1"),
            ]
        );
    }

    #[test]
    fn memory_swap_goes_first_when_raising_above_current() {
        let fx = Fixture::v1(&["memory"]);
        let m = mgr(&fx, "/c");
        fx.knobs("memory/c", MEM_KNOBS);
        fx.put("memory/c/memory.limit_in_bytes", "100\n");
        record::take();
        m.apply(&res(r#"{"memory":{"limit":300,"swap":600}}"#))
            .unwrap();
        assert_eq!(
            writes(&fx),
            vec![
                w("memory/c/memory.memsw.limit_in_bytes", "600"),
                w("memory/c/memory.limit_in_bytes", "300"),
            ]
        );
        // Unlimited memory with no swap given: swap becomes unlimited too,
        // and goes first.
        m.apply(&res(r#"{"memory":{"limit":-1}}"#)).unwrap();
        assert_eq!(
            writes(&fx),
            vec![
                w("memory/c/memory.memsw.limit_in_bytes", "-1"),
                w("memory/c/memory.limit_in_bytes", "-1"),
            ]
        );
    }

    #[test]
    fn zero_values_write_nothing() {
        let fx = Fixture::v1(&["memory", "cpu", "pids", "blkio"]);
        let m = mgr(&fx, "/c");
        m.create().unwrap();
        record::take();
        m.apply(&res(r#"{"memory":{"limit":0,"swap":0,"reservation":0},
                "cpu":{"shares":0,"quota":0,"period":0,"cpus":""},
                "blockIO":{"weight":0,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":0}]}}"#))
            .unwrap();
        assert!(writes(&fx).is_empty());
    }

    #[test]
    fn cpu_and_cpuset_and_pids() {
        let fx = Fixture::v1(&["cpu,cpuacct", "cpuset", "pids"]);
        let m = mgr(&fx, "/c");
        fx.knobs(
            "cpu,cpuacct/c",
            &[
                "cpu.shares",
                "cpu.cfs_quota_us",
                "cpu.cfs_period_us",
                "cpu.rt_period_us",
                "cpu.rt_runtime_us",
                "cpu.cfs_burst_us",
                "cpu.idle",
            ],
        );
        fx.knobs("cpuset/c", &["cpuset.cpus", "cpuset.mems"]);
        fx.knobs("pids/c", &["pids.max"]);
        record::take();
        m.apply(&res(r#"{"cpu":{"shares":512,"quota":50000,"period":100000,
                "realtimeRuntime":950,"realtimePeriod":1000,"burst":1000,"idle":1,
                "cpus":"0-1","mems":"0"},"pids":{"limit":64}}"#))
            .unwrap();
        assert_eq!(
            writes(&fx),
            vec![
                w("cpu,cpuacct/c/cpu.shares", "512"),
                w("cpu,cpuacct/c/cpu.cfs_period_us", "100000"),
                w("cpu,cpuacct/c/cpu.cfs_quota_us", "50000"),
                w("cpu,cpuacct/c/cpu.rt_period_us", "1000"),
                w("cpu,cpuacct/c/cpu.rt_runtime_us", "950"),
                w("cpu,cpuacct/c/cpu.cfs_burst_us", "1000"),
                w("cpu,cpuacct/c/cpu.idle", "1"),
                w("cpuset/c/cpuset.cpus", "0-1"),
                w("cpuset/c/cpuset.mems", "0"),
                w("pids/c/pids.max", "64"),
            ]
        );
        for (limit, want) in [("0", "max"), ("-1", "max"), ("7", "7")] {
            m.apply(&res(&format!(r#"{{"pids":{{"limit":{limit}}}}}"#)))
                .unwrap();
            assert_eq!(fx.get("pids/c/pids.max"), want);
        }
    }

    #[test]
    fn blkio_weights_fall_back_to_bfq_and_throttles() {
        let fx = Fixture::v1(&["blkio"]);
        let m = mgr(&fx, "/c");
        fx.knobs(
            "blkio/c",
            &[
                "blkio.bfq.weight",
                "blkio.bfq.weight_device",
                "blkio.throttle.read_bps_device",
                "blkio.throttle.write_bps_device",
                "blkio.throttle.read_iops_device",
                "blkio.throttle.write_iops_device",
            ],
        );
        record::take();
        m.apply(&res(r#"{"blockIO":{"weight":500,
                "weightDevice":[{"major":8,"minor":0,"weight":300}],
                "throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}],
                "throttleWriteBpsDevice":[{"major":8,"minor":16,"rate":2097152}],
                "throttleReadIOPSDevice":[{"major":8,"minor":0,"rate":100}],
                "throttleWriteIOPSDevice":[{"major":8,"minor":0,"rate":200}]}}"#))
            .unwrap();
        assert_eq!(
            writes(&fx),
            vec![
                w("blkio/c/blkio.bfq.weight", "500"),
                w("blkio/c/blkio.bfq.weight_device", "8:0 300"),
                w("blkio/c/blkio.throttle.read_bps_device", "8:0 1048576"),
                w("blkio/c/blkio.throttle.write_bps_device", "8:16 2097152"),
                w("blkio/c/blkio.throttle.read_iops_device", "8:0 100"),
                w("blkio/c/blkio.throttle.write_iops_device", "8:0 200"),
            ]
        );
        // leafWeight has no BFQ twin: the missing CFQ file is named.
        let err = m
            .apply(&res(r#"{"blockIO":{"leafWeight":200}}"#))
            .unwrap_err();
        assert!(
            matches!(&err, CgroupError::KnobMissing { field, path }
                if field == "linux.resources.blockIO.leafWeight"
                    && path.ends_with("blkio.leaf_weight")),
            "{err}"
        );
    }

    #[test]
    fn cfq_weight_is_preferred_when_present() {
        let fx = Fixture::v1(&["blkio"]);
        let m = mgr(&fx, "/c");
        fx.knobs("blkio/c", &["blkio.weight", "blkio.bfq.weight"]);
        m.apply(&res(r#"{"blockIO":{"weight":10}}"#)).unwrap();
        assert_eq!(fx.get("blkio/c/blkio.weight"), "10");
        assert_eq!(fx.get("blkio/c/blkio.bfq.weight"), "");
    }

    #[test]
    fn devices_in_spec_order() {
        let fx = Fixture::v1(&["devices"]);
        let m = mgr(&fx, "/c");
        fx.knobs("devices/c", &["devices.allow", "devices.deny"]);
        record::take();
        m.apply(&res(r#"{"devices":[
                {"allow":false,"access":"rwm"},
                {"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},
                {"allow":true,"type":"c","major":136,"access":"rwm"},
                {"allow":true,"type":"b","minor":-1,"access":"r"},
                {"allow":false,"type":"c","major":5,"minor":1}]}"#))
            .unwrap();
        assert_eq!(
            writes(&fx),
            vec![
                w("devices/c/devices.deny", "a *:* rwm"),
                w("devices/c/devices.allow", "c 1:3 rwm"),
                w("devices/c/devices.allow", "c 136:* rwm"),
                w("devices/c/devices.allow", "b *:* r"),
                w("devices/c/devices.deny", "c 5:1 rwm"),
            ]
        );
        let err = m
            .apply(&res(r#"{"devices":[{"allow":true,"type":"p"}]}"#))
            .unwrap_err();
        assert!(matches!(err, CgroupError::InvalidValue { .. }), "{err}");
        let err = m
            .apply(&res(r#"{"devices":[{"allow":true,"access":"rwx"}]}"#))
            .unwrap_err();
        assert!(err.to_string().contains("devices[0]"), "{err}");
    }

    #[test]
    fn missing_controller_or_knob_is_an_error_naming_the_field() {
        let fx = Fixture::v1(&["memory", "cpu"]);
        let m = mgr(&fx, "/c");
        fx.knobs("memory/c", &["memory.limit_in_bytes"]);
        fx.knobs("cpu/c", &["cpu.shares"]);

        let err = m
            .apply(&res(r#"{"memory":{"kernel":1048576}}"#))
            .unwrap_err();
        assert!(
            matches!(&err, CgroupError::KnobMissing { field, path }
                if field == "linux.resources.memory.kernel"
                    && path.ends_with("memory.kmem.limit_in_bytes")),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("memory.kernel") && msg.contains("memory.kmem.limit_in_bytes"));

        for (json, field, ctrl) in [
            (
                r#"{"hugepageLimits":[{"pageSize":"2MB","limit":0}]}"#,
                "linux.resources.hugepageLimits[2MB]",
                "hugetlb",
            ),
            (
                r#"{"network":{"classID":1048577}}"#,
                "linux.resources.network.classID",
                "net_cls",
            ),
            (
                r#"{"network":{"priorities":[{"name":"eth0","priority":5}]}}"#,
                "linux.resources.network.priorities[eth0]",
                "net_prio",
            ),
            (
                r#"{"pids":{"limit":10}}"#,
                "linux.resources.pids.limit",
                "pids",
            ),
            (
                r#"{"cpu":{"cpus":"0"}}"#,
                "linux.resources.cpu.cpus",
                "cpuset",
            ),
            (
                r#"{"devices":[{"allow":false,"access":"rwm"}]}"#,
                "linux.resources.devices[0]",
                "devices",
            ),
            (
                r#"{"rdma":{"mlx5_0":{"hcaHandles":3}}}"#,
                "linux.resources.rdma[mlx5_0]",
                "rdma",
            ),
        ] {
            let err = m.apply(&res(json)).unwrap_err();
            assert!(
                matches!(&err, CgroupError::ControllerMissing { field: f, controller: c, .. }
                    if f == field && c == ctrl),
                "{json}: {err}"
            );
        }

        let err = m
            .apply(&res(r#"{"unified":{"memory.high":"1G"}}"#))
            .unwrap_err();
        assert!(matches!(err, CgroupError::Unsupported { .. }), "{err}");
        // An empty unified map is fine.
        m.apply(&res(r#"{"unified":{}}"#)).unwrap();
    }

    #[test]
    fn hugepages_and_swappiness_validation() {
        let fx = Fixture::v1(&["hugetlb", "memory"]);
        let m = mgr(&fx, "/c");
        fx.knobs("hugetlb/c", &["hugetlb.2MB.limit_in_bytes"]);
        m.apply(&res(r#"{"hugepageLimits":[{"pageSize":"2MB","limit":0}]}"#))
            .unwrap();
        assert_eq!(fx.get("hugetlb/c/hugetlb.2MB.limit_in_bytes"), "0");
        let err = m
            .apply(&res(
                r#"{"hugepageLimits":[{"pageSize":"../2MB","limit":1}]}"#,
            ))
            .unwrap_err();
        assert!(matches!(err, CgroupError::InvalidValue { .. }), "{err}");
        let err = m
            .apply(&res(r#"{"memory":{"swappiness":101}}"#))
            .unwrap_err();
        assert!(matches!(err, CgroupError::InvalidValue { .. }), "{err}");
    }

    #[test]
    fn a_helper_joins_through_every_hierarchys_tasks_file() {
        let fx = Fixture::v1(&["memory", "pids", "systemd"]);
        let m = mgr(&fx, "/a/c");
        m.create().unwrap();
        for h in ["memory", "pids", "systemd"] {
            fx.put(&format!("{h}/a/c/tasks"), "");
        }
        record::take();
        super::super::join_self(&m.tasks_files().unwrap()).unwrap();
        assert_eq!(
            writes(&fx),
            vec![
                w("memory/a/c/tasks", "0"),
                w("pids/a/c/tasks", "0"),
                w("systemd/a/c/tasks", "0"),
            ]
        );
    }

    #[test]
    fn add_pid_pids_kill_and_destroy() {
        let fx = Fixture::v1(&["memory", "pids", "systemd"]);
        let m = mgr(&fx, "/a/c");
        m.create().unwrap();
        // add_pid writes to every hierarchy (the tempdir has no
        // cgroup.procs until we make one).
        for h in ["memory", "pids", "systemd"] {
            fx.put(&format!("{h}/a/c/cgroup.procs"), "");
        }
        record::take();
        m.add_pid(4242).unwrap();
        assert_eq!(
            writes(&fx),
            vec![
                w("memory/a/c/cgroup.procs", "4242"),
                w("pids/a/c/cgroup.procs", "4242"),
                w("systemd/a/c/cgroup.procs", "4242"),
            ]
        );
        assert!(matches!(
            m.add_pid(0).unwrap_err(),
            CgroupError::InvalidValue { .. }
        ));
        // pids() reads the pids hierarchy, descendants included.
        fx.put("pids/a/c/cgroup.procs", "2147483646\n");
        fx.put("pids/a/c/sub/cgroup.procs", "2147483645\n");
        fx.put("memory/a/c/cgroup.procs", "1\n");
        assert_eq!(m.pids().unwrap(), vec![2147483645, 2147483646]);
        // Those pids do not exist: signalling them is fine (ESRCH).
        m.kill_all(Signal::SIGKILL).unwrap();

        // Tempdirs cannot be rmdir'ed with files inside, unlike cgroupfs.
        for h in ["memory", "pids", "systemd"] {
            std::fs::remove_file(fx.root.join(h).join("a/c/cgroup.procs")).unwrap();
        }
        std::fs::remove_file(fx.root.join("pids/a/c/sub/cgroup.procs")).unwrap();
        m.destroy().unwrap();
        for h in ["memory", "pids", "systemd"] {
            assert!(!fx.root.join(h).join("a/c").exists(), "{h}");
            // The ancestor is not ours to remove.
            assert!(fx.root.join(h).join("a").is_dir(), "{h}");
        }
        m.destroy().unwrap();
        assert!(m.pids().unwrap().is_empty());
        m.kill_all(Signal::SIGTERM).unwrap();
    }

    #[test]
    fn pids_fall_back_to_memory_then_first() {
        let fx = Fixture::v1(&["systemd", "memory"]);
        let m = mgr(&fx, "/c");
        fx.put("memory/c/cgroup.procs", "5\n");
        fx.put("systemd/c/cgroup.procs", "6\n");
        assert_eq!(m.pids().unwrap(), vec![5]);
        let fx2 = Fixture::v1(&["systemd"]);
        let m2 = mgr(&fx2, "/c");
        fx2.put("systemd/c/cgroup.procs", "6\n");
        assert_eq!(m2.pids().unwrap(), vec![6]);
    }

    #[test]
    fn device_rule_formats() {
        let d = |j: &str| -> LinuxDeviceCgroup { serde_json::from_str(j).unwrap() };
        assert_eq!(
            device_rule(&d(r#"{"allow":true,"type":"u","major":1,"minor":5}"#)).unwrap(),
            "c 1:5 rwm"
        );
        assert_eq!(
            device_rule(&d(r#"{"allow":true,"type":"a","access":"m"}"#)).unwrap(),
            "a *:* m"
        );
    }
}
