//! What the host's cgroup setup looks like: parsed from mountinfo and
//! `/proc/self/cgroup` text so that tests can describe any host.

use std::path::{Path, PathBuf};

use super::fs::read_file;
use super::{CgroupError, Result};

/// Where cgroup2 must be mounted for the host to count as pure v2.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

const MOUNTINFO: &str = "/proc/self/mountinfo";
const PROC_SELF_CGROUP: &str = "/proc/self/cgroup";

/// One mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// e.g. /sys/fs/cgroup/cpu,cpuacct
    pub mount_point: PathBuf,
    /// The cgroup shown at the mount point (mountinfo's root field), "/"
    /// unless a sub-tree was bind-mounted (containers without cgroupns).
    pub root: PathBuf,
    /// Controllers as the kernel names them: ["cpu", "cpuacct"], ["name=systemd"].
    pub controllers: Vec<String>,
    /// This process's cgroup in the hierarchy (from /proc/self/cgroup), for
    /// relative cgroupsPath.
    pub own_cgroup: Option<PathBuf>,
}

/// The cgroup2 mount of a pure v2 host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Mount {
    pub mount_point: PathBuf,
    pub root: PathBuf,
    pub own_cgroup: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Legacy or hybrid host: every mounted v1 hierarchy, mountinfo order.
    V1(Vec<V1Mount>),
    /// cgroup2 mounted at the cgroup root.
    V2(V2Mount),
}

struct MountEntry {
    root: PathBuf,
    mount_point: PathBuf,
    fstype: String,
    super_opts: String,
}

/// Whether the cgroup root is a cgroup2 mount, from one statfs (runc's IsCgroup2UnifiedMode):
/// known before mountinfo is read, so a v1 host's init helper can be asked for first. It agrees
/// with [`Host::detect`], which also takes the mount visible at the root.
pub fn unified_root() -> bool {
    nix::sys::statfs::statfs(DEFAULT_CGROUP_ROOT)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

impl Host {
    /// Read /proc/self/mountinfo and /proc/self/cgroup.
    pub fn detect() -> Result<Host> {
        let mountinfo = read_file(Path::new(MOUNTINFO))?;
        let own = read_file(Path::new(PROC_SELF_CGROUP))?;
        Host::parse(&mountinfo, &own)
    }

    pub fn parse(mountinfo: &str, proc_self_cgroup: &str) -> Result<Host> {
        Host::parse_with_root(mountinfo, proc_self_cgroup, Path::new(DEFAULT_CGROUP_ROOT))
    }

    /// As [`Host::parse`], with `cgroup_root` standing in for /sys/fs/cgroup
    /// (cgroup2 mounted exactly there => v2).
    pub fn parse_with_root(
        mountinfo: &str,
        proc_self_cgroup: &str,
        cgroup_root: &Path,
    ) -> Result<Host> {
        let mounts = parse_mountinfo(mountinfo, cgroup_root)?;
        let own = parse_proc_self_cgroup(proc_self_cgroup)?;

        // Same rule as runc's IsCgroup2UnifiedMode (statfs of the root):
        // the last mount at the root is the visible one.
        if let Some(m) = mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == cgroup_root)
            .filter(|m| m.fstype == "cgroup2")
        {
            let own_cgroup = own
                .iter()
                .find(|(id, ctrls, _)| *id == 0 && ctrls.is_empty())
                .map(|(_, _, p)| p.clone());
            return Ok(Host::V2(V2Mount {
                mount_point: m.mount_point.clone(),
                root: m.root.clone(),
                own_cgroup,
            }));
        }

        let mut hierarchies: Vec<V1Mount> = Vec::new();
        for m in mounts.iter().filter(|m| m.fstype == "cgroup") {
            let mut controllers = v1_controllers(&m.super_opts);
            if controllers.is_empty() {
                continue;
            }
            controllers.sort();
            let own_cgroup = own
                .iter()
                .find(|(_, ctrls, _)| {
                    let mut c = ctrls.clone();
                    c.sort();
                    c == controllers
                })
                .map(|(_, _, p)| p.clone());
            let entry = V1Mount {
                mount_point: m.mount_point.clone(),
                root: m.root.clone(),
                controllers,
                own_cgroup,
            };
            // A hierarchy can be mounted more than once. Keep one: an
            // over-mount of the same point replaces the hidden one, and a
            // mount under the cgroup root beats one elsewhere.
            match hierarchies
                .iter_mut()
                .find(|h| h.controllers == entry.controllers)
            {
                Some(h) => {
                    if h.mount_point == entry.mount_point
                        || (!h.mount_point.starts_with(cgroup_root)
                            && entry.mount_point.starts_with(cgroup_root))
                    {
                        *h = entry;
                    }
                }
                None => hierarchies.push(entry),
            }
        }
        if hierarchies.is_empty() {
            return Err(CgroupError::NoCgroupFs {
                path: PathBuf::from(MOUNTINFO),
                reason: format!(
                    "no cgroup2 at {} and no cgroup v1 hierarchy mounted",
                    cgroup_root.display()
                ),
            });
        }
        Ok(Host::V1(hierarchies))
    }
}

