//! The Task service: containerd's calls mapped onto the runtime, one table of containers, and
//! exits recorded by the single reaper (the server loop's signalfd, `server.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, MutexGuard};

use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ProcessInfo, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, Status,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::ProcessDetails;
use crt_runtime::{Container, CreateOpts, RootfsMount, RuntimeError};
use nix::sys::signal::Signal;
use ttrpc::Code;

use crate::events::{now, Publisher};
use crate::io::{Owner, Stdio};
use crate::oom::OomWatcher;
use crate::server::Reply;

pub(crate) fn status(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

fn not_found(id: &str) -> ttrpc::Error {
    status(Code::NOT_FOUND, format!("container {id}: not found"))
}

fn runtime_err(what: &str, e: RuntimeError) -> ttrpc::Error {
    let code = match e {
        RuntimeError::InvalidSpec(_) | RuntimeError::ParseSpec { .. } => Code::INVALID_ARGUMENT,
        RuntimeError::Unsupported { .. } => Code::UNIMPLEMENTED,
        RuntimeError::BadState(_) => Code::FAILED_PRECONDITION,
        _ => Code::UNKNOWN,
    };
    status(code, format!("crt: {what}: {e}"))
}

/// One process the shim runs: a container's init or one of its execs.
struct Process {
    pid: i32,
    status: Status,
    exit: Option<(u32, Timestamp)>,
    io: Stdio,
    paths: [String; 3],
}

impl Process {
    fn new(pid: i32, io: Stdio, paths: [String; 3]) -> Process {
        Process {
            pid,
            status: Status::CREATED,
            exit: None,
            io,
            paths,
        }
    }

    /// Started and not yet reaped.
    fn running(&self) -> bool {
        self.exit.is_none() && matches!(self.status, Status::RUNNING | Status::PAUSED)
    }
}

struct ExecProc {
    proc: Process,
    /// Held until Start; dropping it makes a never-started exec exit.
    handle: Option<crt_runtime::Exec>,
}

struct Proc {
    container: Option<Container>,
    bundle: String,
    init: Process,
    execs: HashMap<String, ExecProc>,
    /// OOM kills already reported with TaskOOM.
    oom_reported: u64,
    /// The init's exit, held back until its execs are reaped: containerd must see every exec's
    /// exit before the init's (runc's shim orders them the same way).
    pending_exit: Option<(u32, Timestamp)>,
    /// This container's entry in the OOM watcher.
    oom_watch: Option<u64>,
    /// runc's IoUid/IoGid from the create's options: its execs' stdio gets them too.
    io_owner: Option<(u32, u32)>,
    /// The init's exit status, still to be written to the state file (for a `delete` after a
    /// shim crash): written once the exit's waiters have their answer, not before.
    exit_to_record: Option<u32>,
}

impl Proc {
    fn process(&self, id: &str, exec_id: &str) -> ttrpc::Result<&Process> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .map(|e| &e.proc)
            .ok_or_else(|| exec_not_found(id, exec_id))
    }

    /// The runtime's container, present until Delete takes it.
    fn container(&self, id: &str) -> ttrpc::Result<&Container> {
        self.container.as_ref().ok_or_else(|| not_found(id))
    }

    fn process_mut(&mut self, id: &str, exec_id: &str) -> ttrpc::Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .map(|e| &mut e.proc)
            .ok_or_else(|| exec_not_found(id, exec_id))
    }
}

fn exec_not_found(id: &str, exec_id: &str) -> ttrpc::Error {
    status(
        Code::NOT_FOUND,
        format!("exec {exec_id} in container {id}: not found"),
    )
}

#[derive(Default)]
struct Table {
    procs: HashMap<String, Proc>,
    /// Exits of pids not (yet) in the table: a process can die before create registers it.
    unclaimed: HashMap<i32, (u32, Timestamp)>,
    /// Execs being spawned, outside the lock: (container id, exec id).
    creating: std::collections::HashSet<(String, String)>,
    /// Waits for processes still running: (container id, exec id, where the answer goes).
    waiters: Vec<(String, String, Reply)>,
}

