//! The shim's ttrpc server: one thread, one epoll, for every connection, child exit and OOM
//! event. ttrpc's own server keeps a listener thread, a reader and a pool of workers per
//! connection, and parks a worker for every blocked Wait: a dozen threads for an idle shim.
//!
//! Here a Wait that cannot be answered yet becomes a `Reply` the reaper answers, quick calls
//! run on the loop, and calls that may take long (they run hooks, spawn processes, wait for a
//! cgroup to freeze or output to drain) run on a thread of their own that ends with them, so
//! State and Wait never queue behind a Create.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim_protos::protobuf::{Message, MessageField};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use ttrpc::proto::{MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX, MESSAGE_TYPE_REQUEST};
use ttrpc::{Code, MessageHeader};

use crate::service::{status, Ctx, Service};

const LISTENER: u64 = 0;
const SIGNALS: u64 = 1;
const OOM: u64 = 2;
const FIRST_CONN: u64 = 3;

/// How long a reply may wait for a client that does not read its socket.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A client connection; shared by the loop (reads) and whoever answers (writes).
pub struct Conn {
    fd: OwnedFd,
    /// One frame at a time: replies come from the loop and from call threads.
    write: Mutex<()>,
}

impl Conn {
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let _g = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut off = 0;
        while off < frame.len() {
            // SAFETY: send from a live buffer on a socket we hold; MSG_NOSIGNAL so a client
            // that went away is an EPIPE, not a SIGPIPE.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    frame[off..].as_ptr().cast(),
                    frame.len() - off,
                    libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                off += n as usize;
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) => {
                    let mut pfd = libc::pollfd {
                        fd: self.fd.as_raw_fd(),
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: poll on one pollfd we own.
                    let r = unsafe { libc::poll(&mut pfd, 1, WRITE_TIMEOUT.as_millis() as i32) };
                    if r == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
                    }
                }
                _ => return Err(e),
            }
        }
        Ok(())
    }
}

/// Where the answer to one request goes.
pub struct Reply {
    conn: Arc<Conn>,
    stream: u32,
}

impl Reply {
    pub fn send(self, res: ttrpc::Result<Vec<u8>>) {
        let mut r = ttrpc::Response::new();
        match res {
            Ok(payload) => {
                r.status = MessageField::some(ttrpc::get_status(Code::OK, ""));
                r.payload = payload;
            }
            Err(ttrpc::Error::RpcStatus(s)) => r.status = MessageField::some(s),
            Err(e) => {
                r.status = MessageField::some(ttrpc::get_status(Code::UNKNOWN, e.to_string()))
            }
        }
        let body = match r.write_to_bytes() {
            Ok(b) => b,
            Err(e) => {
                log::error!("encode reply: {e}");
                return;
            }
        };
        let mut frame: Vec<u8> = MessageHeader::new_response(self.stream, body.len() as u32).into();
        frame.extend_from_slice(&body);
        if let Err(e) = self.conn.send(&frame) {
            log::debug!("reply on stream {}: {e}", self.stream);
        }
    }
}

struct Client {
    conn: Arc<Conn>,
    buf: Vec<u8>,
    /// Bytes of an oversized frame still to skip.
    skip: usize,
}

/// One complete frame's worth of request, decoded.
struct Call {
    method: String,
    payload: Vec<u8>,
    ctx: Ctx,
}

fn parse_request(body: &[u8]) -> Result<Call, ttrpc::Error> {
    let req = ttrpc::Request::parse_from_bytes(body)
        .map_err(|e| status(Code::INVALID_ARGUMENT, format!("bad request: {e}")))?;
    // containerd 1.6 (and 2.x answered with a plain address) call v2, 2.x calls v3: the
    // messages are the same on the wire.
    if req.service != "containerd.task.v2.Task" && req.service != "containerd.task.v3.Task" {
        return Err(status(
            Code::UNIMPLEMENTED,
            format!("service {} is not served", req.service),
        ));
    }
    let namespace = req
        .metadata
        .iter()
        .find(|kv| kv.key == "containerd-namespace-ttrpc")
        .map(|kv| kv.value.clone());
    Ok(Call {
        method: req.method,
        payload: req.payload,
        ctx: Ctx { namespace },
    })
}

