//! Lifecycle basics through `ctr`: output, exit codes, signals, detached tasks, exec errors.

use crt_e2e::{assert_no_leaks, procs, secs, Containerd};

crt_e2e::scenarios!(
    hello,
    exit_code,
    sigkill_137,
    detached_lifecycle,
    missing_executable,
    clean_signal_state
);

/// `echo hello` prints exactly "hello".
fn hello(c: &Containerd) {
    let id = c.new_id("hello");
    let out = c.run(&id, &["echo", "hello"]);
    assert!(out.success(), "ctr run failed:\n{out}");
    assert_eq!(out.stdout, "hello\n", "unexpected output:\n{out}");
    assert_no_leaks(c, &[&id]);
}

/// The container's exit code is ctr's exit code.
fn exit_code(c: &Containerd) {
    let id = c.new_id("exit7");
    let out = c.run(&id, &["sh", "-c", "exit 7"]);
    assert_eq!(out.code, Some(7), "ctr should exit 7:\n{out}");
    assert_no_leaks(c, &[&id]);
}

/// SIGKILL through `ctr task kill` gives 137, both to a foreground `ctr run` and (via
/// `ctr task delete`) to a detached task.
fn sigkill_137(c: &Containerd) {
    // foreground: ctr run's own exit status
    let id = c.new_id("kill137");
    let fg = c.spawn_run(&[], &id, &["sleep", "1000"]);
    c.wait_task_status(&id, "RUNNING");
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    let out = fg.wait(secs(60));
    assert_eq!(
        out.code,
        Some(137),
        "ctr run should exit 137 after SIGKILL:\n{out}"
    );

    // detached: STOPPED in `ctr task ls`, and `ctr task delete` reports 137
    let id2 = c.new_id("kill137d");
    c.run_detached(&[], &id2, &["sleep", "1000"]);
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id2]).assert_ok();
    c.wait_task_status(&id2, "STOPPED");
    let del = c.ctr(&["task", "delete", &id2]);
    assert!(del.success(), "ctr task delete failed:\n{del}");
    assert!(
        del.stderr.contains("exit code 137"),
        "ctr task delete should report exit code 137:\n{del}"
    );
    c.ctr(&["containers", "rm", &id2]).assert_ok();
    assert_no_leaks(c, &[&id, &id2]);
}

/// `run -d`: RUNNING with the right pid (task ps, host /proc, pid 1 in its namespace), then
/// kill + delete.
fn detached_lifecycle(c: &Containerd) {
    let id = c.new_id("detached");
    let pid = c.run_detached(&[], &id, &["sleep", "1000"]);
    assert!(pid > 0, "task ls shows pid 0 for a running task");

    let ps = c.ctr(&["task", "ps", &id]);
    assert!(ps.success(), "ctr task ps failed:\n{ps}");
    let pids: Vec<u32> = ps
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        pids.contains(&pid),
        "ctr task ps does not list the task pid {pid}:\n{ps}"
    );

    let p = procs::read_proc(pid)
        .unwrap_or_else(|| panic!("task pid {pid} does not exist on the host"));
    assert_eq!(
        p.args,
        vec!["sleep", "1000"],
        "host /proc/{pid}/cmdline is not the container's"
    );
    let nspids = procs::ns_pids(pid);
    assert_eq!(
        nspids.last(),
        Some(&1),
        "the task should be pid 1 in its pid namespace (NSpid: {nspids:?})"
    );
    assert!(
        c.shim_pid_for(&id, pid).is_some(),
        "no shim process of this instance serves {id}; shims: {:?}",
        c.shim_procs()
            .iter()
            .map(|p| (p.pid, p.cmdline()))
            .collect::<Vec<_>>()
    );

    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    let t = c.wait_task_status(&id, "STOPPED");
    assert_eq!(t.pid, pid, "a stopped task keeps its pid in task ls");
    c.ctr(&["task", "delete", &id]).assert_ok();
    assert!(c.task(&id).is_none(), "task {id} still listed after delete");
    c.ctr(&["containers", "rm", &id]).assert_ok();
    assert_no_leaks(c, &[&id]);
}

/// A missing executable fails `ctr run` with an error naming it (like runc:
/// `exec: "nosuchbinary": executable file not found in $PATH`), and leaves nothing.
fn missing_executable(c: &Containerd) {
    let id = c.new_id("noexec");
    let out = c.run(&id, &["nosuchbinary"]);
    assert!(!out.success(), "running a missing binary must fail:\n{out}");
    assert!(
        out.stderr
            .contains(r#"exec: "nosuchbinary": executable file not found in $PATH"#),
        "error should say the executable was not found:\n{out}"
    );
    assert!(
        !c.containers().contains(&id),
        "ctr run --rm left container {id} after the failed start"
    );
    assert_no_leaks(c, &[&id]);
}

/// The container's init and an exec start with no signal blocked or ignored: the shim blocks
/// some, Rust ignores SIGPIPE, whatever started containerd may have ignored more, and the
/// helper resets them all, those the C library keeps for itself (32-34) included.
fn clean_signal_state(c: &Containerd) {
    let id = c.new_id("sigs");
    c.run_detached(&[], &id, &["sleep", "1000"]);
    // The exec is grep itself, not a shell (which ignores some signals of its own).
    for (exec_id, status) in [("init", "/proc/1/status"), ("self", "/proc/self/status")] {
        let out = c.ctr_timeout(
            &[
                "task",
                "exec",
                "--exec-id",
                exec_id,
                &id,
                "grep",
                "-E",
                "^Sig(Blk|Ign):",
                status,
            ],
            secs(60),
        );
        assert!(out.success(), "exec failed:\n{out}");
        let lines: Vec<_> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "SigBlk and SigIgn of {status}:\n{out}");
        for l in lines {
            let mask = l.split_whitespace().nth(1).unwrap_or("?");
            assert_eq!(
                mask, "0000000000000000",
                "{status}: a signal left blocked or ignored: {l}\n{out}"
            );
        }
    }
    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}
