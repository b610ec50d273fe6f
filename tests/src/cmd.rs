//! Running commands with a deadline, capturing their output.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished (or timed-out) command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub cmd: String,
    /// Exit code; `None` when killed by a signal or timed out.
    pub code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// True when the deadline passed and the command was killed.
    pub timed_out: bool,
}

impl Output {
    fn new(cmd: String, status: Option<ExitStatus>, stdout: String, stderr: String) -> Self {
        Output {
            cmd,
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            stdout,
            stderr,
            timed_out: status.is_none(),
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Exit code, or 128+signal, or -1 after a timeout (never 0 unless it exited 0).
    pub fn status(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => -1,
        }
    }

    /// Panics with the whole output unless the command exited 0.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }

    /// stderr without containerd 2.x's per-call cgroup v1 deprecation warning (for messages).
    pub fn stderr_clean(&self) -> String {
        self.stderr
            .lines()
            .filter(|l| !l.contains("DEPRECATION: The support for cgroup v1"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.timed_out {
            "TIMED OUT (killed)".to_string()
        } else if let Some(c) = self.code {
            format!("exit {c}")
        } else {
            format!("signal {}", self.signal.unwrap_or(0))
        };
        write!(
            f,
            "  $ {}\n  status: {}\n  stdout: {:?}\n  stderr: {:?}",
            self.cmd,
            status,
            self.stdout,
            self.stderr_clean()
        )
    }
}

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            s.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

fn reader<R: Read + Send + 'static>(mut r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Waits for `child` until `deadline`; kills it (SIGKILL) when the deadline passes.
fn wait_deadline(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `cmd` (stdin = /dev/null) and returns its output; kills it after `timeout`.
pub fn run_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let desc = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Output {
                cmd: desc,
                code: Some(127),
                signal: None,
                stdout: String::new(),
                stderr: format!("cannot spawn: {e}"),
                timed_out: false,
            }
        }
    };
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let status = wait_deadline(&mut child, Instant::now() + timeout);
    // A grandchild holding the pipes open must not hang us: give the readers a bounded time.
    let grace = Duration::from_secs(5);
    let stdout = out.recv_timeout(grace).unwrap_or_default();
    let stderr = err.recv_timeout(grace).unwrap_or_default();
    Output::new(desc, status, stdout, stderr)
}

/// A command running in the background whose stdout is read line by line while it runs
/// (e.g. a foreground `ctr run` of a container that prints `READY` and then sleeps).
pub struct Background {
    desc: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: mpsc::Receiver<String>,
}

impl Background {
    pub fn spawn(mut cmd: Command) -> Background {
        let desc = describe(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let acc = stdout.clone();
        let so = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(so).lines() {
                let Ok(line) = line else { break };
                {
                    let mut a = acc.lock().unwrap();
                    a.push_str(&line);
                    a.push('\n');
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = reader(child.stderr.take().unwrap());
        Background {
            desc,
            child,
            lines,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Blocks until a stdout line equal to `marker` (trimmed) arrives; returns the lines before it.
    /// Panics (after killing the command) if the command ends or `timeout` passes first.
    #[track_caller]
    pub fn wait_for_line(&mut self, marker: &str, timeout: Duration) -> Vec<String> {
        let mut seen = self.wait_until(marker, |l| l.trim() == marker, timeout);
        seen.pop();
        seen
    }

    /// Blocks until a stdout line satisfies `done`; returns every line read, that one last.
    /// Panics (after killing the command) if the command ends or `timeout` passes first.
    #[track_caller]
    pub fn wait_until(
        &mut self,
        what: &str,
        done: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Vec<String> {
        match self.try_wait_until(what, done, timeout) {
            Some(seen) => seen,
            None => {
                let out = self.finish(Duration::ZERO);
                panic!("no {what} line within {timeout:?}:\n{out}");
            }
        }
    }

    /// As `wait_until`, but None when `timeout` passes first (the command runs on).
    #[track_caller]
    pub fn try_wait_until(
        &mut self,
        what: &str,
        done: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Option<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(l) => {
                    let hit = done(&l);
                    seen.push(l);
                    if hit {
                        return Some(seen);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let out = self.finish(Duration::from_secs(5));
                    panic!("command ended before printing {what}:\n{out}");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }

    fn finish(&mut self, timeout: Duration) -> Output {
        let status = wait_deadline(&mut self.child, Instant::now() + timeout);
        let grace = Duration::from_secs(5);
        let stderr = self.stderr.recv_timeout(grace).unwrap_or_default();
        // The stdout thread ends when the pipe closes; give it the same grace.
        let end = Instant::now() + grace;
        while self
            .lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .is_ok()
        {}
        let stdout = self.stdout.lock().unwrap().clone();
        Output::new(self.desc.clone(), status, stdout, stderr)
    }

    /// Waits for the command to end (killing it after `timeout`) and returns all its output.
    pub fn wait(mut self, timeout: Duration) -> Output {
        self.finish(timeout)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
