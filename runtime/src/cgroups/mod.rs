//! Container cgroups: creating the container's cgroup, applying the spec's
//! `linux.resources`, moving processes in, and tearing it down again.
//!
//! Both cgroup modes are supported:
//!
//! * **v1** (legacy and hybrid hosts): one directory per mounted v1 hierarchy,
//!   named ones such as `name=systemd` included. On a hybrid host the cgroup2
//!   mount (usually `/sys/fs/cgroup/unified`) is ignored, as runc does.
//! * **v2** (cgroup2 mounted at `/sys/fs/cgroup`): a single leaf directory.
//!
//! `linux.cgroupsPath` is interpreted like runc's cgroupfs driver:
//!
//! * absolute (`/default/demo`): below the root of every hierarchy;
//! * relative (`demo`): below this process's own cgroup in that hierarchy,
//!   taken from `/proc/self/cgroup`;
//! * absent or empty: runc's default, which is the relative path
//!   `<container_id>`, i.e. the container's cgroup is nested under the
//!   runtime's own cgroup. Note that on cgroup v2 this only works when the
//!   runtime's cgroup holds no processes of its own or is the root (the
//!   "no internal processes" rule stops controllers from being enabled
//!   otherwise); containerd always passes an explicit path
//!   (`/<namespace>/<id>`), so this only matters for hand-written specs.
//! * systemd form (`slice:prefix:name`): mapped to the cgroupfs path systemd
//!   would give the unit (`path::systemd_path`); a malformed one is
//!   [`CgroupError::SystemdPath`].
//!
//! Everything that touches the host goes through [`Host`] (parsed from
//! mountinfo and `/proc/self/cgroup` text), so the unit tests run on a
//! tempdir fixture without root.

mod devices_bpf;
mod freezer;
mod fs;
mod host;
mod oom;
mod path;
pub mod stats;
pub mod v1;
pub mod v2;

#[cfg(test)]
mod real_host_tests;
#[cfg(test)]
mod test_util;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

pub use self::host::{unified_root, Host, V1Mount, V2Mount, DEFAULT_CGROUP_ROOT};

pub type Result<T> = std::result::Result<T, CgroupError>;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Every knob write ends up here (see `fs::write_file`).
    #[error("cgroup: cannot write {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },

    #[error("cgroup: cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cgroup: cannot remove {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cgroup: cannot hand {} to the container's root: {source}", path.display())]
    Chown {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("cgroup: cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cgroup: cannot send {signal} to pid {pid} of {}: {source}", path.display())]
    Signal {
        path: PathBuf,
        pid: i32,
        signal: Signal,
        #[source]
        source: nix::Error,
    },

    #[error("cgroup: unexpected content in {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },

    /// The spec sets `field` but the host has no such controller (v1: no
    /// hierarchy carries it; v2: not in the cgroup's `cgroup.controllers`).
    #[error("host cannot apply {field}: controller {controller:?} is not available ({})", dir.display())]
    ControllerMissing {
        field: String,
        controller: String,
        /// v1: the cgroup root searched; v2: the leaf whose `cgroup.controllers` lacks it.
        dir: PathBuf,
    },

    /// The controller exists but this kernel lacks the knob for `field`.
    #[error("host cannot apply {field}: {} does not exist", path.display())]
    KnobMissing { field: String, path: PathBuf },

    /// `field` has no equivalent in this cgroup mode (e.g. kernel memory on v2).
    #[error("host cannot apply {field}: {reason}")]
    Unsupported { field: String, reason: String },

    #[error("invalid value for {field}: {reason}")]
    InvalidValue { field: String, reason: String },

    #[error("invalid cgroupsPath {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    #[error("cgroupsPath {path:?} (systemd form, slice:prefix:name): {reason}")]
    SystemdPath { path: String, reason: String },

    #[error("no usable cgroup filesystem in {}: {reason}", path.display())]
    NoCgroupFs { path: PathBuf, reason: String },
}

