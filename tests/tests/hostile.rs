//! Malformed and hostile config.json files through `ctr run --config`: each must fail create
//! with an error that names the problem, and none may leave anything behind (checked once for
//! all cases at the end, plus the host's own state where a case aims at it).

use crt_e2e::{assert_no_leaks, json, Containerd, Value};

crt_e2e::scenarios!(hostile_configs);

type Patch = fn(&mut Value);

/// (what, patch, a piece of the error ctr must print). Cases marked `[2.x]` use spec fields
/// newer than ctr 1.6's runtime-spec, which drops them while parsing --config: they run on 2.x.
const CASES: &[(&str, Patch, &str)] = &[
    (
        "no process.args",
        |s| {
            s["process"].as_object_mut().unwrap().remove("args");
        },
        "args",
    ),
    (
        "empty process.args",
        |s| s["process"]["args"] = json!([]),
        "args",
    ),
    (
        "empty argv[0]",
        |s| s["process"]["args"] = json!([""]),
        "args",
    ),
    (
        "missing executable",
        |s| s["process"]["args"] = json!(["/nonexistent/prog"]),
        "/nonexistent/prog",
    ),
    (
        "no process",
        |s| {
            s.as_object_mut().unwrap().remove("process");
        },
        "process",
    ),
    (
        "missing root",
        |s| s["root"]["path"] = "/nonexistent-rootfs".into(),
        "nonexistent-rootfs",
    ),
    (
        "relative cwd",
        |s| s["process"]["cwd"] = "tmp".into(),
        "cwd",
    ),
    (
        "missing cwd",
        |s| s["process"]["cwd"] = "/nonexistent/dir".into(),
        "cwd",
    ),
    (
        "unknown rlimit",
        |s| s["process"]["rlimits"] = json!([{"type": "RLIMIT_FOO", "soft": 1, "hard": 1}]),
        "RLIMIT_FOO",
    ),
    (
        "rlimit soft above hard",
        |s| s["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 10}]),
        "RLIMIT_NOFILE",
    ),
    (
        "oom_score_adj out of range",
        |s| s["process"]["oomScoreAdj"] = 5000.into(),
        "oomScoreAdj",
    ),
    (
        "unknown capability",
        |s| s["process"]["capabilities"]["bounding"] = json!(["CAP_FOO"]),
        "CAP_FOO",
    ),
    (
        "NUL in env",
        |s| s["process"]["env"] = json!(["A=b\u{0}c"]),
        "NUL",
    ),
    (
        "namespace listed twice",
        |s| {
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "pid"}));
        },
        "twice",
    ),
    (
        "namespace path missing",
        |s| {
            for n in s["linux"]["namespaces"].as_array_mut().unwrap() {
                if n["type"] == "network" {
                    n["path"] = "/proc/999999999/ns/net".into();
                }
            }
        },
        "999999999",
    ),
    (
        "no mount namespace",
        |s| {
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "mount");
        },
        "mount namespace",
    ),
    (
        "hostname without uts namespace",
        |s| {
            s["hostname"] = "x".into();
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "uts");
        },
        "hostname",
    ),
    (
        "user namespace without mappings",
        |s| {
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
        },
        "needs linux.uidMappings and linux.gidMappings",
    ),
    (
        "uid mappings without a user namespace",
        |s| s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1}]),
        "no user namespace",
    ),
    (
        "user namespace whose root is not mapped",
        |s| {
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            s["linux"]["uidMappings"] = json!([{"containerID": 1, "hostID": 100001, "size": 100}]);
            s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 100}]);
        },
        "container uid 0 is not mapped",
    ),
    (
        "overlapping host ranges",
        |s| {
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 100},
                                               {"containerID": 100, "hostID": 100050, "size": 100}]);
            s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 100}]);
        },
        "host ranges overlap",
    ),
    (
        "relative mount destination",
        |s| {
            s["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "tmp/x", "type": "tmpfs", "source": "tmpfs"}));
        },
        "tmp/x",
    ),
    (
        "unknown filesystem",
        |s| {
            s["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/mnt", "type": "nosuchfs", "source": "none"}));
        },
        "/mnt",
    ),
    (
        "bind of a missing source",
        |s| {
            s["mounts"].as_array_mut().unwrap().push(json!({"destination": "/mnt", "type": "bind", "source": "/nonexistent/src", "options": ["rbind"]}));
        },
        "/nonexistent/src",
    ),
    (
        "host dir bound over /proc",
        |s| {
            s["mounts"].as_array_mut().unwrap().push(json!({"destination": "/proc", "type": "bind", "source": "/etc", "options": ["rbind"]}));
        },
        "/proc",
    ),
    (
        "host dir bound over /proc/sys",
        |s| {
            s["mounts"].as_array_mut().unwrap().push(json!({"destination": "/proc/sys", "type": "bind", "source": "/proc/sys", "options": ["rbind", "rw"]}));
        },
        "/proc/sys",
    ),
    (
        "a symlink in the image leading into /proc",
        |s| {
            let root = std::path::PathBuf::from(s["root"]["path"].as_str().unwrap());
            let _ = std::os::unix::fs::symlink("/proc/sys", root.join("innocent"));
            s["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/innocent", "type": "tmpfs", "source": "tmpfs"}));
        },
        "inside /proc",
    ),
    (
        "bad rootfsPropagation",
        |s| s["linux"]["rootfsPropagation"] = "bogus".into(),
        "bogus",
    ),
    (
        "malformed systemd cgroupsPath",
        |s| s["linux"]["cgroupsPath"] = "system--x.slice:crt:hostile".into(),
        "empty part between dashes",
    ),
    (
        "negative memory limit",
        |s| s["linux"]["resources"]["memory"] = json!({"limit": -5}),
        "memory",
    ),
    (
        "cpu period below the kernel's minimum",
        |s| s["linux"]["resources"]["cpu"] = json!({"quota": 1000, "period": 10}),
        "cpu",
    ),
    (
        "cpuset out of range",
        |s| s["linux"]["resources"]["cpu"] = json!({"cpus": "9999"}),
        "cpuset",
    ),
    (
        "bad hugepage size",
        |s| s["linux"]["resources"]["hugepageLimits"] = json!([{"pageSize": "3MB", "limit": 1}]),
        "3MB",
    ),
    (
        "blkio weight out of range",
        |s| s["linux"]["resources"]["blockIO"] = json!({"weight": 5000}),
        "weight",
    ),
    (
        "bad device access",
        |s| {
            s["linux"]["resources"]["devices"] =
                json!([{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwz"}])
        },
        "access 'z'",
    ),
    (
        "seccomp notify without a listener",
        |s| s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
        "listenerPath",
    ),
    (
        "seccomp argument index 7",
        |s| s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
        "index 7",
    ),
    (
        "relative hook path",
        |s| s["hooks"] = json!({"createRuntime": [{"path": "bin/true"}]}),
        "bin/true",
    ),
    (
        "zero hook timeout",
        |s| s["hooks"] = json!({"createRuntime": [{"path": "/bin/true", "timeout": 0}]}),
        "timeout",
    ),
    (
        "missing hook binary",
        |s| s["hooks"] = json!({"createRuntime": [{"path": "/nonexistent/hook"}]}),
        "/nonexistent/hook",
    ),
    (
        "hanging hook",
        |s| s["hooks"] = json!({"createContainer": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]}),
        "timed out",
    ),
    (
        "failing startContainer hook",
        |s| s["hooks"] = json!({"startContainer": [{"path": "/bin/false"}]}),
        "startContainer",
    ),
    (
        "host sysctl",
        |s| s["linux"]["sysctl"] = json!({"vm.swappiness": "0"}),
        "vm.swappiness",
    ),
    (
        "kernel.hostname sysctl",
        |s| s["linux"]["sysctl"] = json!({"kernel.hostname": "x"}),
        "kernel.hostname",
    ),
    (
        "sysctl path traversal",
        |s| s["linux"]["sysctl"] = json!({"net.ipv4/../../../etc": "x"}),
        "bad key",
    ),
    (
        "realtime priority 0 [2.x]",
        |s| s["process"]["scheduler"] = json!({"policy": "SCHED_FIFO"}),
        "priority",
    ),
    (
        "I/O priority 9 [2.x]",
        |s| s["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 9}),
        "priority",
    ),
    (
        "personality flags",
        |s| s["linux"]["personality"] = json!({"domain": "LINUX", "flags": ["X"]}),
        "personality",
    ),
    (
        "time offsets without a time namespace [2.x]",
        |s| s["linux"]["timeOffsets"] = json!({"boottime": {"secs": 1}}),
        "time namespace",
    ),
    (
        "memory policy [2.x]",
        |s| s["linux"]["memoryPolicy"] = json!({"mode": "MPOL_BIND", "nodes": "0"}),
        "memoryPolicy",
    ),
    (
        "intelRdt",
        |s| s["linux"]["intelRdt"] = json!({"closID": "x"}),
        "intelRdt",
    ),
];

fn hostile_configs(c: &Containerd) {
    let mut ids = Vec::new();
    let mut failures = Vec::new();
    for (what, patch, want) in CASES {
        if what.ends_with("[2.x]") && c.version != crt_e2e::Version::V2 {
            continue;
        }
        let id = c.new_id("hostile");
        let mut spec = c.config_spec(&id, &["true"]);
        patch(&mut spec);
        let out = c.run_config(&id, &spec);
        if out.success() {
            failures.push(format!("{what}: accepted"));
        } else if !out.stderr.contains(want) {
            failures.push(format!(
                "{what}: error lacks {want:?}: {}",
                out.stderr.trim()
            ));
        }
        // ctr keeps the container record of a failed run with some errors.
        let _ = c.ctr(&["containers", "rm", &id]);
        ids.push(id);
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile configs not refused clearly:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_no_leaks(c, &refs);
}
