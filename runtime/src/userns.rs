//! User namespaces: the spec's uid/gid mappings, checked and written for the init helper.
//!
//! The helper unshares the user namespace itself (after leaving its throwaway mount namespace,
//! see spawn.rs) and then asks the runtime, which is root on the host, to write its maps: only
//! a process with CAP_SETUID/CAP_SETGID in the parent namespace may map more than its own id.
//! Every other new namespace is made after that, so the user namespace owns them all and the
//! container's root may mount its proc, sysfs and mqueue, set its hostname and its sysctls.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One line of /proc/PID/uid_map or gid_map.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// The container's mappings, as the runtime writes them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMaps {
    pub uid: Vec<IdMap>,
    pub gid: Vec<IdMap>,
}

/// The kernel takes at most 340 lines per map (since 4.15).
const MAX_LINES: usize = 340;

fn check(kind: &str, maps: &[IdMap]) -> Result<(), String> {
    if maps.len() > MAX_LINES {
        return Err(format!(
            "linux.{kind}Mappings: {} entries, the kernel takes at most {MAX_LINES}",
            maps.len()
        ));
    }
    for (i, m) in maps.iter().enumerate() {
        if m.size == 0 {
            return Err(format!("linux.{kind}Mappings[{i}]: size is 0"));
        }
        for (what, start) in [("containerID", m.container), ("hostID", m.host)] {
            if u64::from(start) + u64::from(m.size) > u64::from(u32::MAX) {
                return Err(format!(
                    "linux.{kind}Mappings[{i}]: {what} {start} + size {} passes 2^32-1",
                    m.size
                ));
            }
        }
        for (j, o) in maps.iter().enumerate().take(i) {
            let overlaps = |a: u32, b: u32| {
                u64::from(a) < u64::from(b) + u64::from(o.size)
                    && u64::from(b) < u64::from(a) + u64::from(m.size)
            };
            if overlaps(m.container, o.container) {
                return Err(format!(
                    "linux.{kind}Mappings[{i}] and [{j}]: container ranges overlap"
                ));
            }
            if overlaps(m.host, o.host) {
                return Err(format!(
                    "linux.{kind}Mappings[{i}] and [{j}]: host ranges overlap"
                ));
            }
        }
    }
    Ok(())
}

impl IdMap {
    fn to_host(self, id: u32) -> Option<u32> {
        (id >= self.container && u64::from(id) < u64::from(self.container) + u64::from(self.size))
            .then(|| self.host + (id - self.container))
    }
}

/// The host id `id` of the container maps to, if it is mapped.
pub fn to_host(maps: &[IdMap], id: u32) -> Option<u32> {
    maps.iter().find_map(|m| m.to_host(id))
}

/// The text written to /proc/PID/{uid,gid}_map.
pub fn proc_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
        .collect()
}

/// Parse /proc/PID/{uid,gid}_map.
pub fn parse_proc(text: &str) -> Option<Vec<IdMap>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace().map(|f| f.parse::<u32>().ok());
            Some(IdMap {
                container: it.next()??,
                host: it.next()??,
                size: it.next()??,
            })
        })
        .collect()
}

impl IdMaps {
    /// Check mappings for a new user namespace. The helper sets the container up as the
    /// namespace's root (as runc does), so uid 0 and gid 0 must be mapped.
    pub fn check_new(&self) -> Result<(), String> {
        if self.uid.is_empty() || self.gid.is_empty() {
            return Err(
                "a new user namespace needs linux.uidMappings and linux.gidMappings".to_string(),
            );
        }
        check("uid", &self.uid)?;
        check("gid", &self.gid)?;
        if to_host(&self.uid, 0).is_none() {
            return Err("linux.uidMappings: container uid 0 is not mapped (crt sets the container up as its root)".to_string());
        }
        if to_host(&self.gid, 0).is_none() {
            return Err("linux.gidMappings: container gid 0 is not mapped (crt sets the container up as its root)".to_string());
        }
        Ok(())
    }

    /// Mappings of an id-mapped mount: both kinds, well formed; any ids.
    pub fn check_mount(&self) -> Result<(), String> {
        if self.uid.is_empty() || self.gid.is_empty() {
            return Err("an id-mapped mount needs uidMappings and gidMappings (its own, or the container's with the idmap option)".to_string());
        }
        check("uid", &self.uid)?;
        check("gid", &self.gid)
    }

