//! config.json → a validated [`Plan`]. Everything the init helper needs is checked and resolved
//! here, once, in the shim; the helper never sees the raw spec. A field crt cannot honour is an
//! error naming the field, never silently dropped.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, LinuxResources, Spec};
use serde::{Deserialize, Serialize};

use crate::caps::{self, CapSets};
use crate::error::{Result, RuntimeError};
use crate::mountopts::{self, MountOptions};
use crate::userns::{IdMap, IdMaps};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NsPlan {
    /// The CLONE_NEW* flag of this namespace.
    pub flag: i32,
    /// Join this namespace instead of creating one.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountPlan {
    pub destination: String,
    pub source: Option<String>,
    pub fstype: String,
    pub options: MountOptions,
    /// An id-mapped bind mount: the mappings, and whether every mount of the tree gets them.
    #[serde(default)]
    pub idmap: Option<(IdMaps, bool)>,
}

impl MountPlan {
    /// A cgroup filesystem: the container's own cgroup is mounted there (rootfs.rs).
    pub fn is_cgroup(&self) -> bool {
        matches!(self.fstype.as_str(), "cgroup" | "cgroup2")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DevicePlan {
    pub path: String,
    /// S_IFCHR, S_IFBLK or S_IFIFO.
    pub kind: u32,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rlimit {
    pub resource: i32,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub rlimits: Vec<Rlimit>,
    pub caps: Option<CapSets>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    /// process.terminal: a pty from the container's devpts becomes fds 0-2 and the controlling
    /// terminal; its master goes back to the shim.
    pub terminal: bool,
    /// process.consoleSize as (height, width), set on the pty before the process runs.
    pub console_size: Option<(u16, u16)>,
    /// Applied on exec; present only where the host runs AppArmor / SELinux (`lsm.rs`).
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
    /// The container's linux.seccomp, compiled; execs get the container's too (as under runc).
    pub seccomp: Option<crate::seccomp::SeccompProgram>,
    pub scheduler: Option<crate::sched::SchedPlan>,
    /// ioprio_set(2)'s value.
    pub io_priority: Option<u32>,
    /// The session keyring to join (set by the runtime, not the spec): a container does not
    /// share its runtime's keys.
    #[serde(default)]
    pub session_keyring: Option<String>,
    /// The cgroup files the helper moves itself into first (set by the runtime; v1 only, see
    /// `cgroups::join_self`).
    #[serde(default)]
    pub cgroup_join: Vec<PathBuf>,
}

/// A bind of one cgroup hierarchy's leaf into the container's cgroup mount (filled in by the
/// runtime once the cgroup exists).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CgroupBind {
    /// Name below the cgroup mount ("memory", "cpu,cpuacct", "systemd"); empty for v2.
    pub name: String,
    pub host_path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub rootfs: PathBuf,
    pub readonly_root: bool,
    /// Propagation of `/` inside the container (MS_SLAVE|MS_REC unless the spec says otherwise).
    pub rootfs_propagation: u64,
    pub namespaces: Vec<NsPlan>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    /// linux.sysctl as (path below /proc/sys, value), written before readonly paths apply.
    pub sysctl: Vec<(String, String)>,
    /// personality(2)'s value (linux.personality), kept across exec.
    pub personality: Option<u64>,
    /// Lines for /proc/self/timens_offsets ("<clock> <secs> <nanos>").
    pub time_offsets: Vec<String>,
    pub mounts: Vec<MountPlan>,
    pub devices: Vec<DevicePlan>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub process: ProcessPlan,
    pub cgroup_binds: Vec<CgroupBind>,
    pub cgroup_v2: bool,
    /// The runtime makes the cgroup while the helper starts on its mounts, and sends the
    /// `tasks` files to join with [`crate::channel::Msg::Cgroups`] (container.rs).
    pub cgroup_late: bool,
    /// Stop before pivot_root for the runtime's prestart/createRuntime hooks.
    pub runtime_hooks: bool,
    /// Run by the init helper: createContainer before pivot_root, startContainer before exec.
    pub create_container: Vec<crate::hooks::Hook>,
    pub start_container: Vec<crate::hooks::Hook>,
    /// The state hooks read (id filled in by the runtime).
    pub hook_state: crate::hooks::StateBase,
    /// The maps the runtime writes for a new user namespace (empty without one).
    pub id_maps: crate::userns::IdMaps,
}

/// An extra process in a running container: it joins the init's namespaces (by
/// `/proc/<init>/ns/*`), then is set up like the init's process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecPlan {
    pub init_pid: i32,
    /// CLONE_NEW* flags of the namespaces to join, from the container's plan.
    pub namespaces: Vec<i32>,
    pub process: ProcessPlan,
}

/// What the shim side keeps of the spec beside the plan.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub plan: Plan,
    pub cgroups_path: Option<String>,
    pub resources: Option<LinuxResources>,
    /// Every hook; the runtime runs prestart, createRuntime, poststart and poststop.
    pub hooks: crate::hooks::Hooks,
}

