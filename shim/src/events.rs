//! One ordered queue of events to containerd (`Events/Forward` over ttrpc at TTRPC_ADDRESS),
//! drained by one thread that reconnects and retries, so a slow or restarting containerd
//! never blocks a Task call.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;

pub struct Event {
    topic: &'static str,
    any: Any,
}

enum Msg {
    Event(Event),
    /// Answered once every event queued before it has been forwarded (or given up on).
    Flush(Sender<()>),
}

/// The queue the publishing thread drains.
#[derive(Default)]
struct Queue {
    msgs: Mutex<VecDeque<Msg>>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Msg>> {
        self.msgs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
pub struct Publisher(Arc<Queue>);

#[derive(Clone, Copy, PartialEq)]
enum HoldState {
    Off,
    On,
    /// On, and an event was queued meanwhile.
    Pending,
}

thread_local! {
    /// Whether this thread's events wait for the end of what it is doing (`Publisher::hold`).
    static HOLD: Cell<HoldState> = const { Cell::new(HoldState::Off) };
}

/// A hold on this thread's events ([`Publisher::hold`]); dropped, it wakes the publisher if an
/// event came in while it was on.
pub struct Hold<'a> {
    queue: &'a Queue,
    outer: HoldState,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let pending = HOLD.with(|h| h.replace(self.outer)) == HoldState::Pending;
        if pending {
            if self.outer == HoldState::Off {
                self.queue.ready.notify_one();
            } else {
                HOLD.with(|h| h.set(HoldState::Pending));
            }
        }
    }
}

fn any<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: m.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}

pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

impl Publisher {
    /// Start the publishing thread. Without a ttrpc address (tests) events are only logged.
    /// `conn`: a connection to `ttrpc_address` made already ([`connect`]), if any. `first`
    /// runs on the thread before it waits for events: the shim's first event (TaskCreate)
    /// comes after its first Create, which is what `first` prepares.
    pub fn start(
        ttrpc_address: Option<String>,
        namespace: String,
        conn: Option<UnixStream>,
        first: impl FnOnce() + Send + 'static,
    ) -> Publisher {
        let queue = Arc::new(Queue::default());
        let q = queue.clone();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                first();
                release_unused_stack();
                run(&q, ttrpc_address, namespace, conn)
            })
            .ok();
        Publisher(queue)
    }

    fn send(&self, topic: &'static str, any: Any) {
        self.0.lock().push_back(Msg::Event(Event { topic, any }));
        let held = HOLD.with(|h| {
            let on = h.get() != HoldState::Off;
            if on {
                h.set(HoldState::Pending);
            }
            on
        });
        if !held {
            self.0.ready.notify_one();
        }
    }

    /// Hold the publisher's wake-up for this thread's events until the returned guard drops
    /// (a call, its reply included). Its events are queued as they happen, so their order is
    /// unchanged, and an event another thread wakes the publisher for takes them along; but
    /// the publisher, and the containerd it wakes in turn, no longer compete for the two cores
    /// with the rest of the call and its reply, which the caller is waiting for. runc's shim,
    /// too, sends its events from a queue, after the call that queued them went on. Holds
    /// nest: an inner one ends with the outer.
    pub fn hold(&self) -> Hold<'_> {
        Hold {
            queue: &self.0,
            outer: HOLD.with(|h| {
                let outer = h.get();
                if outer == HoldState::Off {
                    h.set(HoldState::On);
                }
                outer
            }),
        }
    }

    /// Wait up to `timeout` for the queue to drain. The shim exits right after the Shutdown
    /// that follows the last Delete: without this its `/tasks/delete` (and an exit just before
    /// it) could die in the queue.
    pub fn flush(&self, timeout: Duration) {
        let (tx, rx) = channel();
        self.0.lock().push_back(Msg::Flush(tx));
        // Woken at once, held or not: the caller waits for it.
        self.0.ready.notify_one();
        if rx.recv_timeout(timeout).is_err() {
            log::warn!("events not all forwarded within {timeout:?}");
        }
    }

    pub fn create(&self, id: &str, bundle: &str, pid: u32, io: [&str; 3], terminal: bool) {
        let mut e = TaskCreate::new();
        e.container_id = id.into();
        e.bundle = bundle.into();
        e.pid = pid;
        let mut tio = containerd_shim_protos::events::task::TaskIO::new();
        tio.stdin = io[0].into();
        tio.stdout = io[1].into();
        tio.stderr = io[2].into();
        tio.terminal = terminal;
        e.io = MessageField::some(tio);
        self.send("/tasks/create", any("containerd.events.TaskCreate", &e));
    }

    pub fn start_(&self, id: &str, pid: u32) {
        let mut e = TaskStart::new();
        e.container_id = id.into();
        e.pid = pid;
        self.send("/tasks/start", any("containerd.events.TaskStart", &e));
    }

    pub fn exit(&self, id: &str, exec_id: &str, pid: u32, status: u32, at: &Timestamp) {
        let mut e = TaskExit::new();
        e.container_id = id.into();
        e.id = exec_id.into();
        e.pid = pid;
        e.exit_status = status;
        e.exited_at = MessageField::some(at.clone());
        self.send("/tasks/exit", any("containerd.events.TaskExit", &e));
    }

    pub fn exec_added(&self, id: &str, exec_id: &str) {
        let mut e = TaskExecAdded::new();
        e.container_id = id.into();
        e.exec_id = exec_id.into();
        self.send(
            "/tasks/exec-added",
            any("containerd.events.TaskExecAdded", &e),
        );
    }

    pub fn exec_started(&self, id: &str, exec_id: &str, pid: u32) {
        let mut e = TaskExecStarted::new();
        e.container_id = id.into();
        e.exec_id = exec_id.into();
        e.pid = pid;
        self.send(
            "/tasks/exec-started",
            any("containerd.events.TaskExecStarted", &e),
        );
    }

    pub fn oom(&self, id: &str) {
        let mut e = TaskOOM::new();
        e.container_id = id.into();
        self.send("/tasks/oom", any("containerd.events.TaskOOM", &e));
    }

    pub fn paused(&self, id: &str) {
        let mut e = TaskPaused::new();
        e.container_id = id.into();
        self.send("/tasks/paused", any("containerd.events.TaskPaused", &e));
    }

    pub fn resumed(&self, id: &str) {
        let mut e = TaskResumed::new();
        e.container_id = id.into();
        self.send("/tasks/resumed", any("containerd.events.TaskResumed", &e));
    }

    pub fn delete(&self, id: &str, pid: u32, status: u32, at: &Timestamp) {
        let mut e = TaskDelete::new();
        e.container_id = id.into();
        e.id = id.into();
        e.pid = pid;
        e.exit_status = status;
        e.exited_at = MessageField::some(at.clone());
        self.send("/tasks/delete", any("containerd.events.TaskDelete", &e));
    }
}

