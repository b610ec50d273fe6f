//! Resource limits land in the container's cgroup: seen from the host (the cgroup of the task's
//! pid) and from inside (with a cgroup mount at /sys/fs/cgroup). v1 and v2 hosts both.

use std::fs;

use crt_e2e::cgroup::{self, CgroupMode};
use crt_e2e::util::has_component;
use crt_e2e::{assert_no_leaks, cgroup_mode, json, secs, shim_client, Containerd};

crt_e2e::scenarios!(
    memory_limit,
    pids_limit,
    update_limits,
    metrics,
    systemd_cgroups_path,
    every_hierarchy
);

const MEMORY_LIMIT: u64 = 64 * 1024 * 1024;
const PIDS_LIMIT: u64 = 8;

/// Option for ctr's `--mount`: the cgroup filesystem at /sys/fs/cgroup (ctr's default spec has
/// none; CRI adds the same mount).
const CGROUP_MOUNT: &str =
    "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:noexec:nodev";

/// Shell snippet printing `<name>=<content of the container's own cgroup file>` from inside.
/// v1: the runtime mounts the container's cgroup at /sys/fs/cgroup/<controller>; v2: the path
/// from /proc/self/cgroup, made relative to the root of the /sys/fs/cgroup mount (mountinfo's
/// 4th field), as cgroup-aware programs resolve it. That holds whether the runtime mounts the
/// whole cgroup2 hierarchy (runc without a cgroup namespace: root "/") or binds the container's
/// own leaf (crt: root "/<ns>/<id>").
fn inside_read(controller: &str, v1_file: &str, v2_file: &str) -> String {
    match cgroup_mode() {
        CgroupMode::V1 => {
            format!("echo {controller}=$(cat /sys/fs/cgroup/{controller}/{v1_file});")
        }
        CgroupMode::V2 => format!(
            "cg=$(sed -n 's/^0:://p' /proc/self/cgroup); \
             root=$(awk '$5 == \"/sys/fs/cgroup\" {{print $4}}' /proc/self/mountinfo | tail -n1); \
             [ \"$root\" = / ] && root=; \
             echo {controller}=$(cat /sys/fs/cgroup${{cg#$root}}/{v2_file});"
        ),
    }
}

/// Host file of the task's cgroup.
#[track_caller]
fn host_read(pid: u32, controller: &str, v1_file: &str, v2_file: &str, id: &str) -> String {
    let dir = cgroup::host_cgroup_dir(pid, controller).unwrap_or_else(|| {
        panic!(
            "no {controller} cgroup for task pid {pid}: {:?}",
            fs::read_to_string(format!("/proc/{pid}/cgroup"))
        )
    });
    assert!(
        has_component(&dir.to_string_lossy(), id),
        "the task's cgroup {} is not named after the container {id}",
        dir.display()
    );
    let file = dir.join(match cgroup_mode() {
        CgroupMode::V1 => v1_file,
        CgroupMode::V2 => v2_file,
    });
    fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
        .trim()
        .to_string()
}

/// `--memory-limit` shows up as memory.limit_in_bytes (v1) / memory.max (v2), on the host in the
/// task's cgroup and inside through the cgroup mount.
fn memory_limit(c: &Containerd) {
    let id = c.new_id("memlimit");
    let limit = MEMORY_LIMIT.to_string();
    let script = format!(
        "{} echo cgroup=$(cat /proc/self/cgroup | tr '\\n' ' '); echo READY; exec sleep 1000",
        inside_read("memory", "memory.limit_in_bytes", "memory.max")
    );
    let mut fg = c.spawn_run(
        &["--memory-limit", &limit, "--mount", CGROUP_MOUNT],
        &id,
        &["sh", "-c", &script],
    );
    let lines = fg.wait_for_line("READY", secs(60));
    let task = c.wait_task_status(&id, "RUNNING");
    let host = host_read(
        task.pid,
        "memory",
        "memory.limit_in_bytes",
        "memory.max",
        &id,
    );
    assert_eq!(host, limit, "host cgroup memory limit of task {}", task.pid);
    let inside = lines
        .iter()
        .find_map(|l| l.strip_prefix("memory="))
        .unwrap_or("");
    assert_eq!(
        inside, limit,
        "memory limit seen inside; container printed {lines:?}"
    );

    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    let out = fg.wait(secs(60));
    assert_eq!(out.code, Some(137), "ctr run after SIGKILL:\n{out}");
    assert_no_leaks(c, &[&id]);
}

