//! containerd's rootfs mounts (overlay from the snapshotter, or binds) on `<bundle>/rootfs`, in
//! the host's mount namespace: the shim mounts them, and unmounts them on delete.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Result, RuntimeError};
use crate::mountopts;

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

fn mount_one(m: &RootfsMount, target: &Path) -> Result<()> {
    let o = mountopts::parse(&m.options).map_err(RuntimeError::InvalidSpec)?;
    let t = target.display().to_string();
    let fail = |op: &'static str| {
        let path = format!("{} ({}) on {t}", m.source, m.fstype);
        move |source| RuntimeError::Sys { op, path, source }
    };
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
