//! Id-mapped bind mounts. Giving a mount an id mapping takes CAP_SYS_ADMIN in the user
//! namespace of the filesystem (the host's), so the helper makes them while it is still the
//! host's root, before it enters the container's user namespace: detached copies of each
//! source, id-mapped, that rootfs setup later moves onto their destinations.

use std::os::fd::{AsFd, OwnedFd};

use crate::mount_api::{clone_tree, set_attr, MOUNT_ATTR_IDMAP};
use crate::spec::Plan;
use crate::userns::IdMaps;

/// One entry per mount of the plan: the id-mapped tree for those that ask for one.
pub fn prepare(plan: &Plan) -> Result<Vec<Option<OwnedFd>>, String> {
    let mut out = Vec::with_capacity(plan.mounts.len());
    let mut namespaces: Vec<(&IdMaps, OwnedFd)> = Vec::new();
    for m in &plan.mounts {
        let Some((maps, recursive)) = &m.idmap else {
            out.push(None);
            continue;
        };
        let src = m.source.as_deref().unwrap_or_default();
        let tree = clone_tree(src, m.options.flags & libc::MS_REC != 0)?;
        let idx = match namespaces.iter().position(|(mm, _)| *mm == maps) {
            Some(i) => i,
            None => {
                namespaces.push((maps, maps.namespace_fd(true)?));
                namespaces.len() - 1
            }
        };
        set_attr(
            tree.as_fd(),
            *recursive,
            MOUNT_ATTR_IDMAP,
            0,
            Some(namespaces[idx].1.as_fd()),
            &format!("id-map {src} for {}", m.destination),
        )
        .map_err(|e| {
            if e.contains("Invalid argument") {
                format!("{e}: the filesystem of {src} cannot be id-mapped on this kernel")
            } else {
                e
            }
        })?;
        out.push(Some(tree));
    }
    Ok(out)
}