    /// With a user namespace joined by path, mappings in the spec must be the namespace's own
    /// (containerd writes both for a pod's containers). They are read through the owning
    /// process for /proc/PID/ns/user, else (a pinned namespace, as CRI's) through a child
    /// that joins it.
    pub fn check_joined(&self, path: &Path) -> Result<(), String> {
        if self.uid.is_empty() && self.gid.is_empty() {
            return Ok(());
        }
        let proc_dir = path
            .parent()
            .filter(|d| d.ends_with("ns") && path.ends_with("user"))
            .and_then(Path::parent)
            .filter(|p| p.starts_with("/proc"))
            .map(Path::to_path_buf);
        // Keeps the joining child alive while its maps are read.
        let mut _joiner = None;
        let dir = match proc_dir {
            Some(d) => d,
            None => {
                let ns = std::fs::File::open(path)
                    .map_err(|e| format!("open user namespace {}: {e}", path.display()))?;
                let (pid, hold) = crate::spawn::userns_holder(Some(std::os::fd::AsFd::as_fd(&ns)))
                    .map_err(|e| format!("user namespace {}: {e}", path.display()))?;
                _joiner = Some(hold);
                std::path::PathBuf::from(format!("/proc/{pid}"))
            }
        };
        for (kind, want) in [("uid", &self.uid), ("gid", &self.gid)] {
            let file = dir.join(format!("{kind}_map"));
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("read {}: {e}", file.display()))?;
            let mut have = parse_proc(&text).ok_or_else(|| format!("parse {}", file.display()))?;
            let mut want = want.clone();
            have.sort_by_key(|m| m.container);
            want.sort_by_key(|m| m.container);
            if have != want {
                return Err(format!(
                    "linux.{kind}Mappings do not match those of the user namespace at {}",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// An fd of a new user namespace with these maps (for id-mapped mounts). `reap`: wait for
    /// the process that made it here, where no reaper does (the single-threaded init helper).
    pub fn namespace_fd(&self, reap: bool) -> Result<std::os::fd::OwnedFd, String> {
        let (pid, hold) = crate::spawn::userns_holder(None)
            .map_err(|e| format!("user namespace for an id map: {e}"))?;
        let res = self
            .write(pid)
            .map_err(|e| format!("id map: {e}"))
            .and_then(|()| {
                let p = format!("/proc/{pid}/ns/user");
                std::fs::File::open(&p)
                    .map(std::os::fd::OwnedFd::from)
                    .map_err(|e| format!("open {p}: {e}"))
            });
        drop(hold);
        if reap {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
        res
    }

    /// Parse containerd's `uidmap=`/`gidmap=` values: "container:host:size" ranges, comma
    /// separated.
    pub fn parse_ranges(text: &str) -> Result<Vec<IdMap>, String> {
        text.split(',')
            .map(|r| {
                let f: Vec<&str> = r.split(':').collect();
                match f.as_slice() {
                    [c, h, s] => Ok(IdMap {
                        container: c.parse().map_err(|_| format!("bad id range {r:?}"))?,
                        host: h.parse().map_err(|_| format!("bad id range {r:?}"))?,
                        size: s.parse().map_err(|_| format!("bad id range {r:?}"))?,
                    }),
                    _ => Err(format!("bad id range {r:?} (container:host:size)")),
                }
            })
            .collect()
    }

    /// Write the maps of a process that has just unshared its user namespace. setgroups stays
    /// allowed: the writer is privileged, and the container needs it for additionalGids.
    pub fn write(&self, pid: i32) -> std::io::Result<()> {
        for (kind, maps) in [("uid", &self.uid), ("gid", &self.gid)] {
            let path = format!("/proc/{pid}/{kind}_map");
            std::fs::write(&path, proc_text(maps))
                .map_err(|e| std::io::Error::new(e.kind(), format!("write {path}: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(container: u32, host: u32, size: u32) -> IdMap {
        IdMap {
            container,
            host,
            size,
        }
    }

    #[test]
    fn maps_ids_and_checks_ranges() {
        let maps = IdMaps {
            uid: vec![m(0, 100000, 1000), m(1000, 1000, 1)],
            gid: vec![m(0, 100000, 65536)],
        };
        assert!(maps.check_new().is_ok());
        assert_eq!(to_host(&maps.uid, 0), Some(100000));
        assert_eq!(to_host(&maps.uid, 999), Some(100999));
        assert_eq!(to_host(&maps.uid, 1000), Some(1000));
        assert_eq!(to_host(&maps.uid, 1001), None);
        assert_eq!(proc_text(&maps.uid), "0 100000 1000\n1000 1000 1\n");
        assert_eq!(
            parse_proc("         0     100000       1000\n"),
            Some(vec![m(0, 100000, 1000)])
        );

        let bad = |uid: Vec<IdMap>| {
            IdMaps {
                uid,
                gid: maps.gid.clone(),
            }
            .check_new()
            .unwrap_err()
        };
        assert!(bad(vec![]).contains("needs"));
        assert!(bad(vec![m(1, 100000, 10)]).contains("uid 0 is not mapped"));
        assert!(bad(vec![m(0, 100000, 0)]).contains("size is 0"));
        assert!(bad(vec![m(0, u32::MAX - 5, 10)]).contains("passes"));
        assert!(bad(vec![m(0, 100000, 10), m(5, 200000, 10)]).contains("container ranges overlap"));
        assert!(bad(vec![m(0, 100000, 10), m(10, 100005, 10)]).contains("host ranges overlap"));
        assert!(bad(vec![m(0, 1, 1); 341]).contains("at most 340"));
    }

    #[test]
    fn joined_mappings_must_match_the_namespace() {
        // Our own user namespace: the host's identity map.
        let own = std::fs::read_to_string("/proc/self/uid_map").unwrap();
        let own = parse_proc(&own).unwrap();
        let gid = parse_proc(&std::fs::read_to_string("/proc/self/gid_map").unwrap()).unwrap();
        let path = Path::new("/proc/self/ns/user");
        let same = IdMaps {
            uid: own.clone(),
            gid: gid.clone(),
        };
        assert!(same.check_joined(path).is_ok());
        let other = IdMaps {
            uid: vec![m(0, 100000, 65536)],
            gid,
        };
        assert!(other
            .check_joined(path)
            .unwrap_err()
            .contains("do not match"));
        assert!(other
            .check_joined(Path::new("/run/userns/x"))
            .unwrap_err()
            .contains("open user namespace"));
        assert!(IdMaps::default()
            .check_joined(Path::new("/run/userns/x"))
            .is_ok());
    }
}
