//! The container's stdio: containerd's fifos handed to the container directly, so output needs
//! no copying and nothing is left to drain at exit.
//!
//! Like runc's shim, the shim also holds the far end of each fifo: a read end of stdout/stderr
//! (writes never fail with EPIPE or SIGPIPE when the client goes away; they block once the fifo
//! is full, and a reconnecting client reads what is there), and a write end of stdin (the
//! container never sees EOF before the client wrote; CloseIO drops it).
//!
//! A terminal cannot be handed over: the process gets a pty of its container, and two threads
//! copy stdin fifo → pty master → stdout fifo. The output thread ends when the last holder of
//! the pty's other side is gone (read gives EIO) and then closes the stdout fifo, which is the
//! client's EOF; stdin's end is passed on as the terminal's EOF character.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crt_runtime::Console;

use crate::logging::{self, Logger, Target};

/// Who the stdio belongs to, for a logging binary's environment.
pub struct Owner<'a> {
    pub id: &'a str,
    pub namespace: &'a str,
}

/// Set once a copying thread has passed on everything it will.
#[derive(Clone, Default)]
struct Done(Arc<(Mutex<bool>, Condvar)>);

impl Done {
    fn finish(&self) {
        let (m, cv) = &*self.0;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    fn wait_until(&self, deadline: std::time::Instant) {
        let (m, cv) = &*self.0;
        let limit = deadline.saturating_duration_since(std::time::Instant::now());
        let g = m.lock().unwrap_or_else(|p| p.into_inner());
        let _ = cv.wait_timeout_while(g, limit, |done| !*done);
    }
}

fn io_err(e: String) -> std::io::Error {
    std::io::Error::other(e)
}

pub struct Stdio {
    /// The container's fds 0-2; dropped once the container holds them.
    pub child: Option<[OwnedFd; 3]>,
    stdin_writer: Option<File>,
    _readers: Vec<File>,
    term: Option<Term>,
    /// Threads copying output on (file:// logs, a terminal's output).
    copiers: Vec<Done>,
    logger: Option<Logger>,
}

/// The terminal side: fifo ends waiting for the pty, then the pty and its copiers.
struct Term {
    stdin: Option<File>,
    stdout: Option<File>,
    console: Option<Console>,
    /// Dropping it wakes the stdin copier, which then lets go of the pty.
    stop: Option<OwnedFd>,
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

/// The (blocking) write end of an output fifo; a read end goes to `readers`, so writes never
/// see EPIPE once the client is gone.
fn output_fifo(path: &str, readers: &mut Vec<File>) -> std::io::Result<File> {
    readers.push(open(path, true, true)?);
    let w = open(path, false, true)?;
    clear_nonblock(&w)?;
    Ok(w)
}

impl Stdio {
    /// `stdout`/`stderr` are fifo paths or log URIs (see `logging.rs`); empty means none.
    pub fn open(
        stdin: &str,
        stdout: &str,
        stderr: &str,
        owner: &Owner<'_>,
    ) -> std::io::Result<Stdio> {
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
        let targets = [
            logging::parse(stdout).map_err(io_err)?,
            logging::parse(stderr).map_err(io_err)?,
        ];
        let (logger, mut logger_fds) = start_logger(&targets, owner)?;
        let mut copiers = Vec::new();
        let mut child = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let fd: OwnedFd = match t {
                Target::Fifo(p) if p.is_empty() => open("/dev/null", false, false)?.into(),
                Target::Fifo(path) => output_fifo(path, &mut readers)?.into(),
                Target::Binary { .. } => logger_fds[i]
                    .take()
                    .ok_or_else(|| io_err("logging binary has no pipe".into()))?,
                Target::File(path) => {
                    let file = logging::open_append(path)?;
                    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
                    let done = Done::default();
                    let d = done.clone();
                    std::thread::Builder::new()
                        .name("log-file".into())
                        .spawn(move || {
                            logging::copy_all(File::from(r), file);
                            d.finish();
                        })?;
                    copiers.push(done);
                    w
                }
            };
            child.push(fd);
        }
        let [child_out, child_err]: [OwnedFd; 2] = child
            .try_into()
            .map_err(|_| io_err("stdio: two outputs expected".into()))?;
        Ok(Stdio {
            child: Some([child_in.into(), child_out, child_err]),
            stdin_writer,
            _readers: readers,
            term: None,
            copiers,
            logger,
        })
    }

    /// Stdio of a process with a terminal: it starts on /dev/null (the pty replaces it inside
    /// the container) and [`Stdio::attach`] connects the fifos once the pty exists. A terminal
    /// has one output: stderr is not used (ctr -t never opens it).
    pub fn open_terminal(stdin: &str, stdout: &str) -> std::io::Result<Stdio> {
        let null = || -> std::io::Result<OwnedFd> { Ok(open("/dev/null", true, false)?.into()) };
        let mut readers = Vec::new();
        let mut stdin_writer = None;
        let mut term_in = None;
        if !stdin.is_empty() {
            let r = open(stdin, true, true)?;
            stdin_writer = Some(open(stdin, false, true)?);
            term_in = Some(r);
        }
        let mut term_out = None;
        if !stdout.is_empty() {
            term_out = Some(output_fifo(stdout, &mut readers)?);
        }
        Ok(Stdio {
            child: Some([null()?, null()?, null()?]),
            stdin_writer,
            _readers: readers,
            term: Some(Term {
                stdin: term_in,
                stdout: term_out,
                console: None,
                stop: None,
            }),
            copiers: Vec::new(),
            logger: None,
        })
    }