/// Complete frames at the front of `buf`, removed from it; a frame over ttrpc's limit is
/// answered with an error and its bytes skipped as they arrive.
fn take_frames(c: &mut Client) -> Vec<(MessageHeader, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        if c.skip > 0 {
            let n = c.skip.min(c.buf.len() - at);
            c.skip -= n;
            at += n;
            if c.skip > 0 {
                break;
            }
        }
        if c.buf.len() - at < MESSAGE_HEADER_LENGTH {
            break;
        }
        let h = MessageHeader::from(&c.buf[at..at + MESSAGE_HEADER_LENGTH]);
        let len = h.length as usize;
        if len > MESSAGE_LENGTH_MAX {
            at += MESSAGE_HEADER_LENGTH;
            c.skip = len;
            Reply {
                conn: c.conn.clone(),
                stream: h.stream_id,
            }
            .send(Err(status(
                Code::RESOURCE_EXHAUSTED,
                format!("message of {len} bytes exceeds the limit of {MESSAGE_LENGTH_MAX}"),
            )));
            continue;
        }
        if c.buf.len() - at < MESSAGE_HEADER_LENGTH + len {
            break;
        }
        let body = c.buf[at + MESSAGE_HEADER_LENGTH..at + MESSAGE_HEADER_LENGTH + len].to_vec();
        at += MESSAGE_HEADER_LENGTH + len;
        frames.push((h, body));
    }
    c.buf.drain(..at);
    if c.buf.is_empty() && c.buf.capacity() > 64 << 10 {
        c.buf = Vec::new();
    }
    frames
}

/// A reply's message, encoded.
pub fn encode<M: Message>(m: &M) -> ttrpc::Result<Vec<u8>> {
    m.write_to_bytes()
        .map_err(|e| status(Code::INTERNAL, format!("encode reply: {e}")))
}

/// Decode, run, encode: `$f` is the service method, `$req` its request type.
macro_rules! call {
    ($svc:expr, $call:expr, $req:ty, $f:ident) => {{
        match <$req>::parse_from_bytes(&$call.payload) {
            Ok(req) => $svc.$f(&$call.ctx, req).and_then(|m| encode(&m)),
            Err(e) => Err(status(Code::INVALID_ARGUMENT, format!("bad request: {e}"))),
        }
    }};
}

/// Run one call to the end.
fn run_call(svc: &Service, call: Call) -> ttrpc::Result<Vec<u8>> {
    use containerd_shim_protos::api::*;
    match call.method.as_str() {
        "Create" => call!(svc, call, CreateTaskRequest, create),
        "Start" => call!(svc, call, StartRequest, start),
        "Delete" => call!(svc, call, DeleteRequest, delete),
        "Pids" => call!(svc, call, PidsRequest, pids),
        "Pause" => call!(svc, call, PauseRequest, pause),
        "Resume" => call!(svc, call, ResumeRequest, resume),
        "Checkpoint" => call!(svc, call, CheckpointTaskRequest, checkpoint),
        "Kill" => call!(svc, call, KillRequest, kill),
        "Exec" => call!(svc, call, ExecProcessRequest, exec),
        "ResizePty" => call!(svc, call, ResizePtyRequest, resize_pty),
        "CloseIO" => call!(svc, call, CloseIORequest, close_io),
        "Update" => call!(svc, call, UpdateTaskRequest, update),
        "Stats" => call!(svc, call, StatsRequest, stats),
        "Connect" => call!(svc, call, ConnectRequest, connect),
        "Shutdown" => call!(svc, call, ShutdownRequest, shutdown),
        "State" => call!(svc, call, StateRequest, state),
        m => Err(status(
            Code::UNIMPLEMENTED,
            format!("method {m} is not served"),
        )),
    }
}

/// Calls that may run hooks or processes, or wait: each gets a thread of its own.
fn may_take_long(method: &str) -> bool {
    matches!(
        method,
        "Create" | "Start" | "Delete" | "Exec" | "Pause" | "Resume" | "Update"
    )
}

fn dispatch(svc: &Arc<Service>, workers: &Arc<Workers>, call: Call, reply: Reply) {
    if call.method == "Wait" {
        match containerd_shim_protos::api::WaitRequest::parse_from_bytes(&call.payload) {
            Ok(req) => svc.wait(req, reply),
            Err(e) => reply.send(Err(status(
                Code::INVALID_ARGUMENT,
                format!("bad request: {e}"),
            ))),
        }
        return;
    }
    if !may_take_long(&call.method) {
        reply.send(run_call(svc, call));
        let_go_of_kept();
        return;
    }
    let s = svc.clone();
    let job = move |done: &Replied| {
        let held = s.hold_events();
        reply.send(run_call(&s, call));
        let_go_of_kept();
        // Before the held events wake their publisher, which then often runs on this core
        // first: a call arriving meanwhile (containerd sends Start the moment Create
        // answers) is left to this thread, not to a new one started on the loop's core.
        done.replied();
        drop(held);
    };
    if let Err(job) = workers.run(Box::new(job)) {
        log::warn!("no thread for a call: running it on the loop");
        job(&Replied::default());
    }
}

