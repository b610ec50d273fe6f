//! Kubernetes' way in: containerd's CRI plugin with handler `crt`, driven by crictl. A private
//! containerd (1.6 and 2.x) with a private CNI bridge and the kit's pause image (no registry).

use std::fs;

use crt_e2e::{assert_no_leaks, json, Containerd, Value, CRI_HANDLER, IMAGE};

crt_e2e::cri_scenarios!(
    pod_lifecycle,
    shared_pid_namespace,
    runtime_options,
    terminals,
    container_restart,
    user_namespace_pod
);

/// Writes `v` as a JSON file in the harness dir and returns its path.
fn write_json(c: &Containerd, name: &str, v: &Value) -> String {
    let p = c.harness_dir().join(name);
    fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p.to_string_lossy().into_owned()
}

struct Pod {
    id: String,
    config: String,
}

/// `crictl runp --runtime crt` a pod named `name`; `linux` is the pod's LinuxPodSandboxConfig.
fn run_pod(c: &Containerd, name: &str, linux: Value) -> Pod {
    try_run_pod(c, name, linux, CRI_HANDLER)
        .unwrap_or_else(|out| panic!("crictl runp failed:\n{out}\n{}", c.log_tail(30)))
}

fn try_run_pod(
    c: &Containerd,
    name: &str,
    linux: Value,
    handler: &str,
) -> Result<Pod, crt_e2e::Output> {
    let logs = c.dir.join("pods").join(name);
    fs::create_dir_all(&logs).unwrap();
    let config = write_json(
        c,
        &format!("pod-{name}.json"),
        &json!({
            "metadata": {"name": name, "namespace": "default",
                         "uid": format!("{name}-{}", c.suffix), "attempt": 0},
            "log_directory": logs.to_string_lossy(),
            "linux": linux,
        }),
    );
    let out = c.crictl(&["runp", "--runtime", handler, &config]);
    if !out.success() {
        return Err(out);
    }
    let id = out.stdout.trim().to_string();
    c.track_id(&id);
    Ok(Pod { id, config })
}

/// `crictl create` + `start` a busybox container running `sh -c script` in `pod`.
fn run_container(c: &Containerd, pod: &Pod, name: &str, script: &str) -> String {
    run_container_with(c, pod, name, json!({"command": ["sh", "-c", script]}))
}