/// A pids limit (spec `linux.resources.pids.limit`, set through `ctr run --config`; ctr has no
/// flag) shows up as pids.max on the host and inside, and stops forks beyond it.
fn pids_limit(c: &Containerd) {
    let id = c.new_id("pidslimit");
    // fork until the limit bites (busybox sh reports "can't fork: Resource temporarily
    // unavailable"), then report and stay alive for the host-side check
    let script = format!(
        "{} (for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 1000 & done) 2>&1; echo READY; exec sleep 1000",
        inside_read("pids", "pids.max", "pids.max")
    );
    let mut spec = c.config_spec(&id, &["sh", "-c", &script]);
    spec["linux"]["resources"]["pids"] = json!({ "limit": PIDS_LIMIT });
    spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
        "options": ["ro", "nosuid", "noexec", "nodev"]
    }));
    let mut fg = c.spawn_config(&id, &spec);
    let lines = fg.wait_for_line("READY", secs(60));
    let task = c.wait_task_status(&id, "RUNNING");
    let host = host_read(task.pid, "pids", "pids.max", "pids.max", &id);
    assert_eq!(
        host,
        PIDS_LIMIT.to_string(),
        "host cgroup pids.max of task {}",
        task.pid
    );
    let inside = lines
        .iter()
        .find_map(|l| l.strip_prefix("pids="))
        .unwrap_or("");
    assert_eq!(
        inside,
        PIDS_LIMIT.to_string(),
        "pids.max seen inside; container printed {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Resource temporarily unavailable")),
        "forking past the pids limit should fail with EAGAIN; container printed {lines:?}"
    );
    let current: u64 = host_read(task.pid, "pids", "pids.current", "pids.current", &id)
        .parse()
        .unwrap();
    assert!(
        current <= PIDS_LIMIT,
        "pids.current {current} exceeds the limit {PIDS_LIMIT}"
    );

    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    let out = fg.wait(secs(60));
    assert_eq!(out.code, Some(137), "ctr run after SIGKILL:\n{out}");
    assert_no_leaks(c, &[&id]);
}

/// Task.Update (CRI's UpdateContainerResources; ctr has no command for it) changes the running
/// task's limits in place; a stopped task refuses updates; device rules are refused.
fn update_limits(c: &Containerd) {
    let id = c.new_id("update");
    let pid = c.run_detached(
        &["--memory-limit", &MEMORY_LIMIT.to_string()],
        &id,
        &["sleep", "1000"],
    );
    let sock = c.shim_socket(&id).expect("the task's shim socket");
    let update = |r: serde_json::Value| shim_client::update(&sock, "default", &id, &r);
    let mem = || host_read(pid, "memory", "memory.limit_in_bytes", "memory.max", &id);
    assert_eq!(mem(), MEMORY_LIMIT.to_string());
    let bigger = 2 * MEMORY_LIMIT;
    update(json!({"memory": {"limit": bigger}, "pids": {"limit": 42},
                  "cpu": {"quota": 25000, "period": 100000}}))
    .expect("update");
    assert_eq!(mem(), bigger.to_string(), "memory limit after update");
    assert_eq!(host_read(pid, "pids", "pids.max", "pids.max", &id), "42");
    match cgroup_mode() {
        CgroupMode::V1 => assert_eq!(host_read(pid, "cpu", "cpu.cfs_quota_us", "", &id), "25000"),
        CgroupMode::V2 => assert_eq!(host_read(pid, "cpu", "", "cpu.max", &id), "25000 100000"),
    }
    let dev = update(json!({"devices": [{"allow": true, "access": "rwm"}]}));
    assert!(
        dev.as_ref().is_err_and(|e| e.contains("devices")),
        "a device-rule update must be refused by name: {dev:?}"
    );

    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    c.wait_task_status(&id, "STOPPED");
    let late = update(json!({"pids": {"limit": 7}}));
    assert!(late.is_err(), "update of a stopped task must fail");
    c.ctr(&["task", "delete", &id]).assert_ok();
    c.ctr(&["containers", "rm", &id]).assert_ok();
    assert_no_leaks(c, &[&id]);
}

/// `ctr task metrics` decodes the shim's Stats (cgroups v1 or v2 Metrics): the task's real
/// process count, non-zero memory and cpu usage, the memory limit it was given.
fn metrics(c: &Containerd) {
    let id = c.new_id("metrics");
    c.run_detached(
        &["--memory-limit", &MEMORY_LIMIT.to_string()],
        &id,
        &["sh", "-c", "sleep 1000 & sleep 1000"],
    );
    // Two processes: wait until the shell has started its background sleep.
    let mut last = String::new();
    let ok = crt_e2e::util::poll(secs(30), || {
        let out = c.ctr(&["task", "metrics", "--format", "json", &id]);
        last = out.to_string();
        let Ok(m) = serde_json::from_str::<serde_json::Value>(&out.stdout) else {
            return None;
        };
        (m["pids"]["current"] == 2).then_some(m)
    });
    let m = ok.unwrap_or_else(|| panic!("metrics never showed 2 pids:\n{last}"));
    let (usage, limit, cpu) = match cgroup_mode() {
        CgroupMode::V1 => (
            &m["memory"]["usage"]["usage"],
            &m["memory"]["usage"]["limit"],
            &m["cpu"]["usage"]["total"],
        ),
        CgroupMode::V2 => (
            &m["memory"]["usage"],
            &m["memory"]["usage_limit"],
            &m["cpu"]["usage_usec"],
        ),
    };
    assert!(
        usage.as_u64().is_some_and(|u| u > 0),
        "memory usage must be non-zero: {m:#}"
    );
    assert_eq!(
        limit.as_u64(),
        Some(MEMORY_LIMIT),
        "memory limit in metrics: {m:#}"
    );
    assert!(
        cpu.as_u64().is_some_and(|u| u > 0),
        "cpu usage must be non-zero: {m:#}"
    );
    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}