/// What `delete` needs after a shim crash: serializable, stored in the
/// container's state file.
///
/// Exactly one of `v1`/`v2` is in use: `v2` is `Some` on a cgroup v2 host.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Default)]
pub struct CgroupState {
    /// cgroup v1: hierarchy mount point -> absolute leaf dir.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub v1: BTreeMap<PathBuf, PathBuf>,
    /// cgroup v1: the controllers of each hierarchy, keyed like `v1`, so that
    /// `pids()` can pick the pids/memory hierarchy without re-reading
    /// mountinfo. Missing entries fall back to the mount point's basename.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub v1_controllers: BTreeMap<PathBuf, Vec<String>>,
    /// cgroup v2: the leaf dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v2: Option<PathBuf>,
    /// cgroup v2: the cgroup2 mount point the leaf lives under (create walks
    /// its ancestors from there). Defaults to `/sys/fs/cgroup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v2_mount: Option<PathBuf>,
}

/// Where the rootfs code finds what to bind into the container's
/// `/sys/fs/cgroup` when there is no cgroup namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    V1 {
        /// Basename of the hierarchy's mount point on the host, e.g. "cpu",
        /// "cpu,cpuacct" or "systemd": the directory to create under the
        /// container's /sys/fs/cgroup.
        name: String,
        /// The hierarchy's controllers as the kernel names them, e.g.
        /// ["cpu", "cpuacct"] or ["name=systemd"] (for compat symlinks).
        controllers: Vec<String>,
        /// The container's leaf dir in that hierarchy, on the host.
        source: PathBuf,
        /// Mounted with `name=` (a named hierarchy such as systemd's).
        named: bool,
    },
    V2 {
        /// The container's leaf dir on the host.
        source: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Manager {
    V1(v1::Manager),
    V2(v2::Manager),
}

impl Manager {
    /// Detect the host's mode from /proc/self/mountinfo (cgroup2 at
    /// /sys/fs/cgroup => v2, else every mounted v1 hierarchy) and resolve
    /// `cgroups_path` (the spec's `linux.cgroupsPath`) against it; see the
    /// module docs for the path rules (`None` => runc's default: relative
    /// `<container_id>`).
    pub fn new(cgroups_path: Option<&str>, container_id: &str) -> Result<Manager> {
        let host = Host::detect()?;
        Manager::with_host(&host, cgroups_path, container_id)
    }

    /// As [`Manager::new`], on an explicitly described host (tests, or a
    /// caller that already parsed mountinfo).
    pub fn with_host(
        host: &Host,
        cgroups_path: Option<&str>,
        container_id: &str,
    ) -> Result<Manager> {
        let spec = path::CgroupsPath::parse(cgroups_path, container_id)?;
        match host {
            Host::V2(m) => {
                let leaf = spec.resolve(&m.mount_point, &m.root, m.own_cgroup.as_deref())?;
                Ok(Manager::V2(v2::Manager::new(m.mount_point.clone(), leaf)))
            }
            Host::V1(mounts) => {
                let hierarchies = mounts
                    .iter()
                    .map(|m| {
                        let leaf =
                            spec.resolve(&m.mount_point, &m.root, m.own_cgroup.as_deref())?;
                        Ok(v1::Hierarchy {
                            mount_point: m.mount_point.clone(),
                            controllers: m.controllers.clone(),
                            leaf,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Manager::V1(v1::Manager::new(hierarchies)))
            }
        }
    }

    pub fn from_state(state: &CgroupState) -> Manager {
        if let Some(leaf) = &state.v2 {
            let mount = state
                .v2_mount
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CGROUP_ROOT));
            return Manager::V2(v2::Manager::new(mount, leaf.clone()));
        }
        let hierarchies = state
            .v1
            .iter()
            .map(|(mount_point, leaf)| {
                let controllers = state
                    .v1_controllers
                    .get(mount_point)
                    .cloned()
                    .unwrap_or_else(|| controllers_from_mount_point(mount_point));
                v1::Hierarchy {
                    mount_point: mount_point.clone(),
                    controllers,
                    leaf: leaf.clone(),
                }
            })
            .collect();
        Manager::V1(v1::Manager::new(hierarchies))
    }

    pub fn state(&self) -> CgroupState {
        match self {
            Manager::V1(m) => CgroupState {
                v1: m
                    .hierarchies()
                    .iter()
                    .map(|h| (h.mount_point.clone(), h.leaf.clone()))
                    .collect(),
                v1_controllers: m
                    .hierarchies()
                    .iter()
                    .map(|h| (h.mount_point.clone(), h.controllers.clone()))
                    .collect(),
                ..CgroupState::default()
            },
            Manager::V2(m) => CgroupState {
                v2: Some(m.leaf().to_path_buf()),
                v2_mount: Some(m.mount_point().to_path_buf()),
                ..CgroupState::default()
            },
        }
    }

    /// mkdir -p the leaf in every hierarchy (v1: cpuset.cpus/mems are copied
    /// down into empty levels; v2: available controllers are enabled in every
    /// ancestor's cgroup.subtree_control, root first).
    pub fn create(&self) -> Result<()> {
        match self {
            Manager::V1(m) => m.create(),
            Manager::V2(m) => m.create(),
        }
    }

    /// Apply the spec's linux.resources; call before the user's process runs.
    /// Anything the host cannot apply is an error naming the field.
    pub fn apply(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        check_ranges(resources)?;
        match self {
            Manager::V1(m) => m.apply(resources),
            Manager::V2(m) => m.apply(resources),
        }
    }

    /// Apply everything but the device rules, which are only checked: like runc, crt sets
    /// those once the container's /dev is made (a pod sandbox's spec denies every device,
    /// /dev/null's mknod included). [`Manager::apply_devices`] follows at Ready.
    pub fn apply_before_setup(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        for (i, d) in resources.devices().iter().flatten().enumerate() {
            devices_bpf::rule(d).map_err(|reason| CgroupError::InvalidValue {
                field: format!("linux.resources.devices[{i}]"),
                reason,
            })?;
        }
        let mut rest = resources.clone();
        rest.set_devices(None);
        self.apply(&rest)
    }

    /// The device rules of `resources`, alone, followed by the devices every container gets
    /// (runc's list: see [`default_allowed_devices`]).
    pub fn apply_devices(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        match resources.devices() {
            Some(d) if !d.is_empty() => {
                let mut rules = d.clone();
                rules.extend(default_allowed_devices());
                let mut only = oci_spec::runtime::LinuxResources::default();
                only.set_devices(Some(rules));
                self.apply(&only)
            }
            _ => Ok(()),
        }
    }

    /// What a process spawned for this cgroup moves itself into with [`join_self`]: v1's
    /// `tasks` files (v2 spawns straight into the cgroup, CLONE_INTO_CGROUP: none).
    pub fn self_join_files(&self) -> Result<Vec<PathBuf>> {
        match self {
            Manager::V1(m) => m.tasks_files(),
            Manager::V2(_) => Ok(Vec::new()),
        }
    }

    pub fn add_pid(&self, pid: i32) -> Result<()> {
        match self {
            Manager::V1(m) => m.add_pid(pid),
            Manager::V2(m) => m.add_pid(pid),
        }
    }

    /// v2: an O_RDONLY|O_DIRECTORY|O_CLOEXEC fd of the leaf, for clone3's
    /// CLONE_INTO_CGROUP. v1: None.
    pub fn dir_fd(&self) -> Result<Option<OwnedFd>> {
        match self {
            Manager::V1(_) => Ok(None),
            Manager::V2(m) => m.dir_fd().map(Some),
        }
    }

    /// Every pid in the container's cgroup and its descendants, sorted. A
    /// cgroup that no longer exists has no pids.
    pub fn pids(&self) -> Result<Vec<i32>> {
        match self {
            Manager::V1(m) => m.pids(),
            Manager::V2(m) => m.pids(),
        }
    }

    /// Signal every process once (v2 + SIGKILL: through cgroup.kill when the
    /// kernel has it). `destroy` is what waits for them to be gone.
    pub fn kill_all(&self, signal: Signal) -> Result<()> {
        match self {
            Manager::V1(m) => m.kill_all(signal),
            Manager::V2(m) => m.kill_all(signal),
        }
    }

    /// Remove the leaf (descendants first) in every hierarchy. Retries on
    /// EBUSY for about a second, SIGKILL-ing stragglers; a missing dir is Ok.
    /// Ancestors are never removed.
    pub fn destroy(&self) -> Result<()> {
        match self {
            Manager::V1(m) => m.destroy(),
            Manager::V2(m) => m.destroy(),
        }
    }

    /// v2: hand the leaf to a user namespace's root (host `uid`/`gid`), so the container can
    /// make sub-cgroups and move its processes, like a systemd delegation. v1 is never
    /// delegated (its hierarchies cannot be safely handed out); nothing to do there.
    pub fn delegate(&self, uid: u32, gid: u32) -> Result<()> {
        match self {
            Manager::V1(_) => Ok(()),
            Manager::V2(m) => m.delegate(uid, gid),
        }
    }

    pub fn mount_sources(&self) -> Vec<MountSource> {
        match self {
            Manager::V1(m) => m.mount_sources(),
            Manager::V2(m) => vec![MountSource::V2 {
                source: m.leaf().to_path_buf(),
            }],
        }
    }

    pub fn is_v2(&self) -> bool {
        matches!(self, Manager::V2(_))
    }
}

/// Move the calling thread into the cgroups whose `files` [`Manager::self_join_files`] named.
/// Called by the single-threaded init helper before it forks or leaves the host's view of
/// /sys/fs/cgroup, so the one thread is the whole process and everything it starts follows.
/// Why not the runtime writing the helper's pid to `cgroup.procs`: a whole-process move takes
/// cgroup_threadgroup_rwsem for writing, and the first one after a quiet spell waits for an RCU
/// grace period (about 10 ms here, per container create and per exec). A thread moving itself
/// through `tasks` skips that lock (Linux 6.0+).
pub fn join_self(files: &[PathBuf]) -> Result<()> {
    files.iter().try_for_each(|f| fs::write_file(f, "0"))
}

/// The `tasks` files of [`Manager::self_join_files`], opened for writing, in that order: the
/// runtime opens them while the helper is still being cloned and sends them with its plan
/// ([`join_self_through`]). None where one fails to open: the helper then opens them itself,
/// and its error names the file.
pub fn open_join_files(files: &[PathBuf]) -> Option<Vec<std::fs::File>> {
    files
        .iter()
        .map(|f| std::fs::OpenOptions::new().write(true).open(f).ok())
        .collect()
}

/// [`join_self`] through `opened`, the files of `files` opened by [`open_join_files`]: the
/// path walk through cgroupfs, most of each move's cost (10 us each on a VM, one per v1
/// hierarchy, on the helper's path to ready), is done already.
pub fn join_self_through(files: &[PathBuf], opened: Vec<OwnedFd>) -> Result<()> {
    if opened.len() != files.len() {
        return join_self(files);
    }
    files
        .iter()
        .zip(opened)
        .try_for_each(|(path, fd)| fs::write_opened(&mut std::fs::File::from(fd), path, "0"))
}

/// What runc allows after a spec's own device rules, so that a spec that only denies
/// everything (CRI's containers and sandboxes) still has working /dev/null, /dev/zero, ...,
/// terminals (/dev/pts/*, /dev/ptmx) and /dev/net/tun, and may mknod (not open) any device.
pub fn default_allowed_devices() -> Vec<oci_spec::runtime::LinuxDeviceCgroup> {
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType as T};
    let rule = |typ: T, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().expect("a complete device rule")
    };
    vec![
        rule(T::C, None, None, "m"),
        rule(T::B, None, None, "m"),
        rule(T::C, Some(1), Some(3), "rwm"),
        rule(T::C, Some(1), Some(8), "rwm"),
        rule(T::C, Some(1), Some(7), "rwm"),
        rule(T::C, Some(5), Some(0), "rwm"),
        rule(T::C, Some(1), Some(5), "rwm"),
        rule(T::C, Some(1), Some(9), "rwm"),
        rule(T::C, Some(136), None, "rwm"),
        rule(T::C, Some(5), Some(2), "rwm"),
        rule(T::C, Some(10), Some(200), "rwm"),
    ]
}

