//! The OCI runtime features document: what this build really supports, so containerd and CRI
//! enable only what crt honours (no user namespaces, idmap or rro mounts yet).

use serde_json::json;

/// Every mount option `mountopts::parse` accepts by name.
pub const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

pub fn features() -> serde_json::Value {
    let caps: Vec<String> = (0..41u32)
        .filter_map(|n| crate::caps::name(n).map(str::to_string))
        .collect();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": [],
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {"enabled": false},
            "apparmor": {"enabled": crate::lsm::apparmor_enabled()},
            "selinux": {"enabled": crate::lsm::selinux_enabled()},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        },
        "annotations": {"io.github.crt.version": env!("CARGO_PKG_VERSION")}
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_listed_option_parses_and_no_userns_is_claimed() {
        for o in super::MOUNT_OPTIONS {
            let parsed = crate::mountopts::parse(&[o.to_string()]).unwrap();
            assert!(parsed.data.is_empty(), "{o} should be a known flag");
        }
        let f = super::features();
        let ns = f["linux"]["namespaces"].as_array().unwrap();
        assert!(!ns.iter().any(|n| n == "user"));
        assert_eq!(f["linux"]["capabilities"].as_array().unwrap().len(), 41);
    }
}
