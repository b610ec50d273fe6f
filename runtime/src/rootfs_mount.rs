//! containerd's rootfs mounts (overlay from the snapshotter, or binds) on `<bundle>/rootfs`, in
//! the host's mount namespace: the shim mounts them, and unmounts them on delete.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use std::os::fd::{AsFd, OwnedFd};

use crate::error::{Result, RuntimeError};
use crate::mount_api::{clone_tree, move_onto, set_attr, MOUNT_ATTR_IDMAP, MOUNT_ATTR_RDONLY};
use crate::mountopts;
use crate::userns::IdMaps;

#[derive(Debug, Clone)]
pub struct RootfsMount {
    pub fstype: String,
    pub source: String,
    pub options: Vec<String>,
}

pub fn mount_all(mounts: &[RootfsMount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            if i > 0 {
                let _ = unmount(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// containerd's `uidmap=`/`gidmap=` options (a snapshotter's remapped layers, `ctr run
/// --remap-labels`): taken out of the options, as the mappings to apply.
fn take_idmap(options: &[String]) -> Result<(Vec<String>, Option<IdMaps>)> {
    let (mut uid, mut gid) = (None, None);
    let mut rest = Vec::new();
    for o in options {
        if let Some(v) = o.strip_prefix("uidmap=") {
            uid = Some(IdMaps::parse_ranges(v).map_err(RuntimeError::Rootfs)?);
        } else if let Some(v) = o.strip_prefix("gidmap=") {
            gid = Some(IdMaps::parse_ranges(v).map_err(RuntimeError::Rootfs)?);
        } else {
            rest.push(o.clone());
        }
    }
    match (uid, gid) {
        (None, None) => Ok((rest, None)),
        (Some(uid), Some(gid)) => {
            let maps = IdMaps { uid, gid };
            maps.check_mount().map_err(RuntimeError::Rootfs)?;
            Ok((rest, Some(maps)))
        }
        _ => Err(RuntimeError::Rootfs(
            "rootfs mount has only one of uidmap= and gidmap=".into(),
        )),
    }
}

fn mount_one(m: &RootfsMount, target: &Path) -> Result<()> {
    let (options, idmap) = take_idmap(&m.options)?;
    let o = mountopts::parse(&options).map_err(RuntimeError::InvalidSpec)?;
    if let Some(maps) = idmap {
        mount_idmapped(m, &o, &maps, target)?;
        return set_propagation(m, &o, target);
    }
    let fail = |op| sys_err(m, target, op);
    if o.is_bind() || m.fstype == "bind" {
        let flags = o.ms_flags() | MsFlags::MS_BIND;
        mount(
            Some(m.source.as_str()),
            target,
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(fail("mount rootfs"))?;
        let extra = mountopts::bind_remount_flags(flags.bits());
        if extra != 0 {
            mount(
                None::<&str>,
                target,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::from_bits_truncate(extra),
                None::<&str>,
            )
            .map_err(fail("remount rootfs"))?;
        }
    } else {
        let data = (!o.data.is_empty()).then_some(o.data.as_str());
        mount(
            Some(m.source.as_str()),
            target,
            Some(m.fstype.as_str()),
            o.ms_flags(),
            data,
        )
        .map_err(fail("mount rootfs"))?;
    }
    set_propagation(m, &o, target)
}

/// A failed mount(2) of `m` on `target`, named.
fn sys_err<'a>(
    m: &'a RootfsMount,
    target: &'a Path,
    op: &'static str,
) -> impl FnOnce(nix::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Sys {
        op,
        path: format!("{} ({}) on {}", m.source, m.fstype, target.display()),
        source,
    }
}

fn set_propagation(m: &RootfsMount, o: &mountopts::MountOptions, target: &Path) -> Result<()> {
    let fail = |op| sys_err(m, target, op);
    for p in &o.propagation {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::from_bits_truncate(*p),
            None::<&str>,
        )
        .map_err(fail("set rootfs propagation"))?;
    }
    Ok(())
}

/// An id-mapped rootfs, as containerd mounts it: an overlay gets its lower layers through one
/// read-only id-mapped mount of their common directory (the upper layer is the snapshotter's,
/// already owned by the mapped root); a bind is id-mapped itself.
fn mount_idmapped(
    m: &RootfsMount,
    o: &mountopts::MountOptions,
    maps: &IdMaps,
    target: &Path,
) -> Result<()> {
    let ns = maps.namespace_fd(false).map_err(RuntimeError::Rootfs)?;
    let err = |e: String| {
        let hint = if e.contains("mount_setattr") && e.contains("Invalid argument") {
            ": the filesystem cannot be id-mapped on this kernel"
        } else {
            ""
        };
        RuntimeError::Rootfs(format!("id-mapped {}: {e}{hint}", m.fstype))
    };
    let open_target = |p: &Path| -> Result<OwnedFd> {
        std::fs::File::open(p)
            .map(OwnedFd::from)
            .map_err(|e| RuntimeError::Rootfs(format!("open {}: {e}", p.display())))
    };
    if o.is_bind() || m.fstype == "bind" {
        let tree = clone_tree(&m.source, o.flags & libc::MS_REC != 0).map_err(err)?;
        let attrs = if o.flags & libc::MS_RDONLY != 0 {
            MOUNT_ATTR_RDONLY
        } else {
            0
        };
        set_attr(
            tree.as_fd(),
            false,
            MOUNT_ATTR_IDMAP | attrs,
            0,
            Some(ns.as_fd()),
            &m.source,
        )
        .map_err(err)?;
        return move_onto(
            tree.as_fd(),
            open_target(target)?.as_fd(),
            &target.display().to_string(),
        )
        .map_err(err);
    }
    if m.fstype != "overlay" {
        return Err(err(
            "only overlay and bind rootfs mounts can be id-mapped".into()
        ));
    }
    let parts: Vec<&str> = o.data.split(',').collect();
    let lowers: Vec<&str> = parts
        .iter()
        .find_map(|p| p.strip_prefix("lowerdir="))
        .ok_or_else(|| err("overlay without lowerdir".into()))?
        .split(':')
        .collect();
    let common = common_dir(&lowers)
        .ok_or_else(|| err(format!("lowerdirs {lowers:?} share no directory")))?;
    let stage = target.with_file_name("rootfs-idmapped-lower");
    std::fs::create_dir_all(&stage).map_err(|e| err(format!("create {}: {e}", stage.display())))?;
    let res = (|| {
        let tree = clone_tree(&common, false).map_err(err)?;
        set_attr(
            tree.as_fd(),
            false,
            MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
            0,
            Some(ns.as_fd()),
            &common,
        )
        .map_err(err)?;
        move_onto(
            tree.as_fd(),
            open_target(&stage)?.as_fd(),
            &stage.display().to_string(),
        )
        .map_err(err)?;
        let mapped: Vec<String> = lowers
            .iter()
            .map(|l| format!("{}{}", stage.display(), &l[common.len()..]))
            .collect();
        let data: Vec<String> = parts
            .iter()
            .map(|p| {
                if p.starts_with("lowerdir=") {
                    format!("lowerdir={}", mapped.join(":"))
                } else {
                    p.to_string()
                }
            })
            .collect();
        mount(
            Some(m.source.as_str()),
            target,
            Some("overlay"),
            o.ms_flags(),
            Some(data.join(",").as_str()),
        )
        .map_err(|source| RuntimeError::Sys {
            op: "mount id-mapped overlay",
            path: target.display().to_string(),
            source,
        })
    })();
    // The overlay keeps its own references to the layers: the staging mount can go.
    let _ = umount2(&stage, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(&stage);
    res
}

/// The directory every path of `dirs` is below (containerd's snapshots dir), never `/`.
fn common_dir(dirs: &[&str]) -> Option<String> {
    let first = Path::new(dirs.first()?);
    let mut common = first.parent()?;
    while !dirs.iter().all(|d| Path::new(d).starts_with(common)) {
        common = common.parent()?;
    }
    let c = common.to_str()?.trim_end_matches('/');
    (!c.is_empty()).then(|| c.to_string())
}

/// Unmount everything stacked on `target`; not mounted is fine.
pub fn unmount(target: &Path) -> Result<()> {
    for _ in 0..16 {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(()),
            Err(source) => {
                return Err(RuntimeError::Sys {
                    op: "unmount rootfs",
                    path: target.display().to_string(),
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_dir_of_layers() {
        let l = ["/var/lib/s/snapshots/12/fs", "/var/lib/s/snapshots/3/fs"];
        assert_eq!(common_dir(&l).as_deref(), Some("/var/lib/s/snapshots"));
        assert_eq!(common_dir(&["/a/fs"]).as_deref(), Some("/a"));
        assert_eq!(common_dir(&["/a/fs", "/b/fs"]), None);
    }

    #[test]
    fn idmap_options_are_taken_out() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (rest, maps) = take_idmap(&o(&[
            "uidmap=0:100000:65536",
            "gidmap=0:100000:65536",
            "index=off",
        ]))
        .unwrap();
        assert_eq!(rest, o(&["index=off"]));
        assert_eq!(maps.unwrap().uid[0].host, 100000);
        assert!(take_idmap(&o(&["uidmap=0:1:1"])).is_err());
        assert!(take_idmap(&o(&["uidmap=0:1", "gidmap=0:1:1"])).is_err());
        assert!(take_idmap(&o(&["index=off"])).unwrap().1.is_none());
    }
}
