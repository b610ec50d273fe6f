//! The OCI runtime features document: what this build really supports, so containerd and CRI
//! enable only what crt honours.

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

/// The architectures a filter can name next to this build's own (one filter holds one
/// endianness and family).
#[cfg(target_arch = "x86_64")]
const SECCOMP_ARCHS: &[&str] = &["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"];
#[cfg(target_arch = "aarch64")]
const SECCOMP_ARCHS: &[&str] = &["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SECCOMP_ARCHS: &[&str] = &["SCMP_ARCH_NATIVE"];

pub fn features() -> serde_json::Value {
    let caps: Vec<String> = (0..41u32)
        .filter_map(|n| crate::caps::name(n).map(str::to_string))
        .collect();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
                  "poststop"],
        "mountOptions": MOUNT_OPTIONS
            .iter()
            .chain(crate::mountopts::RECURSIVE_OPTIONS)
            .chain(&["idmap", "ridmap"])
            .collect::<Vec<_>>(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                            "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                            "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                              "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": SECCOMP_ARCHS,
                "knownFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                               "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                               "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                   "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                                   "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
            },
            "apparmor": {"enabled": crate::lsm::apparmor_enabled()},
            "selinux": {"enabled": crate::lsm::selinux_enabled()},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": true}}
        },
        "annotations": {"io.github.crt.version": env!("CARGO_PKG_VERSION")}
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_listed_option_parses() {
        let f = super::features();
        for o in f["mountOptions"].as_array().unwrap() {
            let o = o.as_str().unwrap();
            let parsed = crate::mountopts::parse(&[o.to_string()]).unwrap();
            assert!(parsed.data.is_empty(), "{o} should be a known option");
        }
        let ns = f["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().any(|n| n == "user"));
        assert_eq!(f["linux"]["capabilities"].as_array().unwrap().len(), 41);
    }

    /// Every seccomp action, operator and architecture the features document claims compiles.
    #[test]
    fn claimed_seccomp_support_compiles() {
        let f = super::features();
        let sc = &f["linux"]["seccomp"];
        let list = |k: &str| -> Vec<String> {
            sc[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        let rules: Vec<_> = list("actions")
            .iter()
            .filter(|a| *a != "SCMP_ACT_ALLOW")
            .map(|a| serde_json::json!({"names": ["mkdir"], "action": a}))
            .chain(list("operators").iter().map(|o| {
                serde_json::json!({"names": ["chmod"], "action": "SCMP_ACT_ERRNO",
                    "args": [{"index": 1, "value": 1, "valueTwo": 1, "op": o}]})
            }))
            .collect();
        let spec = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/listener.sock",
            "architectures": list("archs"),
            "flags": list("supportedFlags"),
            "syscalls": rules,
        });
        let spec: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(spec).unwrap();
        crate::seccomp::compile(&spec).unwrap();
    }
}