fn wait_response((code, at): (u32, Timestamp)) -> ttrpc::Result<Vec<u8>> {
    crate::server::encode(&WaitResponse {
        exit_status: code,
        exited_at: MessageField::some(at),
        ..Default::default()
    })
}

impl Table {
    /// The exit of a container's init (empty `exec_id`) or exec; None while it runs.
    fn exit_of(&self, id: &str, exec_id: &str) -> ttrpc::Result<Option<(u32, Timestamp)>> {
        let p = self.procs.get(id).ok_or_else(|| not_found(id))?;
        Ok(p.process(id, exec_id)?.exit.clone())
    }

    /// Answer the waits whose process has exited, or is gone (deleted unstarted).
    fn answer_waiters(&mut self) {
        for (id, exec_id, reply) in std::mem::take(&mut self.waiters) {
            match self.exit_of(&id, &exec_id) {
                Ok(None) => self.waiters.push((id, exec_id, reply)),
                Ok(Some(exit)) => reply.send(wait_response(exit)),
                Err(e) => reply.send(Err(e)),
            }
        }
    }
}

/// A TaskExit to publish.
struct ExitEvent {
    id: String,
    exec_id: String,
    pid: u32,
    code: u32,
    at: Timestamp,
}

impl ExitEvent {
    fn publish(self, events: &Publisher) {
        events.exit(&self.id, &self.exec_id, self.pid, self.code, &self.at);
    }
}

pub struct Service {
    table: Mutex<Table>,
    exited: Condvar,
    events: Publisher,
    shutdown: Mutex<Option<Sender<()>>>,
    /// The shim's -namespace, for requests that carry none.
    namespace: String,
    oom: Option<OomWatcher>,
}

impl Service {
    pub fn new(events: Publisher, shutdown: Sender<()>, namespace: String) -> Service {
        Service {
            table: Mutex::new(Table::default()),
            exited: Condvar::new(),
            events,
            shutdown: Mutex::new(Some(shutdown)),
            namespace,
            oom: OomWatcher::new()
                .map_err(|e| log::warn!("no live OOM events: epoll: {e}"))
                .ok(),
        }
    }

