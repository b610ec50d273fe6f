//! A container that allocates past its memory limit is killed by the kernel's OOM killer:
//! containerd hears /tasks/oom before /tasks/exit (CRI reads OOMKilled off that order), and the
//! exit status is 137.

use crt_e2e::cmd::Background;
use crt_e2e::{assert_no_leaks, secs, Containerd};

crt_e2e::scenarios!(oom_before_exit);

fn oom_before_exit(c: &Containerd) {
    let mut events = Background::spawn(c.ctr_command(&["events"]));
    // `ctr events` subscribes asynchronously: a first container's events prove it is listening.
    let probe = c.new_id("oomprobe");
    let out = c.run(&probe, &["true"]);
    assert!(out.success(), "probe run failed:\n{out}");
    let has =
        |l: &str, id: &str, topic: &str| l.contains(topic) && l.contains(&format!("\"{id}\""));
    events.wait_until(
        "probe's /tasks/delete",
        |l| has(l, &probe, "/tasks/delete"),
        secs(30),
    );

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
    assert_no_leaks(c, &[&probe, &id]);
}