impl Plan {
    pub fn has_new_ns(&self, flag: i32) -> bool {
        self.namespaces
            .iter()
            .any(|n| n.flag == flag && n.path.is_none())
    }
    pub fn has_ns(&self, flag: i32) -> bool {
        self.namespaces.iter().any(|n| n.flag == flag)
    }
}

/// The spec's uid/gid mappings, checked against its user namespace (new or joined).
fn conv_maps(maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>) -> Vec<IdMap> {
    maps.as_deref()
        .unwrap_or_default()
        .iter()
        .map(|m| IdMap {
            container: m.container_id(),
            host: m.host_id(),
            size: m.size(),
        })
        .collect()
}

fn id_maps(linux: &oci_spec::runtime::Linux, namespaces: &[NsPlan]) -> Result<IdMaps> {
    let maps = IdMaps {
        uid: conv_maps(linux.uid_mappings()),
        gid: conv_maps(linux.gid_mappings()),
    };
    match namespaces.iter().find(|n| n.flag == libc::CLONE_NEWUSER) {
        None if maps.uid.is_empty() && maps.gid.is_empty() => Ok(maps),
        None => Err(invalid(
            "linux.uidMappings/gidMappings are set but there is no user namespace",
        )),
        Some(NsPlan { path: None, .. }) => maps.check_new().map(|()| maps).map_err(invalid),
        Some(NsPlan { path: Some(p), .. }) => maps
            .check_joined(p)
            .map(|()| IdMaps::default())
            .map_err(invalid),
    }
}

/// An id-mapped mount's mappings: its own uidMappings/gidMappings, or with the `idmap` and
/// `ridmap` options and none of its own, the container's. Only bind mounts can be id-mapped.
fn mount_idmap(
    m: &oci_spec::runtime::Mount,
    options: &MountOptions,
    linux: &oci_spec::runtime::Linux,
) -> std::result::Result<Option<(IdMaps, bool)>, String> {
    let own = IdMaps {
        uid: conv_maps(m.uid_mappings()),
        gid: conv_maps(m.gid_mappings()),
    };
    let has_own = !own.uid.is_empty() || !own.gid.is_empty();
    if !has_own && options.idmap.is_none() {
        return Ok(None);
    }
    if !options.is_bind() {
        return Err("uidMappings/idmap: only bind mounts can be id-mapped".into());
    }
    let maps = if has_own {
        own
    } else {
        IdMaps {
            uid: conv_maps(linux.uid_mappings()),
            gid: conv_maps(linux.gid_mappings()),
        }
    };
    maps.check_mount()?;
    let recursive = options.idmap == Some(mountopts::IdmapOption::Recursive);
    Ok(Some((maps, recursive)))
}

fn invalid(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidSpec(msg.into())
}

fn unsupported(field: &str) -> RuntimeError {
    RuntimeError::Unsupported {
        field: field.to_string(),
    }
}