    /// The OOM watcher's epoll, for the server's loop.
    pub fn oom_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.oom.as_ref().map(|w| w.fd())
    }

    /// OOM activity in some containers: TaskOOM as soon as the kernel has killed.
    pub fn on_oom_activity(self: &std::sync::Arc<Self>) {
        let Some(w) = &self.oom else { return };
        for id in w.ready() {
            log::debug!("container {id}: OOM activity");
            if self.try_report_oom(&id) {
                continue;
            }
            // The kernel signals before its OOM killer picks a victim: give the kill counter
            // a moment to move (nothing moves it if no process is killed), off the loop.
            let svc = self.clone();
            let _ = std::thread::Builder::new()
                .name("oom".into())
                .spawn(move || {
                    for _ in 0..50 {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        if svc.try_report_oom(&id) {
                            break;
                        }
                    }
                });
        }
    }

    /// True when reported, or when there is nothing left to report on.
    fn try_report_oom(&self, id: &str) -> bool {
        let mut t = self.lock();
        match t.procs.get_mut(id) {
            Some(p) => self.report_oom(id, p),
            None => true,
        }
    }

    fn watch_oom_of(&self, id: &str, c: &mut Container) -> Option<u64> {
        let w = self.oom.as_ref()?;
        match c.oom_events() {
            Ok(Some(fd)) => w
                .add(id, fd)
                .inspect(|_| log::debug!("container {id}: watching for OOM kills"))
                .map_err(|e| log::warn!("container {id}: no live OOM events: {e}"))
                .ok(),
            Ok(None) => None,
            Err(e) => {
                log::warn!("container {id}: no live OOM events: {e}");
                None
            }
        }
    }

    /// Until the guard drops, the events this thread queues wait to be sent
    /// (`Publisher::hold`).
    pub fn hold_events(&self) -> crate::events::Hold<'_> {
        self.events.hold()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the reaper for every child it reaps.
    pub fn on_exit(&self, pid: i32, code: u32) {
        let at = now();
        let mut guard = self.lock();
        let t = &mut *guard;
        let mut exits = Vec::new();
        let claimed = t.procs.iter_mut().find_map(|(id, p)| {
            self.claim_exit(id, p, pid, code, &at, &mut exits)
                .then(|| id.clone())
        });
        if let Some(id) = claimed {
            self.exited.notify_all();
            t.answer_waiters();
            // The waits answered first: their callers need nothing of what follows.
            if let Some(p) = t.procs.get_mut(&id) {
                self.publish_exits(&id, p, exits);
            }
            let exited: Vec<_> = t
                .procs
                .values_mut()
                .filter_map(|p| match (p.exit_to_record.take(), &mut p.container) {
                    (Some(code), Some(c)) => Some(c.exited(code as i32)),
                    _ => None,
                })
                .collect();
            // A Delete or State waits on the table meanwhile: the unmount thread is
            // started without it.
            drop(guard);
            exited.into_iter().for_each(crt_runtime::Exited::finish);
            return;
        }
        if t.unclaimed.len() > 1024 {
            t.unclaimed.clear();
        }
        t.unclaimed.insert(pid, (code, at));
    }

    /// Record `pid`'s exit if it is this container's init or one of its execs; the TaskExit
    /// events it calls for go to `exits`, for the caller to publish after an OOM check.
    fn claim_exit(
        &self,
        id: &str,
        p: &mut Proc,
        pid: i32,
        code: u32,
        at: &Timestamp,
        exits: &mut Vec<ExitEvent>,
    ) -> bool {
        if let Some((exec_id, e)) = t_exec(p, pid) {
            log::debug!("container {id}: exec {exec_id} ({pid}) exited with {code}");
            e.proc.exit = Some((code, at.clone()));
            e.proc.status = Status::STOPPED;
            exits.push(ExitEvent {
                id: id.to_string(),
                exec_id,
                pid: pid as u32,
                code,
                at: at.clone(),
            });
            if let Some(pending) = p.pending_exit.take() {
                if p.execs.values().any(|e| e.proc.running()) {
                    p.pending_exit = Some(pending);
                } else {
                    exits.push(init_exited(id, p, pending));
                }
            }
            return true;
        }
        if p.init.pid == pid && p.init.exit.is_none() && p.pending_exit.is_none() {
            log::debug!("container {id}: init {pid} exited with {code}");
            if p.execs.values().any(|e| e.proc.running()) {
                // Execs outlive the init only outside a private pid namespace: end them.
                if let Some(c) = &p.container {
                    let _ = c.kill(Signal::SIGKILL, true);
                }
                p.pending_exit = Some((code, at.clone()));
            } else {
                exits.push(init_exited(id, p, (code, at.clone())));
            }
            return true;
        }
        false
    }

    /// TaskOOM for kills not reported yet. Called before an exit of the container is
    /// published, so CRI sees OOMKilled (it reads the reason when the exit arrives).
    /// True when it reported (or there is nothing left to report on).
    fn report_oom(&self, id: &str, p: &mut Proc) -> bool {
        let Some(c) = &p.container else { return true };
        let kills = c.oom_kills();
        if kills > p.oom_reported {
            log::info!(
                "container {id}: {} process(es) killed by the OOM killer",
                kills - p.oom_reported
            );
            p.oom_reported = kills;
            self.events.oom(id);
            return true;
        }
        false
    }

    /// Publish `exits` of container `id`, after the OOM check: it reads the cgroup (a file
    /// read), and its TaskOOM must come before the TaskExit, which CRI reads the reason from
    /// when it arrives.
    fn publish_exits(&self, id: &str, p: &mut Proc, exits: Vec<ExitEvent>) {
        self.report_oom(id, p);
        for e in exits {
            e.publish(&self.events);
        }
    }

    fn wait_exit<'a>(
        &'a self,
        mut t: MutexGuard<'a, Table>,
        id: &str,
        exec_id: &str,
    ) -> ttrpc::Result<(MutexGuard<'a, Table>, u32, Timestamp)> {
        loop {
            if let Some((c, at)) = t.exit_of(id, exec_id)? {
                return Ok((t, c, at));
            }
            t = self.exited.wait(t).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Record the init's exit; its TaskExit is returned, to publish ([`Service::publish_exits`]).
fn init_exited(id: &str, p: &mut Proc, (code, at): (u32, Timestamp)) -> ExitEvent {
    p.init.status = Status::STOPPED;
    p.exit_to_record = Some(code);
    p.init.exit = Some((code, at.clone()));
    ExitEvent {
        id: id.to_string(),
        exec_id: id.to_string(),
        pid: p.init.pid as u32,
        code,
        at,
    }
}

/// How long Delete waits for a terminal's last output to reach the client.
const OUTPUT_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

fn open_stdio(
    terminal: bool,
    [stdin, stdout, stderr]: [&str; 3],
    owner: &Owner<'_>,
) -> std::io::Result<Stdio> {
    if terminal {
        Stdio::open_terminal(stdin, stdout)
    } else {
        Stdio::open(stdin, stdout, stderr, owner)
    }
}

/// runc's IoUid/IoGid: the container's stdio pipes and fifos become theirs.
fn own_stdio(io: &Stdio, owner: Option<(u32, u32)>, what: &str) -> ttrpc::Result<()> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    io.chown_child(uid, gid)
        .map_err(|e| status(Code::UNKNOWN, format!("crt: {what}: IoUid/IoGid: {e}")))
}

/// What a call carries besides its message.
pub struct Ctx {
    /// The containerd namespace, from the ttrpc metadata.
    pub namespace: Option<String>,
}

/// The request's `terminal` and the process spec's `terminal` must agree: a pty nobody copies,
/// or a terminal client with no pty, would hang the client.
fn connect_terminal(io: &mut Stdio, console: Option<crt_runtime::Console>) -> ttrpc::Result<()> {
    match (io.is_terminal(), console) {
        (false, None) => Ok(()),
        (true, Some(c)) => io
            .attach(c)
            .map_err(|e| status(Code::UNKNOWN, format!("crt: terminal: {e}"))),
        (true, None) => Err(status(
            Code::INVALID_ARGUMENT,
            "crt: a terminal was requested but the process spec has terminal: false",
        )),
        (false, Some(_)) => Err(status(
            Code::INVALID_ARGUMENT,
            "crt: the process spec has terminal: true but no terminal was requested",
        )),
    }
}

/// Checkpoint and restore need CRIU, which crt does not drive (and this project's kernels
/// cannot run): a clear UNIMPLEMENTED, never NOT_FOUND.
fn no_criu<T>(what: &str) -> ttrpc::Result<T> {
    Err(status(
        Code::UNIMPLEMENTED,
        format!("crt: {what} is not supported: crt has no CRIU integration"),
    ))
}

impl Service {
    fn set_frozen(&self, id: &str, frozen: bool) -> ttrpc::Result<Empty> {
        let mut t = self.lock();
        let p = t.procs.get_mut(id).ok_or_else(|| not_found(id))?;
        let (from, to) = if frozen {
            (Status::RUNNING, Status::PAUSED)
        } else {
            (Status::PAUSED, Status::RUNNING)
        };
        if p.init.status != from || p.init.exit.is_some() {
            let what = if frozen { "pause" } else { "resume" };
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {id} is {:?}: cannot {what} it", p.init.status),
            ));
        }
        let c = p.container(id)?;
        c.freeze(frozen)
            .map_err(|e| runtime_err(if frozen { "pause" } else { "resume" }, e))?;
        p.init.status = to;
        for e in p
            .execs
            .values_mut()
            .filter(|e| e.proc.exit.is_none() && e.proc.status == from)
        {
            e.proc.status = to;
        }
        if frozen {
            self.events.paused(id);
        } else {
            self.events.resumed(id);
        }
        Ok(Empty::new())
    }
}

