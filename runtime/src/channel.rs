//! The create/start handshake between the runtime (in the shim) and the init helper.
//!
//! ```text
//!  runtime                               init helper (pid 1 of the container)
//!    | --- Plan | Exec --------------------> |  (sent once the helper is in its cgroup)
//!    |                                       |  namespaces, rootfs, pivot_root, credentials
//!    | <-- Log* ---------------------------- |  (things worth a line in the shim's log)
//!    | <-- Pid ----------------------------- |  (only after a fork into a joined pid ns)
//!    | <-- Ready | Error ------------------- |  Create returns here
//!    | --- Start ---------------------------> |  (Start)
//!    | <-- EOF (exec done: fd is CLOEXEC) -- |  or Error (exec failed)
//! ```
//! Frames are a little-endian u32 length and a JSON body over a stream socketpair, so a plan of
//! any size fits.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

use crate::spec::{ExecPlan, Plan};

#[derive(Debug, Serialize, Deserialize)]
pub enum Msg {
    Plan(Box<Plan>),
    Exec(Box<ExecPlan>),
    Log(String),
    /// The container's init when the helper had to fork (joining a pid namespace).
    Pid(i32),
    Ready,
    Start,
    Error(String),
}

pub struct Channel(pub UnixStream);

const MAX_FRAME: u32 = 64 << 20;

impl Channel {
    pub fn send(&mut self, msg: &Msg) -> std::io::Result<()> {
        let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        self.0.write_all(&frame)
    }

    /// `None` when the other end closed the socket.
    pub fn recv(&mut self) -> std::io::Result<Option<Msg>> {
        let mut len = [0u8; 4];
        match self.0.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME {
            return Err(std::io::Error::other(format!("frame of {len} bytes")));
        }
        let mut body = vec![0u8; len as usize];
        self.0.read_exact(&mut body)?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_eof_is_none() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel(a), Channel(b));
        a.send(&Msg::Error("x".repeat(100_000))).unwrap();
        a.send(&Msg::Ready).unwrap();
        drop(a);
        match b.recv().unwrap() {
            Some(Msg::Error(s)) => assert_eq!(s.len(), 100_000),
            other => panic!("{other:?}"),
        }
        assert!(matches!(b.recv().unwrap(), Some(Msg::Ready)));
        assert!(b.recv().unwrap().is_none());
    }
}
