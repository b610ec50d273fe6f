//! containerd killed (SIGKILL) and started again while containers run: the shims and their
//! containers live on, output written meanwhile waits for a reader, an exit that happened
//! meanwhile is reported after the reconnect, and kill/delete work as before.

use std::thread;
use std::time::Duration;

use crt_e2e::cmd::Background;
use crt_e2e::{assert_no_leaks, poll, secs, shim_client, Containerd, Version};

crt_e2e::scenarios!(containerd_restart);

fn containerd_restart(c: &Containerd) {
    let alive = c.new_id("survivor");
    let pid = c.run_detached(
        &[],
        &alive,
        &[
            "sh",
            "-c",
            "echo before; sleep 2; echo during-downtime; exec sleep 1000",
        ],
    );
    let shim = c.shim_pid_for(&alive, pid).expect("shim of the survivor");
    let ending = c.new_id("ender");
    c.run_detached(&[], &ending, &["sh", "-c", "sleep 2; exit 7"]);

    c.kill_daemon();
    // Both containers write or exit while nobody listens to the shims.
    thread::sleep(Duration::from_secs(4));
    c.restart_daemon();

    let t = c.wait_task_status(&alive, "RUNNING");
    assert_eq!(t.pid, pid, "the same init after the restart");
    assert_eq!(
        c.shim_pid_for(&alive, pid),
        Some(shim),
        "the same shim serves the container after the restart"
    );
    // The exit while containerd was down, after the reconnect. containerd 1.6 shows the task
    // STOPPED and the shim still holds its status; 2.x asks the shim for its processes on load,
    // finds none and deletes the task itself, publishing the exit from the shim's Delete reply.
    match c.version {
        Version::V16 => {
            c.wait_task_status(&ending, "STOPPED");
            let sock = c
                .shim_socket(&ending)
                .expect("shim socket of the stopped task");
            let code = shim_client::wait(&sock, "default", &ending).expect("Task.Wait");
            assert_eq!(code, 7, "the exit status of the exit during the downtime");
            c.ctr(&["task", "delete", &ending]).assert_ok();
        }
        Version::V2 => {
            let gone = poll(secs(30), || c.task(&ending).is_none().then_some(()));
            assert!(
                gone.is_some(),
                "containerd 2.x cleans up the stopped task on load"
            );
            // ctr's stdio FIFOs: the client removes them in `ctr task delete`, never run here.
            c.remove_ctr_fifos(&ending);
        }
    }
    c.ctr(&["containers", "rm", &ending]).assert_ok();

    // Output written with no reader is still there for the next one, and the container was
    // not killed by SIGPIPE meanwhile.
    let mut attach = Background::spawn(c.ctr_command(&["task", "attach", &alive]));
    attach.wait_for_line("during-downtime", secs(30));
    // ctr task attach deletes the task once it exits.
    c.ctr(&["task", "kill", "-s", "SIGKILL", &alive])
        .assert_ok();
    let out = attach.wait(secs(30));
    assert_eq!(out.code, Some(137), "ctr task attach after SIGKILL:\n{out}");
    assert!(c.task(&alive).is_none(), "attach deleted the task");
    c.ctr(&["containers", "rm", &alive]).assert_ok();
    assert_no_leaks(c, &[&alive, &ending]);
}