/// Controllers named in a v1 mount's super options; mount flags and
/// key=value options other than name= are not controllers.
fn v1_controllers(super_opts: &str) -> Vec<String> {
    const NOT_CONTROLLERS: &[&str] = &[
        "rw",
        "ro",
        "none",
        "all",
        "xattr",
        "noprefix",
        "clone_children",
        "cpuset_v2_mode",
        "favordynmods",
    ];
    super_opts
        .split(',')
        .filter(|o| !o.is_empty() && !NOT_CONTROLLERS.contains(o))
        .filter(|o| !o.contains('=') || o.starts_with("name="))
        .map(str::to_string)
        .collect()
}

fn mountinfo_err(line: &str, reason: &str) -> CgroupError {
    CgroupError::Parse {
        path: PathBuf::from(MOUNTINFO),
        reason: format!("{reason} in line {line:?}"),
    }
}

/// mountinfo(5): `id parent maj:min root mountpoint opts [optional...] - fstype source superopts`.
/// Keeps the mounts that matter to cgroups: cgroup and cgroup2 ones, and whatever is mounted
/// at `cgroup_root` (the last mount there is the visible one). The host's mount table holds
/// every running container's rootfs too: their fields are split, not copied.
fn parse_mountinfo(text: &str, cgroup_root: &Path) -> Result<Vec<MountEntry>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split(' ');
        let (Some(root), Some(mount_point)) = (fields.nth(3), fields.next()) else {
            return Err(mountinfo_err(line, "no ' - ' separator"));
        };
        // Mount options, then optional fields up to the separator.
        let mut after = fields.skip(1).skip_while(|f| *f != "-");
        if after.next().is_none() {
            return Err(mountinfo_err(line, "no ' - ' separator"));
        }
        let (Some(fstype), Some(_source), Some(super_opts)) =
            (after.next(), after.next(), after.next())
        else {
            return Err(mountinfo_err(line, "missing fields after ' - '"));
        };
        let is_cgroup = matches!(fstype, "cgroup" | "cgroup2");
        // Others matter only at the root; an escaped path is unescaped before it is compared.
        if !is_cgroup && !mount_point.contains('\\') && Path::new(mount_point) != cgroup_root {
            continue;
        }
        let mount_point = PathBuf::from(unescape(mount_point));
        if !is_cgroup && mount_point != cgroup_root {
            continue;
        }
        out.push(MountEntry {
            root: PathBuf::from(unescape(root)),
            mount_point,
            fstype: fstype.to_string(),
            super_opts: super_opts.to_string(),
        });
    }
    Ok(out)
}