/// `crictl create` + `start` a busybox container named `name` in `pod`; `extra`'s keys are
/// set over the basic ContainerConfig.
fn run_container_with(c: &Containerd, pod: &Pod, name: &str, extra: Value) -> String {
    let mut cfg = json!({
        "metadata": {"name": name},
        "image": {"image": IMAGE},
        "log_path": format!("{name}.log"),
        "linux": {},
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let config = write_json(c, &format!("ctr-{name}.json"), &cfg);
    let out = c.crictl(&["create", &pod.id, &config, &pod.config]);
    assert!(out.success(), "crictl create {name} failed:\n{out}");
    let id = out.stdout.trim().to_string();
    c.track_id(&id);
    let out = c.crictl(&["start", &id]);
    assert!(out.success(), "crictl start {name} failed:\n{out}");
    id
}

fn inspect(c: &Containerd, id: &str) -> Value {
    let out = c.crictl(&["inspect", "-o", "json", id]);
    assert!(out.success(), "crictl inspect failed:\n{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("inspect JSON: {e}\n{out}"))
}

/// Polls until `crictl logs id` contains `want`; returns the logs.
fn wait_logs(c: &Containerd, id: &str, want: &str) -> String {
    let mut last = String::new();
    let got = crt_e2e::poll(crt_e2e::secs(30), || {
        let out = c.crictl(&["logs", id]);
        last = format!("{}{}", out.stdout, out.stderr);
        last.contains(want).then_some(())
    });
    assert!(got.is_some(), "logs of {id} never showed {want:?}:\n{last}");
    last
}

/// A pod with three containers (pause included) on one shim: a web server and a client share
/// the pod's network namespace (the client reaches the server on 127.0.0.1); exec (sync and
/// streaming, exit codes and timeouts, as probes use them), logs, stats and update work; stop
/// honours the grace period (a container that handles SIGTERM exits 0, one that ignores it is
/// killed after it); removing the pod ends the shim and leaves nothing behind.
fn pod_lifecycle(c: &Containerd) {
    let pod = run_pod(c, "web", json!({}));
    let server = run_container(
        c,
        &pod,
        "server",
        "mkdir -p /www && echo pong > /www/index.html && exec httpd -f -p 8080 -h /www",
    );
    let client = run_container_with(
        c,
        &pod,
        "client",
        json!({
            "command": ["sh", "-c",
                "trap 'echo got-term; exit 0' TERM; echo client-started; while :; do sleep 1; done"],
            "linux": {"resources": {"oom_score_adj": 500}},
        }),
    );
    let stubborn = run_container(
        c,
        &pod,
        "stubborn",
        "trap '' TERM; while :; do sleep 1; done",
    );

    let shims = c.shim_procs();
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");

    // The client reaches the server through the pod's shared network namespace.
    let mut last = None;
    let reached = crt_e2e::poll(crt_e2e::secs(30), || {
        let out = c.crictl(&[
            "exec",
            "-s",
            &client,
            "wget",
            "-qO-",
            "http://127.0.0.1:8080/",
        ]);
        let ok = out.success() && out.stdout.trim() == "pong";
        last = Some(out);
        ok.then_some(())
    });
    assert!(
        reached.is_some(),
        "client cannot reach the server: {last:?}"
    );

    let out = c.crictl(&["exec", &client, "sh", "-c", "echo exec-stream-ok"]);
    assert!(
        out.success() && out.stdout.trim() == "exec-stream-ok",
        "{out}"
    );
    // Exec probes: the exit code comes back, and a probe that overruns its timeout fails.
    let out = c.crictl(&["exec", "-s", &client, "sh", "-c", "exit 3"]);
    assert!(!out.success(), "a failing probe fails:\n{out}");
    assert!(
        out.stderr.contains("3"),
        "the probe's exit code is reported:\n{out}"
    );
    let out = c.crictl(&["exec", "-s", "--timeout", "2", &client, "sleep", "30"]);
    assert!(!out.success(), "a probe past its timeout fails:\n{out}");

    wait_logs(c, &client, "client-started");
    // kubelet's log file, in CRI's format: "<time> stdout F <line>".
    let log = fs::read_to_string(c.dir.join("pods/web/client.log")).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.ends_with(" stdout F client-started")),
        "the pod's log file has the line in CRI's format:\n{log}"
    );
    let info = inspect(c, &client);
    let pid = info["info"]["pid"].as_u64().expect("client pid");
    let adj = fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap_or_default();
    assert_eq!(adj.trim(), "500", "the container's oom_score_adj");
    // The sandbox asks for -998; restrict_oom_score_adj clamps it to containerd's own.
    let out = c.crictl(&["inspectp", "-o", "json", &pod.id]);
    let podinfo: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    let pause_pid = podinfo["info"]["pid"].as_u64().expect("pause pid");
    let read_adj = |pid: u64| {
        fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(
        read_adj(pause_pid),
        read_adj(u64::from(c.pid())),
        "the pause container's oom_score_adj, restricted to containerd's"
    );

    let out = c.crictl(&["stats", "-o", "json", "--id", &client]);
    assert!(out.success(), "crictl stats failed:\n{out}");
    let stats: Value = serde_json::from_str(&out.stdout).unwrap();
    let s = &stats["stats"][0];
    assert!(
        s["memory"]["workingSetBytes"]["value"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > 0),
        "memory stats: {s}"
    );
    assert!(
        s["cpu"]["usageCoreNanoSeconds"]["value"]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|v| v > 0),
        "cpu stats: {s}"
    );

    let out = c.crictl(&["update", "--memory", "134217728", &client]);
    assert!(out.success(), "crictl update failed:\n{out}");
    let pid = pid as u32;
    let limit = match crt_e2e::cgroup_mode() {
        crt_e2e::CgroupMode::V2 => {
            crt_e2e::cgroup::host_cgroup_dir(pid, "").map(|d| d.join("memory.max"))
        }
        crt_e2e::CgroupMode::V1 => {
            crt_e2e::cgroup::host_cgroup_dir(pid, "memory").map(|d| d.join("memory.limit_in_bytes"))
        }
    }
    .and_then(|f| fs::read_to_string(f).ok())
    .unwrap_or_default();
    assert_eq!(
        limit.trim(),
        "134217728",
        "crictl update reached the cgroup"
    );

    // Grace periods: TERM first; KILL only for the one that ignores it.
    let out = c.crictl(&["stop", "-t", "10", &client]);
    assert!(out.success(), "{out}");
    let info = inspect(c, &client);
    assert_eq!(
        info["status"]["exitCode"], 0,
        "client exited on TERM: {}",
        info["status"]
    );
    wait_logs(c, &client, "got-term");
    let out = c.crictl(&["stop", "-t", "2", &stubborn]);
    assert!(out.success(), "{out}");
    let info = inspect(c, &stubborn);
    assert_eq!(
        info["status"]["exitCode"], 137,
        "killed after the grace period: {}",
        info["status"]
    );

    let out = c.crictl(&["stopp", &pod.id]);
    assert!(out.success(), "{out}");
    let out = c.crictl(&["rmp", &pod.id]);
    assert!(out.success(), "{out}");
    let gone = crt_e2e::poll(crt_e2e::secs(30), || {
        c.shim_procs().is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "the shim exits with its pod: {:?}",
        c.shim_procs()
    );
    assert_no_leaks(c, &[&pod.id, &server, &client, &stubborn]);
}

/// shareProcessNamespace: the pod's containers share one pid namespace (the pause container's,
/// joined by path), so each sees the others' processes.
fn shared_pid_namespace(c: &Containerd) {
    let pod = run_pod(
        c,
        "sharedpid",
        json!({"security_context": {"namespace_options": {"pid": 0}}}),
    );
    let a = run_container(c, &pod, "a", "exec sleep 1001");
    let b = run_container(c, &pod, "b", "exec sleep 1002");
    let mut last = String::new();
    let seen = crt_e2e::poll(crt_e2e::secs(30), || {
        let out = c.crictl(&["exec", "-s", &b, "ps", "-o", "args"]);
        last = out.stdout.clone();
        (last.contains("sleep 1001") && last.contains("/pause")).then_some(())
    });
    assert!(
        seen.is_some(),
        "b sees a's process and the pause process:\n{last}"
    );
    let out = c.crictl(&["rmp", "-f", &pod.id]);
    assert!(out.success(), "{out}");
    assert_no_leaks(c, &[&pod.id, &a, &b]);
}

/// A handler's options table reaches crt as runtimeoptions.v1.Options: crt's own keys are
/// taken (LogLevel), an unknown one fails the pod with the key named, and leaves nothing.
fn runtime_options(c: &Containerd) {
    if c.is_runc() {
        return; // the extra handlers exist for crt only
    }
    let pod = try_run_pod(c, "withopts", json!({}), "crt-opts")
        .unwrap_or_else(|out| panic!("a pod with valid options:\n{out}"));
    let out = c.crictl(&["rmp", "-f", &pod.id]);
    assert!(out.success(), "{out}");
    let err = match try_run_pod(c, "badopts", json!({}), "crt-bad") {
        Ok(p) => panic!("options with an unknown key must fail the pod {}", p.id),
        Err(out) => out,
    };
    assert!(
        err.stderr.contains("unknown key \\\"Bogus\\\"")
            || err.stderr.contains("unknown key \"Bogus\""),
        "the error names the key:\n{err}"
    );
    let left = c.crictl(&["pods", "-q"]);
    for id in left.stdout.split_whitespace() {
        c.track_id(id);
        let _ = c.crictl(&["rmp", "-f", id]);
    }
    assert_no_leaks(c, &[&pod.id]);
}

/// `crictl exec -it` gets a terminal (its size follows the client's resize, which races the
/// command: ctr's terminal tests check sizes); `crictl attach -it` reaches a
/// tty container's shell, and its exit ends the container.
fn terminals(c: &Containerd) {
    use crt_e2e::tty::TtyCommand;
    let pod = run_pod(c, "tty", json!({}));
    let sh = run_container_with(
        c,
        &pod,
        "shell",
        json!({"command": ["sh"], "tty": true, "stdin": true}),
    );
    let t = TtyCommand::spawn(
        c.crictl_command(&["exec", "-it", &sh, "sh", "-c", "tty; echo exec-tty-ok"]),
        30,
        100,
    );
    let (status, out) = t.wait(crt_e2e::secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "crictl exec -it:\n{out}"
    );
    assert!(out.contains("/dev/pts/"), "a terminal:\n{out}");
    assert!(out.contains("exec-tty-ok"), "{out}");

    let mut t = TtyCommand::spawn(c.crictl_command(&["attach", "-it", &sh]), 24, 80);
    std::thread::sleep(std::time::Duration::from_millis(500));
    t.write("echo attached-$((40+2))\r");
    t.wait_for(
        "the attached shell's answer",
        |o| o.contains("attached-42"),
        crt_e2e::secs(30),
    );
    t.write("exit\r");
    let (_, out) = t.wait(crt_e2e::secs(60));
    let state = crt_e2e::poll(crt_e2e::secs(30), || {
        let info = inspect(c, &sh);
        (info["status"]["state"] == "CONTAINER_EXITED").then_some(())
    });
    assert!(
        state.is_some(),
        "exit in the attached shell ends the container:\n{out}"
    );
    let out = c.crictl(&["rmp", "-f", &pod.id]);
    assert!(out.success(), "{out}");
    assert_no_leaks(c, &[&pod.id, &sh]);
}

/// kubelet's restart: a container exits with its status, and its next attempt (same name,
/// attempt 1) is created and started in the same pod, on the same shim.
fn container_restart(c: &Containerd) {
    let pod = run_pod(c, "restart", json!({}));
    let first = run_container(c, &pod, "job", "echo attempt; exit 3");
    let exited = crt_e2e::poll(crt_e2e::secs(30), || {
        let info = inspect(c, &first);
        (info["status"]["state"] == "CONTAINER_EXITED").then_some(info)
    })
    .expect("the first attempt exits");
    assert_eq!(exited["status"]["exitCode"], 3, "{}", exited["status"]);
    let shim = c.shim_procs();
    assert_eq!(shim.len(), 1, "{shim:?}");
    let second = run_container_with(
        c,
        &pod,
        "job",
        json!({"metadata": {"name": "job", "attempt": 1},
               "command": ["sh", "-c", "echo attempt-2; sleep 1000"]}),
    );
    wait_logs(c, &second, "attempt-2");
    let now = c.shim_procs();
    assert_eq!(
        now.iter().map(|p| p.pid).collect::<Vec<_>>(),
        shim.iter().map(|p| p.pid).collect::<Vec<_>>(),
        "the same shim runs the next attempt"
    );
    let out = c.crictl(&["rmp", "-f", &pod.id]);
    assert!(out.success(), "{out}");
    assert_no_leaks(c, &[&pod.id, &first, &second]);
}

/// A pod in its own user namespace (Kubernetes' hostUsers: false; containerd 2.x): the pause
/// container makes it with the pod's mappings, the app container joins it by path, and root
/// inside is host uid 100000. containerd 1.6's CRI has no user namespace support.
fn user_namespace_pod(c: &Containerd) {
    if c.version == crt_e2e::Version::V16 {
        return;
    }
    let map = json!([{"host_id": 100000, "container_id": 0, "length": 65536}]);
    let pod = match try_run_pod(
        c,
        "userns",
        json!({"security_context": {"namespace_options": {
            "userns_options": {"mode": 0, "uids": map, "gids": map}}}}),
        CRI_HANDLER,
    ) {
        // containerd id-maps the image's layers: tmpfs (the cgroup v2 VM's /tmp) takes that
        // from Linux 6.3, and the error says so.
        Err(out) if !crt_e2e::util::idmap_supported(&c.dir) => {
            assert!(
                out.stderr.contains("cannot be id-mapped on this kernel"),
                "{out}"
            );
            let left = c.crictl(&["pods", "-q"]);
            for id in left.stdout.split_whitespace() {
                c.track_id(id);
                let _ = c.crictl(&["rmp", "-f", id]);
            }
            return;
        }
        Ok(p) => p,
        Err(out) => panic!("a user-namespaced pod:\n{out}\n{}", c.log_tail(40)),
    };
    // kubelet repeats the pod's user namespace in each container's config.
    let app = run_container_with(
        c,
        &pod,
        "app",
        json!({"command": ["sh", "-c", "cat /proc/self/uid_map; id -u; sleep 1000"],
               "linux": {"security_context": {"namespace_options": {
                   "userns_options": {"mode": 0, "uids": map, "gids": map}}}}}),
    );
    let logs = wait_logs(c, &app, "100000");
    let info = inspect(c, &app);
    let pid = info["info"]["pid"].as_u64().expect("app pid");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("100000")),
        "the app's root is host uid 100000:\n{status}\n{logs}"
    );
    let out = c.crictl(&["rmp", "-f", &pod.id]);
    assert!(out.success(), "{out}");
    assert_no_leaks(c, &[&pod.id, &app]);
}
