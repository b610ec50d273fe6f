//! `linux.cgroupsPath` validation and resolution against a hierarchy.

use std::path::{Component, Path, PathBuf};

use super::{CgroupError, Result};

/// A validated cgroupsPath: normalized components, no "..".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupsPath {
    /// The text as given (or the default), for error messages.
    original: String,
    absolute: bool,
    components: Vec<String>,
}

fn invalid(path: &str, reason: impl Into<String>) -> CgroupError {
    CgroupError::InvalidPath {
        path: path.to_string(),
        reason: reason.into(),
    }
}

impl CgroupsPath {
    /// `None` or "" => runc's cgroupfs default: the relative path
    /// `<container_id>`, under the runtime's own cgroup.
    pub(crate) fn parse(cgroups_path: Option<&str>, container_id: &str) -> Result<CgroupsPath> {
        let text = match cgroups_path {
            Some(p) if !p.is_empty() => p,
            _ => {
                // The id becomes a directory name: one plain component only.
                if container_id.is_empty()
                    || container_id.contains('/')
                    || container_id == "."
                    || container_id == ".."
                    || container_id.contains('\0')
                {
                    return Err(invalid(
                        container_id,
                        "no cgroupsPath given and the container id is not usable as a cgroup name",
                    ));
                }
                container_id
            }
        };
        let expanded;
        let text = if is_systemd_form(text) {
            expanded = systemd_path(text).map_err(|reason| CgroupError::SystemdPath {
                path: text.to_string(),
                reason,
            })?;
            expanded.as_str()
        } else {
            text
        };
        if text.contains('\0') {
            return Err(invalid(text, "contains a NUL byte"));
        }
        let mut components = Vec::new();
        for c in text.split('/') {
            match c {
                "" | "." => {}
                ".." => return Err(invalid(text, "\"..\" components are not allowed")),
                c => components.push(c.to_string()),
            }
        }
        if components.is_empty() {
            // "/" would make the hierarchy root the container's cgroup, and
            // kill_all/destroy would then act on the whole host.
            return Err(invalid(text, "resolves to the cgroup root"));
        }
        Ok(CgroupsPath {
            original: text.to_string(),
            absolute: text.starts_with('/'),
            components,
        })
    }

    /// The leaf dir in one hierarchy mounted at `mount_point` (showing
    /// cgroup `mount_root`); `own_cgroup` is this process's cgroup there,
    /// needed only for relative paths.
    pub(crate) fn resolve(
        &self,
        mount_point: &Path,
        mount_root: &Path,
        own_cgroup: Option<&Path>,
    ) -> Result<PathBuf> {
        let mut leaf = mount_point.to_path_buf();
        if !self.absolute {
            let own = own_cgroup.ok_or_else(|| {
                invalid(
                    &self.original,
                    format!(
                        "relative path, but /proc/self/cgroup has no entry for the hierarchy at {}",
                        mount_point.display()
                    ),
                )
            })?;
            // The mount shows `mount_root`; our cgroup must be inside it
            // to be reachable through this mount point.
            let rel = own.strip_prefix(mount_root).map_err(|_| {
                invalid(
                    &self.original,
                    format!(
                        "relative path, but our own cgroup {} is outside the part mounted at {} ({})",
                        own.display(),
                        mount_point.display(),
                        mount_root.display()
                    ),
                )
            })?;
            let escapes = || {
                let reason = format!(
                    "our own cgroup {} is not below the hierarchy root",
                    own.display()
                );
                invalid(&self.original, reason)
            };
            for c in rel.components() {
                match c {
                    Component::Normal(n) => leaf.push(n),
                    Component::CurDir | Component::RootDir => {}
                    // "/.." shows up for cgroups outside our cgroup namespace.
                    Component::ParentDir | Component::Prefix(_) => return Err(escapes()),
                }
            }
        }
        leaf.extend(&self.components);
        // Belt and braces: whatever happened above, the leaf must be a
        // strict descendant of the mount point.
        if leaf == mount_point || !leaf.starts_with(mount_point) {
            return Err(invalid(
                &self.original,
                format!("resolves outside {}", mount_point.display()),
            ));
        }
        Ok(leaf)
    }
}

