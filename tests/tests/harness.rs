//! Self-test of the harness: the leak check must see a container that is still there, so a green
//! leak check elsewhere means something.

use crt_e2e::{assert_no_leaks, find_leaks, Containerd, LeakOptions};

crt_e2e::scenarios!(leak_check_sees_running_container);

fn leak_check_sees_running_container(c: &Containerd) {
    let id = c.new_id("leaky");
    c.run_detached(&[], &id, &["sleep", "1000"]);
    let leaks = find_leaks(c, &[&id], LeakOptions::default());
    let all = leaks.join("\n");
    for (what, needle) in [
        ("the task", format!("task {id} still listed")),
        ("the container", format!("container {id} still listed")),
        ("the snapshot", format!("snapshot {id} still exists")),
        ("the container's process", "is still in cgroup".to_string()),
        ("the shim process", format!("mentions {}", c.dir.display())),
        ("the cgroup", format!("/{id} still exists")),
        ("the rootfs mount", "mount still present".to_string()),
        (
            "the bundle",
            format!("{} still exists", c.bundle_dir(&id).display()),
        ),
        ("ctr's FIFOs", format!("{id}-stdout still exists")),
    ] {
        assert!(
            all.contains(&needle),
            "leak check missed {what} (looked for {needle:?}):\n{all}"
        );
    }
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    c.wait_task_status(&id, "STOPPED");
    c.ctr(&["task", "delete", &id]).assert_ok();
    c.ctr(&["containers", "rm", &id]).assert_ok();
    assert_no_leaks(c, &[&id]);
}
