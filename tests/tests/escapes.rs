//! Reproducers of known container escapes, each of which must fail against crt.
//! CVE-2024-21626 (runc "Leaky Vessels"): a host fd leaked into the container's init or an exec
//! let `cwd: /proc/self/fd/N` start the process with a working directory on the host.
//! CVE-2019-5736: a container process opened the runtime's binary through /proc/PID/exe of the
//! runtime's process in the container and overwrote it on the host.

use crt_e2e::{assert_no_leaks, secs, Containerd};

crt_e2e::scenarios!(
    no_fd_leaks_into_the_container,
    cwd_through_a_leaked_fd,
    runtime_binary_cannot_be_written,
    masking_cannot_be_undone,
    mount_destination_symlink_stays_inside
);

/// The shell's own fds, as numbers (listed by a child, so the listing adds none; no pipeline,
/// whose pipe the shell holds for a moment; not last, or the shell would exec ls itself).
const FDS: &str = "ls /proc/$$/fd; true";

fn fds(out: &str) -> String {
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The init and an exec hold fds 0, 1 and 2 only: nothing of the shim's or the helper's.
fn no_fd_leaks_into_the_container(c: &Containerd) {
    let id = c.new_id("fds");
    let out = c.run(&id, &["sh", "-c", FDS]);
    assert!(out.success(), "{out}");
    assert_eq!(fds(&out.stdout), "0 1 2", "the init's fds:\n{out}");
    assert_no_leaks(c, &[&id]);

    let id = c.new_id("execfds");
    c.run_detached(&[], &id, &["sleep", "1000"]);
    let ex = c.ctr_timeout(
        &["task", "exec", "--exec-id", "f", &id, "sh", "-c", FDS],
        secs(60),
    );
    assert!(ex.success(), "{ex}");
    assert_eq!(fds(&ex.stdout), "0 1 2", "an exec's fds:\n{ex}");
    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}

/// `cwd: /proc/self/fd/N` for every fd a runtime might hold while it sets up: refused, never a
/// process started in a directory outside the container.
fn cwd_through_a_leaked_fd(c: &Containerd) {
    for n in 3..=8 {
        let id = c.new_id("leakycwd");
        let mut spec = c.config_spec(&id, &["sh", "-c", "pwd; ls /"]);
        spec["process"]["cwd"] = format!("/proc/self/fd/{n}").into();
        let out = c.run_config(&id, &spec);
        assert!(
            !out.success(),
            "cwd /proc/self/fd/{n} must not start:\n{out}"
        );
        assert!(
            out.stderr.contains("cwd"),
            "the error names the cwd:\n{out}"
        );
        assert_no_leaks(c, &[&id]);
    }
    let id = c.new_id("leakyexec");
    c.run_detached(&[], &id, &["sleep", "1000"]);
    for n in 3..=8 {
        let cwd = format!("/proc/self/fd/{n}");
        let ex = c.ctr_timeout(
            &[
                "task",
                "exec",
                "--exec-id",
                &format!("c{n}"),
                "--cwd",
                &cwd,
                &id,
                "pwd",
            ],
            secs(60),
        );
        assert!(!ex.success(), "exec with cwd {cwd} must not start:\n{ex}");
    }
    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}

/// While crt's helper is the container's pid 1 (hooks run then), its executable cannot be
/// opened: not from inside the container (the helper is not dumpable: EACCES, where an
/// unprotected runtime gives ETXTBSY and an fd to keep for later), and even the file host root
/// reaches through /proc/PID/exe sits on a read-only mount (a bind made for the helper alone),
/// so an fd obtained there can never write, even once nothing executes the binary.
fn runtime_binary_cannot_be_written(c: &Containerd) {
    let dir = c.harness_dir().join("cve-2019-5736");
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_string_lossy().into_owned();
    let id = c.new_id("exe");
    let mut spec = c.config_spec(&id, &["cat", "/tmp/inside"]);
    let check = format!(
        "import json, os, sys\n\
         pid = json.load(sys.stdin)['pid']\n\
         fd = os.open('/proc/%d/exe' % pid, os.O_RDONLY)\n\
         ro = os.fstatvfs(fd).f_flag & os.ST_RDONLY\n\
         open('{d}/host', 'w').write('read-only' if ro else 'writable')\n"
    );
    spec["hooks"] = crt_e2e::json!({
        // Host side, as root with every capability, while the helper waits before pivot_root.
        "createRuntime": [{"path": "/usr/bin/python3", "args": ["python3", "-c", check]}],
        // In the container, with the container's credentials, right before exec.
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c",
            "(exec 3</proc/1/exe) 2> /tmp/inside; echo rc=$? >> /tmp/inside"]}],
    });
    let out = c.run_config(&id, &spec);
    assert!(out.success(), "{out}");
    let host = std::fs::read_to_string(dir.join("host")).unwrap_or_default();
    assert_eq!(
        host, "read-only",
        "the helper's executable must be on a read-only mount"
    );
    assert!(
        out.stdout.contains("Permission denied") && !out.stdout.contains("rc=0"),
        "a container process must not open the helper's exe at all:\n{out}"
    );
    assert_no_leaks(c, &[&id]);
}