/// Best guess at a hierarchy's controllers from its mount point, for state
/// files that lack `v1_controllers`: the conventional mount points are the
/// comma-joined controller list ("cpu,cpuacct"), except named hierarchies
/// ("systemd" for name=systemd).
fn controllers_from_mount_point(mount_point: &Path) -> Vec<String> {
    let base = mount_point
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if base == "systemd" {
        return vec!["name=systemd".to_string()];
    }
    base.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Values the spec forbids, refused alike on every host: v1's kernel would reject them, while
/// v2's conversions (blkio weight to io.weight, -1 to "max") must not turn them into something
/// else silently. blkio weights are 10..1000; memory values are bytes or -1 (unlimited).
fn check_ranges(r: &oci_spec::runtime::LinuxResources) -> Result<()> {
    if let Some(m) = r.memory() {
        for (field, v) in [
            ("linux.resources.memory.limit", m.limit()),
            ("linux.resources.memory.reservation", m.reservation()),
            ("linux.resources.memory.swap", m.swap()),
        ] {
            if let Some(v) = v.filter(|&v| v < -1) {
                return Err(CgroupError::InvalidValue {
                    field: field.to_string(),
                    reason: format!("{v}: bytes, or -1 for no limit"),
                });
            }
        }
    }
    let Some(b) = r.block_io() else {
        return Ok(());
    };
    let mut weights = vec![
        ("linux.resources.blockIO.weight".to_string(), b.weight()),
        (
            "linux.resources.blockIO.leafWeight".to_string(),
            b.leaf_weight(),
        ),
    ];
    for d in b.weight_device().iter().flatten() {
        let dev = format!("{}:{}", d.major(), d.minor());
        weights.push((
            format!("linux.resources.blockIO.weightDevice[{dev}].weight"),
            d.weight(),
        ));
        weights.push((
            format!("linux.resources.blockIO.weightDevice[{dev}].leafWeight"),
            d.leaf_weight(),
        ));
    }
    for (field, w) in weights {
        if let Some(w) = w.filter(|&w| w != 0 && !(10..=1000).contains(&w)) {
            return Err(CgroupError::InvalidValue {
                field,
                reason: format!("{w} is not in 10..1000"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn values_outside_the_spec_ranges_are_refused_on_every_host() {
        let r: oci_spec::runtime::LinuxResources =
            serde_json::from_value(serde_json::json!({"blockIO": {"weight": 5000}})).unwrap();
        let e = check_ranges(&r).unwrap_err().to_string();
        assert!(e.contains("blockIO.weight") && e.contains("5000"), "{e}");
        let ok: oci_spec::runtime::LinuxResources = serde_json::from_value(
            serde_json::json!({"blockIO": {"weight": 500}, "memory": {"limit": -1}}),
        )
        .unwrap();
        check_ranges(&ok).unwrap();
        let neg: oci_spec::runtime::LinuxResources =
            serde_json::from_value(serde_json::json!({"memory": {"limit": -5}})).unwrap();
        let e = check_ranges(&neg).unwrap_err().to_string();
        assert!(e.contains("memory.limit") && e.contains("-5"), "{e}");
    }

    #[test]
    fn joining_through_opened_tasks_files_uses_the_files_opened() {
        let d = TempDir::new();
        let files: Vec<PathBuf> = ["cpu", "memory"]
            .iter()
            .map(|h| d.path().join(h).join("tasks"))
            .collect();
        for f in &files {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "").unwrap();
        }
        let opened = open_join_files(&files).expect("both open");
        // Gone by path since: only the files opened can take the writes.
        for f in &files {
            std::fs::rename(f, f.with_extension("moved")).unwrap();
        }
        let fds = opened.into_iter().map(OwnedFd::from).collect();
        join_self_through(&files, fds).unwrap();
        for f in &files {
            assert_eq!(
                std::fs::read_to_string(f.with_extension("moved")).unwrap(),
                "0"
            );
        }
        // Without them (the runtime could not open one), the paths, and an error naming one.
        let e = join_self_through(&files, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cpu/tasks"), "{e}");
        assert!(open_join_files(&files).is_none());
    }

    #[test]
    fn state_roundtrip_v1_and_v2() {
        let fx = Fixture::v1(&["cpu,cpuacct", "memory", "systemd"]);
        let m = Manager::with_host(&fx.host, Some("/default/demo"), "demo").unwrap();
        let st = m.state();
        let json = serde_json::to_string(&st).unwrap();
        let back: CgroupState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);
        assert_eq!(Manager::from_state(&back), m);
        assert_eq!(
            st.v1.get(&fx.root.join("memory")),
            Some(&fx.root.join("memory/default/demo"))
        );
        assert!(!m.is_v2());

        let fx2 = Fixture::v2();
        let m2 = Manager::with_host(&fx2.host, Some("/default/demo"), "demo").unwrap();
        let st2 = m2.state();
        let back2: CgroupState =
            serde_json::from_str(&serde_json::to_string(&st2).unwrap()).unwrap();
        assert_eq!(Manager::from_state(&back2), m2);
        assert_eq!(st2.v2, Some(fx2.root.join("default/demo")));
        assert!(m2.is_v2());
    }

    #[test]
    fn from_state_without_controllers_uses_basenames() {
        let json = r#"{"v1":{"/sys/fs/cgroup/cpu,cpuacct":"/sys/fs/cgroup/cpu,cpuacct/x",
                              "/sys/fs/cgroup/systemd":"/sys/fs/cgroup/systemd/x"}}"#;
        let st: CgroupState = serde_json::from_str(json).unwrap();
        let Manager::V1(m) = Manager::from_state(&st) else {
            panic!("expected v1");
        };
        let ctrls: Vec<_> = m
            .hierarchies()
            .iter()
            .map(|h| h.controllers.join(","))
            .collect();
        assert_eq!(ctrls, vec!["cpu,cpuacct", "name=systemd"]);
    }

    #[test]
    fn v2_state_without_mount_defaults_to_sys_fs_cgroup() {
        let st: CgroupState = serde_json::from_str(r#"{"v2":"/sys/fs/cgroup/a/b"}"#).unwrap();
        let Manager::V2(m) = Manager::from_state(&st) else {
            panic!("expected v2");
        };
        assert_eq!(m.mount_point(), Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn corrupt_state_cannot_target_a_hierarchy_root() {
        // Such a state would make kill_all/destroy act on the whole host.
        let st: CgroupState =
            serde_json::from_str(r#"{"v1":{"/sys/fs/cgroup/pids":"/sys/fs/cgroup/pids/x/.."}}"#)
                .unwrap();
        let m = Manager::from_state(&st);
        for r in [
            m.destroy(),
            m.kill_all(Signal::SIGKILL),
            m.create(),
            m.add_pid(1),
        ] {
            assert!(matches!(r, Err(CgroupError::InvalidPath { .. })), "{r:?}");
        }
        assert!(m.pids().is_err());
        let st: CgroupState =
            serde_json::from_str(r#"{"v2":"/sys/fs/cgroup","v2_mount":"/sys/fs/cgroup"}"#).unwrap();
        let m = Manager::from_state(&st);
        assert!(matches!(m.destroy(), Err(CgroupError::InvalidPath { .. })));
        assert!(matches!(
            m.kill_all(Signal::SIGKILL),
            Err(CgroupError::InvalidPath { .. })
        ));
    }

    #[test]
    fn mount_sources_v1_and_v2() {
        let fx = Fixture::v1(&["cpu,cpuacct", "systemd"]);
        let m = Manager::with_host(&fx.host, Some("/a"), "a").unwrap();
        assert_eq!(
            m.mount_sources(),
            vec![
                MountSource::V1 {
                    name: "cpu,cpuacct".into(),
                    controllers: vec!["cpu".into(), "cpuacct".into()],
                    source: fx.root.join("cpu,cpuacct/a"),
                    named: false,
                },
                MountSource::V1 {
                    name: "systemd".into(),
                    controllers: vec!["name=systemd".into()],
                    source: fx.root.join("systemd/a"),
                    named: true,
                },
            ]
        );
        let fx2 = Fixture::v2();
        let m2 = Manager::with_host(&fx2.host, Some("/a"), "a").unwrap();
        assert_eq!(
            m2.mount_sources(),
            vec![MountSource::V2 {
                source: fx2.root.join("a")
            }]
        );
    }

    #[test]
    fn dir_fd_is_none_on_v1_and_a_directory_on_v2() {
        let fx = Fixture::v1(&["memory"]);
        let m = Manager::with_host(&fx.host, Some("/a"), "a").unwrap();
        assert!(m.dir_fd().unwrap().is_none());

        let fx2 = Fixture::v2();
        let m2 = Manager::with_host(&fx2.host, Some("/a"), "a").unwrap();
        // The leaf does not exist yet: the error names it.
        let err = m2.dir_fd().unwrap_err();
        assert!(err
            .to_string()
            .contains(&*fx2.root.join("a").to_string_lossy()));
        m2.create().unwrap();
        let fd = m2.dir_fd().unwrap().expect("v2 has an fd");
        let st = nix::sys::stat::fstat(&fd).unwrap();
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFDIR);
    }
}
