//! `ctr task exec` into a running container: output and exit codes, namespaces shared with the
//! init, errors, many execs at once, and execs ended by the init's death.

use crt_e2e::cmd::Background;
use crt_e2e::tty::TtyCommand;
use crt_e2e::{assert_no_leaks, secs, Containerd};

crt_e2e::scenarios!(
    exec_basic,
    exec_errors,
    exec_concurrent_20,
    exec_dies_with_init,
    exec_leaves_no_shim_fds,
    exec_waits_hold_no_threads
);

fn exec(c: &Containerd, id: &str, exec_id: &str, args: &[&str]) -> crt_e2e::cmd::Output {
    let mut a = vec!["task", "exec", "--exec-id", exec_id, id];
    a.extend_from_slice(args);
    c.ctr_timeout(&a, secs(60))
}

/// Output on both streams and the exit code come back; the exec is in every namespace of the
/// init (same ns links as pid 1), sees pid 1, and gets the process spec's env.
fn exec_basic(c: &Containerd) {
    let id = c.new_id("exec");
    c.run_detached(&[], &id, &["sleep", "1000"]);
    let script = "echo out; echo err >&2; \
                  for n in pid mnt net ipc uts; do \
                    [ \"$(readlink /proc/self/ns/$n)\" = \"$(readlink /proc/1/ns/$n)\" ] && echo same-$n; \
                  done; \
                  echo pid1=$(cat /proc/1/comm); echo path=$PATH; exit 3";
    let out = exec(c, &id, "e1", &["sh", "-c", script]);
    assert_eq!(out.code, Some(3), "exec exit code:\n{out}");
    assert!(out.stdout.lines().any(|l| l == "out"), "stdout:\n{out}");
    assert!(out.stderr.contains("err"), "stderr:\n{out}");
    for n in ["pid", "mnt", "net", "ipc", "uts"] {
        assert!(
            out.stdout.contains(&format!("same-{n}")),
            "exec must share the {n} namespace:\n{out}"
        );
    }
    assert!(
        out.stdout.contains("pid1=sleep"),
        "exec sees the init as pid 1:\n{out}"
    );
    assert!(
        out.stdout.contains("path=/"),
        "exec gets the spec's env:\n{out}"
    );
    // Exec ids are reusable once the previous one is gone.
    let again = exec(c, &id, "e1", &["true"]);
    assert_eq!(
        again.code,
        Some(0),
        "second exec with the same id:\n{again}"
    );
    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}

/// A missing binary is named in the error; exec into a stopped container is refused.
fn exec_errors(c: &Containerd) {
    let id = c.new_id("execerr");
    c.run_detached(&[], &id, &["sleep", "1000"]);
    let out = exec(c, &id, "bad", &["nosuchbinary"]);
    assert!(!out.success(), "exec of a missing binary must fail:\n{out}");
    assert!(
        out.stderr.contains("nosuchbinary") && out.stderr.contains("not found"),
        "the error must name the missing executable:\n{out}"
    );
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    c.wait_task_status(&id, "STOPPED");
    let out = exec(c, &id, "late", &["true"]);
    assert!(
        !out.success(),
        "exec into a stopped container must fail:\n{out}"
    );
    c.ctr(&["task", "delete", &id]).assert_ok();
    c.ctr(&["containers", "rm", &id]).assert_ok();
    assert_no_leaks(c, &[&id]);
}

/// 20 execs at once, each with its own output and exit code, none mixed.
fn exec_concurrent_20(c: &Containerd) {
    let id = c.new_id("exec20");
    c.run_detached(&[], &id, &["sleep", "1000"]);
    let runs: Vec<(usize, Background)> = (0..20)
        .map(|i| {
            let eid = format!("x{i}");
            let script = format!("for k in 1 2 3 4 5; do echo exec-{i}-line-$k; done; exit {i}");
            let cmd = c.ctr_command(&["task", "exec", "--exec-id", &eid, &id, "sh", "-c", &script]);
            (i, Background::spawn(cmd))
        })
        .collect();
    for (i, bg) in runs {
        let out = bg.wait(secs(120));
        assert_eq!(out.code, Some(i as i32), "exec {i} exit code:\n{out}");
        let want: Vec<String> = (1..=5).map(|k| format!("exec-{i}-line-{k}")).collect();
        let got: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            got, want,
            "exec {i} output (must be its own, complete, unmixed):\n{out}"
        );
    }
    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}

