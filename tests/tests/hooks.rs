//! The six OCI hooks, from a config.json (`ctr run --config`; nerdctl relies on them): each at
//! its moment (status in the state on stdin), in its namespace (createContainer/startContainer
//! in the container's mount namespace, the others in the host's), with its args and env; a
//! failing or hanging hook fails the step with its output, runs poststop, and leaves nothing.

use crt_e2e::{assert_no_leaks, json, Containerd, Value};

crt_e2e::scenarios!(
    hooks_all_six,
    hook_failure_and_timeout,
    a_prestart_hook_adds_a_device_rule
);

fn hook(script: &str, dir: &str) -> Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", script],
        "env": [format!("DIR={dir}"), "HOOKVAR=from-spec"],
    })
}

/// A host-side hook recording its kind, the state it read, its env and mount namespace.
fn recorder(kind: &str, dir: &str) -> Value {
    hook(
        &format!(
            "{{ cat; echo; echo env=$(cat /proc/self/environ | tr '\\0' ' '); readlink /proc/self/ns/mnt; }} > $DIR/{kind}"
        ),
        dir,
    )
}

fn hooks_all_six(c: &Containerd) {
    let dir = c.harness_dir().join("hooks");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_string_lossy().into_owned();
    let id = c.new_id("hooks");
    let mut spec = c.config_spec(
        &id,
        &[
            "sh",
            "-c",
            "cat /tmp/startContainer; echo; readlink /proc/self/ns/mnt",
        ],
    );
    spec["hooks"] = json!({
        "prestart": [recorder("prestart", &d)],
        "createRuntime": [recorder("createRuntime", &d)],
        "createContainer": [recorder("createContainer", &d)],
        // After pivot_root: /bin/sh and /tmp are the container's.
        "startContainer": [hook("cat > /tmp/startContainer", &d)],
        "poststart": [recorder("poststart", &d)],
        "poststop": [recorder("poststop", &d)],
    });
    let out = c.run_config(&id, &spec);
    assert!(out.success(), "{out}");
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let host_mnt = host_mnt.to_string_lossy();
    let mut lines = out.stdout.lines();
    let start_state: Value = serde_json::from_str(lines.next().unwrap_or("")).expect("state");
    let container_mnt = lines.next().unwrap_or("").trim().to_string();
    assert_eq!(
        start_state["status"], "created",
        "startContainer: {start_state}"
    );
    assert_eq!(start_state["id"], id.as_str());
    assert_ne!(
        container_mnt, host_mnt,
        "the container has its own mount namespace"
    );

    for (kind, status, in_container) in [
        ("prestart", "creating", false),
        ("createRuntime", "creating", false),
        ("createContainer", "creating", true),
        // The spec's state after start is running (runc's shim passes "created" here).
        ("poststart", "running", false),
        ("poststop", "stopped", false),
    ] {
        let text = std::fs::read_to_string(dir.join(kind))
            .unwrap_or_else(|e| panic!("{kind} hook did not run: {e}"));
        let mut l = text.lines();
        let state: Value = serde_json::from_str(l.next().unwrap_or("")).expect("state JSON");
        assert_eq!(state["status"], status, "{kind}: {text}");
        assert_eq!(state["id"], id.as_str(), "{kind}: {text}");
        assert!(
            state["ociVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("1.")),
            "{kind}: {text}"
        );
        assert!(
            state["bundle"].as_str().is_some_and(|b| b.ends_with(&id)),
            "{kind}: {text}"
        );
        if status != "stopped" {
            assert!(state["pid"].as_i64().unwrap_or(0) > 0, "{kind}: {text}");
        }
        // The shell adds PWD of its own.
        let mut env: Vec<&str> = l
            .next()
            .and_then(|e| e.strip_prefix("env="))
            .unwrap_or("")
            .split_whitespace()
            .filter(|v| !v.starts_with("PWD="))
            .collect();
        env.sort_unstable();
        let want = format!("DIR={d}");
        assert_eq!(
            env,
            [want.as_str(), "HOOKVAR=from-spec"],
            "{kind}: exactly the hook's env"
        );
        let mnt = l.next().unwrap_or("");
        if in_container {
            assert_eq!(
                mnt, container_mnt,
                "{kind} runs in the container's mount namespace"
            );
        } else {
            assert_eq!(mnt, host_mnt, "{kind} runs in the host's mount namespace");
        }
    }
    assert_no_leaks(c, &[&id]);
}

fn hook_failure_and_timeout(c: &Containerd) {
    let dir = c.harness_dir().join("hookfail");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_string_lossy().into_owned();

    let id = c.new_id("hookfail");
    let mut spec = c.config_spec(&id, &["true"]);
    spec["hooks"] = json!({
        "createRuntime": [hook("echo boom >&2; exit 3", &d)],
        "poststop": [recorder("poststop", &d)],
    });
    let out = c.run_config(&id, &spec);
    assert!(
        !out.success(),
        "a failing createRuntime hook fails create:\n{out}"
    );
    assert!(
        out.stderr.contains("createRuntime hook #0")
            && out.stderr.contains("exit status 3")
            && out.stderr.contains("boom"),
        "the error names the hook, its status and its stderr:\n{out}"
    );
    assert!(
        dir.join("poststop").exists(),
        "poststop runs after a failed create"
    );
    assert_no_leaks(c, &[&id]);

    let id = c.new_id("hookhang");
    let mut spec = c.config_spec(&id, &["true"]);
    let mut hang = hook("sleep 30", &d);
    hang["timeout"] = 1.into();
    spec["hooks"] = json!({ "createContainer": [hang] });
    let out = c.run_config(&id, &spec);
    assert!(!out.success(), "a hanging hook fails create:\n{out}");
    assert!(
        out.stderr.contains("createContainer hook #0") && out.stderr.contains("timed out after 1s"),
        "{out}"
    );
    assert_no_leaks(c, &[&id]);
}

/// cgroup v1: a prestart hook finds the spec's device rules in place and may add to them, as
/// with runc (NVIDIA's legacy hook allows its GPUs this way); rules written after the hooks
/// started with "deny all" and wiped its rule.
fn a_prestart_hook_adds_a_device_rule(c: &Containerd) {
    if crt_e2e::cgroup::cgroup_mode() != crt_e2e::cgroup::CgroupMode::V1 {
        eprintln!("skip: cgroup v1 only (v2 device rules are an eBPF program)");
        return;
    }
    let Some(devices) = crt_e2e::cgroup::v1_mount("devices") else {
        eprintln!("skip: no v1 devices hierarchy");
        return;
    };
    let id = c.new_id("hookdev");
    // fuse (10:229): not among the default rules.
    let mut spec = c.config_spec(&id, &["cat", "/sys/fs/cgroup/devices/devices.list"]);
    spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/sys/fs/cgroup",
        "type": "cgroup",
        "source": "cgroup",
        "options": ["ro", "nosuid", "noexec", "nodev"],
    }));
    let script = r#"pid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
cg=$(sed -n 's/^[0-9]*:devices:\(.*\)$/\1/p' /proc/$pid/cgroup)
echo 'c 10:229 rwm' > "$DEVICES$cg/devices.allow""#;
    spec["hooks"] = json!({
        "prestart": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", script],
            "env": [format!("DEVICES={}", devices.display())],
        }],
    });
    let out = c.run_config(&id, &spec);
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.lines().any(|l| l.trim() == "c 10:229 rwm"),
        "the hook's rule is in the container's devices.list:\n{out}"
    );
    assert!(
        !out.stdout.lines().any(|l| l.trim() == "a *:* rwm"),
        "the spec's deny-all is in force:\n{out}"
    );
    assert_no_leaks(c, &[&id]);
}
