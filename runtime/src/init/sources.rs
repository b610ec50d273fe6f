//! Bind mount sources taken while the helper is still the host's root, as detached copies
//! (open_tree) that rootfs setup later moves onto their destinations:
//! - id-mapped ones: giving a mount an id mapping takes CAP_SYS_ADMIN in the user namespace of
//!   its filesystem (the host's);
//! - every one of a container with a user namespace: its root cannot reach sources under
//!   directories only the host's root may enter (CRI's sandbox files under containerd's
//!   0700 state dir), as runc opens them before it joins the user namespace.

use std::os::fd::{AsFd, OwnedFd};

use crate::mount_api::{clone_tree, set_attr, MOUNT_ATTR_IDMAP};
use crate::spec::Plan;
use crate::userns::IdMaps;

/// One entry per mount of the plan: the detached tree for those taken here.
pub fn prepare(plan: &Plan) -> Result<Vec<Option<OwnedFd>>, String> {
    let userns = plan.has_ns(libc::CLONE_NEWUSER);
    let mut out = Vec::with_capacity(plan.mounts.len());
    let mut namespaces: Vec<(&IdMaps, OwnedFd)> = Vec::new();
    for m in &plan.mounts {
        let bind = m.options.is_bind() && !m.is_cgroup();
        if !bind || (m.idmap.is_none() && !userns) {
            out.push(None);
            continue;
        }
        let src = m.source.as_deref().unwrap_or_default();
        let tree = clone_tree(src, m.options.flags & libc::MS_REC != 0)
            .map_err(|e| format!("bind mount source {src}: {e}"))?;
        let Some((maps, recursive)) = &m.idmap else {
            out.push(Some(tree));
            continue;
        };
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
