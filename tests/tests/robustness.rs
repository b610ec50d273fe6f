//! Crashes, volume and bad input: nothing may be left behind.

use std::thread;

use crt_e2e::{
    assert_no_leaks, assert_no_leaks_with, poll, procs, secs, util, Containerd, LeakOptions,
};

crt_e2e::scenarios!(
    shim_sigkill,
    shim_sigkill_during_create,
    zygote_killed,
    sequential_20,
    concurrent_5,
    bad_config,
    mounts_let_go_at_exit,
    network_namespace_let_go_after_exit
);

/// `kill -9` of the shim daemon while its container runs: containerd notices, runs the shim's
/// `delete` to clean up, and the task can be deleted; no process, cgroup, mount or state remains.
fn shim_sigkill(c: &Containerd) {
    let id = c.new_id("shimkill");
    let pid = c.run_detached(&[], &id, &["sleep", "1000"]);
    let start = procs::start_time(pid).expect("task pid vanished");
    let shim = c.shim_pid_for(&id, pid).unwrap_or_else(|| {
        panic!(
            "no shim daemon found for {id} (init pid {pid}); shims: {:?}",
            c.shim_procs()
                .iter()
                .map(|p| (p.pid, p.cmdline()))
                .collect::<Vec<_>>()
        )
    });
    assert!(util::kill(shim, "KILL"), "kill -9 {shim} failed");

    // containerd cleans up the dead shim on its own; the task ends up gone or stopped
    let settled = poll(secs(30), || {
        let t = c.task(&id);
        t.is_none_or(|t| t.status != "RUNNING").then_some(())
    });
    assert!(
        settled.is_some(),
        "task {id} still RUNNING after its shim was killed; log tail:\n{}",
        c.log_tail(30)
    );
    if c.task(&id).is_some() {
        let del = c.ctr(&["task", "delete", "--force", &id]);
        assert!(
            del.success() || del.stderr.contains("not found"),
            "ctr task delete after the shim died:\n{del}"
        );
    }
    assert!(c.task(&id).is_none(), "task {id} still listed after delete");
    c.ctr(&["containers", "rm", &id]).assert_ok();
    // ctr's own stdio FIFOs: the client removes them in `ctr task delete`, which found no task
    c.remove_ctr_fifos(&id);
    let gone = poll(secs(20), || (!procs::alive(pid, start)).then_some(()));
    assert!(
        gone.is_some(),
        "container init {pid} survived its shim's death and the clean-up"
    );
    // The runc shim cannot remove its own socket when SIGKILLed, and neither its `delete` nor
    // containerd removes it; crt's `delete` must.
    assert_no_leaks_with(
        c,
        &[&id],
        LeakOptions {
            allow_stale_shim_sockets: c.is_runc(),
        },
    );
}

/// `kill -9` of the shim daemon in the middle of Create (its prestart hook running, the init
/// helper waiting before pivot_root): the helper, whose channel closed, exits by itself; the
/// run fails, and containerd's clean-up leaves nothing (no helper, cgroup, mount or state).
fn shim_sigkill_during_create(c: &Containerd) {
    let id = c.new_id("createkill");
    let flag = c.harness_dir().join(format!("{id}.prestart"));
    let mut spec = c.config_spec(&id, &["true"]);
    spec["hooks"] = crt_e2e::json!({
        "prestart": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("touch {}; sleep 3", flag.display())],
        }],
    });
    let run = c.spawn_config(&id, &spec);
    let hooked = poll(secs(60), || flag.exists().then_some(()));
    assert!(hooked.is_some(), "the prestart hook never ran");
    let shim = c
        .shim_procs()
        .into_iter()
        .find(|p| {
            p.flag("-id") == Some(id.as_str())
                && !p.args.iter().any(|a| a == "start" || a == "delete")
        })
        .map(|p| p.pid)
        .unwrap_or_else(|| panic!("no shim daemon for {id}"));
    assert!(util::kill(shim, "KILL"), "kill -9 {shim} failed");
    let out = run.wait(secs(60));
    assert!(
        !out.success(),
        "ctr run must fail once its shim died:\n{out}"
    );
    let _ = c.ctr(&["containers", "rm", &id]);
    c.remove_ctr_fifos(&id);
    if c.is_runc() {
        // runc's shim leaves the container's cgroups behind here (runc create dies with it, and
        // its `delete` finds no state): removed, so the rest of the check still runs.
        let _ = poll(secs(20), || {
            let dirs = crt_e2e::cgroup::find_cgroup_dirs(&[&id]);
            crt_e2e::cgroup::remove_cgroup_dirs(dirs);
            crt_e2e::cgroup::find_cgroup_dirs(&[&id])
                .is_empty()
                .then_some(())
        });
    }
    assert_no_leaks_with(
        c,
        &[&id],
        LeakOptions {
            allow_stale_shim_sockets: c.is_runc(),
        },
    );
}

