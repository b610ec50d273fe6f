//! linux.seccomp: containerd's default profile (`ctr run --seccomp`) blocks what it should, and a
//! custom profile (`--seccomp-profile`) gets every piece right: errno with errnoRet, argument
//! conditions (ORed on one argument), kill_process, architectures; execs run under the
//! container's filter too.

use crt_e2e::{assert_no_leaks, secs, Containerd};

crt_e2e::scenarios!(
    seccomp_default_profile,
    seccomp_custom_profile,
    seccomp_notify_listener
);

/// A user namespace as an unprivileged-capability root: allowed without seccomp, refused by
/// containerd's default profile (unshare needs CAP_SYS_ADMIN there).
fn seccomp_default_profile(c: &Containerd) {
    let script = "unshare -U true && echo unshare-ok || echo unshare-refused";
    let id = c.new_id("noseccomp");
    let out = c.run(&id, &["sh", "-c", script]);
    assert!(out.stdout.contains("unshare-ok"), "without seccomp:\n{out}");
    assert_no_leaks(c, &[&id]);

    let id = c.new_id("seccomp");
    let out = c.run_with(&["--seccomp"], &id, &["sh", "-c", script]);
    assert!(
        out.stdout.contains("unshare-refused"),
        "containerd's default profile must refuse unshare(CLONE_NEWUSER):\n{out}"
    );
    assert!(out.stderr.contains("Operation not permitted") || out.stdout.contains("refused"));
    assert_no_leaks(c, &[&id]);
}

const PROFILE: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
  "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    {"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO",
     "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"},
              {"index": 1, "value": 448, "op": "SCMP_CMP_EQ"}]},
    {"names": ["fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO",
     "args": [{"index": 2, "value": 511, "op": "SCMP_CMP_EQ"},
              {"index": 2, "value": 448, "op": "SCMP_CMP_EQ"}]},
    {"names": ["sethostname"], "action": "SCMP_ACT_KILL_PROCESS"}
  ]
}"#;

fn seccomp_custom_profile(c: &Containerd) {
    let profile = c.harness_dir().join("profile.json");
    std::fs::write(&profile, PROFILE).unwrap();
    let p = profile.to_string_lossy().into_owned();
    let flags = ["--seccomp", "--seccomp-profile", &p];
    let script = "mkdir /tmp/d 2>&1; touch /tmp/f; \
                  chmod 755 /tmp/f && echo chmod755-ok; \
                  chmod 777 /tmp/f 2>/dev/null || echo chmod777-refused; \
                  chmod 700 /tmp/f 2>/dev/null || echo chmod700-refused; \
                  exec hostname x";
    let id = c.new_id("profile");
    let out = c.run_with(&flags, &id, &["sh", "-c", script]);
    assert!(
        out.stdout.contains("Function not implemented"),
        "mkdir must fail with errnoRet 38 (ENOSYS):\n{out}"
    );
    for want in ["chmod755-ok", "chmod777-refused", "chmod700-refused"] {
        assert!(out.stdout.contains(want), "{want}:\n{out}");
    }
    assert_eq!(
        out.code,
        Some(128 + 31),
        "SCMP_ACT_KILL_PROCESS ends the process with SIGSYS:\n{out}"
    );
    assert_no_leaks(c, &[&id]);

    // An exec runs under the container's filter.
    let id = c.new_id("profexec");
    c.run_detached(&flags, &id, &["sleep", "1000"]);
    let ex = c.ctr_timeout(
        &["task", "exec", "--exec-id", "m", &id, "mkdir", "/tmp/e"],
        secs(60),
    );
    assert!(
        !ex.success() && ex.stderr.contains("Function not implemented"),
        "exec must be filtered too:\n{ex}"
    );
    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}

/// A listener that takes one connection: the message and how many fds came with it go to
/// `out`; then it closes the fd, so the notified syscall fails with ENOSYS.
const LISTENER: &str = r#"
import array, json, os, socket, sys
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(1)
open(out + ".ready", "w").close()
c, _ = s.accept()
msg, anc, _, _ = c.recvmsg(1 << 16, socket.CMSG_SPACE(4 * 4))
fds = []
for level, kind, data in anc:
    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
        fds.extend(array.array("i", data[: len(data) - len(data) % 4]))
json.dump({"msg": json.loads(msg), "nfds": len(fds)}, open(out, "w"))
for fd in fds:
    os.close(fd)
"#;

/// SCMP_ACT_NOTIFY: the notification fd reaches the spec's listenerPath with runc's message
/// (state, pid, metadata), and the notified syscall is decided by the listener (here: it went
/// away, so ENOSYS).
fn seccomp_notify_listener(c: &Containerd) {
    let dir = c.harness_dir();
    let script = dir.join("listener.py");
    std::fs::write(&script, LISTENER).unwrap();
    let sock = dir.join("listener.sock");
    let out = dir.join("listener.json");
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .arg(&sock)
        .arg(&out)
        .spawn()
        .expect("python3 listener");
    let ready = crt_e2e::poll(secs(30), || {
        std::path::Path::new(&format!("{}.ready", out.display()))
            .exists()
            .then_some(())
    });
    assert!(ready.is_some(), "listener did not start");
    let id = c.new_id("notify");
    let mut spec = c.config_spec(&id, &["sh", "-c", "mkdir /tmp/x; echo rc=$?"]);
    spec["linux"]["seccomp"] = crt_e2e::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock.to_string_lossy(),
        "listenerMetadata": "crt-test",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let run = c.run_config(&id, &spec);
    let _ = child.kill();
    let _ = child.wait();
    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap_or_default())
            .unwrap_or_else(|e| panic!("listener got nothing ({e}):\n{run}"));
    assert_eq!(got["nfds"], 1, "one fd with the message: {got}");
    assert_eq!(got["msg"]["fds"], crt_e2e::json!(["seccompFd"]), "{got}");
    assert_eq!(got["msg"]["metadata"], "crt-test", "{got}");
    assert_eq!(got["msg"]["state"]["id"], id.as_str(), "{got}");
    assert!(got["msg"]["pid"].as_i64().unwrap_or(0) > 0, "{got}");
    assert!(run.success(), "{run}");
    assert!(
        run.stderr.contains("Function not implemented")
            || run.stdout.contains("Function not implemented"),
        "mkdir is notified and fails once the listener is gone:\n{run}"
    );
    assert_no_leaks(c, &[&id]);
}