thread_local! {
    /// What the call this thread runs keeps until it has answered ([`keep_until_answered`]).
    static KEPT: std::cell::RefCell<Vec<Box<dyn std::any::Any>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Keep `x` until the call now running on this thread has sent its reply, and drop it then:
/// for what only lets the kernel start work that needs no waiting for (a Delete's network
/// namespace, `ns_hold.rs`), which would otherwise compete with the reply for the cores.
pub fn keep_until_answered(x: impl std::any::Any) {
    KEPT.with(|k| k.borrow_mut().push(Box::new(x)));
}

fn let_go_of_kept() {
    let kept = KEPT.with(|k| std::mem::take(&mut *k.borrow_mut()));
    drop(kept);
}

/// A call to run to its end, its reply included.
type Job = Box<dyn FnOnce(&Replied) + Send>;

/// Handed to a job, which tells through it that its call has answered: what is left of it is
/// short, so the thread counts as free for the next call.
#[derive(Default)]
struct Replied<'a> {
    /// None where the job runs outside the pool.
    workers: Option<&'a Workers>,
    done: std::cell::Cell<bool>,
}

impl Replied<'_> {
    fn replied(&self) {
        if let Some(w) = self.workers {
            if !self.done.replace(true) {
                w.lock().busy -= 1;
            }
        }
    }
}

/// The threads that run long calls. One that finished its call waits a moment for the next
/// before it ends: containerd's Create, Start and (for a short-lived task) Delete come in a
/// row, and starting a thread costs each about 0.1 ms on a VM. An idle shim is left with the
/// loop and the events publisher.
pub struct Workers {
    state: Mutex<WorkQueue>,
    ready: std::sync::Condvar,
    linger: Duration,
}

#[derive(Default)]
struct WorkQueue {
    jobs: std::collections::VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    /// Threads running a job that has not answered yet. Every other thread takes a queued
    /// job soon: one waiting, one still starting, one finishing a call that has answered.
    busy: usize,
    /// Threads alive.
    threads: usize,
}

/// How long a worker waits for another call before it ends.
const WORKER_LINGER: Duration = Duration::from_millis(500);