/// crt's shim forks its helpers from a zygote it starts with itself. A zygote killed (OOM
/// killer, an admin) costs only time: the shim reaps it, the next exec's helper is exec'd as
/// before, and nothing is left. runc's shim has no zygote.
fn zygote_killed(c: &Containerd) {
    let id = c.new_id("zygote");
    let pid = c.run_detached(&[], &id, &["sleep", "1000"]);
    if !c.is_runc() {
        let shim = c.shim_pid_for(&id, pid).expect("no shim for the container");
        let zygote = procs::zygote_of(shim).unwrap_or_else(|| {
            panic!(
                "shim {shim} has no zygote (a child with argv[1] {})",
                procs::ZYGOTE_ARG
            )
        });
        let ex = c.ctr_timeout(&["task", "exec", "--exec-id", "z1", &id, "true"], secs(60));
        assert!(ex.success(), "exec through the zygote: {ex}");
        let start = procs::start_time(zygote).expect("zygote vanished");
        assert!(util::kill(zygote, "KILL"), "kill -9 {zygote} failed");
        let reaped = poll(secs(20), || {
            procs::start_time(zygote)
                .is_none_or(|s| s != start)
                .then_some(())
        });
        assert!(
            reaped.is_some(),
            "the shim did not reap its killed zygote {zygote}"
        );
    }
    let ex = c.ctr_timeout(
        &[
            "task",
            "exec",
            "--exec-id",
            "z2",
            &id,
            "sh",
            "-c",
            "echo after",
        ],
        secs(60),
    );
    assert!(
        ex.success() && ex.stdout.contains("after"),
        "exec without a zygote: {ex}"
    );
    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}

/// 20 containers in a row: each prints its number; afterwards nothing is left (no shim kept
/// around, no fd or state growth to observe).
fn sequential_20(c: &Containerd) {
    let mut ids = Vec::new();
    for i in 0..20 {
        let id = c.new_id("seq");
        let n = i.to_string();
        let out = c.run(&id, &["echo", &n]);
        assert!(out.success(), "run {i} failed:\n{out}");
        assert_eq!(
            out.stdout.trim(),
            n,
            "run {i} printed the wrong thing:\n{out}"
        );
        ids.push(id);
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_no_leaks(c, &refs);
    let shims = c.shim_procs();
    assert!(
        shims.is_empty(),
        "shim processes left after 20 runs: {:?}",
        shims
            .iter()
            .map(|p| (p.pid, p.cmdline(), procs::fd_count(p.pid)))
            .collect::<Vec<_>>()
    );
}

/// 5 `ctr run --rm` at once, then 5 detached containers RUNNING at the same time with distinct
/// pids, killed and deleted concurrently; nothing is left.
fn concurrent_5(c: &Containerd) {
    let ids: Vec<String> = (0..5).map(|_| c.new_id("par")).collect();
    thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                s.spawn(move || {
                    let n = format!("par-{i}");
                    let out = c.run(id, &["echo", &n]);
                    assert!(out.success(), "concurrent run {i} failed:\n{out}");
                    assert_eq!(out.stdout.trim(), n, "concurrent run {i}:\n{out}");
                })
            })
            .collect();
        for h in handles {
            h.join().expect("concurrent run panicked");
        }
    });

    let dids: Vec<String> = (0..5).map(|_| c.new_id("pard")).collect();
    let pids: Vec<u32> = thread::scope(|s| {
        let handles: Vec<_> = dids
            .iter()
            .map(|id| s.spawn(move || c.run_detached(&[], id, &["sleep", "1000"])))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("run -d panicked"))
            .collect()
    });
    let tasks = c.tasks();
    for (id, pid) in dids.iter().zip(&pids) {
        let t = tasks
            .iter()
            .find(|t| &t.id == id)
            .unwrap_or_else(|| panic!("{id} not in task ls: {tasks:?}"));
        assert_eq!((t.status.as_str(), t.pid), ("RUNNING", *pid), "task {id}");
    }
    let mut uniq = pids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 5, "detached tasks share pids: {pids:?}");
    thread::scope(|s| {
        for id in &dids {
            s.spawn(move || {
                c.ctr(&["task", "kill", "-s", "SIGKILL", id]).assert_ok();
                c.wait_task_status(id, "STOPPED");
                c.ctr(&["task", "delete", id]).assert_ok();
                c.ctr(&["containers", "rm", id]).assert_ok();
            });
        }
    });
    let all: Vec<&str> = ids.iter().chain(&dids).map(String::as_str).collect();
    assert_no_leaks(c, &all);
}