/// The bundle's config.json as it is on disk, for [`parse`] (and [`early_clone_flags`]).
pub fn read(bundle: &Path) -> Result<Vec<u8>> {
    let path = bundle.join("config.json");
    std::fs::read(&path).map_err(|source| RuntimeError::ReadSpec { path, source })
}

/// `data`, read from `bundle`'s config.json, checked and planned.
pub fn parse(bundle: &Path, data: &[u8]) -> Result<Loaded> {
    let spec: Spec = serde_json::from_slice(data).map_err(|e| RuntimeError::ParseSpec {
        path: bundle.join("config.json"),
        msg: e.to_string(),
    })?;
    plan(&spec, bundle)
}

/// The namespaces a helper is cloned with (the zygote's clone3): the new ones, except those the
/// helper makes itself (cgroup once it is in its cgroup, time once the offsets are set, mount
/// once it left its throwaway one, spawn.rs), and none at all with a user namespace, which
/// must own the others (userns.rs). `(flag, joined by path)` per namespace of the spec.
pub fn clone_flags(namespaces: impl Iterator<Item = (i32, bool)> + Clone) -> i32 {
    if namespaces.clone().any(|(f, _)| f == libc::CLONE_NEWUSER) {
        return 0;
    }
    namespaces
        .filter(|&(f, joined)| {
            !joined
                && ![
                    libc::CLONE_NEWCGROUP,
                    libc::CLONE_NEWTIME,
                    libc::CLONE_NEWNS,
                ]
                .contains(&f)
        })
        .fold(0, |all, (f, _)| all | f)
}

impl Plan {
    /// [`clone_flags`] of this plan's namespaces.
    pub fn clone_flags(&self) -> i32 {
        clone_flags(self.namespaces.iter().map(|n| (n.flag, n.path.is_some())))
    }
}

/// [`clone_flags`] from `linux.namespaces` alone, read from config.json before the rest of it
/// is parsed and checked: the zygote's clone3 of the new namespaces (the network one takes
/// 0.25-0.5 ms) starts that much sooner. `None` where they cannot be read; whatever the full
/// parse then finds wrong is reported by it, and a helper asked for meanwhile goes unused.
pub fn early_clone_flags(data: &[u8]) -> Option<i32> {
    #[derive(Deserialize)]
    struct Early {
        linux: Option<EarlyLinux>,
    }
    #[derive(Deserialize)]
    struct EarlyLinux {
        namespaces: Option<Vec<EarlyNs>>,
    }
    /// The full parse's own type names and flags (`plan`: `ns.typ() as i32`).
    #[derive(Deserialize)]
    struct EarlyNs {
        #[serde(rename = "type")]
        typ: LinuxNamespaceType,
        path: Option<String>,
    }
    let early: Early = serde_json::from_slice(data).ok()?;
    let ns = early.linux?.namespaces.unwrap_or_default();
    Some(clone_flags(
        ns.iter().map(|n| (n.typ as i32, n.path.is_some())),
    ))
}