impl Workers {
    fn new(linger: Duration) -> Arc<Workers> {
        Arc::new(Workers {
            state: Mutex::new(WorkQueue::default()),
            ready: std::sync::Condvar::new(),
            linger,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WorkQueue> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a worker ahead of any call: containerd sends its Create right after it connects,
    /// and a thread started for it then was the first 0.05-0.1 ms of every Create. It ends
    /// after its linger like any other when no call comes.
    fn prestart(self: &Arc<Self>) {
        let q = self.lock();
        self.spawn_worker(q);
    }

    /// Start one more worker, counted under `q`; false when no thread could start.
    fn spawn_worker(self: &Arc<Self>, mut q: std::sync::MutexGuard<'_, WorkQueue>) -> bool {
        q.threads += 1;
        drop(q);
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("call".into())
            .spawn(move || me.work());
        if spawned.is_err() {
            self.lock().threads -= 1;
            return false;
        }
        true
    }

    /// Hand `job` to a free worker, or to a new one; `job` back when no thread can start (the
    /// caller runs it: nothing else would answer it). A worker still starting or finishing an
    /// answered call counts as free: starting another thread costs about 0.1 ms of the loop's
    /// core, and traces showed it in the way of the next call (the prestarted worker not yet
    /// waiting when Create came, Create's worker not yet back when Start came).
    fn run(self: &Arc<Self>, job: Job) -> Result<(), Job> {
        let mut q = self.lock();
        q.jobs.push_back(job);
        if q.threads - q.busy >= q.jobs.len() {
            drop(q);
            self.ready.notify_one();
            return Ok(());
        }
        if !self.spawn_worker(q) {
            // Only the loop queues jobs: the newest is this one, unless a worker that just
            // finished took it; then whichever is left runs on the loop instead.
            if let Some(job) = self.lock().jobs.pop_back() {
                return Err(job);
            }
        }
        Ok(())
    }

    fn work(&self) {
        let mut q = self.lock();
        loop {
            if let Some(job) = q.jobs.pop_front() {
                q.busy += 1;
                drop(q);
                let done = Replied {
                    workers: Some(self),
                    done: std::cell::Cell::new(false),
                };
                job(&done);
                q = self.lock();
                if !done.done.get() {
                    q.busy -= 1;
                }
                continue;
            }
            q.idle += 1;
            let (g, waited) = self
                .ready
                .wait_timeout(q, self.linger)
                .unwrap_or_else(|p| p.into_inner());
            q = g;
            q.idle -= 1;
            if waited.timed_out() && q.jobs.is_empty() {
                q.threads -= 1;
                return;
            }
        }
    }
}

fn epoll_add(ep: &Epoll, fd: impl AsFd, token: u64) -> Result<(), String> {
    ep.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, token))
        .map_err(|e| format!("epoll add: {e}"))
}

/// The pool of call threads, one started already: the daemon's first thread after the zygote,
/// so that it is up and waiting when containerd's Create comes (traced: started last, after
/// the events thread, it was still queued behind the zygote's start-up on the other core).
pub fn prestarted_workers() -> Arc<Workers> {
    let w = Workers::new(WORKER_LINGER);
    w.prestart();
    w
}

/// Serve until Shutdown once no container is left (`shutdown` receives then).
pub fn serve(
    svc: Arc<Service>,
    workers: Arc<Workers>,
    listener: RawFd,
    chld: SigSet,
    shutdown: Receiver<()>,
) -> Result<(), String> {
    // SAFETY: fd 3 is the listening socket `start` passed us; from here on we own it.
    let listener = unsafe { OwnedFd::from_raw_fd(listener) };
    // SAFETY: fcntl/listen on the socket we own.
    unsafe {
        let fl = libc::fcntl(listener.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(listener.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        libc::fcntl(listener.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
        libc::listen(listener.as_raw_fd(), 64);
    }
    let sigs = SignalFd::with_flags(&chld, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| format!("epoll: {e}"))?;
    epoll_add(&ep, &listener, LISTENER)?;
    epoll_add(&ep, &sigs, SIGNALS)?;
    if let Some(fd) = svc.oom_fd() {
        epoll_add(&ep, fd, OOM)?;
    }
    let mut clients: HashMap<u64, Client> = HashMap::new();
    let mut next = FIRST_CONN;
    let mut events = [EpollEvent::empty(); 16];
    // Exits that happened before the loop started (none expected) are collected too.
    reap(&svc);
    loop {
        let n = match ep.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(format!("epoll wait: {e}")),
        };
        // Events queued here (exits, mostly) go out after the Wait replies they unblock.
        let _held = svc.hold_events();
        for ev in &events[..n] {
            match ev.data() {
                LISTENER => accept_all(&ep, &listener, &mut clients, &mut next),
                SIGNALS => {
                    while let Ok(Some(_)) = sigs.read_signal() {}
                    reap(&svc);
                }
                OOM => svc.on_oom_activity(),
                token => {
                    let Some(c) = clients.get_mut(&token) else {
                        continue;
                    };
                    let open = read_some(c);
                    for (h, body) in take_frames(c) {
                        if h.type_ != MESSAGE_TYPE_REQUEST {
                            continue;
                        }
                        let reply = Reply {
                            conn: c.conn.clone(),
                            stream: h.stream_id,
                        };
                        match parse_request(&body) {
                            Ok(call) => dispatch(&svc, &workers, call, reply),
                            Err(e) => reply.send(Err(e)),
                        }
                    }
                    if !open {
                        if let Some(c) = clients.remove(&token) {
                            let _ = ep.delete(&c.conn.fd);
                        }
                    }
                }
            }
        }
        if shutdown.try_recv().is_ok() {
            return Ok(());
        }
    }
}

fn accept_all(ep: &Epoll, listener: &OwnedFd, clients: &mut HashMap<u64, Client>, next: &mut u64) {
    loop {
        // SAFETY: accept4 on our listening socket; the new fd is ours.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                Some(libc::EAGAIN) => return,
                _ => {
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
        // SAFETY: accept4 returned a new fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let token = *next;
        *next += 1;
        if let Err(e) = epoll_add(ep, &fd, token) {
            log::warn!("connection: {e}");
            continue;
        }
        clients.insert(
            token,
            Client {
                conn: Arc::new(Conn {
                    fd,
                    write: Mutex::new(()),
                }),
                buf: Vec::new(),
                skip: 0,
            },
        );
    }
}

/// Read what the socket holds; false once the client closed it (or it failed).
fn read_some(c: &mut Client) -> bool {
    let mut chunk = [0u8; 16 << 10];
    loop {
        // SAFETY: read into a local buffer from a socket we hold.
        let n = unsafe {
            libc::read(
                c.conn.fd.as_raw_fd(),
                chunk.as_mut_ptr().cast(),
                chunk.len(),
            )
        };
        match n {
            0 => return false,
            n if n > 0 => c.buf.extend_from_slice(&chunk[..n as usize]),
            _ => {
                let e = std::io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => true,
                    _ => false,
                };
            }
        }
    }
}

/// The one owner of child exits: a coalesced SIGCHLD can stand for many exits, so drain all.
fn reap(svc: &Service) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => svc.on_exit(pid.as_raw(), code as u32),
            Ok(WaitStatus::Signaled(pid, sig, _)) => svc.on_exit(pid.as_raw(), 128 + sig as u32),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// SIGCHLD, blocked in every thread so that only the loop's signalfd receives it.
pub fn block_sigchld() -> Result<SigSet, String> {
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    chld.thread_block()
        .map_err(|e| format!("block SIGCHLD: {e}"))?;
    Ok(chld)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Arc<Conn>, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (
            Arc::new(Conn {
                fd: a.into(),
                write: Mutex::new(()),
            }),
            b,
        )
    }

    fn frame(stream: u32, body: &[u8]) -> Vec<u8> {
        let mut f: Vec<u8> = MessageHeader::new_request(stream, body.len() as u32).into();
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_oversized_ones_are_refused_and_skipped() {
        let (conn, mut peer) = pair();
        let mut c = Client {
            conn,
            buf: Vec::new(),
            skip: 0,
        };
        let mut wire = frame(1, b"one");
        let mut big: Vec<u8> =
            MessageHeader::new_request(3, (MESSAGE_LENGTH_MAX + 5) as u32).into();
        big.extend(std::iter::repeat_n(7u8, MESSAGE_LENGTH_MAX + 5));
        wire.extend(big);
        wire.extend(frame(5, b"three"));
        let mut got = Vec::new();
        for piece in wire.chunks(1 << 20 | 3) {
            c.buf.extend_from_slice(piece);
            got.extend(take_frames(&mut c));
        }
        let ids: Vec<(u32, Vec<u8>)> = got.into_iter().map(|(h, b)| (h.stream_id, b)).collect();
        assert_eq!(ids, vec![(1, b"one".to_vec()), (5, b"three".to_vec())]);
        assert!(c.buf.is_empty() && c.skip == 0);
        let mut h = [0u8; MESSAGE_HEADER_LENGTH];
        std::io::Read::read_exact(&mut peer, &mut h).unwrap();
        let h = MessageHeader::from(h);
        assert_eq!(
            (h.stream_id, h.type_),
            (3, ttrpc::proto::MESSAGE_TYPE_RESPONSE)
        );
        let mut body = vec![0u8; h.length as usize];
        std::io::Read::read_exact(&mut peer, &mut body).unwrap();
        let r = ttrpc::Response::parse_from_bytes(&body).unwrap();
        assert_eq!(r.status.code.enum_value(), Ok(Code::RESOURCE_EXHAUSTED));
    }

    /// Hand `w` a job that only counts itself in `done`.
    fn run_counted(w: &Arc<Workers>, done: &Arc<std::sync::atomic::AtomicUsize>) {
        let d = done.clone();
        assert!(w
            .run(Box::new(move |_: &Replied| {
                d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }))
            .is_ok());
    }

    /// Hand `w` a job that records its thread in `tids` and counts itself in `done`.
    fn run_recorded(
        w: &Arc<Workers>,
        done: &Arc<std::sync::atomic::AtomicUsize>,
        tids: &Arc<Mutex<Vec<std::thread::ThreadId>>>,
    ) {
        let (d, t) = (done.clone(), tids.clone());
        assert!(w
            .run(Box::new(move |_: &Replied| {
                t.lock().unwrap().push(std::thread::current().id());
                d.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }))
            .is_ok());
    }

    /// Until `want` jobs ran (or 5 s).
    fn wait_for(n: &std::sync::atomic::AtomicUsize, want: usize) {
        let t = std::time::Instant::now();
        while n.load(std::sync::atomic::Ordering::SeqCst) < want {
            assert!(t.elapsed() < Duration::from_secs(5), "jobs did not run");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_worker_runs_the_next_call_and_ends_once_idle_for_its_linger() {
        use std::sync::atomic::AtomicUsize;
        let w = Workers::new(Duration::from_millis(300));
        let done = Arc::new(AtomicUsize::new(0));
        let tids = Arc::new(Mutex::new(Vec::new()));
        for i in 1..=3 {
            run_recorded(&w, &done, &tids);
            wait_for(&done, i);
        }
        let tids = tids.lock().unwrap().clone();
        assert!(
            tids.iter().all(|t| *t == tids[0]),
            "calls in a row: one thread"
        );
        assert_ne!(tids[0], std::thread::current().id());
        assert_eq!(w.lock().threads, 1);
        let t = std::time::Instant::now();
        while w.lock().threads > 0 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the idle worker stayed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "it left before its linger"
        );
    }

    #[test]
    fn the_first_call_finds_a_prestarted_worker() {
        use std::sync::atomic::AtomicUsize;
        let w = Workers::new(Duration::from_secs(5));
        w.prestart();
        let t = std::time::Instant::now();
        while w.lock().idle == 0 {
            assert!(t.elapsed() < Duration::from_secs(5), "no worker came up");
            std::thread::sleep(Duration::from_millis(1));
        }
        let done = Arc::new(AtomicUsize::new(0));
        run_counted(&w, &done);
        wait_for(&done, 1);
        assert_eq!(w.lock().threads, 1, "the call started a thread of its own");
    }

    #[test]
    fn a_call_after_an_answered_one_waits_for_its_thread() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let w = Workers::new(Duration::from_secs(5));
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let (answered_tx, answered_rx) = std::sync::mpsc::channel::<()>();
        let done = Arc::new(AtomicUsize::new(0));
        let tids = Arc::new(Mutex::new(Vec::new()));
        let (d, t) = (done.clone(), tids.clone());
        assert!(w
            .run(Box::new(move |r: &Replied| {
                t.lock().unwrap().push(std::thread::current().id());
                r.replied();
                answered_tx.send(()).unwrap();
                // What is left after the answer, held up here.
                let _ = gate_rx.recv();
                d.fetch_add(1, Ordering::SeqCst);
            }))
            .is_ok());
        answered_rx.recv().unwrap();
        run_recorded(&w, &done, &tids);
        assert_eq!(
            w.lock().threads,
            1,
            "a thread was started for the second call"
        );
        gate_tx.send(()).unwrap();
        wait_for(&done, 2);
        let tids = tids.lock().unwrap().clone();
        assert_eq!(tids[0], tids[1]);
        assert_eq!(w.lock().busy, 0);
    }

    #[test]
    fn calls_that_overlap_get_threads_of_their_own() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let w = Workers::new(Duration::from_millis(100));
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate_rx));
        let done = Arc::new(AtomicUsize::new(0));
        // The first blocks until the others ran: they cannot wait behind it.
        let (g, d) = (gate.clone(), done.clone());
        assert!(w
            .run(Box::new(move |_: &Replied| {
                let _ = g.lock().unwrap().recv();
                d.fetch_add(1, Ordering::SeqCst);
            }))
            .is_ok());
        for _ in 0..2 {
            run_counted(&w, &done);
        }
        wait_for(&done, 2);
        assert!(w.lock().threads >= 2);
        gate_tx.send(()).unwrap();
        wait_for(&done, 3);
    }

    #[test]
    fn requests_carry_their_namespace_and_other_services_are_refused() {
        let mut r = ttrpc::Request::new();
        r.service = "containerd.task.v2.Task".into();
        r.method = "State".into();
        let mut kv = ttrpc::proto::KeyValue::new();
        kv.key = "containerd-namespace-ttrpc".into();
        kv.value = "k8s.io".into();
        r.metadata.push(kv);
        let call = parse_request(&r.write_to_bytes().unwrap()).unwrap();
        assert_eq!(call.method, "State");
        assert_eq!(call.ctx.namespace.as_deref(), Some("k8s.io"));
        r.service = "containerd.runtime.sandbox.v1.Sandbox".into();
        match parse_request(&r.write_to_bytes().unwrap()) {
            Err(ttrpc::Error::RpcStatus(s)) => {
                assert_eq!(s.code.enum_value(), Ok(Code::UNIMPLEMENTED))
            }
            _ => panic!("another service was accepted"),
        }
    }
}