/// Invalid specs through `ctr run --config`: no `process.args`, and a root path that does not
/// exist. ctr fails with an error naming the problem; nothing is left.
fn bad_config(c: &Containerd) {
    let id = c.new_id("noargs");
    let mut spec = c.config_spec(&id, &["true"]);
    spec["process"].as_object_mut().unwrap().remove("args");
    let out = c.run_config(&id, &spec);
    assert!(
        !out.success(),
        "a spec without process.args must be rejected:\n{out}"
    );
    assert!(
        out.stderr.contains("args"),
        "the error should name process.args:\n{out}"
    );

    let id2 = c.new_id("badroot");
    let mut spec2 = c.config_spec(&id2, &["true"]);
    spec2["root"]["path"] = "nonexistent-rootfs".into();
    let out2 = c.run_config(&id2, &spec2);
    assert!(
        !out2.success(),
        "a spec with a missing root must be rejected:\n{out2}"
    );
    assert!(
        out2.stderr.contains("nonexistent-rootfs"),
        "the error should name the missing root path:\n{out2}"
    );
    let left = c.containers();
    assert!(
        !left.contains(&id) && !left.contains(&id2),
        "ctr run --rm left containers after failed creates: {left:?}"
    );
    // An AppArmor profile on a host without AppArmor: confinement that cannot be had is an
    // error (as under runc), never a silently unconfined container.
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.starts_with('Y'));
    let id3 = c.new_id("apparmor");
    if !apparmor {
        let mut spec3 = c.config_spec(&id3, &["true"]);
        spec3["process"]["apparmorProfile"] = "crt-test-profile".into();
        let out3 = c.run_config(&id3, &spec3);
        assert!(
            !out3.success(),
            "an unavailable AppArmor profile must fail:\n{out3}"
        );
        assert!(
            out3.stderr.contains("process.apparmorProfile")
                && out3.stderr.contains("does not run AppArmor"),
            "the error should name the field and the missing module:\n{out3}"
        );
    }
    assert_no_leaks(c, &[&id, &id2, &id3]);
}

/// `readlink /proc/PID/ns/KIND`, e.g. `mnt:[4026532712]`.
fn ns_of(pid: u32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("namespace {kind} of {pid}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// Runs `sleep` as task `name`, checks that its shim holds the init's namespace `kind` while
/// it runs and that nothing holds it once the task stopped, before any Delete. Returns the
/// task's id, stopped, and the namespace.
fn held_while_running_only(c: &Containerd, name: &str, kind: &str) -> (String, String) {
    let id = c.new_id(name);
    let pid = c.run_detached(&[], &id, &["sleep", "1000"]);
    let ns = ns_of(pid, kind);
    let shim = c
        .shim_pid_for(&id, pid)
        .expect("no shim daemon for the task");
    let holders = procs::ns_holders(&ns);
    assert!(
        holders.contains(&shim),
        "the shim {shim} does not hold {ns} of the running task (holders: {holders:?})"
    );
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    c.wait_task_status(&id, "STOPPED");
    let gone = poll(secs(5), || procs::ns_holders(&ns).is_empty().then_some(()));
    assert!(
        gone.is_some(),
        "{ns} is still held by {:?} after the task stopped, with no Delete",
        procs::ns_holders(&ns)
    );
    (id, ns)
}

/// The shim holds a running container's mount namespace, so that the kernel's tear-down of it
/// (an RCU grace period) is not part of the init's exit; once the init exited, and before any
/// Delete, nothing holds it any more: the container's filesystems (its volumes) are not kept
/// mounted behind a stopped task, nor once a Delete has answered.
fn mounts_let_go_at_exit(c: &Containerd) {
    let (id, _) = held_while_running_only(c, "mntgo", "mnt");
    c.ctr(&["task", "delete", &id]).assert_ok();
    c.ctr(&["containers", "rm", &id]).assert_ok();
    // Killed and deleted in one go (`delete --force`), the exit and the Delete come together:
    // when the Delete answers, the teardown begun at the exit is done (containerd unmounts
    // the rootfs next, and a block-device snapshotter removes the device then).
    let id2 = c.new_id("mntgo2");
    let ns2 = ns_of(c.run_detached(&[], &id2, &["sleep", "1000"]), "mnt");
    c.ctr(&["task", "delete", "--force", &id2]).assert_ok();
    let holders = procs::ns_holders(&ns2);
    assert!(
        holders.is_empty(),
        "{ns2} is still held by {holders:?} when the Delete has answered"
    );
    c.ctr(&["containers", "rm", &id2]).assert_ok();
    assert_no_leaks(c, &[&id, &id2]);
}

/// The shim holds a container's own network namespace too, and past its init's exit, so that
/// the kernel's tear-down of it (`cleanup_net`, on a kworker) starts once the Delete has
/// answered instead of beside the exit's report and the Delete (runtime/src/ns_hold.rs). A
/// stopped task that is not deleted does not keep it: it goes within moments of the exit.
fn network_namespace_let_go_after_exit(c: &Containerd) {
    let (id, ns) = held_while_running_only(c, "netgo", "net");
    let host = ns_of(std::process::id(), "net");
    assert_ne!(ns, host, "the task had a network namespace of its own");
    c.ctr(&["task", "delete", &id]).assert_ok();
    c.ctr(&["containers", "rm", &id]).assert_ok();
    assert_no_leaks(c, &[&id]);
}