fn next(queue: &Queue) -> Msg {
    let mut q = queue.lock();
    loop {
        if let Some(m) = q.pop_front() {
            return m;
        }
        q = queue.ready.wait(q).unwrap_or_else(|p| p.into_inner());
    }
}

/// A connection to containerd's ttrpc address (`unix://` or a path) for events, or None.
/// Made before the first event: containerd's side of a new connection (its accept, a
/// goroutine) then falls before Create, not between Create's answer and Start.
/// Never blocks: a containerd whose listen backlog is full (EAGAIN) is left to the
/// publisher's own connect, as a containerd that is not there is.
pub fn connect(addr: &str) -> Option<UnixStream> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let res = (|| -> std::io::Result<UnixStream> {
        let sock = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        nix::sys::socket::connect(sock.as_raw_fd(), &UnixAddr::new(socket_path(addr))?)?;
        let sock = UnixStream::from(sock);
        sock.set_nonblocking(false)?;
        Ok(sock)
    })();
    res.map_err(|e| log::debug!("connect to containerd at {addr} for events: {e}"))
        .ok()
}

/// The socket's path of a ttrpc address, `unix://` or a plain path.
fn socket_path(addr: &str) -> &str {
    addr.strip_prefix("unix://").unwrap_or(addr)
}

/// Give back this thread's stack pages below the current frame. What ran first on it (a
/// config.json parse) reached much deeper than the publisher ever does, and the thread lives as
/// long as the shim: measured, some 40 KiB of Pss in every shim. The pages the publisher touches
/// again come back zeroed.
fn release_unused_stack() {
    // SAFETY: pthread_getattr_np and pthread_attr_getstack only fill the attr and the two
    // out-parameters; madvise(MADV_DONTNEED) is applied to this thread's own stack, below the
    // current frame (with a margin), which nothing live uses.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if !got {
            return;
        }
        const PAGE: usize = 4096;
        let lowest = (addr as usize).div_ceil(PAGE) * PAGE;
        let here = std::ptr::addr_of!(attr) as usize;
        // One page below this frame stays: the madvise call's own frame is there.
        let below = (here / PAGE).saturating_sub(1) * PAGE;
        if below > lowest && here < addr as usize + size {
            libc::madvise(
                lowest as *mut libc::c_void,
                below - lowest,
                libc::MADV_DONTNEED,
            );
        }
    }
}

