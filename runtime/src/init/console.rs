//! process.terminal: a pty from the container's own devpts (so the process sees a terminal of its
//! container, not of the host), made the controlling terminal and fds 0-2. The master goes back
//! to the runtime over the channel; the shim copies it to containerd's fifos and resizes it.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::channel::{Channel, Msg};
use crate::spec::ProcessPlan;

type R<T> = Result<T, String>;

fn errno(op: &str) -> String {
    format!("{op}: {}", std::io::Error::last_os_error())
}

pub fn setup(ch: &mut Channel, p: &ProcessPlan, is_init: bool) -> R<()> {
    // A new session, so the pty can become its controlling terminal.
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/ptmx")
        .map_err(|e| {
            format!("open /dev/ptmx for process.terminal (is devpts mounted on /dev/pts?): {e}")
        })?
        .into();
    let m = master.as_raw_fd();
    let unlock: libc::c_int = 0;
    // SAFETY: ioctls on our own pty master with correctly typed arguments.
    unsafe {
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(errno("unlock pty"));
        }
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: as above.
    if unsafe { libc::ioctl(m, libc::TIOCGPTN, &mut n) } != 0 {
        return Err(errno("pty number"));
    }
    // TIOCGPTPEER opens the peer of this very master: no path lookup a container could redirect.
    // SAFETY: as above; the result is a new fd we own.
    let slave = unsafe { libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) };
    if slave < 0 {
        return Err(errno("open pty peer"));
    }
    // SAFETY: just returned by the kernel, owned by nobody else.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    if let Some((rows, cols)) = p.console_size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: as above.
        if unsafe { libc::ioctl(m, libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(errno("set process.consoleSize"));
        }
    }
    // The process owns its terminal, as a login would (runc does the same).
    nix::unistd::fchown(&slave, Some(nix::unistd::Uid::from_raw(p.uid)), None)
        .map_err(|e| format!("chown pty to uid {}: {e}", p.uid))?;
    if is_init {
        bind_console(n)?;
    }
    ch.send_fd(&Msg::Console, master.as_fd())
        .map_err(|e| format!("hand over the pty: {e}"))?;
    drop(master);
    for fd in 0..3 {
        // SAFETY: dup2 onto the stdio slots of this single-threaded helper.
        if unsafe { libc::dup2(slave.as_raw_fd(), fd) } < 0 {
            return Err(errno(&format!("dup pty to fd {fd}")));
        }
    }
    drop(slave);
    // SAFETY: ioctl on fd 0, now the pty; 0 = do not steal it from another session.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(errno("make the pty the controlling terminal"));
    }
    Ok(())
}

/// /dev/console is the init's terminal, as under runc.
fn bind_console(n: u32) -> R<()> {
    let console = "/dev/console";
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(console)
        .map_err(|e| format!("create {console}: {e}"))?;
    let pts = format!("/dev/pts/{n}");
    nix::mount::mount(
        Some(pts.as_str()),
        console,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind {pts} onto {console}: {e}"))
}
