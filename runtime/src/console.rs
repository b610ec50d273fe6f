//! The master side of a process.terminal pty, as the shim holds it.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::error::{Result, RuntimeError};

pub struct Console(OwnedFd);

impl Console {
    pub(crate) fn new(master: OwnedFd) -> Console {
        Console(master)
    }

    /// Set the window size; the kernel sends SIGWINCH to the terminal's foreground group.
    pub fn resize(&self, width: u16, height: u16) -> Result<()> {
        let ws = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ on our pty master with a valid winsize.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
            return Err(RuntimeError::Sys {
                op: "resize pty",
                path: format!("{width}x{height}"),
                source: nix::Error::last(),
            });
        }
        Ok(())
    }

    /// The character that ends input on the terminal now (VEOF, normally ^D). Writing it is how
    /// stdin's end reaches a process reading a terminal in canonical mode.
    pub fn eof_char(&self) -> u8 {
        // On a pty master, TCGETS reads the slave's settings.
        nix::sys::termios::tcgetattr(&self.0)
            .map(|t| t.control_chars[libc::VEOF])
            .unwrap_or(4)
    }

    /// Another handle on the master, for a copying thread.
    pub fn file(&self) -> std::io::Result<File> {
        Ok(File::from(self.0.try_clone()?))
    }
}
