//! Every field of an OCI config.json that means something on Linux, and what crt does with it.
//! The README's table is rendered from this list, and the tests below hold crt to it: each
//! row's sample is a real spec field (it survives oci-spec's parser), and planning a spec with
//! it set is accepted when the row says so and refused, naming the field, when it says refused.

/// How crt treats a field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Handling {
    /// Honoured as the spec says.
    Applied,
    /// Honoured where the host has what it needs (an LSM), else refused naming the field.
    Host,
    /// Refused at create with an error naming the field.
    Refused,
    /// Has no meaning on Linux (or without the host feature): dropped, with a log line where
    /// it could matter.
    Ignored,
}

impl Handling {
    pub fn word(self) -> &'static str {
        match self {
            Handling::Applied => "applied",
            Handling::Host => "applied if the host has it",
            Handling::Refused => "refused",
            Handling::Ignored => "ignored",
        }
    }
}

use Handling::*;

/// (field, handling, sample JSON for the field, what crt does)
pub const FIELDS: &[(&str, Handling, &str, &str)] = &[
    ("ociVersion", Ignored, r#""1.2.0""#, "not checked; hooks receive crt's state version"),
    ("root.path", Applied, r#""rootfs""#, "relative to the bundle; must exist"),
    ("root.readonly", Applied, "true", "root remounted read-only after setup"),
    ("mounts", Applied, r#"[{"destination": "/mnt", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=1m"]}]"#, "destinations resolved inside the root (openat2 RESOLVE_IN_ROOT); nothing over or inside /proc but a procfs and lxcfs' files"),
    ("mounts[].options", Applied, r#"[{"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["rbind", "rro", "rnosuid", "nodev", "rslave"]}]"#, "mount(2) flags, propagation, filesystem data; runc's recursive options (rro, rnosuid, rnoatime, ...) through mount_setattr; idmap/ridmap; tmpcopyup refused"),
    ("mounts[].uidMappings", Applied, r#"[{"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["rbind"], "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}], "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}]"#, "id-mapped bind mount (mount_setattr MOUNT_ATTR_IDMAP), made by the helper while it is the host's root"),
    ("mounts[].gidMappings", Applied, r#"[{"destination": "/mnt", "type": "bind", "source": "/tmp", "options": ["rbind"], "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}], "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}]"#, "with uidMappings; both are needed"),
    ("hostname", Applied, r#""h""#, "needs a new uts namespace"),
    ("domainname", Applied, r#""example.org""#, "needs a new uts namespace"),
    ("annotations", Applied, r#"{"a": "b"}"#, "passed to hooks in the state"),
    ("hooks.prestart", Applied, r#"[{"path": "/bin/true"}]"#, "runtime namespace, before pivot_root"),
    ("hooks.createRuntime", Applied, r#"[{"path": "/bin/true"}]"#, "runtime namespace, before pivot_root"),
    ("hooks.createContainer", Applied, r#"[{"path": "/bin/true"}]"#, "container's mount namespace, before pivot_root"),
    ("hooks.startContainer", Applied, r#"[{"path": "/bin/true"}]"#, "in the container, right before exec"),
    ("hooks.poststart", Applied, r#"[{"path": "/bin/true"}]"#, "after exec; failures logged"),
    ("hooks.poststop", Applied, r#"[{"path": "/bin/true"}]"#, "after delete (also after a shim crash); failures logged"),
    ("process.terminal", Applied, "true", "pty on the container's devpts, master to the shim"),
    ("process.consoleSize", Applied, r#"{"height": 40, "width": 120}"#, "initial window size"),
    ("process.user", Applied, r#"{"uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [5]}"#, "setgroups, setresgid, setresuid, umask"),
    ("process.args", Applied, r#"["sh"]"#, "looked up in the spec's PATH, runc's error text"),
    ("process.commandLine", Ignored, r#""sh""#, "Windows only"),
    ("process.env", Applied, r#"["A=b"]"#, "exactly the environment"),
    ("process.cwd", Applied, r#""/tmp""#, "absolute; inside the container"),
    ("process.capabilities", Applied, r#"{"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"], "inheritable": [], "ambient": []}"#, "all five sets"),
    ("process.rlimits", Applied, r#"[{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}]"#, "setrlimit, checked"),
    ("process.noNewPrivileges", Applied, "true", "prctl before exec"),
    ("process.apparmorProfile", Host, r#""crt-test""#, "exec transition where AppArmor runs"),
    ("process.selinuxLabel", Host, r#""system_u:system_r:container_t:s0""#, "exec label where SELinux runs"),
    ("process.oomScoreAdj", Applied, "100", "-1000..1000"),
    ("process.ioPriority", Applied, r#"{"class": "IOPRIO_CLASS_BE", "priority": 4}"#, "ioprio_set"),
    ("process.scheduler", Applied, r#"{"policy": "SCHED_BATCH", "nice": 5}"#, "sched_setattr, validated as runc"),
    ("process.execCPUAffinity", Refused, r#"{"initial": "0"}"#, "not yet"),
    ("linux.namespaces", Applied, r#"[{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"}, {"type": "cgroup"}, {"type": "time"}]"#, "new or joined by path; a mount namespace is required"),
    ("linux.namespaces[].type=user", Applied, r#"[{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "user"}]"#, "made first (or joined by path, mappings checked against it); every other namespace is made inside it; devices bound from the host; v2 cgroup delegated to its root"),
    ("linux.uidMappings", Applied, r#"[{"containerID": 0, "hostID": 100000, "size": 65536}]"#, "written by the runtime; container uid 0 must be mapped"),
    ("linux.gidMappings", Applied, r#"[{"containerID": 0, "hostID": 100000, "size": 65536}]"#, "written by the runtime (setgroups stays allowed); container gid 0 must be mapped"),
    ("linux.timeOffsets", Applied, r#"{"boottime": {"secs": 10}}"#, "written before anything enters the time namespace"),
    ("linux.devices", Applied, r#"[{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]"#, "mknod inside the container"),
    ("linux.cgroupsPath", Applied, r#""/crt/x""#, "cgroupfs form; the systemd form (slice:prefix:name) maps to the path systemd gives the unit"),
    ("linux.resources", Applied, r#"{"memory": {"limit": 67108864}, "pids": {"limit": 10}}"#, "devices, memory, cpu, pids, blockIO, hugepageLimits, network, rdma, unified on cgroup v1 and v2; what the host cannot apply is an error"),
    ("linux.intelRdt", Refused, r#"{"closID": "x"}"#, "resctrl: not supported"),
    ("linux.sysctl", Applied, r#"{"kernel.domainname": "example.org"}"#, "only keys of the container's own namespaces"),
    ("linux.seccomp", Applied, r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}"#, "compiled with libseccomp, loaded last; SCMP_ACT_NOTIFY fds go to listenerPath"),
    ("linux.rootfsPropagation", Applied, r#""rslave""#, "propagation of / in the container"),
    ("linux.maskedPaths", Applied, r#"["/proc/kcore"]"#, "/dev/null or an empty read-only tmpfs over each"),
    ("linux.readonlyPaths", Applied, r#"["/proc/sys"]"#, "read-only bind over each"),
    ("linux.mountLabel", Ignored, r#""system_u:object_r:container_file_t:s0""#, "meaningless without SELinux (logged); refused where SELinux runs"),
    ("linux.personality", Applied, r#"{"domain": "LINUX32"}"#, "LINUX or LINUX32; flags refused"),
    ("linux.memoryPolicy", Refused, r#"{"mode": "MPOL_BIND", "nodes": "0"}"#, "not yet"),
    ("linux.netDevices", Refused, r#"{"eth1": {"name": "net1"}}"#, "not yet"),
    ("solaris, windows, vm, zos", Ignored, "", "other platforms"),
];

/// The README table.
pub fn markdown() -> String {
    let mut s = String::from("| field | crt | what it does |\n| --- | --- | --- |\n");
    for (field, h, _, note) in FIELDS {
        s.push_str(&format!("| `{field}` | {} | {note} |\n", h.word()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{plan, tests_base};
    use std::path::Path;

    /// Set `field` (a dotted path; the last part names the key) to `sample` in `v`.
    fn set(v: &mut serde_json::Value, field: &str, sample: serde_json::Value) {
        let path = field.split('[').next().unwrap_or(field);
        let parts: Vec<&str> = path.split('.').collect();
        let mut cur = v;
        for p in &parts[..parts.len() - 1] {
            if cur.get(*p).is_none() {
                cur[*p] = serde_json::json!({});
            }
            cur = &mut cur[*p];
        }
        cur[parts[parts.len() - 1]] = sample;
    }

    #[test]
    fn every_row_is_a_real_field_handled_as_it_says() {
        for (field, handling, sample, _) in FIELDS {
            if sample.is_empty() {
                continue;
            }
            let sample: serde_json::Value = serde_json::from_str(sample)
                .unwrap_or_else(|e| panic!("{field}: sample is not JSON: {e}"));
            let mut v = tests_base();
            set(&mut v, field, sample.clone());
            if field.contains("user") || field.contains("idMappings") {
                // Neither half of a user namespace goes without the other.
                let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
                v["linux"]["uidMappings"] = map.clone();
                v["linux"]["gidMappings"] = map;
                let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
                if !ns.iter().any(|n| n["type"] == "user") {
                    ns.push(serde_json::json!({"type": "user"}));
                }
            }
            if *field == "linux.timeOffsets" {
                v["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!({"type": "time"}));
            }
            // The field survives oci-spec's parser: a typo would be dropped.
            let spec: oci_spec::runtime::Spec = serde_json::from_value(v.clone())
                .unwrap_or_else(|e| panic!("{field}: oci-spec rejects the sample: {e}"));
            let back = serde_json::to_value(&spec).unwrap();
            let mut probe = back.clone();
            set(&mut probe, field, sample.clone());
            assert_eq!(
                back, probe,
                "{field}: the sample did not survive oci-spec's parser"
            );
            let res = plan(&spec, Path::new("/b"));
            let lsm = match *field {
                "process.apparmorProfile" => crate::lsm::apparmor_enabled(),
                "process.selinuxLabel" => crate::lsm::selinux_enabled(),
                _ => true,
            };
            match (handling, &res) {
                (Applied | Ignored, Ok(_)) => {}
                (Host, r) if r.is_ok() == lsm => {}
                (Refused, Err(e)) => {
                    let name = field.rsplit('.').next().unwrap_or(field);
                    let name = name.split('[').next().unwrap_or(name);
                    let name = name.split('=').next_back().unwrap_or(name);
                    assert!(
                        e.to_string().contains(name),
                        "{field}: refusal does not name it: {e}"
                    );
                }
                _ => panic!("{field}: table says {handling:?}, plan gave {res:?}"),
            }
        }
    }

    #[test]
    fn the_readme_table_is_this_list() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
                .unwrap();
        let start = "<!-- spec-fields:start -->\n";
        let end = "<!-- spec-fields:end -->";
        let (Some(a), Some(b)) = (readme.find(start), readme.find(end)) else {
            panic!("README.md lacks the spec-fields block");
        };
        let current = &readme[a + start.len()..b];
        if current != markdown() {
            if std::env::var_os("CRT_WRITE_README").is_some() {
                let new = format!("{}{start}{}{}", &readme[..a], markdown(), &readme[b..]);
                std::fs::write(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
                    new,
                )
                .unwrap();
            } else {
                panic!("README.md's spec-field table is stale: run CRT_WRITE_README=1 cargo test -p crt-runtime spec_fields");
            }
        }
    }
}