pub fn plan(spec: &Spec, bundle: &Path) -> Result<Loaded> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| invalid("root is missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if root.path().as_os_str().is_empty() {
        return Err(invalid("root.path is empty"));
    }
    let hooks = crate::hooks::plan(spec.hooks().as_ref())?;

    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| invalid("linux is missing"))?;
    let mut namespaces = Vec::new();
    for ns in linux.namespaces().as_deref().unwrap_or_default() {
        let flag = ns.typ() as i32;
        if namespaces.iter().any(|n: &NsPlan| n.flag == flag) {
            return Err(invalid(format!(
                "linux.namespaces: {} listed twice",
                ns.typ()
            )));
        }
        let path = ns.path().clone();
        if let Some(p) = &path {
            if !p.is_absolute() {
                return Err(invalid(format!(
                    "linux.namespaces: {} path {} is not absolute",
                    ns.typ(),
                    p.display()
                )));
            }
            if !p.exists() {
                return Err(invalid(format!(
                    "linux.namespaces: {} path {} does not exist",
                    ns.typ(),
                    p.display()
                )));
            }
        }
        namespaces.push(NsPlan { flag, path });
    }
    let plan_ns = |t: LinuxNamespaceType| namespaces.iter().any(|n| n.flag == t as i32);
    if !plan_ns(LinuxNamespaceType::Mount) {
        return Err(invalid("linux.namespaces: crt needs a mount namespace"));
    }
    let new_uts = namespaces
        .iter()
        .any(|n| n.flag == LinuxNamespaceType::Uts as i32 && n.path.is_none());
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    if hostname.is_some() && !new_uts {
        return Err(invalid("hostname is set but there is no new uts namespace"));
    }
    let domainname = spec.domainname().clone().filter(|h| !h.is_empty());
    if domainname.is_some() && !new_uts {
        return Err(invalid(
            "domainname is set but there is no new uts namespace",
        ));
    }

    let id_maps = id_maps(linux, &namespaces)?;
    let sysctl = crate::sysctl::plan(&linux.sysctl().clone().unwrap_or_default(), plan_ns)
        .map_err(invalid)?;
    if linux.mount_label().as_ref().is_some_and(|m| !m.is_empty()) {
        // Labelling every mount (context=) is not done yet; without SELinux it means nothing.
        if crate::lsm::selinux_enabled() {
            return Err(unsupported("linux.mountLabel"));
        }
        crate::lsm::ignore_without(false, "linux.mountLabel", linux.mount_label().as_ref());
    }
    if linux.intel_rdt().is_some() {
        return Err(unsupported("linux.intelRdt"));
    }
    let personality = linux
        .personality()
        .as_ref()
        .map(crate::sched::personality)
        .transpose()
        .map_err(invalid)?;
    if linux.net_devices().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(unsupported("linux.netDevices"));
    }
    if linux.memory_policy().is_some() {
        return Err(unsupported("linux.memoryPolicy"));
    }
    let new_time = namespaces
        .iter()
        .any(|n| n.flag == libc::CLONE_NEWTIME && n.path.is_none());
    let mut time_offsets = Vec::new();
    for (clock, off) in linux.time_offsets().clone().unwrap_or_default() {
        if clock != "monotonic" && clock != "boottime" {
            return Err(invalid(format!(
                "linux.timeOffsets: unknown clock {clock:?} (monotonic or boottime)"
            )));
        }
        let nanos = off.nanosecs().unwrap_or(0);
        if nanos >= 1_000_000_000 {
            return Err(invalid(format!(
                "linux.timeOffsets.{clock}.nanosecs {nanos} is not below one second"
            )));
        }
        time_offsets.push(format!("{clock} {} {nanos}", off.secs().unwrap_or(0)));
    }
    time_offsets.sort();
    if !time_offsets.is_empty() && !new_time {
        return Err(invalid(
            "linux.timeOffsets is set but there is no new time namespace",
        ));
    }

    let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") => (nix::mount::MsFlags::MS_SLAVE | nix::mount::MsFlags::MS_REC).bits(),
        Some(p) => {
            let o = mountopts::parse(&[p.to_string()]).map_err(invalid)?;
            match o.propagation.as_slice() {
                [one] if o.flags == 0 => *one,
                _ => {
                    return Err(invalid(format!(
                        "linux.rootfsPropagation: unknown value {p:?}"
                    )))
                }
            }
        }
    };

    let mut mounts = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let dest = m.destination().to_string_lossy().to_string();
        if !dest.starts_with('/') {
            return Err(invalid(format!(
                "mounts: destination {dest:?} is not absolute"
            )));
        }
        let options = mountopts::parse(m.options().as_deref().unwrap_or_default())
            .map_err(|e| invalid(format!("mounts: {dest}: {e}")))?;
        let idmap =
            mount_idmap(m, &options, linux).map_err(|e| invalid(format!("mounts: {dest}: {e}")))?;
        let fstype = m.typ().clone().unwrap_or_default();
        let fstype = if fstype.is_empty() && options.is_bind() {
            "bind".to_string()
        } else {
            fstype
        };
        if fstype.is_empty() {
            return Err(invalid(format!(
                "mounts: {dest}: no type and not a bind mount"
            )));
        }
        let source = m.source().as_ref().map(|s| s.to_string_lossy().to_string());
        if options.is_bind() {
            match &source {
                Some(s) if s.starts_with('/') => {}
                Some(s) => {
                    return Err(invalid(format!(
                        "mounts: {dest}: bind source {s:?} is not absolute"
                    )))
                }
                None => {
                    return Err(invalid(format!(
                        "mounts: {dest}: bind mount without source"
                    )))
                }
            }
        }
        mounts.push(MountPlan {
            destination: dest,
            source,
            fstype,
            options,
            idmap,
        });
    }

    let mut devices = Vec::new();
    for d in linux.devices().as_deref().unwrap_or_default() {
        let path = d.path().to_string_lossy().to_string();
        if !path.starts_with("/dev/") {
            return Err(invalid(format!(
                "linux.devices: {path:?} is not under /dev"
            )));
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(invalid(format!(
                    "linux.devices: {path}: type \"a\" is not a device"
                )))
            }
        };
        if d.major() < 0 || d.minor() < 0 {
            return Err(invalid(format!(
                "linux.devices: {path}: negative major/minor"
            )));
        }
        devices.push(DevicePlan {
            path,
            kind,
            major: d.major() as u64,
            minor: d.minor() as u64,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }

    let mut process = process_plan(spec)?;
    process.seccomp = linux
        .seccomp()
        .as_ref()
        .map(crate::seccomp::compile)
        .transpose()?;
    let cgroups_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().to_string())
        .filter(|p| !p.is_empty());

    Ok(Loaded {
        plan: Plan {
            rootfs,
            readonly_root: root.readonly().unwrap_or(false),
            rootfs_propagation,
            namespaces,
            hostname,
            domainname,
            sysctl,
            personality,
            time_offsets,
            mounts,
            devices,
            masked_paths: linux.masked_paths().clone().unwrap_or_default(),
            readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
            process,
            cgroup_binds: Vec::new(),
            cgroup_v2: false,
            cgroup_late: false,
            runtime_hooks: !hooks.prestart.is_empty() || !hooks.create_runtime.is_empty(),
            create_container: hooks.create_container.clone(),
            start_container: hooks.start_container.clone(),
            hook_state: crate::hooks::StateBase {
                id: String::new(),
                bundle: bundle.to_path_buf(),
                annotations: spec
                    .annotations()
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            },
            id_maps,
        },
        cgroups_path,
        resources: linux.resources().clone(),
        hooks,
    })
}