/// Undo mountinfo's octal escapes (`\040` for space, `\011`, `\012`, `\134`).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                // \400 and up cannot come from the kernel; keep the text.
                match u8::try_from(v) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 4]),
                }
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/self/cgroup`: `hierarchy-id:controller-list:path` (the path may
/// itself contain ':'). Returns (id, controllers, path).
fn parse_proc_self_cgroup(text: &str) -> Result<Vec<(u32, Vec<String>, PathBuf)>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CgroupError::Parse {
                path: PathBuf::from(PROC_SELF_CGROUP),
                reason: format!("expected id:controllers:path, got {line:?}"),
            });
        };
        let id: u32 = id.parse().map_err(|_| CgroupError::Parse {
            path: PathBuf::from(PROC_SELF_CGROUP),
            reason: format!("bad hierarchy id in {line:?}"),
        })?;
        let ctrls = ctrls
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        out.push((id, ctrls, PathBuf::from(path)));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod samples {
    /// This build machine: cgroup v1 hybrid (Debian 12 guest).
    pub const HYBRID_MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    pub const HYBRID_SELF_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/9b23783c4b8e4e9444a57a69e2fbaf31
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";
    /// A systemd pure-v2 host (Debian 12 / Fedora style).
    pub const V2_MOUNTINFO: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
24 23 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
25 22 0:5 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
";
    pub const V2_SELF_CGROUP: &str = "0::/system.slice/containerd.service\n";
}

#[cfg(test)]
mod tests {
    use super::samples::*;
    use super::*;

    #[test]
    fn hybrid_host_is_v1_with_every_hierarchy_and_no_unified() {
        let host = Host::parse(HYBRID_MOUNTINFO, HYBRID_SELF_CGROUP).unwrap();
        let Host::V1(h) = host else {
            panic!("hybrid must be v1: {host:?}")
        };
        let names: Vec<_> = h.iter().map(|m| m.controllers.join(",")).collect();
        assert_eq!(
            names,
            [
                "cpu",
                "cpuacct",
                "cpuset",
                "memory",
                "devices",
                "freezer",
                "blkio",
                "pids",
                "name=systemd"
            ]
        );
        assert!(h.iter().all(|m| m.root == Path::new("/")));
        let mem = h.iter().find(|m| m.controllers == ["memory"]).unwrap();
        assert_eq!(mem.mount_point, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(
            mem.own_cgroup.as_deref(),
            Some(Path::new("/process_api/9b23783c4b8e4e9444a57a69e2fbaf31"))
        );
        let sd = h
            .iter()
            .find(|m| m.controllers == ["name=systemd"])
            .unwrap();
        assert_eq!(sd.own_cgroup.as_deref(), Some(Path::new("/")));
    }

    #[test]
    fn pure_v2_host() {
        let host = Host::parse(V2_MOUNTINFO, V2_SELF_CGROUP).unwrap();
        assert_eq!(
            host,
            Host::V2(V2Mount {
                mount_point: PathBuf::from("/sys/fs/cgroup"),
                root: PathBuf::from("/"),
                own_cgroup: Some(PathBuf::from("/system.slice/containerd.service")),
            })
        );
    }

    #[test]
    fn comounted_and_option_noise_and_escapes() {
        let mi = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,xattr,cpu,cpuacct
31 25 0:27 /docker/abc /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio,release_agent=/x
32 25 0:28 / /sys/fs/cgroup/my\\040named rw - cgroup cgroup rw,none,name=mine
33 25 0:29 / /mnt/other rw - cgroup cgroup rw,cpu,cpuacct
";
        let own = "3:net_cls,net_prio:/docker/abc\n2:cpuacct,cpu:/user\n1:name=mine:/\n";
        let Host::V1(h) = Host::parse(mi, own).unwrap() else {
            panic!()
        };
        assert_eq!(
            h.len(),
            3,
            "duplicate cpu,cpuacct outside the root is dropped"
        );
        assert_eq!(h[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(h[0].mount_point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(h[0].own_cgroup.as_deref(), Some(Path::new("/user")));
        assert_eq!(h[1].controllers, ["net_cls", "net_prio"]);
        assert_eq!(h[1].root, Path::new("/docker/abc"));
        assert_eq!(h[2].mount_point, Path::new("/sys/fs/cgroup/my named"));
        assert_eq!(h[2].controllers, ["name=mine"]);
    }

    #[test]
    fn only_cgroup_mounts_and_the_one_at_the_root_are_kept() {
        let mi = "\
22 1 0:21 / /sys rw - sysfs sysfs rw
26 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
27 26 0:24 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
28 27 0:25 / /sys/fs/cgroup/memory rw,nosuid shared:9 - cgroup cgroup rw,memory
40 1 0:40 / /run/containerd/io.containerd.runtime.v2.task/default/x/rootfs rw - overlay overlay rw
";
        let kept = parse_mountinfo(mi, Path::new(DEFAULT_CGROUP_ROOT)).unwrap();
        let fs: Vec<_> = kept.iter().map(|m| m.fstype.as_str()).collect();
        assert_eq!(fs, ["cgroup2", "tmpfs", "cgroup"]);
        // A tmpfs over a cgroup2 root hides it: v1, as statfs of the root says.
        let Host::V1(h) = Host::parse(mi, "5:memory:/\n").unwrap() else {
            panic!("a hidden cgroup2 root taken for v2")
        };
        assert_eq!(h[0].controllers, ["memory"]);
    }

    #[test]
    fn overmount_of_the_same_point_wins() {
        let mi = "\
30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
31 30 0:26 /sub /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let Host::V1(h) = Host::parse(mi, "1:memory:/sub\n").unwrap() else {
            panic!()
        };
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].root, Path::new("/sub"));
    }

    #[test]
    fn cgroup2_elsewhere_than_root_without_v1_is_an_error() {
        let mi = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let err = Host::parse(mi, "0::/\n").unwrap_err();
        assert!(matches!(err, CgroupError::NoCgroupFs { .. }), "{err}");
    }

    #[test]
    fn malformed_input_is_a_parse_error() {
        assert!(matches!(
            Host::parse("1 2 3 4 5 6 7\n", "0::/\n").unwrap_err(),
            CgroupError::Parse { .. }
        ));
        assert!(matches!(
            Host::parse(V2_MOUNTINFO, "garbage\n").unwrap_err(),
            CgroupError::Parse { .. }
        ));
    }

    #[test]
    fn self_cgroup_path_may_contain_colons() {
        let v = parse_proc_self_cgroup("0::/a:b:c\n").unwrap();
        assert_eq!(v, vec![(0, vec![], PathBuf::from("/a:b:c"))]);
    }

    #[test]
    fn unescape_handles_octal_and_plain_backslashes() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("\\x\\04"), "\\x\\04");
    }
}
