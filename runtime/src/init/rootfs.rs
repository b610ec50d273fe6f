//! The container's filesystem view: propagation, the spec's mounts, /dev, pivot_root, masked
//! and read-only paths. Runs in the helper, inside the new mount namespace.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mknodat, Mode, SFlag};
use nix::unistd::{chdir, fchownat, pivot_root, symlinkat, Gid, Uid};

use super::paths::{ensure, mkdir_all, openat2_in_root, proc_fd, split};
use crate::mount_api::{move_onto, set_attr};
use crate::mountopts::bind_remount_flags;
use crate::spec::{DevicePlan, MountPlan, Plan};

type R<T> = std::result::Result<T, String>;

fn e<'a>(op: &str, path: &'a str) -> impl FnOnce(nix::Error) -> String + 'a {
    let op = op.to_string();
    move |err| format!("{op} {path}: {err}")
}

fn eio<'a>(op: &str, path: &'a str) -> impl FnOnce(std::io::Error) -> String + 'a {
    let op = op.to_string();
    move |err| format!("{op} {path}: {err}")
}

const NONE: Option<&str> = None;

/// Where [`setup`] calls its caller back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The container's cgroup must be made and joined now: its mount comes next, or the
    /// spec's mounts are done.
    Cgroups,
    /// Every mount in place, before pivot_root (hooks).
    BeforePivot,
}

/// `step` is called at each [`Step`], in that order.
/// `sources` holds, per mount of the plan, the detached tree to move into place, if the helper
/// took one before it entered a user namespace (sources.rs).
pub fn setup(
    plan: &Plan,
    sources: &[Option<OwnedFd>],
    step: &mut dyn FnMut(Step) -> R<()>,
) -> R<()> {
    let rootfs = plan.rootfs.to_string_lossy().to_string();
    mount(
        NONE,
        "/",
        NONE,
        MsFlags::from_bits_truncate(plan.rootfs_propagation),
        NONE,
    )
    .map_err(e("set propagation of", "/"))?;
    if plan.rootfs_propagation & MsFlags::MS_SHARED.bits() != 0 {
        make_parent_mount_private(&plan.rootfs)?;
    }
    mount(
        Some(rootfs.as_str()),
        rootfs.as_str(),
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .map_err(e("bind rootfs", &rootfs))?;
    // Opened after the self-bind, so mounts made through it land on the mount we pivot into.
    let root: OwnedFd = std::fs::File::open(&plan.rootfs)
        .map_err(eio("open rootfs", &rootfs))?
        .into();

    let mut cgroups = false;
    for (i, m) in plan.mounts.iter().enumerate() {
        if !cgroups && m.is_cgroup() {
            step(Step::Cgroups)?;
            cgroups = true;
        }
        mount_one(&root, m, plan, sources.get(i).and_then(Option::as_ref))?;
    }
    if !cgroups {
        step(Step::Cgroups)?;
    }
    if plan
        .mounts
        .iter()
        .any(|m| m.destination == "/dev" && !m.options.is_bind())
    {
        default_devices(&root, plan)?;
    }
    for d in &plan.devices {
        make_device(&root, d, plan)?;
    }
    if plan
        .mounts
        .iter()
        .any(|m| m.destination == "/dev" && !m.options.is_bind())
    {
        dev_symlinks(&root, plan)?;
    }

    step(Step::BeforePivot)?;
    chdir(plan.rootfs.as_path()).map_err(e("chdir", &rootfs))?;
    pivot_root(".", ".").map_err(e("pivot_root", &rootfs))?;
    // The old root is stacked under the new one: detach it without propagating to the host.
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)
        .map_err(e("make old root rslave", "."))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(e("detach old root", "."))?;
    chdir("/").map_err(e("chdir", "/"))?;

    // In the container's namespaces now; before readonly paths make /proc/sys read-only.
    for (below, value) in &plan.sysctl {
        let path = format!("/proc/sys/{below}");
        std::fs::write(&path, value).map_err(|e| {
            // The key as config.json spells it.
            let key = crate::sysctl::swap_separators(below);
            format!("linux.sysctl {key}: write {path}: {e}")
        })?;
    }
    for p in &plan.masked_paths {
        mask(p)?;
    }
    for p in &plan.readonly_paths {
        readonly(p)?;
    }
    if plan.readonly_root {
        let flags =
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | current_flags("/")?;
        mount(NONE, "/", NONE, flags, NONE).map_err(e("remount read-only", "/"))?;
    }
    Ok(())
}

