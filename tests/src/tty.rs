//! Running a command on a terminal of its own, as a user at a shell would: `ctr run -t` and
//! `ctr task exec -t` want a real tty, put it in raw mode, and pass its size changes on.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::describe;

pub struct TtyCommand {
    desc: String,
    child: Child,
    master: File,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<thread::JoinHandle<()>>,
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl TtyCommand {
    /// Start `cmd` as the session leader of a new pty of `rows`×`cols`, the pty on its stdin,
    /// stdout and stderr.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> TtyCommand {
        let desc = describe(&cmd);
        let (mut m, mut s) = (-1, -1);
        let ws = winsize(rows, cols);
        // SAFETY: openpty writes two fds; no name buffer or termios given.
        let rc =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: fresh fds from openpty, owned here only.
        let (master, slave) = unsafe { (File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
        for fd in [m, s] {
            // SAFETY: fcntl on our fds: neither may leak into other children.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        let dup = || Stdio::from(slave.try_clone().expect("dup pty slave"));
        cmd.stdin(dup()).stdout(dup()).stderr(dup());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {desc}: {e}"));
        drop(slave);
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut r = master.try_clone().expect("dup pty master");
        let acc = output.clone();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 16384];
            // EIO once the command and everything it started closed the terminal.
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                acc.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        TtyCommand {
            desc,
            child,
            master,
            output,
            reader: Some(reader),
        }
    }

    /// What the terminal showed so far, lossily decoded.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Type `text` at the terminal.
    pub fn write(&mut self, text: &str) {
        self.master
            .write_all(text.as_bytes())
            .expect("write to the pty");
    }

    /// Resize the terminal; the kernel signals SIGWINCH to the command.
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ on our master with a valid winsize.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0, "resize: {}", std::io::Error::last_os_error());
    }

    /// Wait until the terminal's output satisfies `done`; panics with the output after
    /// `timeout`.
    #[track_caller]
    pub fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            let out = self.output();
            if done(&out) {
                return;
            }
            if Instant::now() >= end {
                panic!(
                    "{}: no {what} within {timeout:?}; terminal showed:\n{out}",
                    self.desc
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait for the command to end (killed after `timeout`); its status and the whole output.
    pub fn wait(mut self, timeout: Duration) -> (Option<ExitStatus>, String) {
        let end = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < end => thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        // The reader stops at EIO once every holder of the slave is gone.
        if let Some(r) = self.reader.take() {
            let limit = Instant::now() + Duration::from_secs(30);
            while !r.is_finished() && Instant::now() < limit {
                thread::sleep(Duration::from_millis(20));
            }
        }
        (status, self.output())
    }
}

impl Drop for TtyCommand {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
