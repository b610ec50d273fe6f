//! containerd's `Events/Forward` over ttrpc, answered by the test process itself: where the
//! shim-alone bench points a shim's `TTRPC_ADDRESS`, so that containerd's handling of each
//! event (0.1-0.3 ms of its CPU, on a 2-core host the core a shim's next call wanted) stays
//! off the measurement. It records what it got, so a run can wait for its events to be in.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::events::ForwardRequest;

/// One forwarded event: its topic, and its payload (the Task event, whose first field is the
/// container's id).
#[derive(Clone, Debug)]
pub struct Got {
    pub topic: String,
    pub payload: Vec<u8>,
}

type Seen = Arc<(Mutex<Vec<Got>>, Condvar)>;

pub struct EventSink {
    path: PathBuf,
    seen: Seen,
}

impl EventSink {
    /// Listen at `path`; each connection is served on a thread of its own until it closes.
    pub fn start(path: &Path) -> std::io::Result<EventSink> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        let seen: Seen = Arc::default();
        let rec = seen.clone();
        std::thread::Builder::new()
            .name("event-sink".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let rec = rec.clone();
                    let _ = std::thread::Builder::new()
                        .name("event-conn".into())
                        .spawn(move || serve(conn, &rec));
                }
            })?;
        Ok(EventSink {
            path: path.to_path_buf(),
            seen,
        })
    }

    /// The address to give a shim as `TTRPC_ADDRESS`.
    pub fn address(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// The topics of the events about container `id`, once `n` of them came (or `timeout`
    /// passed: fewer).
    pub fn wait_for(&self, id: &str, n: usize, timeout: Duration) -> Vec<String> {
        let (lock, cv) = &*self.seen;
        let deadline = Instant::now() + timeout;
        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let topics: Vec<String> = g
                .iter()
                .filter(|e| names(&e.payload, id))
                .map(|e| e.topic.clone())
                .collect();
            let left = deadline.saturating_duration_since(Instant::now());
            if topics.len() >= n || left.is_zero() {
                return topics;
            }
            g = cv
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for EventSink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a Task event's payload starts with `id` as its field 1 (container_id in every
/// containerd.events.Task* message).
fn names(payload: &[u8], id: &str) -> bool {
    payload.len() >= 2 + id.len()
        && payload[0] == 0x0a
        && usize::from(payload[1]) == id.len()
        && &payload[2..2 + id.len()] == id.as_bytes()
}

fn serve(mut s: UnixStream, seen: &Seen) {
    loop {
        let mut h = [0u8; ttrpc::proto::MESSAGE_HEADER_LENGTH];
        if s.read_exact(&mut h).is_err() {
            return;
        }
        let h = ttrpc::MessageHeader::from(h);
        let mut body = vec![0u8; h.length as usize];
        if s.read_exact(&mut body).is_err() {
            return;
        }
        let status = match ttrpc::Request::parse_from_bytes(&body)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                if r.method != "Forward" {
                    return Err(format!("unknown method {}/{}", r.service, r.method));
                }
                ForwardRequest::parse_from_bytes(&r.payload).map_err(|e| e.to_string())
            }) {
            Ok(fwd) => {
                let env = fwd.envelope.get_or_default();
                let got = Got {
                    topic: env.topic.clone(),
                    payload: env.event.get_or_default().value.clone(),
                };
                let (lock, cv) = &**seen;
                lock.lock().unwrap_or_else(|p| p.into_inner()).push(got);
                cv.notify_all();
                None
            }
            Err(e) => Some(e),
        };
        let mut resp = ttrpc::Response::new();
        if let Some(e) = status {
            resp.status = Some(ttrpc::get_status(ttrpc::Code::INVALID_ARGUMENT, e)).into();
        }
        let Ok(resp) = resp.write_to_bytes() else {
            return;
        };
        let mut f: Vec<u8> =
            ttrpc::MessageHeader::new_response(h.stream_id, resp.len() as u32).into();
        f.extend_from_slice(&resp);
        if s.write_all(&f).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_payload_names_its_container() {
        let mut ev = containerd_shim_protos::events::task::TaskExit::new();
        ev.container_id = "c1".into();
        ev.pid = 7;
        let payload = ev.write_to_bytes().unwrap();
        assert!(names(&payload, "c1"));
        assert!(!names(&payload, "c"));
        assert!(!names(&payload, "c12"));
    }
}
