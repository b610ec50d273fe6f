//! Terminals and stdin: `ctr run -t` / `ctr task exec -t` get a pty of the container's own
//! devpts as controlling terminal, see the client's window size and its changes (ResizePty),
//! read what is typed; stdin's end (CloseIO) reaches the process with or without a terminal;
//! large outputs arrive whole.

use std::io::Write;
use std::process::Stdio;

use crt_e2e::tty::TtyCommand;
use crt_e2e::{assert_no_leaks, secs, shim_client, Containerd};

crt_e2e::scenarios!(
    tty_run,
    tty_exec,
    tty_stdin_eof,
    stdin_eof_without_tty,
    large_output
);

/// The checks a terminal process makes of itself, then waits for a window change and a line.
const TTY_SCRIPT: &str = "tty; (exec </dev/tty) && echo ctty-ok; \
    until s=$(stty size 2>/dev/null) && [ -n \"$s\" ] && [ \"$s\" != \"0 0\" ]; do sleep 0.05; done; \
    echo size=$(echo $s | tr ' ' x); \
    w=; trap 'w=$(stty size | tr \" \" x)' WINCH; echo ready; \
    while [ -z \"$w\" ]; do sleep 0.05; done; echo winch=$w; \
    read line; echo got:$line; exit 5";

fn lines(out: &str) -> Vec<String> {
    out.split('\n')
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect()
}

/// Drives TTY_SCRIPT on `t`: initial size 24x80 (from the client's terminal through
/// ResizePty), a resize to 33x111 seen as SIGWINCH, a typed line, exit code 5.
fn drive(mut t: TtyCommand, what: &str) {
    t.wait_for("ready", |o| lines(o).iter().any(|l| l == "ready"), secs(60));
    t.resize(33, 111);
    t.wait_for("winch", |o| o.contains("winch="), secs(30));
    t.write("hello tty\r");
    let (status, out) = t.wait(secs(60));
    let l = lines(&out);
    assert!(
        l.iter().any(|l| l.starts_with("/dev/pts/")),
        "{what}: tty must name a pty of the container's devpts:\n{out}"
    );
    assert!(
        l.iter().any(|l| l == "ctty-ok"),
        "{what}: the pty must be the controlling terminal:\n{out}"
    );
    assert!(
        l.iter().any(|l| l == "size=24x80"),
        "{what}: the process must see the client's window size:\n{out}"
    );
    assert!(
        l.iter().any(|l| l == "winch=33x111"),
        "{what}: a resize must reach the process as SIGWINCH and the new size:\n{out}"
    );
    assert!(
        l.iter().any(|l| l == "got:hello tty"),
        "{what}: typed input must reach the process:\n{out}"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(5),
        "{what}: exit code:\n{out}"
    );
}

fn tty_run(c: &Containerd) {
    let id = c.new_id("tty");
    let t = TtyCommand::spawn(
        c.run_command(&["-t"], &id, &["sh", "-c", TTY_SCRIPT]),
        24,
        80,
    );
    drive(t, "ctr run -t");
    assert_no_leaks(c, &[&id]);
}

fn tty_exec(c: &Containerd) {
    let id = c.new_id("ttyexec");
    c.run_detached(&[], &id, &["sleep", "1000"]);
    let t = TtyCommand::spawn(
        c.ctr_command(&[
            "task",
            "exec",
            "-t",
            "--exec-id",
            "t1",
            &id,
            "sh",
            "-c",
            TTY_SCRIPT,
        ]),
        24,
        80,
    );
    drive(t, "ctr task exec -t");
    // The init's terminal-less stdio is untouched; the container lives on.
    assert_eq!(c.task(&id).map(|t| t.status), Some("RUNNING".into()));
    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}

/// CloseIO on a terminal process whose client is gone (`ctr run -d -t`): the process reads
/// end-of-file (the terminal's EOF character), as if a user typed ^D. Before it, nothing ends
/// its stdin. (ctr never sends CloseIO with -t; CRI and the API do.)
fn tty_stdin_eof(c: &Containerd) {
    let id = c.new_id("ttyeof");
    let t = TtyCommand::spawn(
        c.run_command_mode("-d", &["-t"], &id, &["sh", "-c", "cat; exit 3"]),
        24,
        80,
    );
    let (status, out) = t.wait(secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "ctr run -d -t:\n{out}"
    );
    c.wait_task_status(&id, "RUNNING");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        c.task(&id).map(|t| t.status),
        Some("RUNNING".into()),
        "cat must wait for input while stdin is open"
    );
    let sock = c.shim_socket(&id).expect("shim socket");
    shim_client::close_stdin(&sock, "default", &id, "").expect("CloseIO");
    let code = shim_client::wait(&sock, "default", &id).expect("Wait");
    assert_eq!(code, 3, "cat must end at EOF and the shell exit 3");
    c.ctr(&["task", "delete", &id]).assert_ok();
    c.ctr(&["containers", "rm", &id]).assert_ok();
    assert_no_leaks(c, &[&id]);
}

/// Without a terminal: ctr's stdin ends, ctr sends CloseIO, the process reads EOF after every
/// byte written before it. (ctr only sends CloseIO once its task exists: stdin is held open
/// until then.)
fn stdin_eof_without_tty(c: &Containerd) {
    let id = c.new_id("stdin");
    let mut cmd = c.run_command(&[], &id, &["sh", "-c", "cat; echo cat-ended"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ctr run");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"line1\nline2\n").expect("write stdin");
    c.wait_task_status(&id, "RUNNING");
    drop(stdin);
    let out = child.wait_with_output().expect("ctr run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "line1\nline2\ncat-ended\n");
    assert_no_leaks(c, &[&id]);
}

/// The longest run of `b` in `s`: the payload, whatever else the terminal showed.
fn longest_run(s: &str, b: u8) -> usize {
    without_client_logs(s)
        .as_bytes()
        .split(|x| *x != b)
        .map(|r| r.len())
        .max()
        .unwrap_or(0)
}

/// `s` without ctr's own log lines (`time="..." level=warning msg="..."`, e.g. containerd 2.x's
/// cgroup v1 deprecation notice): they share the terminal, and under load one can land in the
/// middle of the payload.
fn without_client_logs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("time=\"") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        // The whole line, up to and with its \r\n.
        rest = match tail.find('\n') {
            Some(j) => &tail[j + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// 30 MB through the fifos, and 20 MB through a terminal (copied by the shim), arrive whole.
fn large_output(c: &Containerd) {
    let id = c.new_id("bigout");
    let out = c.run(
        &id,
        &[
            "sh",
            "-c",
            "head -c 30000000 /dev/zero | tr '\\0' a; echo; echo END",
        ],
    );
    assert!(out.success(), "{}", out.stderr);
    let n = out.stdout.bytes().filter(|b| *b == b'a').count();
    assert_eq!(n, 30_000_000, "bytes of output without a terminal");
    assert!(out.stdout.ends_with("\nEND\n"));
    assert_no_leaks(c, &[&id]);

    let id = c.new_id("bigtty");
    let t = TtyCommand::spawn(
        c.run_command(
            &["-t"],
            &id,
            &[
                "sh",
                "-c",
                "head -c 20000000 /dev/zero | tr '\\0' b; echo; echo END",
            ],
        ),
        24,
        80,
    );
    let (status, out) = t.wait(secs(120));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    // ctr's warnings share the terminal: count the payload's run only.
    assert_eq!(
        longest_run(&out, b'b'),
        20_000_000,
        "bytes of output through a terminal"
    );
    assert!(lines(&out).iter().any(|l| l == "END"));
    assert_no_leaks(c, &[&id]);
}