/// A systemd-form cgroupsPath ("slice:prefix:name", what CRI's systemd driver writes) lands
/// where systemd would put the unit: the slice expanded into its parents, then
/// "<prefix>-<name>.scope"; limits apply there, and delete removes the scope (the slices, as
/// systemd's, stay: the test removes them).
fn systemd_cgroups_path(c: &Containerd) {
    let id = c.new_id("sdpath");
    let slice = format!("crte2e-{}.slice", c.suffix);
    let mut spec = c.config_spec(&id, &["sh", "-c", "cat /proc/self/cgroup; sleep 1000"]);
    spec["linux"]["cgroupsPath"] = format!("{slice}:crt:{id}").into();
    spec["linux"]["resources"]["pids"] = json!({"limit": 33});
    let mut bg = c.spawn_config(&id, &spec);
    let want = format!("/crte2e.slice/{slice}/crt-{id}.scope");
    bg.wait_until("the container's cgroup", |l| l.ends_with(&want), secs(60));
    let pid = c.wait_task_status(&id, "RUNNING").pid;
    let dir = cgroup::host_cgroup_dir(pid, "pids").expect("pids cgroup");
    assert!(
        dir.ends_with(want.trim_start_matches('/')),
        "{}",
        dir.display()
    );
    let pids_max = dir.join("pids.max");
    assert_eq!(fs::read_to_string(&pids_max).unwrap().trim(), "33");
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    let _ = bg.wait(secs(60));
    assert!(!dir.exists(), "delete removes the scope {}", dir.display());
    let parents = cgroup::find_cgroup_dirs(&[&slice]);
    assert!(!parents.is_empty(), "the slices were made");
    cgroup::remove_cgroup_dirs(parents);
    for d in cgroup::find_cgroup_dirs(&["crte2e.slice"]) {
        let _ = fs::remove_dir(d);
    }
    assert_no_leaks(c, &[&id]);
}

/// The cgroup lines of /proc/<pid>/cgroup text that the container must be in: every v1
/// hierarchy (the hybrid host's controller-less unified line is not crt's), or v2's one line.
fn managed_lines(text: &str) -> Vec<&str> {
    let v1 = cgroup_mode() == CgroupMode::V1;
    text.lines()
        .filter(|l| !v1 || !l.starts_with("0::"))
        .collect()
}

/// The init, an exec and the exec's child are each in the container's cgroup in every
/// hierarchy (on v1 the helpers move themselves in, `cgroups::join_self`), and a cgroup
/// namespace is rooted at that cgroup: inside it every line reads "/".
fn every_hierarchy(c: &Containerd) {
    let id = c.new_id("everycg");
    c.run_detached(&[], &id, &["sleep", "1000"]);
    let pid = c.wait_task_status(&id, "RUNNING").pid;
    let init = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let lines = managed_lines(&init);
    assert!(!lines.is_empty(), "{init}");
    for l in &lines {
        assert!(
            has_component(l.rsplit(':').next().unwrap_or(""), &id),
            "the init (pid {pid}) is outside the container's cgroup in {l:?}:\n{init}"
        );
    }
    let out = c.ctr_timeout(
        &[
            "task",
            "exec",
            "--exec-id",
            "cg",
            &id,
            "sh",
            "-c",
            "cat /proc/self/cgroup; echo child; sh -c 'cat /proc/self/cgroup'",
        ],
        secs(60),
    );
    assert!(out.success(), "{out}");
    let (exec, child) = out.stdout.split_once("child\n").unwrap_or_default();
    assert_eq!(managed_lines(exec), lines, "the exec's cgroups:\n{out}");
    assert_eq!(
        managed_lines(child),
        lines,
        "the exec's child's cgroups:\n{out}"
    );
    c.kill_and_remove(&id);

    let id2 = c.new_id("cgns");
    let mut spec = c.config_spec(&id2, &["cat", "/proc/self/cgroup"]);
    let ns = spec["linux"]["namespaces"].as_array_mut().unwrap();
    // ctr's default spec has one on a v2 host already.
    if !ns.iter().any(|n| n["type"] == "cgroup") {
        ns.push(json!({"type": "cgroup"}));
    }
    let out = c.run_config(&id2, &spec);
    assert!(out.success(), "{out}");
    let inside = managed_lines(&out.stdout);
    assert_eq!(inside.len(), lines.len(), "{out}");
    for l in inside {
        assert!(
            l.ends_with(":/"),
            "the cgroup namespace's root is the container's cgroup: {l:?}\n{out}"
        );
    }
    assert_no_leaks(c, &[&id, &id2]);
}
