//! The hooks that run in the container's namespaces, from the init helper: createContainer
//! (mounts done, before pivot_root, so paths resolve on the host's filesystem view) and
//! startContainer (after pivot_root, right before exec). The helper is single-threaded with no
//! other waiter, so std's Command can wait for them.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::hooks::{failure, Hook, StateBase};

pub fn run(kind: &str, list: &[Hook], state: &StateBase, status: &str) -> Result<(), String> {
    let json = state.json(status, std::process::id() as i32);
    for (i, h) in list.iter().enumerate() {
        let mut cmd = Command::new(&h.path);
        if let Some((arg0, rest)) = h.args.split_first() {
            cmd.arg0(arg0).args(rest);
        }
        cmd.env_clear();
        for kv in &h.env {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{kind} hook #{i} {}: {e}", h.path.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A hook that ignores stdin may close it early: EPIPE is not its failure.
            let _ = stdin.write_all(&json);
        }
        let deadline = h.timeout.map(|t| Instant::now() + Duration::from_secs(t));
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) => {}
                Err(e) => return Err(format!("{kind} hook #{i} {}: wait: {e}", h.path.display())),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // What the hook wrote is in the pipes now; anything it left running may hold them
        // open, so take only what is there.
        let out = child.stdout.take().map(drain).unwrap_or_default();
        let err = child.stderr.take().map(drain).unwrap_or_default();
        match status {
            Some(s) if s.success() => {}
            Some(s) => {
                let what = match s.code() {
                    Some(c) => format!("exit status {c}"),
                    None => format!("killed by {s}"),
                };
                return Err(failure(kind, i, h, &what, &out, &err));
            }
            None => {
                let what = format!("timed out after {}s", h.timeout.unwrap_or(0));
                return Err(failure(kind, i, h, &what, &out, &err));
            }
        }
    }
    Ok(())
}

fn drain(mut r: impl Read + AsFd) -> Vec<u8> {
    let _ = nix::fcntl::fcntl(
        r.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut v = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 || v.len() > 64 * 1024 {
            break;
        }
        v.extend_from_slice(&buf[..n]);
    }
    v
}