    pub fn is_terminal(&self) -> bool {
        self.term.is_some()
    }

    /// Start copying between the fifos and the process's pty.
    pub fn attach(&mut self, console: Console) -> std::io::Result<()> {
        let Some(t) = self.term.as_mut() else {
            return Err(std::io::Error::other("not a terminal process"));
        };
        let done = Done::default();
        let d = done.clone();
        let mut master = console.file()?;
        let out = t.stdout.take();
        std::thread::Builder::new()
            .name("pty-out".into())
            .spawn(move || {
                copy_output(&mut master, out);
                d.finish();
            })?;
        self.copiers.push(done);
        if let Some(input) = t.stdin.take() {
            let (stop_r, stop_w) = nix::unistd::pipe()?;
            let master = console.file()?;
            let eof = console.eof_char();
            std::thread::Builder::new()
                .name("pty-in".into())
                .spawn(move || copy_input(input, master, stop_r, eof))?;
            t.stop = Some(stop_w);
        }
        t.console = Some(console);
        Ok(())
    }

    pub fn console(&self) -> Option<&Console> {
        self.term.as_ref().and_then(|t| t.console.as_ref())
    }

    /// Wait, at most `limit`, until copied output (a terminal's, a file log's) is all passed
    /// on, so a process deleted right after its exit loses nothing (runc's shim waits likewise).
    pub fn wait_output(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        for c in &self.copiers {
            c.wait_until(deadline);
        }
    }

    /// Stop the logging binary, if any, once it has had the chance to log everything.
    pub fn stop_logger(&mut self) {
        if let Some(l) = self.logger.take() {
            l.stop();
        }
    }

    pub fn child_fds(&self) -> Option<[BorrowedFd<'_>; 3]> {
        self.child
            .as_ref()
            .map(|c| [c[0].as_fd(), c[1].as_fd(), c[2].as_fd()])
    }

    /// Give the pipes and fifos the container gets as fds 0-2 to `uid`/`gid` (runc's IoUid
    /// and IoGid), so a user namespace's root can reopen them (/dev/stdout). Nothing else
    /// changes owner: /dev/null stays the host's.
    pub fn chown_child(&self, uid: u32, gid: u32) -> std::io::Result<()> {
        for fd in self.child.iter().flatten() {
            let st = nix::sys::stat::fstat(fd)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFIFO {
                nix::unistd::fchown(fd, Some(uid.into()), Some(gid.into()))?;
            }
        }
        Ok(())
    }

    pub fn close_stdin(&mut self) {
        self.stdin_writer = None;
    }
}

/// The logging binary that stdout and/or stderr name, started; the write ends of its pipes by
/// stream. One binary serves both streams (its fds 3 and 4), so they must name the same one.
type LoggerPipes = [Option<OwnedFd>; 2];

fn start_logger(
    targets: &[Target; 2],
    owner: &Owner<'_>,
) -> std::io::Result<(Option<Logger>, LoggerPipes)> {
    let binaries: Vec<&Target> = targets
        .iter()
        .filter(|t| matches!(t, Target::Binary { .. }))
        .collect();
    let Some(Target::Binary { path, args }) = binaries.first() else {
        return Ok((None, [None, None]));
    };
    if binaries.len() == 2 && binaries[0] != binaries[1] {
        return Err(io_err(
            "stdout and stderr name different logging binaries".into(),
        ));
    }
    let (logger, out, err) =
        Logger::start(path, args, owner.id, owner.namespace).map_err(io_err)?;
    let pick = |t: &Target, fd: OwnedFd| matches!(t, Target::Binary { .. }).then_some(fd);
    Ok((
        Some(logger),
        [pick(&targets[0], out), pick(&targets[1], err)],
    ))
}

impl Drop for Term {
    fn drop(&mut self) {
        // Wakes the stdin copier before the console goes.
        self.stop = None;
    }
}

/// pty master → stdout fifo, until the pty's last user is gone (EIO) or the client is.
fn copy_output(master: &mut File, mut out: Option<File>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if let Some(w) = out.as_mut() {
            if w.write_all(&buf[..n]).is_err() {
                // The fifo is gone: keep draining so the process never blocks on its terminal.
                out = None;
            }
        }
    }
}

/// stdin fifo → pty master. The fifo's end becomes the terminal's EOF character.
fn copy_input(mut input: File, mut master: File, stop: OwnedFd, eof: u8) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = [
            PollFd::new(input.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => return,
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        match input.read(&mut buf) {
            Ok(0) => {
                let _ = master.write_all(&[eof]);
                return;
            }
            Ok(n) => {
                if master.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
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
        let owner = Owner {
            id: "c",
            namespace: "default",
        };
        let mut s = Stdio::open(i.to_str().unwrap(), o.to_str().unwrap(), "", &owner).unwrap();
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
