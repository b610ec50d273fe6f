//! Mount option strings (as in config.json and containerd's rootfs mounts) to mount(2) flags.

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

/// A mount's options split the way mount(2) wants them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MountOptions {
    /// Flags for the mount call itself (MS_BIND, MS_REC, MS_RDONLY, …).
    pub flags: u64,
    /// Propagation changes applied after the mount, in order (MS_SHARED|MS_REC, …).
    pub propagation: Vec<u64>,
    /// Filesystem-specific options passed as data (`mode=755`, `size=65536k`, `newinstance`).
    pub data: String,
    /// MOUNT_ATTR_* set and cleared on the whole tree (`rro`, `rnosuid`, ...).
    #[serde(default)]
    pub rec_set: u64,
    #[serde(default)]
    pub rec_clear: u64,
    /// `idmap` / `ridmap`: id-map the bind mount (with the mount's own mappings, else the
    /// container's); `ridmap` maps every mount of an rbind tree.
    #[serde(default)]
    pub idmap: Option<IdmapOption>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum IdmapOption {
    Top,
    Recursive,
}

impl MountOptions {
    pub fn ms_flags(&self) -> MsFlags {
        MsFlags::from_bits_truncate(self.flags)
    }
    pub fn is_bind(&self) -> bool {
        self.flags & MsFlags::MS_BIND.bits() != 0
    }
}

/// Options the kernel has no flag for but runc gives a meaning; crt refuses them until it
/// implements them, rather than passing them on as data and weakening the mount.
const REFUSED: &[&str] = &["tmpcopyup", "recursive"];

/// runc's recursive options: (name, attributes set, attributes cleared).
fn recursive(o: &str) -> Option<(u64, u64)> {
    use crate::mount_api::*;
    Some(match o {
        "rro" => (MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, MOUNT_ATTR_RDONLY),
        "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, MOUNT_ATTR_NOSUID),
        "rnodev" => (MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, MOUNT_ATTR_NODEV),
        "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
        "rnosymfollow" => (MOUNT_ATTR_NOSYMFOLLOW, 0),
        "rsymfollow" => (0, MOUNT_ATTR_NOSYMFOLLOW),
        // The atime modes are one field: clear it whole, then set one.
        "rrelatime" => (MOUNT_ATTR_RELATIME, MOUNT_ATTR_ATIME),
        "rnoatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME),
        "rstrictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME),
        _ => return None,
    })
}

/// Every recursive option [`parse`] knows, for the features document.
pub const RECURSIVE_OPTIONS: &[&str] = &[
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnodiratime",
    "rdiratime",
    "rnosymfollow",
    "rsymfollow",
    "rrelatime",
    "rnoatime",
    "rstrictatime",
];

pub fn parse(options: &[String]) -> Result<MountOptions, String> {
    let mut out = MountOptions::default();
    let mut data: Vec<&str> = Vec::new();
    for opt in options {
        let o = opt.as_str();
        if REFUSED.contains(&o) || o.starts_with("idmap=") {
            return Err(format!("mount option {o:?} is not supported by crt yet"));
        }
        if let Some((set, clear)) = recursive(o) {
            // A later option wins over an earlier one on the same attribute.
            let atime = crate::mount_api::MOUNT_ATTR_ATIME;
            let mask = if clear == atime { atime } else { set | clear };
            out.rec_set = (out.rec_set & !mask) | set;
            out.rec_clear = (out.rec_clear & !mask) | clear;
            continue;
        }
        match o {
            "idmap" => {
                out.idmap = Some(IdmapOption::Top);
                continue;
            }
            "ridmap" => {
                out.idmap = Some(IdmapOption::Recursive);
                continue;
            }
            _ => {}
        }
        if let Some(p) = propagation(o) {
            out.propagation.push(p.bits());
            continue;
        }
        match flag(o) {
            Some((clear, set)) => {
                out.flags &= !clear.bits();
                out.flags |= set.bits();
            }
            None => data.push(o),
        }
    }
    out.data = data.join(",");
    Ok(out)
}