fn run(queue: &Queue, address: Option<String>, namespace: String, conn: Option<UnixStream>) {
    let mut client: Option<Forwarder> = conn
        .or_else(|| address.as_deref().and_then(connect))
        .and_then(|s| Forwarder::new(s).ok());
    loop {
        let msg = next(queue);
        let ev = match msg {
            Msg::Event(ev) => ev,
            Msg::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let Some(addr) = &address else {
            log::debug!("event {} (no containerd address)", ev.topic);
            continue;
        };
        let mut env = Envelope::new();
        env.timestamp = MessageField::some(now());
        env.namespace = namespace.clone();
        env.topic = ev.topic.to_string();
        env.event = MessageField::some(ev.any);
        let mut req = ForwardRequest::new();
        req.envelope = MessageField::some(env);
        // A connection made before this event may have outlived its containerd (restarted
        // since): one failure of it is retried at once.
        let mut kept = client.is_some();
        for attempt in 0..5u64 {
            if client.is_none() {
                match Forwarder::connect(addr) {
                    Ok(c) => client = Some(c),
                    Err(e) => log::warn!("connect to containerd at {addr} for events: {e}"),
                }
            }
            if let Some(c) = &mut client {
                match c.forward(&req) {
                    Ok(()) => break,
                    Err(e) => {
                        log::warn!("publish {}: {e}", ev.topic);
                        client = None;
                    }
                }
            }
            if std::mem::take(&mut kept) {
                continue;
            }
            std::thread::sleep(Duration::from_millis(50 * (attempt + 1)));
        }
    }
}

/// A blocking ttrpc connection that sends one request and reads its response: all the
/// publisher needs. (ttrpc's own client keeps two more threads per connection.)
struct Forwarder {
    sock: UnixStream,
    next_stream: u32,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl Forwarder {
    fn connect(addr: &str) -> std::io::Result<Forwarder> {
        Forwarder::new(UnixStream::connect(socket_path(addr))?)
    }

    fn new(sock: UnixStream) -> std::io::Result<Forwarder> {
        sock.set_read_timeout(Some(TIMEOUT))?;
        sock.set_write_timeout(Some(TIMEOUT))?;
        Ok(Forwarder {
            sock,
            next_stream: 1,
        })
    }

    fn forward(&mut self, req: &ForwardRequest) -> Result<(), String> {
        let mut r = ttrpc::Request::new();
        r.service = "containerd.services.events.ttrpc.v1.Events".into();
        r.method = "Forward".into();
        r.payload = req.write_to_bytes().map_err(|e| e.to_string())?;
        r.timeout_nano = TIMEOUT.as_nanos() as i64;
        let body = r.write_to_bytes().map_err(|e| e.to_string())?;
        // Client streams are odd.
        let id = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(2);
        let mut frame: Vec<u8> = ttrpc::MessageHeader::new_request(id, body.len() as u32).into();
        frame.extend_from_slice(&body);
        self.sock.write_all(&frame).map_err(|e| e.to_string())?;
        loop {
            let mut h = [0u8; ttrpc::proto::MESSAGE_HEADER_LENGTH];
            self.sock.read_exact(&mut h).map_err(|e| e.to_string())?;
            let h = ttrpc::MessageHeader::from(h);
            let len = h.length as usize;
            if len > 4 << 20 {
                return Err(format!("response of {len} bytes"));
            }
            let mut payload = vec![0u8; len];
            self.sock
                .read_exact(&mut payload)
                .map_err(|e| e.to_string())?;
            if h.stream_id != id || h.type_ != ttrpc::proto::MESSAGE_TYPE_RESPONSE {
                continue;
            }
            let resp = ttrpc::Response::parse_from_bytes(&payload).map_err(|e| e.to_string())?;
            let status = resp.status.get_or_default();
            return match status.code.enum_value() {
                Ok(ttrpc::Code::OK) => Ok(()),
                _ => Err(format!("{:?}: {}", status.code, status.message)),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    /// A containerd stand-in that answers each Forward after `delay` and records the topics
    /// it got.
    fn events_server(listener: UnixListener, delay: Duration) -> Arc<Mutex<Vec<String>>> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let rec = got.clone();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            while let Some(topic) = answer_forward(&mut s, delay) {
                rec.lock().unwrap().push(topic);
            }
        });
        got
    }

    /// Read one Forward request from `s`, answer it after `delay`: its topic, or None once the
    /// publisher's side is closed.
    fn answer_forward(s: &mut UnixStream, delay: Duration) -> Option<String> {
        let mut h = [0u8; ttrpc::proto::MESSAGE_HEADER_LENGTH];
        s.read_exact(&mut h).ok()?;
        let h = ttrpc::MessageHeader::from(h);
        let mut body = vec![0u8; h.length as usize];
        s.read_exact(&mut body).unwrap();
        let req = ttrpc::Request::parse_from_bytes(&body).unwrap();
        let fwd = ForwardRequest::parse_from_bytes(&req.payload).unwrap();
        std::thread::sleep(delay);
        let resp = ttrpc::Response::new().write_to_bytes().unwrap();
        let mut f: Vec<u8> =
            ttrpc::MessageHeader::new_response(h.stream_id, resp.len() as u32).into();
        f.extend_from_slice(&resp);
        s.write_all(&f).unwrap();
        Some(fwd.envelope.topic.clone())
    }

    /// A fresh dir `name` (the caller removes it) and a listener on a socket in it.
    fn listening(name: &str) -> (PathBuf, PathBuf, UnixListener) {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("ttrpc.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        (dir, sock, listener)
    }

    /// `listener`'s next connection, or None after 5 s.
    fn accept_within(listener: &UnixListener) -> Option<UnixStream> {
        let l = listener.try_clone().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(l.accept().map(|(s, _)| s));
        });
        rx.recv_timeout(Duration::from_secs(5)).ok()?.ok()
    }

    #[test]
    fn connecting_never_waits_for_a_full_backlog() {
        use std::os::fd::AsRawFd;
        let (dir, sock, listener) = listening("crt-events-full");
        // A containerd that accepts nothing, with room for one pending connection.
        // SAFETY: listen on a socket we own.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let addr = format!("unix://{}", sock.display());
        let first = connect(&addr);
        assert!(first.is_some());
        let (tx, rx) = std::sync::mpsc::channel();
        let a = addr.clone();
        std::thread::spawn(move || {
            let _ = tx.send(connect(&a).is_none());
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Ok(true),
            "connect waited on a full backlog"
        );
        drop(first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_publisher_given_a_connection_sends_on_it() {
        let (dir, sock, listener) = listening("crt-events-given");
        let addr = format!("unix://{}", sock.display());
        let conn = connect(&addr).expect("connect");
        let mut served = accept_within(&listener).expect("the connection made");
        let p = Publisher::start(Some(addr), "ns".into(), Some(conn), || {});
        p.start_("c", 1);
        assert_eq!(
            answer_forward(&mut served, Duration::ZERO).as_deref(),
            Some("/tasks/start")
        );
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "a second connection was made");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_publisher_connects_before_its_first_event_and_reconnects_when_that_breaks() {
        let (dir, sock, listener) = listening("crt-events-early");
        let p = Publisher::start(
            Some(format!("unix://{}", sock.display())),
            "ns".into(),
            None,
            || {},
        );
        let first = accept_within(&listener).expect("no connection before any event");
        // containerd restarted meanwhile: the connection made early is gone.
        drop(first);
        p.start_("c", 1);
        let mut second = accept_within(&listener).expect("no new connection for the event");
        assert_eq!(
            answer_forward(&mut second, Duration::ZERO).as_deref(),
            Some("/tasks/start")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A publisher forwarding to an [`events_server`] in a fresh dir `name` (removed after).
    fn publisher(name: &str, delay: Duration) -> (Publisher, Arc<Mutex<Vec<String>>>, PathBuf) {
        let (dir, sock, listener) = listening(name);
        let got = events_server(listener, delay);
        let p = Publisher::start(
            Some(format!("unix://{}", sock.display())),
            "ns".into(),
            None,
            || {},
        );
        (p, got, dir)
    }

    /// Resident pages of this thread's stack below the current frame's margin.
    fn resident_stack_pages_below_here() -> usize {
        // SAFETY: as in release_unused_stack; mincore only fills `vec`.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
            let mut addr: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            assert_eq!(libc::pthread_attr_getstack(&attr, &mut addr, &mut size), 0);
            libc::pthread_attr_destroy(&mut attr);
            let lowest = (addr as usize).div_ceil(4096) * 4096;
            let below = (std::ptr::addr_of!(attr) as usize - 16 * 4096) / 4096 * 4096;
            let mut vec = vec![0u8; (below - lowest) / 4096];
            assert_eq!(
                libc::mincore(
                    lowest as *mut libc::c_void,
                    below - lowest,
                    vec.as_mut_ptr()
                ),
                0
            );
            vec.iter().filter(|b| *b & 1 != 0).count()
        }
    }

    #[inline(never)]
    fn deep(n: usize) -> u8 {
        let mut page = [0u8; 4096];
        page[n % 4096] = n as u8;
        let below = if n > 0 { deep(n - 1) } else { 0 };
        std::hint::black_box(&mut page)[0].wrapping_add(below)
    }

    #[test]
    fn the_stack_a_first_job_used_is_given_back() {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                std::hint::black_box(deep(128));
                assert!(
                    resident_stack_pages_below_here() >= 100,
                    "the stack was touched"
                );
                release_unused_stack();
                assert!(
                    resident_stack_pages_below_here() <= 2,
                    "the stack below was not given back"
                );
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn events_wait_for_what_runs_first_on_the_thread() {
        let (dir, sock, listener) = listening("crt-events-first");
        let got = events_server(listener, Duration::ZERO);
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let p = Publisher::start(
            Some(format!("unix://{}", sock.display())),
            "ns".into(),
            None,
            move || {
                let _ = go_rx.recv();
            },
        );
        p.start_("c", 1);
        std::thread::sleep(Duration::from_millis(100));
        assert!(got.lock().unwrap().is_empty(), "sent before `first` ended");
        go_tx.send(()).unwrap();
        assert_eq!(wait_for(&got, 1), vec!["/tasks/start".to_string()]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flush_returns_once_queued_events_are_forwarded() {
        let (p, got, dir) = publisher("crt-events", Duration::from_millis(100));
        p.exit("c", "c", 1, 0, &now());
        p.delete("c", 1, 0, &now());
        p.flush(Duration::from_secs(5));
        assert_eq!(*got.lock().unwrap(), vec!["/tasks/exit", "/tasks/delete"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn wait_for(got: &Mutex<Vec<String>>, n: usize) -> Vec<String> {
        let t = std::time::Instant::now();
        while got.lock().unwrap().len() < n && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        got.lock().unwrap().clone()
    }

    #[test]
    fn held_events_are_sent_in_order_once_the_hold_ends() {
        let (p, got, dir) = publisher("crt-events-held", Duration::ZERO);
        // Connected and idle first, so the held event below would go out at once if woken.
        p.start_("c", 1);
        assert_eq!(wait_for(&got, 1), vec!["/tasks/start"]);
        let inner = {
            let _held = p.hold();
            p.exit("c", "c", 1, 0, &now());
            // A nested hold (a call run on the loop) does not end the outer one.
            {
                let _inner = p.hold();
                p.delete("c", 1, 0, &now());
            }
            std::thread::sleep(Duration::from_millis(200));
            got.lock().unwrap().len()
        };
        assert_eq!(inner, 1, "an event went out while its hold was on");
        assert_eq!(
            wait_for(&got, 3),
            vec!["/tasks/start", "/tasks/exit", "/tasks/delete"]
        );
        // A flush inside a hold is not held: it would wait for itself.
        {
            let _held = p.hold();
            p.oom("c");
            p.flush(Duration::from_secs(5));
            assert_eq!(got.lock().unwrap().len(), 4);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
