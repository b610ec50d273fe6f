//! The hooks that run in the container's namespaces, from the init helper: createContainer
//! (mounts done, before pivot_root, so paths resolve on the host's filesystem view) and
//! startContainer (after pivot_root, right before exec). The helper is single-threaded with no
//! other waiter, so std's Command can wait for them.

use std::io::{Read, Write};
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
        let (mut out, mut err) = (Vec::new(), Vec::new());
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_end(&mut out);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_end(&mut err);
        }
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
