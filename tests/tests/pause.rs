//! `ctr task pause/resume`: the frozen container does not advance, State says PAUSED, exec is
//! refused while paused, resume lets it go on, and a paused container can still be killed.
//! Checkpoint (which pauses first) is a clear "not supported" and leaves the task running.

use std::time::Duration;

use crt_e2e::{assert_no_leaks, secs, Containerd};

crt_e2e::scenarios!(pause_resume, kill_paused, checkpoint_unsupported);

/// Renamed into place: a reader never sees the file between truncation and write (a loaded
/// host made that window wide enough to read "").
const COUNTER: &str =
    "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done";

fn count(c: &Containerd, id: &str) -> u64 {
    let f = c.bundle_dir(id).join("rootfs/tmp/count");
    let s = std::fs::read_to_string(&f).unwrap_or_default();
    s.trim().parse().unwrap_or(0)
}

fn settle() {
    std::thread::sleep(Duration::from_millis(
        if std::env::var_os("V2VM").is_some() {
            3000
        } else {
            400
        },
    ));
}

fn pause_resume(c: &Containerd) {
    let id = c.new_id("pause");
    c.run_detached(&[], &id, &["sh", "-c", COUNTER]);
    settle();
    assert!(count(c, &id) > 0, "the counter must run before the pause");
    c.ctr(&["task", "pause", &id]).assert_ok();
    c.wait_task_status(&id, "PAUSED");
    let frozen = count(c, &id);
    settle();
    assert_eq!(count(c, &id), frozen, "a paused container must not advance");
    let ex = c.ctr_timeout(&["task", "exec", "--exec-id", "p1", &id, "true"], secs(60));
    assert!(
        !ex.success(),
        "exec into a paused container must be refused:\n{ex}"
    );
    c.ctr(&["task", "resume", &id]).assert_ok();
    c.wait_task_status(&id, "RUNNING");
    settle();
    assert!(
        count(c, &id) > frozen,
        "a resumed container must advance again"
    );
    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}

fn kill_paused(c: &Containerd) {
    let id = c.new_id("killpaused");
    c.run_detached(&[], &id, &["sleep", "1000"]);
    c.ctr(&["task", "pause", &id]).assert_ok();
    c.wait_task_status(&id, "PAUSED");
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    c.wait_task_status(&id, "STOPPED");
    let del = c.ctr(&["task", "delete", &id]);
    assert!(
        del.success() && del.stderr.contains("137"),
        "delete reports 137:\n{del}"
    );
    c.ctr(&["containers", "rm", &id]).assert_ok();
    assert_no_leaks(c, &[&id]);
}

fn checkpoint_unsupported(c: &Containerd) {
    let id = c.new_id("ckpt");
    c.run_detached(&[], &id, &["sh", "-c", COUNTER]);
    let out = c.ctr(&["task", "checkpoint", &id]);
    assert!(!out.success(), "checkpoint must fail:\n{out}");
    assert!(
        out.stderr.contains("checkpoint is not supported"),
        "the error must say checkpoint is not supported:\n{out}"
    );
    // The client paused the task for the checkpoint and resumes it after the failure.
    c.wait_task_status(&id, "RUNNING");
    let before = count(c, &id);
    settle();
    assert!(
        count(c, &id) > before,
        "the container runs on after the failed checkpoint"
    );
    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}