/// Masked and read-only /proc entries cannot be undone from inside with the default
/// capabilities: no unmounting them, no fresh procfs or sysfs, no bind over them.
fn masking_cannot_be_undone(c: &Containerd) {
    let id = c.new_id("unmask");
    let script = "umount /proc/kcore 2>/dev/null && echo umount-ok; \
                  umount -l /proc/sys 2>/dev/null && echo umount-sys-ok; \
                  mkdir -p /tmp/p /tmp/s; \
                  mount -t proc proc /tmp/p 2>/dev/null && echo proc-ok; \
                  mount -t sysfs sysfs /tmp/s 2>/dev/null && echo sysfs-ok; \
                  mount --bind /tmp /proc/sys 2>/dev/null && echo bind-ok; \
                  echo 1 > /proc/sys/kernel/panic 2>/dev/null && echo write-ok; \
                  for f in /proc/kcore /proc/keys /proc/timer_list; do \
                    [ -e $f ] && echo masked-size=$(wc -c < $f); done; echo done";
    let out = c.run(&id, &["sh", "-c", script]);
    assert!(out.stdout.contains("done"), "{out}");
    for bad in [
        "umount-ok",
        "umount-sys-ok",
        "proc-ok",
        "sysfs-ok",
        "bind-ok",
        "write-ok",
    ] {
        assert!(
            !out.stdout.contains(bad),
            "{bad}: masking undone from inside:\n{out}"
        );
    }
    assert!(
        out.stdout.contains("masked-size=")
            && !out
                .stdout
                .lines()
                .any(|l| l.starts_with("masked-size=") && l != "masked-size=0"),
        "masked /proc files stay empty:\n{out}"
    );
    assert_no_leaks(c, &[&id]);
}

/// A symlink in the image pointing out of the root (absolute, or up with ..) cannot carry a
/// mount destination to the host: it resolves inside the container's root.
fn mount_destination_symlink_stays_inside(c: &Containerd) {
    let outside = c.harness_dir().join("outside-target");
    std::fs::create_dir_all(&outside).unwrap();
    let id = c.new_id("symlink");
    let mut spec = c.config_spec(&id, &["sh", "-c", "ls -d /escape/x /up/y && echo inside"]);
    let root = std::path::PathBuf::from(spec["root"]["path"].as_str().unwrap());
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    std::os::unix::fs::symlink(
        format!("../../../../../..{}", outside.display()),
        root.join("up"),
    )
    .unwrap();
    let mounts = spec["mounts"].as_array_mut().unwrap();
    mounts.push(crt_e2e::json!({"destination": "/escape/x", "type": "tmpfs", "source": "tmpfs"}));
    mounts.push(crt_e2e::json!({"destination": "/up/y", "type": "tmpfs", "source": "tmpfs"}));
    let out = c.run_config(&id, &spec);
    assert!(out.success() && out.stdout.contains("inside"), "{out}");
    assert!(
        !outside.join("x").exists() && !outside.join("y").exists(),
        "a mount point was created on the host through a symlink"
    );
    // (Not the host's mount count: scenarios running beside this one mount too.)
    let outside_s = outside.to_string_lossy().into_owned();
    let leaked: Vec<String> = crt_e2e::util::host_mounts()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(&outside_s))
        .map(|m| m.line)
        .collect();
    assert!(leaked.is_empty(), "a mount leaked to the host: {leaked:?}");
    assert_no_leaks(c, &[&id]);
}