/// Refuse to act on a leaf that is not strictly below its mount point, as a
/// corrupt or hand-edited state file could say: kill_all or destroy on the
/// hierarchy root (or above it, via "..") would hit the whole host.
pub(crate) fn check_leaf(mount_point: &Path, leaf: &Path) -> Result<()> {
    let below = leaf.strip_prefix(mount_point).is_ok_and(|rel| {
        let mut parts = rel.components().peekable();
        parts.peek().is_some() && parts.all(|c| matches!(c, Component::Normal(_)))
    });
    if below {
        return Ok(());
    }
    Err(invalid(
        &leaf.display().to_string(),
        format!(
            "cgroup dir is not strictly below its hierarchy {}",
            mount_point.display()
        ),
    ))
}

/// runc's systemd driver takes "slice:prefix:name"; a cgroupfs path of that
/// shape (relative, exactly three ':'-separated parts) is almost surely
/// meant for it.
fn is_systemd_form(p: &str) -> bool {
    !p.starts_with('/') && p.split(':').count() == 3
}

/// The cgroupfs path systemd gives "slice:prefix:name" (runc's systemd driver rules): the
/// slice expanded into its parents ("a-b.slice" is "/a.slice/a-b.slice", "" the system
/// slice), then the unit: "<prefix>-<name>.scope", or `name` itself when it is a slice. crt has
/// no D-Bus client: the cgroup is made directly where systemd would put the unit.
pub(crate) fn systemd_path(text: &str) -> std::result::Result<String, String> {
    let mut parts = text.splitn(3, ':');
    let (slice, prefix, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(s), Some(p), Some(n)) => (s, p, n),
        _ => return Err("not slice:prefix:name".into()),
    };
    if name.is_empty() {
        return Err("the unit name is empty".into());
    }
    for (what, v) in [("slice", slice), ("prefix", prefix), ("name", name)] {
        if v.contains('/') || v == "." || v == ".." {
            return Err(format!("the {what} {v:?} is not a plain unit name"));
        }
    }
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let mut path = expand_slice(slice)?;
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else {
        format!("{prefix}-{name}.scope")
    };
    path.push('/');
    path.push_str(&unit);
    Ok(path)
}