fn process_plan(spec: &Spec) -> Result<ProcessPlan> {
    let p = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process is missing"))?;
    plan_process(p)
}

/// The process spec of an exec (containerd sends it as JSON), validated like the init's.
pub fn exec_plan(json: &[u8]) -> Result<ProcessPlan> {
    let p: oci_spec::runtime::Process =
        serde_json::from_slice(json).map_err(|e| RuntimeError::ParseSpec {
            path: PathBuf::from("exec process spec"),
            msg: e.to_string(),
        })?;
    plan_process(&p)
}

fn plan_process(p: &oci_spec::runtime::Process) -> Result<ProcessPlan> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(invalid("process.args must not be empty"));
    }
    if let Some(adj) = p.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(invalid(format!(
                "process.oomScoreAdj {adj} is not in -1000..1000"
            )));
        }
    }
    if p.exec_cpu_affinity().is_some() {
        return Err(unsupported("process.execCPUAffinity"));
    }
    let cwd = p.cwd().to_string_lossy().to_string();
    if !cwd.starts_with('/') {
        return Err(invalid(format!("process.cwd {cwd:?} is not absolute")));
    }
    let user = p.user();
    let mut rlimits = Vec::new();
    for r in p.rlimits().as_deref().unwrap_or_default() {
        let name = r.typ().to_string();
        let resource = rlimit_number(&name)
            .ok_or_else(|| invalid(format!("process.rlimits: unknown type {name}")))?;
        if r.soft() > r.hard() {
            return Err(invalid(format!(
                "process.rlimits: {name}: soft limit above hard limit"
            )));
        }
        rlimits.push(Rlimit {
            resource,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    let caps = match p.capabilities() {
        None => None,
        Some(c) => {
            let m = |set: &Option<oci_spec::runtime::Capabilities>, name: &str| -> Result<u64> {
                let names: Vec<String> = set
                    .as_ref()
                    .map(|s| s.iter().map(|c| c.to_string()).collect())
                    .unwrap_or_default();
                caps::mask(names, name).map_err(invalid)
            };
            Some(CapSets {
                bounding: m(c.bounding(), "bounding")?,
                effective: m(c.effective(), "effective")?,
                inheritable: m(c.inheritable(), "inheritable")?,
                permitted: m(c.permitted(), "permitted")?,
                ambient: m(c.ambient(), "ambient")?,
            })
        }
    };
    Ok(ProcessPlan {
        args,
        env: p.env().clone().unwrap_or_default(),
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        rlimits,
        caps,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        oom_score_adj: p.oom_score_adj(),
        terminal: p.terminal().unwrap_or(false),
        console_size: p
            .console_size()
            .as_ref()
            .map(|b| (clamp_u16(b.height()), clamp_u16(b.width()))),
        apparmor_profile: crate::lsm::require(
            crate::lsm::apparmor_enabled(),
            "process.apparmorProfile",
            "AppArmor",
            p.apparmor_profile().as_ref(),
        )
        .map_err(invalid)?,
        selinux_label: crate::lsm::require(
            crate::lsm::selinux_enabled(),
            "process.selinuxLabel",
            "SELinux",
            p.selinux_label().as_ref(),
        )
        .map_err(invalid)?,
        seccomp: None,
        scheduler: p
            .scheduler()
            .as_ref()
            .map(crate::sched::scheduler)
            .transpose()
            .map_err(invalid)?,
        io_priority: p
            .io_priority()
            .as_ref()
            .map(crate::sched::io_priority)
            .transpose()
            .map_err(invalid)?,
        session_keyring: None,
        cgroup_join: Vec::new(),
    })
}

fn clamp_u16(v: u64) -> u16 {
    v.min(u16::MAX as u64) as u16
}

fn rlimit_number(name: &str) -> Option<i32> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    } as i32)
}