/// `task ps` names the exec; killing the init ends its execs: the exec's ctr returns 137, the
/// task can be deleted.
fn exec_dies_with_init(c: &Containerd) {
    let id = c.new_id("execdie");
    c.run_detached(&[], &id, &["sleep", "1000"]);
    let mut bg = Background::spawn(c.ctr_command(&[
        "task",
        "exec",
        "--exec-id",
        "long",
        &id,
        "sh",
        "-c",
        "echo READY; exec sleep 1000",
    ]));
    bg.wait_for_line("READY", secs(60));
    let ps = c.ctr(&["task", "ps", &id]);
    assert!(
        // ctr 1.6 prints the Go struct, ctr 2.x the protobuf text form.
        ps.success()
            && (ps.stdout.contains("ExecID:long") || ps.stdout.contains("exec_id:\"long\"")),
        "task ps must tag the exec's pid with its exec id:\n{ps}"
    );
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    let out = bg.wait(secs(60));
    assert_eq!(
        out.code,
        Some(137),
        "the exec must die with the init:\n{out}"
    );
    c.wait_task_status(&id, "STOPPED");
    c.ctr(&["task", "delete", &id]).assert_ok();
    c.ctr(&["containers", "rm", &id]).assert_ok();
    assert_no_leaks(c, &[&id]);
}

/// Entries of /proc/PID/`dir`: its fds (`fd`) or threads (`task`).
fn proc_count(pid: u32, dir: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{dir}"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    proc_count(pid, "fd")
}

/// A long-lived shim keeps no fd (fifo, pty, socket, pipe) of an exec once it is deleted, with
/// or without a terminal, and after a failed exec.
fn exec_leaves_no_shim_fds(c: &Containerd) {
    let id = c.new_id("execfds");
    let pid = c.run_detached(&[], &id, &["sleep", "1000"]);
    let shim = c.shim_pid_for(&id, pid).expect("shim of the container");
    // One round first: threads and connections the shim keeps for good exist after it.
    let round = |n: usize| {
        for k in 0..3 {
            let out = exec(
                c,
                &id,
                &format!("p{n}-{k}"),
                &["sh", "-c", "echo hi; echo err >&2"],
            );
            assert!(out.success(), "{out}");
        }
        let t = TtyCommand::spawn(
            c.ctr_command(&[
                "task",
                "exec",
                "-t",
                "--exec-id",
                &format!("t{n}"),
                &id,
                "tty",
            ]),
            24,
            80,
        );
        let (status, out) = t.wait(secs(60));
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{out}");
        let bad = exec(c, &id, &format!("bad{n}"), &["nosuchbinary"]);
        assert!(!bad.success());
    };
    round(0);
    let before = fd_count(shim);
    for n in 1..=3 {
        round(n);
    }
    let after = crt_e2e::poll(secs(10), || {
        let now = fd_count(shim);
        (now <= before).then_some(now)
    });
    assert!(
        after.is_some(),
        "shim {shim} holds {} fds after 12 more execs, {before} before",
        fd_count(shim)
    );
    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}

fn thread_count(pid: u32) -> usize {
    proc_count(pid, "task")
}

/// crt's shim serves every connection from one loop: idle it has at most 3 threads, and 10
/// execs blocked in Wait (containerd waits on each) add none. (runc's shim: 11 or more.)
fn exec_waits_hold_no_threads(c: &Containerd) {
    let id = c.new_id("execthr");
    let pid = c.run_detached(&[], &id, &["sleep", "1000"]);
    let shim = c.shim_pid_for(&id, pid).expect("shim of the container");
    let lean = |what: &str| {
        // A call's thread ends just after its reply: give it a moment.
        let n = crt_e2e::poll(secs(10), || {
            let n = thread_count(shim);
            (n <= 3).then_some(n)
        });
        if !c.is_runc() {
            assert!(
                n.is_some(),
                "shim {shim} has {} threads {what}",
                thread_count(shim)
            );
        }
    };
    lean("idle");
    let runs: Vec<Background> = (0..10)
        .map(|i| {
            let eid = format!("w{i}");
            Background::spawn(c.ctr_command(&[
                "task",
                "exec",
                "--exec-id",
                &eid,
                &id,
                "sh",
                "-c",
                "echo UP; exec sleep 30",
            ]))
        })
        .collect();
    let runs: Vec<Background> = runs
        .into_iter()
        .map(|mut bg| {
            bg.wait_for_line("UP", secs(60));
            bg
        })
        .collect();
    lean("with 10 execs waited on");
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    for bg in runs {
        let out = bg.wait(secs(60));
        assert_eq!(out.code, Some(137), "exec ends with the init:\n{out}");
    }
    c.wait_task_status(&id, "STOPPED");
    c.ctr(&["task", "delete", &id]).assert_ok();
    c.ctr(&["containers", "rm", &id]).assert_ok();
    assert_no_leaks(c, &[&id]);
}