/// "a-b-c.slice" => "/a.slice/a-b.slice/a-b-c.slice"; "-.slice" is the root slice.
fn expand_slice(slice: &str) -> std::result::Result<String, String> {
    let base = slice
        .strip_suffix(".slice")
        .ok_or_else(|| format!("{slice:?} is not a slice (name.slice)"))?;
    if base == "-" {
        return Ok(String::new());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in base.split('-') {
        if part.is_empty() {
            return Err(format!("{slice:?}: empty part between dashes"));
        }
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(p: Option<&str>, id: &str, own: Option<&str>) -> Result<PathBuf> {
        CgroupsPath::parse(p, id)?.resolve(
            Path::new("/sys/fs/cgroup/memory"),
            Path::new("/"),
            own.map(Path::new),
        )
    }

    #[test]
    fn absolute_is_from_the_hierarchy_root() {
        assert_eq!(
            leaf(Some("/default/demo"), "demo", Some("/ignored")).unwrap(),
            Path::new("/sys/fs/cgroup/memory/default/demo")
        );
        // Redundant separators and "." are normalized away.
        assert_eq!(
            leaf(Some("//default/./demo/"), "demo", None).unwrap(),
            Path::new("/sys/fs/cgroup/memory/default/demo")
        );
    }

    #[test]
    fn relative_is_below_our_own_cgroup() {
        assert_eq!(
            leaf(Some("crt/demo"), "demo", Some("/process_api/abc")).unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/abc/crt/demo")
        );
        assert_eq!(
            leaf(Some("demo"), "demo", Some("/")).unwrap(),
            Path::new("/sys/fs/cgroup/memory/demo")
        );
        assert!(matches!(
            leaf(Some("demo"), "demo", None).unwrap_err(),
            CgroupError::InvalidPath { .. }
        ));
    }

    #[test]
    fn relative_honours_the_mount_root() {
        let p = CgroupsPath::parse(Some("demo"), "x").unwrap();
        assert_eq!(
            p.resolve(
                Path::new("/sys/fs/cgroup/cpu"),
                Path::new("/docker/abc"),
                Some(Path::new("/docker/abc/inner")),
            )
            .unwrap(),
            Path::new("/sys/fs/cgroup/cpu/inner/demo")
        );
        // Our cgroup is not visible through this mount.
        assert!(p
            .resolve(
                Path::new("/sys/fs/cgroup/cpu"),
                Path::new("/docker/abc"),
                Some(Path::new("/other")),
            )
            .is_err());
        // cgroupns: outside the namespace root shows as "/..".
        assert!(p
            .resolve(
                Path::new("/sys/fs/cgroup/cpu"),
                Path::new("/"),
                Some(Path::new("/../x")),
            )
            .is_err());
    }

    #[test]
    fn default_is_the_container_id_relative() {
        assert_eq!(
            leaf(None, "demo", Some("/process_api/abc")).unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/abc/demo")
        );
        assert_eq!(
            leaf(Some(""), "demo", Some("/")).unwrap(),
            Path::new("/sys/fs/cgroup/memory/demo")
        );
        for bad in ["", ".", "..", "a/b"] {
            assert!(
                matches!(
                    leaf(None, bad, Some("/")).unwrap_err(),
                    CgroupError::InvalidPath { .. }
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn dotdot_and_root_are_rejected() {
        for bad in ["/a/../../etc", "../x", "a/..", "/..", "/", "///", "/./"] {
            let err = leaf(Some(bad), "x", Some("/")).unwrap_err();
            assert!(
                matches!(err, CgroupError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
        // ".." inside a name is just a name.
        assert!(leaf(Some("/a..b"), "x", None).is_ok());
    }

    #[test]
    fn check_leaf_wants_a_strict_plain_descendant() {
        let mp = Path::new("/sys/fs/cgroup/memory");
        assert!(check_leaf(mp, &mp.join("a/b")).is_ok());
        for bad in [
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup/memory/",
            "/sys/fs/cgroup/memory/..",
            "/sys/fs/cgroup/memory/a/../..",
            "/sys/fs/cgroup/cpu/a",
            "relative/a",
        ] {
            assert!(check_leaf(mp, Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn systemd_form_maps_to_where_systemd_puts_the_unit() {
        let l = leaf(
            Some("kubepods-besteffort-pod12.slice:cri-containerd:abc"),
            "abc",
            None,
        )
        .unwrap();
        assert_eq!(
            l,
            Path::new("/sys/fs/cgroup/memory/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope")
        );
        assert_eq!(
            systemd_path(":crt:demo").unwrap(),
            "/system.slice/crt-demo.scope"
        );
        assert_eq!(systemd_path("-.slice:crt:x").unwrap(), "/crt-x.scope");
        assert_eq!(
            systemd_path("machine.slice:p:sub.slice").unwrap(),
            "/machine.slice/sub.slice"
        );
        for bad in ["a--b.slice:p:n", "nope:p:n", "a.slice:p:", "a.slice:p:x/y"] {
            let err = leaf(Some(bad), "n", None).unwrap_err();
            assert!(
                matches!(err, CgroupError::SystemdPath { .. }),
                "{bad}: {err}"
            );
        }
        // An absolute path with colons is a plain cgroupfs path.
        assert!(leaf(Some("/a:b:c"), "x", None).is_ok());
    }
}