/// The base spec unit tests patch (a minimal valid Linux config).
#[cfg(test)]
pub(crate) fn tests_base() -> serde_json::Value {
    serde_json::from_str(tests::BASE).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    pub(super) const BASE: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0},
          "capabilities":{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_KILL"]},
          "rlimits":[{"type":"RLIMIT_NOFILE","soft":1024,"hard":1024}]},
        "hostname":"h",
        "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
                  {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]}],
        "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"}],
          "cgroupsPath":"/default/x","maskedPaths":["/proc/kcore"]}}"#;

    #[test]
    fn plans_a_plain_spec() {
        let l = plan(&spec(BASE), Path::new("/b")).unwrap();
        assert_eq!(l.plan.rootfs, PathBuf::from("/b/rootfs"));
        assert_eq!(l.cgroups_path.as_deref(), Some("/default/x"));
        assert!(l.plan.has_new_ns(libc::CLONE_NEWPID));
        let caps = l.plan.process.caps.unwrap();
        assert_eq!(caps.bounding, 1 | 1 << 5);
        assert_eq!(caps.effective, 1 << 5);
        assert_eq!(
            l.plan.process.rlimits[0].resource,
            libc::RLIMIT_NOFILE as i32
        );
        assert_eq!(l.plan.mounts[1].options.data, "mode=755");
        assert_eq!(l.plan.masked_paths, vec!["/proc/kcore"]);
    }

    fn with(patch: impl FnOnce(&mut serde_json::Value)) -> Result<Loaded> {
        let mut v: serde_json::Value = serde_json::from_str(BASE).unwrap();
        patch(&mut v);
        plan(&serde_json::from_value(v).unwrap(), Path::new("/b"))
    }

    /// Frames are postcard, which is not self-describing: a field serialized conditionally
    /// (`skip_serializing_if`) would shift every field after it. A plan with its optional parts
    /// filled in must come out of the channel as it went in.
    #[test]
    fn a_plan_crosses_the_channel_whole() {
        let l = with(|v| {
            v["process"]["terminal"] = true.into();
            v["process"]["consoleSize"] = serde_json::json!({"height": 40, "width": 120});
            v["process"]["env"] = serde_json::json!(["A=1", "B=2"]);
            v["process"]["oomScoreAdj"] = 5.into();
            v["process"]["user"]["additionalGids"] = serde_json::json!([5, 6]);
            v["linux"]["sysctl"] = serde_json::json!({"kernel.domainname": "x"});
            v["linux"]["readonlyPaths"] = serde_json::json!(["/proc/sys"]);
            v["linux"]["devices"] =
                serde_json::json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]);
            v["annotations"] = serde_json::json!({"a": "b"});
            v["hooks"] = serde_json::json!({"createContainer":
                [{"path": "/bin/true", "args": ["true"], "env": ["X=1"], "timeout": 3}]});
        })
        .unwrap();
        use crate::channel::{Channel, Msg};
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        a.send(&Msg::Plan(Box::new(l.plan.clone()))).unwrap();
        match b.recv().unwrap() {
            Some(Msg::Plan(p)) => assert_eq!(*p, l.plan),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn terminal_and_console_size_are_planned() {
        let t = with(|v| {
            v["process"]["terminal"] = true.into();
            v["process"]["consoleSize"] = serde_json::json!({"height": 40, "width": 120});
        })
        .unwrap();
        assert!(t.plan.process.terminal);
        assert_eq!(t.plan.process.console_size, Some((40, 120)));
    }

    #[test]
    fn lsm_labels_need_the_module_on_the_host() {
        let aa = with(|v| v["process"]["apparmorProfile"] = "crt-test".into());
        assert_eq!(aa.is_ok(), crate::lsm::apparmor_enabled());
        if let Err(e) = aa {
            assert!(e.to_string().contains("process.apparmorProfile"), "{e}");
        }
        let se = with(|v| v["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0".into());
        assert_eq!(se.is_ok(), crate::lsm::selinux_enabled());
        let ml =
            with(|v| v["linux"]["mountLabel"] = "system_u:object_r:container_file_t:s0".into());
        assert_eq!(ml.is_ok(), !crate::lsm::selinux_enabled());
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let e = with(|v| {
            v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]})
        });
        assert!(e.unwrap_err().to_string().contains("listenerPath"));
        let e = with(|v| {
            v["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"type": "user"}))
        });
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("linux.uidMappings and linux.gidMappings"));
        let e = with(|v| {
            v["linux"]["uidMappings"] =
                serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 1}])
        });
        assert!(e.unwrap_err().to_string().contains("no user namespace"));
        let e = with(|v| {
            v["linux"]["memoryPolicy"] = serde_json::json!({"mode": "MPOL_BIND", "nodes": "0"})
        });
        assert!(e.unwrap_err().to_string().contains("linux.memoryPolicy"));
        let e = with(|v| v["linux"]["netDevices"] = serde_json::json!({"eth1": {}}));
        assert!(e.unwrap_err().to_string().contains("linux.netDevices"));
        let e = with(|v| v["process"]["execCPUAffinity"] = serde_json::json!({"initial": "0"}));
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("process.execCPUAffinity"));
        let e = with(|v| v["linux"]["timeOffsets"] = serde_json::json!({"boottime": {"secs": 1}}));
        assert!(e.unwrap_err().to_string().contains("no new time namespace"));
    }

    #[test]
    fn exec_process_spec() {
        let p = exec_plan(
            br#"{"args":["ls","-l"],"cwd":"/tmp","user":{"uid":1000,"gid":1000},"env":["A=1"]}"#,
        )
        .unwrap();
        assert_eq!((p.args.len(), p.uid, p.cwd.as_str()), (2, 1000, "/tmp"));
        assert!(
            exec_plan(br#"{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}"#)
                .unwrap_err()
                .to_string()
                .contains("process.args")
        );
        assert!(exec_plan(b"{").is_err());
    }

    #[test]
    fn rejects_malformed_specs() {
        let e = with(|v| v["process"]["args"] = serde_json::json!([]));
        assert!(e.unwrap_err().to_string().contains("process.args"));
        let e = with(|v| v["process"]["cwd"] = "rel".into());
        assert!(e.unwrap_err().to_string().contains("process.cwd"));
        let e = with(|v| v["mounts"][0]["destination"] = "proc".into());
        assert!(e.unwrap_err().to_string().contains("not absolute"));
        let e = with(|v| v["linux"]["namespaces"] = serde_json::json!([{"type":"pid"}]));
        assert!(e.unwrap_err().to_string().contains("mount namespace"));
        let e = with(|v| {
            v["linux"]["namespaces"] = serde_json::json!([{"type":"mount"}]);
        });
        assert!(e.unwrap_err().to_string().contains("hostname"));
        let e = with(|v| v["process"]["rlimits"][0]["soft"] = 4096.into());
        assert!(e.unwrap_err().to_string().contains("soft limit"));
    }

    /// The zygote is asked on the namespaces alone (`early_clone_flags`); the helper it makes
    /// is used only where the full plan wants the same, so the two must agree on every spec.
    #[test]
    fn early_clone_flags_agree_with_the_plan() {
        use serde_json::json;
        let cases = [
            json!([{"type":"pid"},{"type":"mount"},{"type":"uts"}]),
            json!([{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"uts"},
                   {"type":"mount"},{"type":"cgroup"}]),
            json!([{"type":"pid"},{"type":"mount"},{"type":"uts"},
                   {"type":"network","path":"/proc/self/ns/net"}]),
            json!([{"type":"mount"},{"type":"time"},{"type":"ipc"},{"type":"uts"}]),
        ];
        let mut seen = Vec::new();
        for ns in cases {
            let mut v = tests_base();
            v["linux"]["namespaces"] = ns.clone();
            let data = serde_json::to_vec(&v).unwrap();
            let l = parse(Path::new("/b"), &data).unwrap();
            let flags = l.plan.clone_flags();
            assert_eq!(early_clone_flags(&data), Some(flags), "{ns}");
            seen.push(flags);
        }
        assert_eq!(seen[0], libc::CLONE_NEWPID | libc::CLONE_NEWUTS);
        assert_eq!(
            seen[1],
            libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS,
            "cgroup and mount are the helper's own to make"
        );
        assert_eq!(
            seen[2],
            libc::CLONE_NEWPID | libc::CLONE_NEWUTS,
            "a joined one is not cloned"
        );
        assert_eq!(
            seen[3],
            libc::CLONE_NEWIPC | libc::CLONE_NEWUTS,
            "time is the helper's own to make"
        );
        assert_eq!(
            clone_flags([(libc::CLONE_NEWUSER, false), (libc::CLONE_NEWPID, false)].into_iter()),
            0,
            "with a user namespace the helper makes them all"
        );
        assert_eq!(
            early_clone_flags(br#"{"linux":{"namespaces":[{"type":"bogus"}]}}"#),
            None
        );
        assert_eq!(early_clone_flags(b"not json"), None);
    }
}