fn propagation(o: &str) -> Option<MsFlags> {
    Some(match o {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// (flags to clear, flags to set) for a named option.
fn flag(o: &str) -> Option<(MsFlags, MsFlags)> {
    let none = MsFlags::empty();
    Some(match o {
        "defaults" => (none, none),
        "ro" => (none, MsFlags::MS_RDONLY),
        "rw" => (MsFlags::MS_RDONLY, none),
        "suid" => (MsFlags::MS_NOSUID, none),
        "nosuid" => (none, MsFlags::MS_NOSUID),
        "dev" => (MsFlags::MS_NODEV, none),
        "nodev" => (none, MsFlags::MS_NODEV),
        "exec" => (MsFlags::MS_NOEXEC, none),
        "noexec" => (none, MsFlags::MS_NOEXEC),
        "sync" => (none, MsFlags::MS_SYNCHRONOUS),
        "async" => (MsFlags::MS_SYNCHRONOUS, none),
        "dirsync" => (none, MsFlags::MS_DIRSYNC),
        "remount" => (none, MsFlags::MS_REMOUNT),
        "mand" => (none, MsFlags::MS_MANDLOCK),
        "nomand" => (MsFlags::MS_MANDLOCK, none),
        "atime" => (MsFlags::MS_NOATIME, none),
        "noatime" => (none, MsFlags::MS_NOATIME),
        "diratime" => (MsFlags::MS_NODIRATIME, none),
        "nodiratime" => (none, MsFlags::MS_NODIRATIME),
        "relatime" => (none, MsFlags::MS_RELATIME),
        "norelatime" => (MsFlags::MS_RELATIME, none),
        "strictatime" => (none, MsFlags::MS_STRICTATIME),
        "nostrictatime" => (MsFlags::MS_STRICTATIME, none),
        "bind" => (none, MsFlags::MS_BIND),
        "rbind" => (none, MsFlags::MS_BIND | MsFlags::MS_REC),
        "silent" => (none, MsFlags::MS_SILENT),
        "loud" => (MsFlags::MS_SILENT, none),
        _ => return None,
    })
}

/// Flags that a read-only/nosuid/… change on a bind mount needs a second, remount call for:
/// MS_BIND ignores them on the first call.
pub fn bind_remount_flags(flags: u64) -> u64 {
    let keep = MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC
        | MsFlags::MS_NOATIME
        | MsFlags::MS_NODIRATIME
        | MsFlags::MS_RELATIME
        | MsFlags::MS_STRICTATIME;
    flags & keep.bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_data_and_propagation() {
        let o = parse(&s(&["nosuid", "strictatime", "mode=755", "size=65536k"])).unwrap();
        assert_eq!(o.ms_flags(), MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, "mode=755,size=65536k");
        let o = parse(&s(&["rbind", "ro", "rprivate"])).unwrap();
        assert!(o.is_bind());
        assert_eq!(
            o.ms_flags(),
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(
            o.propagation,
            vec![(MsFlags::MS_PRIVATE | MsFlags::MS_REC).bits()]
        );
    }

    #[test]
    fn later_option_wins() {
        let o = parse(&s(&["ro", "rw"])).unwrap();
        assert_eq!(o.ms_flags(), MsFlags::empty());
    }

    #[test]
    fn refused_options_are_errors() {
        assert!(parse(&s(&["tmpcopyup"])).unwrap_err().contains("tmpcopyup"));
    }

    #[test]
    fn recursive_options_become_mount_attributes() {
        use crate::mount_api::*;
        let o = parse(&s(&["rbind", "rro", "rnosuid", "rnoatime"])).unwrap();
        assert_eq!(
            o.rec_set,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME
        );
        assert_eq!(o.rec_clear, MOUNT_ATTR_ATIME);
        assert_eq!(o.ms_flags(), MsFlags::MS_BIND | MsFlags::MS_REC);
        let o = parse(&s(&["rro", "rrw"])).unwrap();
        assert_eq!((o.rec_set, o.rec_clear), (0, MOUNT_ATTR_RDONLY));
        for r in RECURSIVE_OPTIONS {
            assert!(parse(&s(&[r])).unwrap().data.is_empty(), "{r}");
        }
        assert_eq!(
            parse(&s(&["ridmap"])).unwrap().idmap,
            Some(IdmapOption::Recursive)
        );
    }

    #[test]
    fn remount_keeps_only_per_mount_flags() {
        let o = parse(&s(&["rbind", "ro", "nosuid"])).unwrap();
        assert_eq!(
            bind_remount_flags(o.flags),
            (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID).bits()
        );
    }
}
