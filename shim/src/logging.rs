//! Log URIs in place of stdio fifos, as `ctr run --log-uri` and nerdctl send them:
//! - `binary:///path?k=v`: a logging binary started by the shim, with the process's stdout and
//!   stderr on its fds 3 and 4 and a readiness pipe on fd 5 (closed or one byte written = ready);
//!   env `CONTAINER_ID` and `CONTAINER_NAMESPACE` only; query pairs become `k v` arguments.
//!   After the process exits the logger sees EOF; it is asked (SIGTERM) and then made (SIGKILL)
//!   to stop if it does not exit by itself (containerd's runc shim does the same).
//! - `file:///path`: stdout and stderr appended to the file (parents created). The process writes
//!   to pipes and the shim copies: the container never holds a host file it could reopen through
//!   /proc/self/fd.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, PartialEq)]
pub enum Target {
    /// A fifo path (no scheme), or empty for none.
    Fifo(String),
    Binary {
        path: PathBuf,
        args: Vec<String>,
    },
    File(PathBuf),
}

/// Parse one stdio destination the way containerd's URIs are written.
pub fn parse(s: &str) -> Result<Target, String> {
    let Some((scheme, rest)) = split_scheme(s) else {
        return Ok(Target::Fifo(s.to_string()));
    };
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| format!("log URI {s:?}: expected {scheme}://"))?;
    // The authority (host) ends at the first '/'; like Go's net/url, only the path is used.
    let path_q = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    let (path, query) = match path_q.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_q, None),
    };
    let path = PathBuf::from(unescape(path, false)?);
    if !path.is_absolute() {
        return Err(format!("log URI {s:?}: the path must be absolute"));
    }
    match scheme {
        "binary" => {
            let mut args = Vec::new();
            for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                args.push(unescape(k, true)?);
                args.push(unescape(v, true)?);
            }
            Ok(Target::Binary { path, args })
        }
        "file" => Ok(Target::File(path)),
        "fifo" => Ok(Target::Fifo(path.to_string_lossy().into_owned())),
        other => Err(format!("unknown STDIO scheme {other} in {s:?}")),
    }
}

/// `scheme:` per RFC 3986 (a letter, then letters, digits, + - .); absent for plain paths.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    Some((scheme, rest))
}

fn unescape(s: &str, query: bool) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once unescaped"))
}

/// A running logging binary.
pub struct Logger {
    pidfd: OwnedFd,
    path: PathBuf,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// How long a logger may take to say it is ready.
const READY_LIMIT: Duration = Duration::from_secs(30);

impl Logger {
    /// Start the logger; returns it and the write ends of the process's stdout and stderr.
    pub fn start(
        path: &std::path::Path,
        args: &[String],
        id: &str,
        namespace: &str,
    ) -> Result<(Logger, OwnedFd, OwnedFd), String> {
        let (out_r, out_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let (err_r, err_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let (ready_r, ready_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
        let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
        let env = [
            format!("CONTAINER_ID={id}"),
            format!("CONTAINER_NAMESPACE={namespace}"),
        ];
        let (_pid, pidfd) = crt_runtime::spawn::spawn_program(
            path,
            args,
            &env,
            &[
                null.as_fd(),
                null.as_fd(),
                null.as_fd(),
                out_r.as_fd(),
                err_r.as_fd(),
                ready_w.as_fd(),
            ],
        )
        .map_err(|e| format!("start logging binary: {e}"))?;
        let logger = Logger {
            pidfd,
            path: path.to_path_buf(),
        };
        drop((out_r, err_r, ready_w));
        let ready = wait_readable(ready_r.as_fd(), READY_LIMIT);
        let mut f = File::from(ready_r);
        let mut b = [0u8; 1];
        match ready.and_then(|()| f.read(&mut b).map(|_| ())) {
            Ok(()) => Ok((logger, out_w, err_w)),
            Err(e) => {
                logger.kill();
                Err(format!("logging binary {} not ready: {e}", path.display()))
            }
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: pidfd_send_signal on our pidfd with no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }

    fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// Let the logger finish the output it has (it sees EOF once the process's side is
    /// closed), then ask, then make it stop.
    pub fn stop(self) {
        if wait_readable(self.pidfd.as_fd(), Duration::from_secs(2)).is_ok() {
            return;
        }
        log::info!(
            "logging binary {} still running: SIGTERM",
            self.path.display()
        );
        self.signal(libc::SIGTERM);
        if wait_readable(self.pidfd.as_fd(), Duration::from_secs(10)).is_ok() {
            return;
        }
        log::warn!(
            "logging binary {} ignored SIGTERM: SIGKILL",
            self.path.display()
        );
        self.kill();
    }
}

fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, limit: Duration) -> std::io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = std::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => return Err(std::io::ErrorKind::TimedOut.into()),
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Open `path` for appending, creating it and its parent directories as containerd's runc
/// shim does (0755 dirs, 0644 file).
pub fn open_append(path: &std::path::Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("create {}: {e}", dir.display())))?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("open {}: {e}", path.display())))
}

/// Copy `from` into `to` until EOF.
pub fn copy_all(mut from: File, mut to: File) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stdio_destinations() {
        assert_eq!(
            parse("/run/containerd/fifo/1/x-stdout").unwrap(),
            Target::Fifo("/run/containerd/fifo/1/x-stdout".into())
        );
        assert_eq!(parse("").unwrap(), Target::Fifo(String::new()));
        assert_eq!(
            parse("binary:///usr/bin/log%20ger?driver=json-file&path=%2Fvar%2Flog&x=a+b&flag")
                .unwrap(),
            Target::Binary {
                path: "/usr/bin/log ger".into(),
                args: vec![
                    "driver".into(),
                    "json-file".into(),
                    "path".into(),
                    "/var/log".into(),
                    "x".into(),
                    "a b".into(),
                    "flag".into(),
                    "".into()
                ]
            }
        );
        assert_eq!(
            parse("file:///var/log/c.log").unwrap(),
            Target::File("/var/log/c.log".into())
        );
        assert!(parse("ftp:///x")
            .unwrap_err()
            .contains("unknown STDIO scheme ftp"));
        assert!(parse("binary:relative").is_err());
        assert!(parse("file:///bad%zz").is_err());
    }
}
