//! The container's stdio: containerd's fifos handed to the container directly, so output needs
//! no copying and nothing is left to drain at exit.
//!
//! Like runc's shim, the shim also holds the far end of each fifo: a read end of stdout/stderr
//! (writes never fail with EPIPE or SIGPIPE when the client goes away; they block once the fifo
//! is full, and a reconnecting client reads what is there), and a write end of stdin (the
//! container never sees EOF before the client wrote; CloseIO drops it).

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

pub struct Stdio {
    /// The container's fds 0-2; dropped once the container holds them.
    pub child: Option<[OwnedFd; 3]>,
    stdin_writer: Option<File>,
    _readers: Vec<File>,
}

fn open(path: &str, read: bool, nonblock: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    if read {
        o.read(true);
    } else {
        o.write(true);
    }
    if nonblock {
        o.custom_flags(libc::O_NONBLOCK);
    }
    o.open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("open {path}: {e}")))
}

fn clear_nonblock(f: &File) -> std::io::Result<()> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(f);
    // SAFETY: fcntl on an fd we own.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Stdio {
    pub fn open(stdin: &str, stdout: &str, stderr: &str) -> std::io::Result<Stdio> {
        let mut readers = Vec::new();
        let mut stdin_writer = None;
        let child_in: File = if stdin.is_empty() {
            open("/dev/null", true, false)?
        } else {
            let r = open(stdin, true, true)?;
            stdin_writer = Some(open(stdin, false, true)?);
            clear_nonblock(&r)?;
            r
        };
        let mut out = |path: &str| -> std::io::Result<File> {
            if path.is_empty() {
                return open("/dev/null", false, false);
            }
            readers.push(open(path, true, true)?);
            let w = open(path, false, true)?;
            clear_nonblock(&w)?;
            Ok(w)
        };
        let child_out = out(stdout)?;
        let child_err = out(stderr)?;
        Ok(Stdio {
            child: Some([child_in.into(), child_out.into(), child_err.into()]),
            stdin_writer,
            _readers: readers,
        })
    }

    pub fn child_fds(&self) -> Option<[BorrowedFd<'_>; 3]> {
        self.child
            .as_ref()
            .map(|c| [c[0].as_fd(), c[1].as_fd(), c[2].as_fd()])
    }

    pub fn close_stdin(&mut self) {
        self.stdin_writer = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn mkfifo(p: &std::path::Path) {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    #[test]
    fn output_survives_reader_loss_and_stdin_eof_needs_close() {
        let dir = std::env::temp_dir().join(format!("crt-io-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (i, o) = (dir.join("in"), dir.join("out"));
        mkfifo(&i);
        mkfifo(&o);
        // The client's ends, opened first as containerd does.
        let client_out = open(o.to_str().unwrap(), true, true).unwrap();
        let mut s = Stdio::open(i.to_str().unwrap(), o.to_str().unwrap(), "").unwrap();
        let fds = s.child.take().unwrap();
        // The client goes away: a write must still succeed (no EPIPE).
        drop(client_out);
        let mut w = File::from(fds[1].try_clone().unwrap());
        w.write_all(b"hello").unwrap();
        // stdin: a client writes and closes; EOF only comes after CloseIO.
        let mut cw = open(i.to_str().unwrap(), false, true).unwrap();
        cw.write_all(b"x").unwrap();
        drop(cw);
        let r = File::from(fds[0].try_clone().unwrap());
        let mut buf = [0u8; 8];
        assert_eq!((&r).read(&mut buf).unwrap(), 1);
        s.close_stdin();
        assert_eq!((&r).read(&mut buf).unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
