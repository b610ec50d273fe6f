//! Reading OCI specs (as JSON) and comparing them with what a process sees.

use serde_json::Value;

/// Linux capability names in bit order (linux/capability.h).
pub const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Bit number of a capability name (`CAP_` prefix optional).
pub fn cap_bit(name: &str) -> Option<u32> {
    let n = name.to_ascii_uppercase();
    let n = if n.starts_with("CAP_") {
        n
    } else {
        format!("CAP_{n}")
    };
    CAPS.iter().position(|c| *c == n).map(|p| p as u32)
}

/// Bitmask of a JSON list of capability names (missing/null => 0). Panics on unknown names.
pub fn caps_mask(list: Option<&Value>) -> u64 {
    let mut m = 0u64;
    if let Some(Value::Array(a)) = list {
        for c in a {
            let name = c.as_str().expect("capability is a string");
            let bit = cap_bit(name).unwrap_or_else(|| panic!("unknown capability {name}"));
            m |= 1 << bit;
        }
    }
    m
}

/// Names of the bits set in `mask`.
pub fn cap_names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(|b| {
            CAPS.get(b)
                .map(|s| s.to_string())
                .unwrap_or(format!("cap{b}"))
        })
        .collect()
}

/// The five capability sets of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSets {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

impl CapSets {
    /// From `/proc/<pid>/status` text (CapInh/CapPrm/CapEff/CapBnd/CapAmb lines).
    pub fn from_status(text: &str) -> Option<CapSets> {
        let get = |k: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        };
        Some(CapSets {
            inheritable: get("CapInh:")?,
            permitted: get("CapPrm:")?,
            effective: get("CapEff:")?,
            bounding: get("CapBnd:")?,
            ambient: get("CapAmb:")?,
        })
    }

    /// What the spec's `process.capabilities` asks for (absent sets are empty).
    pub fn from_spec(spec: &Value) -> CapSets {
        let c = &spec["process"]["capabilities"];
        CapSets {
            inheritable: caps_mask(c.get("inheritable")),
            permitted: caps_mask(c.get("permitted")),
            effective: caps_mask(c.get("effective")),
            bounding: caps_mask(c.get("bounding")),
            ambient: caps_mask(c.get("ambient")),
        }
    }

    /// Human-readable difference (empty when equal).
    pub fn diff(&self, other: &CapSets) -> String {
        let mut s = String::new();
        for (name, a, b) in [
            ("inheritable", self.inheritable, other.inheritable),
            ("permitted", self.permitted, other.permitted),
            ("effective", self.effective, other.effective),
            ("bounding", self.bounding, other.bounding),
            ("ambient", self.ambient, other.ambient),
        ] {
            if a != b {
                s.push_str(&format!(
                    "  {name}: {a:016x} vs {b:016x}; only left {:?}, only right {:?}\n",
                    cap_names(a & !b),
                    cap_names(b & !a)
                ));
            }
        }
        s
    }
}

/// `/proc/<pid>/ns/<file>` name for an OCI namespace type.
pub fn ns_file(oci_type: &str) -> &'static str {
    match oci_type {
        "pid" => "pid",
        "network" => "net",
        "mount" => "mnt",
        "ipc" => "ipc",
        "uts" => "uts",
        "user" => "user",
        "cgroup" => "cgroup",
        "time" => "time",
        other => panic!("unknown namespace type {other}"),
    }
}

/// Every OCI namespace type with its /proc/<pid>/ns file.
pub const NS_TYPES: &[&str] = &[
    "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time",
];

/// The namespace types the spec asks to create (entries without a `path`).
pub fn spec_new_namespaces(spec: &Value) -> Vec<String> {
    spec["linux"]["namespaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|n| {
                    n.get("path")
                        .and_then(|p| p.as_str())
                        .unwrap_or("")
                        .is_empty()
                })
                .filter_map(|n| n["type"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A string list from the spec (e.g. `linux.maskedPaths`).
pub fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Normalises an octal `key=0NNN` mount option the way the kernel prints it (`mode=0620` =>
/// `mode=620`).
pub fn normalize_mount_data(opt: &str) -> String {
    if let Some((k, v)) = opt.split_once('=') {
        if matches!(k, "mode" | "ptmxmode") {
            let t = v.trim_start_matches('0');
            return format!("{k}={}", if t.is_empty() { "0" } else { t });
        }
    }
    opt.to_string()
}

/// Checks the options of one /proc/mounts entry against a spec mount's options. Returns problems.
///
/// - `ro`, `nosuid`, `nodev`, `noexec` must be present exactly when the spec asks for them;
/// - `key=value` data options (`size=`, `mode=`, `gid=`, `ptmxmode=`) must appear as the kernel
///   prints them, except a tmpfs `mode=1777`, which is tmpfs's default and never printed;
/// - propagation/atime/bind flags are not visible per mount and are not compared.
pub fn check_mount_options(spec_opts: &[String], fs_type: &str, proc_opts: &str) -> Vec<String> {
    let have: Vec<&str> = proc_opts.split(',').collect();
    let mut problems = Vec::new();
    for flag in ["ro", "nosuid", "nodev", "noexec"] {
        let want = spec_opts.iter().any(|o| o == flag);
        let got = have.contains(&flag);
        if want != got {
            problems.push(format!(
                "{flag}: spec {} it, mount has {}",
                if want { "asks for" } else { "does not ask for" },
                if got { "it" } else { "not" }
            ));
        }
    }
    for o in spec_opts {
        if !o.contains('=') {
            continue;
        }
        let n = normalize_mount_data(o);
        if fs_type == "tmpfs" && n == "mode=1777" {
            continue;
        }
        if !have.contains(&n.as_str()) {
            problems.push(format!("data option {o} (as {n}) missing"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_masks_match_runc_default() {
        // the default set containerd puts in the spec; runc shows it as a80425fb
        let v: Value = serde_json::json!([
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE"
        ]);
        assert_eq!(caps_mask(Some(&v)), 0xa80425fb);
        assert_eq!(cap_bit("sys_admin"), Some(21));
    }

    #[test]
    fn status_caps_parse() {
        let t = "Name:\tcat\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n\
                 CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\n";
        let c = CapSets::from_status(t).unwrap();
        assert_eq!(c.bounding, 0xa80425fb);
        assert_eq!(c.inheritable, 0);
    }

    #[test]
    fn mount_option_check() {
        let spec: Vec<String> = [
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(check_mount_options(
            &spec,
            "devpts",
            "rw,nosuid,noexec,relatime,gid=5,mode=620,ptmxmode=666"
        )
        .is_empty());
        assert_eq!(
            check_mount_options(
                &spec,
                "devpts",
                "rw,nosuid,relatime,gid=5,mode=620,ptmxmode=666"
            )
            .len(),
            1
        );
        let shm: Vec<String> = ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(
            check_mount_options(&shm, "tmpfs", "rw,nosuid,nodev,noexec,relatime,size=65536k")
                .is_empty()
        );
    }
}
