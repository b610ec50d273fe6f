//! A container that allocates past its memory limit is killed by the kernel's OOM killer:
//! containerd hears /tasks/oom before /tasks/exit (CRI reads OOMKilled off that order), and the
//! exit status is 137. A process killed while the container runs on is reported at once.

use crt_e2e::cmd::Background;
use crt_e2e::{assert_no_leaks, secs, Containerd};

crt_e2e::scenarios!(oom_before_exit, oom_of_a_child_while_running);

fn has(l: &str, id: &str, topic: &str) -> bool {
    l.contains(topic) && l.contains(&format!("\"{id}\""))
}

/// `ctr events`, once it listens: it subscribes asynchronously, so a probe container's events
/// prove it; a probe that ran before the subscription is followed by another. Returns the
/// stream and the probes' ids.
fn listen(c: &Containerd) -> (Background, Vec<String>) {
    let mut events = Background::spawn(c.ctr_command(&["events"]));
    let mut probes = Vec::new();
    for _ in 0..6 {
        let probe = c.new_id("oomprobe");
        let out = c.run(&probe, &["true"]);
        assert!(out.success(), "probe run failed:\n{out}");
        probes.push(probe.clone());
        let seen = events.try_wait_until(
            "probe's /tasks/delete",
            |l| has(l, &probe, "/tasks/delete"),
            secs(5),
        );
        if seen.is_some() {
            return (events, probes);
        }
    }
    panic!("ctr events showed no probe's /tasks/delete: {probes:?}");
}

fn oom_before_exit(c: &Containerd) {
    let (mut events, probes) = listen(c);

    let id = c.new_id("oom");
    // A doubling string: the shell's memory grows until the 32 MiB limit kills it.
    let out = c.run_with(
        &["--memory-limit", "33554432"],
        &id,
        &[
            "sh",
            "-c",
            "x=0123456789abcdef; while true; do x=$x$x; done",
        ],
    );
    assert_eq!(out.code, Some(137), "an OOM-killed init exits 137:\n{out}");
    let seen = events.wait_until("/tasks/delete", |l| has(l, &id, "/tasks/delete"), secs(60));
    let mine: Vec<&String> = seen.iter().filter(|l| l.contains(&id)).collect();
    let pos = |topic: &str| mine.iter().position(|l| l.contains(topic));
    let (oom, exit) = (pos("/tasks/oom"), pos("/tasks/exit"));
    assert!(oom.is_some(), "no /tasks/oom for {id}:\n{mine:#?}");
    assert!(
        oom < exit,
        "/tasks/oom must come before /tasks/exit:\n{mine:#?}"
    );
    drop(events);
    let mut ids: Vec<&str> = probes.iter().map(String::as_str).collect();
    ids.push(&id);
    assert_no_leaks(c, &ids);
}

/// A child of the init is OOM-killed and the container runs on: /tasks/oom arrives while the
/// task is RUNNING, with no exit of the task.
fn oom_of_a_child_while_running(c: &Containerd) {
    let (mut events, probes) = listen(c);
    let id = c.new_id("oomchild");
    c.run_detached(
        &["--memory-limit", "33554432"],
        &id,
        &[
            "sh",
            "-c",
            "sh -c 'x=0123456789abcdef; while true; do x=$x$x; done'; exec sleep 1000",
        ],
    );
    let seen = events.wait_until("/tasks/oom", |l| has(l, &id, "/tasks/oom"), secs(60));
    assert!(
        !seen.iter().any(|l| has(l, &id, "/tasks/exit")),
        "no exit of the task before its OOM event:\n{seen:#?}"
    );
    assert_eq!(
        c.task(&id).map(|t| t.status),
        Some("RUNNING".to_string()),
        "the container runs on after its child was killed"
    );
    c.kill_and_remove(&id);
    drop(events);
    let mut ids: Vec<&str> = probes.iter().map(String::as_str).collect();
    ids.push(&id);
    assert_no_leaks(c, &ids);
}