/// pivot_root refuses a new root whose parent mount is shared; runc makes it private too.
fn make_parent_mount_private(rootfs: &Path) -> R<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(eio("read", "/proc/self/mountinfo"))?;
    let parent = rootfs.parent().unwrap_or(Path::new("/"));
    let best = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| parent.starts_with(mp))
        .max_by_key(|mp| mp.len())
        .unwrap_or("/")
        .to_string();
    mount(NONE, best.as_str(), NONE, MsFlags::MS_PRIVATE, NONE).map_err(e("make private", &best))
}

/// Remount the bind mount at `dest` (reopened inside the root) with `flags`: the mount call
/// that made it ignores per-mount flags. In a user namespace the flags of a mount that came
/// from the host are locked (nosuid, nodev, noexec, rdonly, atime): a remount without them is
/// EPERM, so on EPERM it is tried once more with the locked ones kept, as runc does.
fn remount_bind(root: &OwnedFd, dest: &str, flags: MsFlags) -> R<()> {
    let new = openat2_in_root(root, dest, libc::O_PATH).map_err(eio("reopen", dest))?;
    let path = proc_fd(&new);
    let path = path.as_str();
    let base = MsFlags::MS_REMOUNT | MsFlags::MS_BIND;
    match mount(NONE, path, NONE, base | flags, NONE) {
        Err(nix::Error::EPERM) => {
            let atime = MsFlags::MS_NOATIME | MsFlags::MS_NODIRATIME | MsFlags::MS_RELATIME;
            let cur = current_flags(path)?;
            let locked = cur
                & (MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC
                    | MsFlags::MS_RDONLY
                    | atime);
            let flags = (flags - atime) | locked;
            mount(NONE, path, NONE, base | flags, NONE).map_err(e("remount bind", dest))
        }
        other => other.map_err(e("remount bind", dest)),
    }
}

/// The per-mount flags in force at `path`, so a remount keeps nosuid/nodev/noexec.
fn current_flags(path: &str) -> R<MsFlags> {
    let st = nix::sys::statvfs::statvfs(path).map_err(e("statvfs", path))?;
    use nix::sys::statvfs::FsFlags;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (from, to) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        // nix names ST_RELATIME on glibc only; the kernel's bit is the same everywhere.
        (FsFlags::from_bits_retain(0x1000), MsFlags::MS_RELATIME),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(from) {
            out |= to;
        }
    }
    Ok(out)
}