/// The running exec with this pid, if any.
fn t_exec(p: &mut Proc, pid: i32) -> Option<(String, &mut ExecProc)> {
    p.execs
        .iter_mut()
        .find(|(_, e)| e.proc.pid == pid && e.proc.exit.is_none())
        .map(|(k, e)| (k.clone(), e))
}

/// The Task API, one method per call (`server.rs` decodes and dispatches).
impl Service {
    pub fn create(&self, ctx: &Ctx, req: CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
        let id = req.id.clone();
        if self.lock().procs.contains_key(&id) {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("container {id}: already exists"),
            ));
        }
        if !req.checkpoint.is_empty() {
            return no_criu("restore from a checkpoint");
        }
        let opts = crate::options::parse(req.options.as_ref())
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("crt: create {id}: {e}")))?;
        if let Some(level) = opts.log_level {
            log::set_max_level(level);
        }
        let bundle = PathBuf::from(&req.bundle);
        let rootfs: Vec<RootfsMount> = req
            .rootfs
            .iter()
            .map(|m| RootfsMount {
                fstype: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let ns = ctx
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        let owner = Owner {
            id: &id,
            namespace: &ns,
        };
        let mut io = open_stdio(req.terminal, [&req.stdin, &req.stdout, &req.stderr], &owner)
            .map_err(|e| status(Code::UNKNOWN, format!("crt: create {id}: stdio: {e}")))?;
        own_stdio(&io, opts.io_owner, &format!("create {id}"))?;
        let log_line = |l: &str| log::info!("container {id}: {l}");
        let created = {
            let fds = io
                .child_fds()
                .ok_or_else(|| status(Code::INTERNAL, "stdio already used"))?;
            Container::create(CreateOpts {
                id: &id,
                bundle: &bundle,
                rootfs: &rootfs,
                stdio: fds,
                log: &log_line,
                no_new_keyring: opts.no_new_keyring,
                oom_events: self.oom.is_some(),
            })
        };
        io.child = None;
        let mut container = created.map_err(|e| {
            log::error!("create {id}: {e}");
            runtime_err("create", e)
        })?;
        if let Err(e) = connect_terminal(&mut io, container.take_console()) {
            let _ = container.kill(Signal::SIGKILL, true);
            let _ = container.delete();
            return Err(e);
        }
        let pid = container.pid();
        let mut t = self.lock();
        let exit = t.unclaimed.remove(&pid);
        self.events.create(
            &id,
            &req.bundle,
            pid as u32,
            [&req.stdin, &req.stdout, &req.stderr],
            false,
        );
        let paths = [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()];
        let oom_watch = self.watch_oom_of(&id, &mut container);
        let mut p = Proc {
            container: Some(container),
            bundle: req.bundle.clone(),
            init: Process::new(pid, io, paths),
            execs: HashMap::new(),
            oom_reported: 0,
            pending_exit: None,
            oom_watch,
            io_owner: opts.io_owner,
            exit_to_record: None,
        };
        if let Some(e) = exit {
            let exit = init_exited(&id, &mut p, e);
            self.publish_exits(&id, &mut p, vec![exit]);
        }
        t.procs.insert(id.clone(), p);
        log::debug!("container {id}: created, init pid {pid}");
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    pub fn start(&self, _ctx: &Ctx, req: StartRequest) -> ttrpc::Result<StartResponse> {
        // Held across the start so the reaper cannot publish this process's exit before its
        // start event.
        let mut t = self.lock();
        let p = t.procs.get_mut(&req.id).ok_or_else(|| not_found(&req.id))?;
        if !req.exec_id.is_empty() {
            if p.init.exit.is_some() || p.pending_exit.is_some() {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!(
                        "container {} is stopped: cannot start exec {}",
                        req.id, req.exec_id
                    ),
                ));
            }
            let e = p
                .execs
                .get_mut(&req.exec_id)
                .ok_or_else(|| exec_not_found(&req.id, &req.exec_id))?;
            let h = e.handle.as_mut().ok_or_else(|| {
                status(
                    Code::FAILED_PRECONDITION,
                    format!("exec {} already started", req.exec_id),
                )
            })?;
            h.start().map_err(|err| runtime_err("start exec", err))?;
            e.handle = None;
            if e.proc.exit.is_none() {
                e.proc.status = Status::RUNNING;
            }
            self.events
                .exec_started(&req.id, &req.exec_id, e.proc.pid as u32);
            return Ok(StartResponse {
                pid: e.proc.pid as u32,
                ..Default::default()
            });
        }
        if p.init.status != Status::CREATED {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is not created", req.id),
            ));
        }
        let c = p.container.as_mut().ok_or_else(|| not_found(&req.id))?;
        c.start().map_err(|e| runtime_err("start", e))?;
        if p.init.exit.is_none() {
            p.init.status = Status::RUNNING;
        }
        self.events.start_(&req.id, p.init.pid as u32);
        Ok(StartResponse {
            pid: p.init.pid as u32,
            ..Default::default()
        })
    }

    pub fn state(&self, _ctx: &Ctx, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let t = self.lock();
        let p = t.procs.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let pr = p.process(&req.id, &req.exec_id)?;
        let mut r = StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            exec_id: req.exec_id.clone(),
            bundle: p.bundle.clone(),
            pid: pr.pid as u32,
            status: pr.status.into(),
            stdin: pr.paths[0].clone(),
            stdout: pr.paths[1].clone(),
            stderr: pr.paths[2].clone(),
            terminal: pr.io.is_terminal(),
            ..Default::default()
        };
        if let Some((c, at)) = &pr.exit {
            r.exit_status = *c;
            r.exited_at = MessageField::some(at.clone());
        }
        Ok(r)
    }

    /// Answered at once when the process has exited, else by the reaper when it does.
    pub fn wait(&self, req: WaitRequest, reply: Reply) {
        let mut t = self.lock();
        match t.exit_of(&req.id, &req.exec_id) {
            Ok(None) => t.waiters.push((req.id, req.exec_id, reply)),
            Ok(Some(exit)) => reply.send(wait_response(exit)),
            Err(e) => reply.send(Err(e)),
        }
    }

    pub fn kill(&self, _ctx: &Ctx, req: KillRequest) -> ttrpc::Result<Empty> {
        let sig = Signal::try_from(req.signal as i32).map_err(|_| {
            status(
                Code::INVALID_ARGUMENT,
                format!("crt: kill: bad signal {}", req.signal),
            )
        })?;
        let t = self.lock();
        let p = t.procs.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let pr = p.process(&req.id, &req.exec_id)?;
        let gone = || {
            status(
                Code::NOT_FOUND,
                format!("container {}: process already finished", req.id),
            )
        };
        if pr.exit.is_some() && !(req.all && req.exec_id.is_empty()) {
            return Err(gone());
        }
        if !req.exec_id.is_empty() {
            return match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pr.pid), sig) {
                Ok(()) => Ok(Empty::new()),
                Err(nix::Error::ESRCH) => Err(gone()),
                Err(e) => Err(status(
                    Code::UNKNOWN,
                    format!("crt: kill exec {}: {e}", req.exec_id),
                )),
            };
        }
        let c = p.container(&req.id)?;
        let res = c.kill(sig, req.all);
        if p.init.status == Status::PAUSED && sig == Signal::SIGKILL {
            // A frozen task does not die until thawed (v1); containerd's stop of a paused
            // container must not hang.
            let _ = c.freeze(false);
        }
        match res {
            Ok(()) => Ok(Empty::new()),
            Err(RuntimeError::Sys {
                source: nix::Error::ESRCH,
                ..
            }) => Err(gone()),
            Err(e) => Err(runtime_err("kill", e)),
        }
    }

    pub fn delete(&self, _ctx: &Ctx, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let mut t = self.lock();
        let p = t.procs.get_mut(&req.id).ok_or_else(|| not_found(&req.id))?;
        if !req.exec_id.is_empty() {
            let e = p
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| exec_not_found(&req.id, &req.exec_id))?;
            if e.proc.running() {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("exec {} is running: kill it before delete", req.exec_id),
                ));
            }
            let e = p
                .execs
                .remove(&req.exec_id)
                .ok_or_else(|| exec_not_found(&req.id, &req.exec_id))?;
            t.answer_waiters();
            drop(t);
            let mut e = e;
            e.proc.io.wait_output(OUTPUT_DRAIN);
            e.proc.io.stop_logger();
            // A created, never started exec exits when its handle goes.
            let (code, at) = e.proc.exit.clone().unwrap_or((0, now()));
            return Ok(DeleteResponse {
                pid: e.proc.pid as u32,
                exit_status: code,
                exited_at: MessageField::some(at),
                ..Default::default()
            });
        }
        if p.init.exit.is_none() && p.pending_exit.is_none() {
            match p.init.status {
                Status::CREATED => {
                    if let Some(c) = &p.container {
                        let _ = c.kill(Signal::SIGKILL, false);
                    }
                }
                _ => {
                    return Err(status(
                        Code::FAILED_PRECONDITION,
                        format!("container {} is running: kill it before delete", req.id),
                    ))
                }
            }
        }
        let (g, code, at) = self.wait_exit(t, &req.id, "")?;
        t = g;
        let Some(mut p) = t.procs.remove(&req.id) else {
            return Err(not_found(&req.id));
        };
        t.answer_waiters();
        drop(t);
        if let (Some(w), Some(token)) = (&self.oom, p.oom_watch.take()) {
            w.remove(token);
        }
        p.init.io.wait_output(OUTPUT_DRAIN);
        p.init.io.stop_logger();
        if let Some(c) = p.container.take() {
            let release = c.delete().map_err(|e| runtime_err("delete", e))?;
            crate::server::keep_until_answered(release);
        }
        self.events.delete(&req.id, p.init.pid as u32, code, &at);
        log::debug!("container {}: deleted", req.id);
        Ok(DeleteResponse {
            pid: p.init.pid as u32,
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    pub fn exec(&self, ctx: &Ctx, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let (id, exec_id) = (req.id.clone(), req.exec_id.clone());
        let json = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let plan = crt_runtime::spec::exec_plan(&json).map_err(|e| runtime_err("exec", e))?;
        let ns = ctx
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        let owner = Owner {
            id: &id,
            namespace: &ns,
        };
        let mut io = open_stdio(req.terminal, [&req.stdin, &req.stdout, &req.stderr], &owner)
            .map_err(|e| status(Code::UNKNOWN, format!("crt: exec {exec_id}: stdio: {e}")))?;
        // The exec is spawned outside the lock (its helper's handshake can take long on a loaded
        // host, and State, Wait and other execs must not queue behind it); the id is reserved
        // meanwhile, and the container checked again once it is spawned.
        let key = (id.clone(), exec_id.clone());
        let (ectx, io_owner) = {
            let mut t = self.lock();
            let reserved = t.creating.contains(&key);
            let p = t.procs.get_mut(&id).ok_or_else(|| not_found(&id))?;
            if reserved || p.execs.contains_key(&exec_id) {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("exec {exec_id} in container {id}: already exists"),
                ));
            }
            if p.init.status != Status::RUNNING || p.init.exit.is_some() || p.pending_exit.is_some()
            {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("container {id} is {:?}: cannot exec in it", p.init.status),
                ));
            }
            let c = p.container.as_ref().ok_or_else(|| not_found(&id))?;
            let found = (c.exec_context(), p.io_owner);
            t.creating.insert(key.clone());
            found
        };
        let spawned = (|| {
            own_stdio(&io, io_owner, &format!("exec {exec_id}"))?;
            let log_line = |l: &str| log::info!("container {id} exec {exec_id}: {l}");
            let fds = io
                .child_fds()
                .ok_or_else(|| status(Code::INTERNAL, "stdio already used"))?;
            ectx.exec(plan, fds, &log_line).map_err(|e| {
                log::error!("exec {exec_id} in {id}: {e}");
                runtime_err("exec", e)
            })
        })();
        io.child = None;
        let mut t = self.lock();
        t.creating.remove(&key);
        // Dropping the handle of a never-started exec ends it.
        let mut handle = spawned?;
        let pid = handle.pid();
        if let Some((code, _)) = t.unclaimed.remove(&pid) {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("exec {exec_id} in container {id} ended ({code}) before it was started"),
            ));
        }
        let p = t.procs.get_mut(&id).ok_or_else(|| not_found(&id))?;
        if p.container.is_none() || p.init.exit.is_some() || p.pending_exit.is_some() {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {id} ended while exec {exec_id} was being made"),
            ));
        }
        connect_terminal(&mut io, handle.take_console())?;
        let paths = [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()];
        p.execs.insert(
            exec_id.clone(),
            ExecProc {
                proc: Process::new(pid, io, paths),
                handle: Some(handle),
            },
        );
        self.events.exec_added(&id, &exec_id);
        Ok(Empty::new())
    }

    pub fn pids(&self, _ctx: &Ctx, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let t = self.lock();
        let p = t.procs.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let c = p.container(&req.id)?;
        let pids = c.pids().map_err(|e| runtime_err("pids", e))?;
        let processes = pids
            .into_iter()
            .map(|pid| {
                let mut info = ProcessInfo {
                    pid: pid as u32,
                    ..Default::default()
                };
                // As runc's shim: exec processes carry their exec id.
                if let Some((exec_id, _)) = p.execs.iter().find(|(_, e)| e.proc.pid == pid) {
                    let details = ProcessDetails {
                        exec_id: exec_id.clone(),
                        ..Default::default()
                    };
                    info.info = MessageField::some(Any {
                        type_url: "containerd.runc.v1.ProcessDetails".to_string(),
                        value: details.write_to_bytes().unwrap_or_default(),
                        ..Default::default()
                    });
                }
                info
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    pub fn close_io(&self, _ctx: &Ctx, req: CloseIORequest) -> ttrpc::Result<Empty> {
        let mut t = self.lock();
        let p = t.procs.get_mut(&req.id).ok_or_else(|| not_found(&req.id))?;
        let pr = p.process_mut(&req.id, &req.exec_id)?;
        if req.stdin {
            pr.io.close_stdin();
        }
        Ok(Empty::new())
    }

    pub fn connect(&self, _ctx: &Ctx, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let t = self.lock();
        let task_pid = t.procs.get(&req.id).map(|p| p.init.pid as u32).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    pub fn shutdown(&self, _ctx: &Ctx, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        let t = self.lock();
        if !t.procs.is_empty() {
            // containerd sends Shutdown after every Delete; a shim serving others stays.
            return Ok(Empty::new());
        }
        if let Some(tx) = self
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
        Ok(Empty::new())
    }

    pub fn pause(&self, _ctx: &Ctx, req: PauseRequest) -> ttrpc::Result<Empty> {
        self.set_frozen(&req.id, true)
    }

    pub fn resume(&self, _ctx: &Ctx, req: ResumeRequest) -> ttrpc::Result<Empty> {
        self.set_frozen(&req.id, false)
    }

    pub fn checkpoint(
        &self,
        _ctx: &Ctx,
        _r: containerd_shim_protos::api::CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        no_criu("checkpoint")
    }
    pub fn resize_pty(
        &self,
        _ctx: &Ctx,
        req: containerd_shim_protos::api::ResizePtyRequest,
    ) -> ttrpc::Result<Empty> {
        let t = self.lock();
        let p = t.procs.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let pr = p.process(&req.id, &req.exec_id)?;
        // Like runc's shim, a process without a terminal has nothing to resize.
        if let Some(c) = pr.io.console() {
            let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
            c.resize(clamp(req.width), clamp(req.height))
                .map_err(|e| runtime_err("resize pty", e))?;
        }
        Ok(Empty::new())
    }
    pub fn update(&self, _ctx: &Ctx, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let json = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let res: oci_spec::runtime::LinuxResources =
            serde_json::from_slice(&json).map_err(|e| {
                status(
                    Code::INVALID_ARGUMENT,
                    format!("crt: update: resources: {e}"),
                )
            })?;
        let t = self.lock();
        let p = t.procs.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        if p.init.exit.is_some() {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is stopped: cannot update it", req.id),
            ));
        }
        let c = p.container(&req.id)?;
        c.update(&res).map_err(|e| runtime_err("update", e))?;
        log::info!("container {}: resources updated", req.id);
        Ok(Empty::new())
    }

    pub fn stats(&self, _ctx: &Ctx, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let t = self.lock();
        let p = t.procs.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let c = p.container(&req.id)?;
        let stats = c.stats().map_err(|e| runtime_err("stats", e))?;
        let any = crate::metrics::to_any(&stats)
            .map_err(|e| status(Code::INTERNAL, format!("crt: stats: encode: {e}")))?;
        Ok(StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }
}