/// Files under /proc that may be mounted over (what lxcfs emulates), as runc allows.
const PROC_MOUNTS_ALLOWED: &[&str] = &[
    "/proc/stat",
    "/proc/meminfo",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// Nothing may be mounted over /proc or inside it (it would undo masked and read-only paths,
/// or hide the container's own procfs), except a procfs on /proc and the files lxcfs emulates.
/// Checked on where the destination really is (symlinks in the image resolved inside the root).
fn check_proc_mount(plan: &Plan, target: &OwnedFd, m: &MountPlan) -> R<()> {
    let real = std::fs::read_link(proc_fd(target)).map_err(eio("resolve", &m.destination))?;
    let Ok(rel) = real.strip_prefix(&plan.rootfs) else {
        return Err(format!(
            "mount destination {} resolves outside the root",
            m.destination
        ));
    };
    let rel = format!("/{}", rel.display());
    if rel == "/proc" {
        let procfs = m.fstype == "proc"
            || m.source.as_deref().is_some_and(|src| {
                nix::sys::statfs::statfs(src)
                    .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
            });
        if !procfs {
            return Err(format!(
                "mount destination {} is /proc: only a procfs may be mounted there",
                m.destination
            ));
        }
    } else if rel.starts_with("/proc/") && !PROC_MOUNTS_ALLOWED.contains(&rel.as_str()) {
        return Err(format!(
            "mount destination {} ({rel}) is inside /proc: refused",
            m.destination
        ));
    }
    Ok(())
}

fn mount_one(root: &OwnedFd, m: &MountPlan, plan: &Plan, tree: Option<&OwnedFd>) -> R<()> {
    let dest = m.destination.as_str();
    if m.is_cgroup() {
        return mount_cgroup(root, m, plan);
    }
    let flags = m.options.ms_flags();
    if m.options.is_bind() {
        let src = m.source.as_deref().unwrap_or_default();
        let is_dir = match tree {
            // The source may be out of this user's reach now: ask the tree taken earlier.
            Some(t) => nix::sys::stat::fstat(t)
                .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                .map_err(e("bind mount source", src))?,
            None => std::fs::metadata(src)
                .map_err(eio("bind mount source", src))?
                .is_dir(),
        };
        let target = ensure(root, dest, is_dir).map_err(eio("create mount point", dest))?;
        check_proc_mount(plan, &target, m)?;
        if let Some(tree) = tree {
            move_onto(tree.as_fd(), target.as_fd(), dest)?;
        } else {
            mount(
                Some(src),
                proc_fd(&target).as_str(),
                NONE,
                flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
                NONE,
            )
            .map_err(|err| format!("bind mount {src} on {dest}: {err}"))?;
        }
        let extra = bind_remount_flags(flags.bits());
        if extra != 0 {
            remount_bind(root, dest, MsFlags::from_bits_truncate(extra))?;
        }
    } else {
        let target = ensure(root, dest, true).map_err(eio("create mount point", dest))?;
        check_proc_mount(plan, &target, m)?;
        let data = (!m.options.data.is_empty()).then_some(m.options.data.as_str());
        let src = m.source.as_deref().unwrap_or(m.fstype.as_str());
        match mount(
            Some(src),
            proc_fd(&target).as_str(),
            Some(m.fstype.as_str()),
            flags,
            data,
        ) {
            Err(nix::Error::EPERM) if plan.has_ns(libc::CLONE_NEWUSER) => {
                host_fallback(root, &target, m, flags)?
            }
            other => {
                other.map_err(|err| format!("mount {} ({}) on {dest}: {err}", src, m.fstype))?
            }
        }
    }
    if m.options.rec_set != 0 || m.options.rec_clear != 0 {
        let new = openat2_in_root(root, dest, libc::O_PATH).map_err(eio("reopen", dest))?;
        set_attr(
            new.as_fd(),
            true,
            m.options.rec_set,
            m.options.rec_clear,
            None,
            &format!("recursive options of {dest}"),
        )?;
    }
    apply_propagation(root, dest, &m.options.propagation)
}

/// A user namespace's root may mount sysfs only with its own network namespace, and mqueue
/// only with its own ipc namespace: without them the host's are bound instead (runc's rule).
fn host_fallback(root: &OwnedFd, target: &OwnedFd, m: &MountPlan, flags: MsFlags) -> R<()> {
    let dest = m.destination.as_str();
    let (host, rec) = match m.fstype.as_str() {
        "sysfs" => ("/sys", MsFlags::MS_REC),
        "mqueue" => ("/dev/mqueue", MsFlags::empty()),
        _ => {
            return Err(format!(
                "mount {} on {dest}: EPERM in the user namespace",
                m.fstype
            ))
        }
    };
    mount(
        Some(host),
        proc_fd(target).as_str(),
        NONE,
        MsFlags::MS_BIND | rec,
        NONE,
    )
    .map_err(|err| {
        format!(
            "bind {host} on {dest} ({} is refused in this user namespace): {err}",
            m.fstype
        )
    })?;
    let extra = MsFlags::from_bits_truncate(bind_remount_flags(flags.bits()));
    if !extra.is_empty() {
        remount_bind(root, dest, extra)?;
    }
    Ok(())
}

fn apply_propagation(root: &OwnedFd, dest: &str, props: &[u64]) -> R<()> {
    if props.is_empty() {
        return Ok(());
    }
    let new = openat2_in_root(root, dest, libc::O_PATH).map_err(eio("reopen", dest))?;
    for p in props {
        mount(
            NONE,
            proc_fd(&new).as_str(),
            NONE,
            MsFlags::from_bits_truncate(*p),
            NONE,
        )
        .map_err(e("set propagation of", dest))?;
    }
    Ok(())
}

/// The container sees only its own cgroup: each hierarchy's leaf is bound in (v1, under a
/// tmpfs), or the v2 leaf is bound (or cgroup2 mounted when the container has its own cgroup
/// namespace, whose root is that leaf).
fn mount_cgroup(root: &OwnedFd, m: &MountPlan, plan: &Plan) -> R<()> {
    let dest = m.destination.as_str();
    let flags = m.options.ms_flags();
    let per_mount = MsFlags::from_bits_truncate(bind_remount_flags(flags.bits()));
    let target = ensure(root, dest, true).map_err(eio("create mount point", dest))?;
    if plan.cgroup_v2 {
        if plan.has_new_ns(libc::CLONE_NEWCGROUP) {
            mount(
                Some("cgroup2"),
                proc_fd(&target).as_str(),
                Some("cgroup2"),
                flags,
                NONE,
            )
            .map_err(e("mount cgroup2 on", dest))?;
        } else if let Some(b) = plan.cgroup_binds.first() {
            bind_ro(root, &b.host_path.to_string_lossy(), dest, per_mount)?;
        }
        return apply_propagation(root, dest, &m.options.propagation);
    }
    mount(
        Some("tmpfs"),
        proc_fd(&target).as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .map_err(e("mount tmpfs for cgroups on", dest))?;
    for b in &plan.cgroup_binds {
        let sub = format!("{}/{}", dest.trim_end_matches('/'), b.name);
        mkdir_all(root, &sub).map_err(eio("create cgroup mount point", &sub))?;
        bind_ro(root, &b.host_path.to_string_lossy(), &sub, per_mount)?;
        // runc's layout: "cpu" and "cpuacct" as links to a co-mounted "cpu,cpuacct".
        if b.name.contains(',') {
            for part in b.name.split(',') {
                let (parent, _) = split(&sub);
                if let Ok(pfd) = openat2_in_root(root, &parent, libc::O_DIRECTORY | libc::O_RDONLY)
                {
                    let _ = symlinkat(b.name.as_str(), &pfd, part);
                }
            }
        }
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        let new = openat2_in_root(root, dest, libc::O_PATH).map_err(eio("reopen", dest))?;
        mount(
            NONE,
            proc_fd(&new).as_str(),
            NONE,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            Some("mode=755"),
        )
        .map_err(e("remount read-only", dest))?;
    }
    apply_propagation(root, dest, &m.options.propagation)
}

fn bind_ro(root: &OwnedFd, src: &str, dest: &str, per_mount: MsFlags) -> R<()> {
    let target = ensure(root, dest, true).map_err(eio("create mount point", dest))?;
    mount(
        Some(src),
        proc_fd(&target).as_str(),
        NONE,
        MsFlags::MS_BIND,
        NONE,
    )
    .map_err(|err| format!("bind mount {src} on {dest}: {err}"))?;
    if !per_mount.is_empty() {
        remount_bind(root, dest, per_mount)?;
    }
    Ok(())
}

const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

fn default_devices(root: &OwnedFd, plan: &Plan) -> R<()> {
    for (path, major, minor) in DEFAULT_DEVICES {
        make_device(
            root,
            &DevicePlan {
                path: path.to_string(),
                kind: libc::S_IFCHR,
                major,
                minor,
                mode: 0o666,
                uid: 0,
                gid: 0,
            },
            plan,
        )?;
    }
    Ok(())
}

fn make_device(root: &OwnedFd, d: &DevicePlan, plan: &Plan) -> R<()> {
    let (parent, name) = split(&d.path);
    mkdir_all(root, &parent).map_err(eio("create", &parent))?;
    let dir = openat2_in_root(root, &parent, libc::O_DIRECTORY | libc::O_RDONLY)
        .map_err(eio("open", &parent))?;
    if plan.has_ns(libc::CLONE_NEWUSER) {
        return bind_device(&dir, &name, d);
    }
    let kind = SFlag::from_bits_truncate(d.kind);
    let dev = nix::sys::stat::makedev(d.major, d.minor);
    match mknodat(
        &dir,
        name.as_str(),
        kind,
        Mode::from_bits_truncate(d.mode),
        dev,
    ) {
        Ok(()) => {}
        Err(nix::Error::EEXIST) => return Ok(()),
        Err(err) => return Err(format!("mknod {}: {err}", d.path)),
    }
    // mknod's mode went through the umask; set exactly what the spec asks.
    nix::sys::stat::fchmodat(
        &dir,
        name.as_str(),
        Mode::from_bits_truncate(d.mode),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .or_else(|err| {
        if err == nix::Error::EOPNOTSUPP {
            Ok(())
        } else {
            Err(err)
        }
    })
    .map_err(e("chmod", &d.path))?;
    fchownat(
        &dir,
        name.as_str(),
        Some(Uid::from_raw(d.uid)),
        Some(Gid::from_raw(d.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(e("chown", &d.path))
}

/// In a user namespace mknod is refused: bind the host's node instead (as runc does), which
/// keeps the host's owner and mode.
fn bind_device(dir: &OwnedFd, name: &str, d: &DevicePlan) -> R<()> {
    let meta = std::fs::metadata(&d.path).map_err(eio("device for the user namespace", &d.path))?;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let kind_ok = if d.kind == libc::S_IFBLK {
        meta.file_type().is_block_device()
    } else {
        meta.file_type().is_char_device()
    };
    let want = nix::sys::stat::makedev(d.major, d.minor);
    if !kind_ok || meta.rdev() != want {
        return Err(format!(
            "device {}: the host's node is not {}:{} of that type, and a user namespace cannot mknod",
            d.path, d.major, d.minor
        ));
    }
    use nix::fcntl::{openat, OFlag};
    let flags = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let empty = Mode::empty();
    // Never open what is already there for reading: it may be a device.
    let target = match openat(dir, name, flags | OFlag::O_CREAT | OFlag::O_EXCL, empty) {
        Err(nix::Error::EEXIST) => openat(dir, name, flags | OFlag::O_PATH, empty),
        other => other,
    }
    .map_err(|err| format!("create mount point for {}: {err}", d.path))?;
    mount(
        Some(d.path.as_str()),
        proc_fd(&target).as_str(),
        NONE,
        MsFlags::MS_BIND,
        NONE,
    )
    .map_err(e("bind device", &d.path))
}

fn dev_symlinks(root: &OwnedFd, plan: &Plan) -> R<()> {
    let dev = openat2_in_root(root, "dev", libc::O_DIRECTORY | libc::O_RDONLY)
        .map_err(eio("open", "/dev"))?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if plan.mounts.iter().any(|m| m.destination == "/proc") {
        links.push(("/proc/kcore", "core"));
    }
    if plan.mounts.iter().any(|m| m.destination == "/dev/pts") {
        links.push(("pts/ptmx", "ptmx"));
    }
    for (target, name) in links {
        match symlinkat(target, &dev, name) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(err) => return Err(format!("symlink /dev/{name}: {err}")),
        }
    }
    Ok(())
}

fn mask(path: &str) -> R<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(format!("mask {path}: {err}")),
    };
    if meta.is_dir() {
        mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, NONE).map_err(e("mask", path))
    } else {
        mount(Some("/dev/null"), path, NONE, MsFlags::MS_BIND, NONE).map_err(e("mask", path))
    }
}

fn readonly(path: &str) -> R<()> {
    match mount(
        Some(path),
        path,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    ) {
        Ok(()) => {}
        Err(nix::Error::ENOENT) => return Ok(()),
        Err(err) => return Err(format!("bind {path} read-only: {err}")),
    }
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | current_flags(path)?;
    mount(NONE, path, NONE, flags | MsFlags::MS_REC, NONE).map_err(e("remount read-only", path))
}
