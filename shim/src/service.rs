//! The Task service: containerd's calls mapped onto the runtime, one table of containers, and
//! exits recorded by the single reaper (`reaper.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, MutexGuard};

use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, KillRequest, PidsRequest, PidsResponse, ProcessInfo,
    ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse, Status, WaitRequest,
    WaitResponse,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::Task;
use crt_runtime::{Container, CreateOpts, RootfsMount, RuntimeError};
use nix::sys::signal::Signal;
use ttrpc::{Code, TtrpcContext};

use crate::events::{now, Publisher};
use crate::io::Stdio;

fn status(code: Code, msg: impl Into<String>) -> ttrpc::Error {
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

struct Proc {
    container: Option<Container>,
    bundle: String,
    pid: i32,
    status: Status,
    exit: Option<(u32, Timestamp)>,
    io: Stdio,
    paths: [String; 3],
    terminal: bool,
}

#[derive(Default)]
struct Table {
    procs: HashMap<String, Proc>,
    /// Exits of pids not (yet) in the table: a process can die before create registers it.
    unclaimed: HashMap<i32, (u32, Timestamp)>,
}

pub struct Service {
    table: Mutex<Table>,
    exited: Condvar,
    events: Publisher,
    shutdown: Mutex<Option<Sender<()>>>,
}

impl Service {
    pub fn new(events: Publisher, shutdown: Sender<()>) -> Service {
        Service {
            table: Mutex::new(Table::default()),
            exited: Condvar::new(),
            events,
            shutdown: Mutex::new(Some(shutdown)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the reaper for every child it reaps.
    pub fn on_exit(&self, pid: i32, code: u32) {
        let at = now();
        let mut t = self.lock();
        let found = t
            .procs
            .iter_mut()
            .find(|(_, p)| p.pid == pid && p.exit.is_none());
        match found {
            Some((id, p)) => {
                log::debug!("container {id}: init {pid} exited with {code}");
                p.exit = Some((code, at.clone()));
                p.status = Status::STOPPED;
                if let Some(c) = &p.container {
                    c.record_exit(code as i32);
                }
                self.events.exit(id, id, pid as u32, code, &at);
                self.exited.notify_all();
            }
            None => {
                if t.unclaimed.len() > 1024 {
                    t.unclaimed.clear();
                }
                t.unclaimed.insert(pid, (code, at));
            }
        }
    }

    fn wait_exit<'a>(
        &'a self,
        mut t: MutexGuard<'a, Table>,
        id: &str,
    ) -> ttrpc::Result<(MutexGuard<'a, Table>, u32, Timestamp)> {
        loop {
            match t.procs.get(id) {
                None => return Err(not_found(id)),
                Some(p) => {
                    if let Some((c, at)) = &p.exit {
                        let (c, at) = (*c, at.clone());
                        return Ok((t, c, at));
                    }
                }
            }
            t = self.exited.wait(t).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn unimplemented<T>(method: &str) -> ttrpc::Result<T> {
    Err(status(
        Code::UNIMPLEMENTED,
        format!("crt: {method} is not implemented yet"),
    ))
}

fn no_exec(exec_id: &str) -> ttrpc::Result<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(status(
            Code::NOT_FOUND,
            format!("exec {exec_id}: not found (crt does not serve exec yet)"),
        ))
    }
}

impl Task for Service {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        let id = req.id.clone();
        if self.lock().procs.contains_key(&id) {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("container {id}: already exists"),
            ));
        }
        if req.terminal {
            return Err(status(
                Code::UNIMPLEMENTED,
                "crt: terminals are not supported yet",
            ));
        }
        if !req.checkpoint.is_empty() {
            return Err(status(
                Code::UNIMPLEMENTED,
                "crt: restore from checkpoint is not supported",
            ));
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
        let mut io = Stdio::open(&req.stdin, &req.stdout, &req.stderr)
            .map_err(|e| status(Code::UNKNOWN, format!("crt: create {id}: stdio: {e}")))?;
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
            })
        };
        io.child = None;
        let container = created.map_err(|e| {
            log::error!("create {id}: {e}");
            runtime_err("create", e)
        })?;
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
        let stopped = exit.is_some();
        if let Some((c, at)) = &exit {
            self.events.exit(&id, &id, pid as u32, *c, at);
        }
        t.procs.insert(
            id.clone(),
            Proc {
                container: Some(container),
                bundle: req.bundle.clone(),
                pid,
                status: if stopped {
                    Status::STOPPED
                } else {
                    Status::CREATED
                },
                exit,
                io,
                paths: [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()],
                terminal: false,
            },
        );
        log::info!("container {id}: created, init pid {pid}");
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        no_exec(&req.exec_id)?;
        // Held across the start so the reaper cannot publish this init's exit before TaskStart.
        let mut t = self.lock();
        let p = t.procs.get_mut(&req.id).ok_or_else(|| not_found(&req.id))?;
        if p.status != Status::CREATED {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is not created", req.id),
            ));
        }
        let c = p.container.as_mut().ok_or_else(|| not_found(&req.id))?;
        c.start().map_err(|e| runtime_err("start", e))?;
        if p.exit.is_none() {
            p.status = Status::RUNNING;
        }
        self.events.start_(&req.id, p.pid as u32);
        Ok(StartResponse {
            pid: p.pid as u32,
            ..Default::default()
        })
    }

    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        no_exec(&req.exec_id)?;
        let t = self.lock();
        let p = t.procs.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let mut r = StateResponse {
            id: req.id.clone(),
            bundle: p.bundle.clone(),
            pid: p.pid as u32,
            status: p.status.into(),
            stdin: p.paths[0].clone(),
            stdout: p.paths[1].clone(),
            stderr: p.paths[2].clone(),
            terminal: p.terminal,
            ..Default::default()
        };
        if let Some((c, at)) = &p.exit {
            r.exit_status = *c;
            r.exited_at = MessageField::some(at.clone());
        }
        Ok(r)
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        no_exec(&req.exec_id)?;
        let (_t, code, at) = self.wait_exit(self.lock(), &req.id)?;
        Ok(WaitResponse {
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        no_exec(&req.exec_id)?;
        let sig = Signal::try_from(req.signal as i32).map_err(|_| {
            status(
                Code::INVALID_ARGUMENT,
                format!("crt: kill: bad signal {}", req.signal),
            )
        })?;
        let t = self.lock();
        let p = t.procs.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        if p.exit.is_some() && !req.all {
            return Err(status(
                Code::NOT_FOUND,
                format!("container {}: process already finished", req.id),
            ));
        }
        let c = p.container.as_ref().ok_or_else(|| not_found(&req.id))?;
        match c.kill(sig, req.all) {
            Ok(()) => Ok(Empty::new()),
            Err(RuntimeError::Sys {
                source: nix::Error::ESRCH,
                ..
            }) => Err(status(
                Code::NOT_FOUND,
                format!("container {}: process already finished", req.id),
            )),
            Err(e) => Err(runtime_err("kill", e)),
        }
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        no_exec(&req.exec_id)?;
        let mut t = self.lock();
        let p = t.procs.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        match p.status {
            Status::RUNNING if p.exit.is_none() => {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("container {} is running: kill it before delete", req.id),
                ))
            }
            Status::CREATED if p.exit.is_none() => {
                if let Some(c) = &p.container {
                    let _ = c.kill(Signal::SIGKILL, false);
                }
            }
            _ => {}
        }
        let (g, code, at) = self.wait_exit(t, &req.id)?;
        t = g;
        let Some(mut p) = t.procs.remove(&req.id) else {
            return Err(not_found(&req.id));
        };
        drop(t);
        if let Some(c) = p.container.take() {
            c.delete().map_err(|e| runtime_err("delete", e))?;
        }
        self.events.delete(&req.id, p.pid as u32, code, &at);
        log::info!("container {}: deleted", req.id);
        Ok(DeleteResponse {
            pid: p.pid as u32,
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let t = self.lock();
        let p = t.procs.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let c = p.container.as_ref().ok_or_else(|| not_found(&req.id))?;
        let pids = c.pids().map_err(|e| runtime_err("pids", e))?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: pid as u32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        no_exec(&req.exec_id)?;
        let mut t = self.lock();
        let p = t.procs.get_mut(&req.id).ok_or_else(|| not_found(&req.id))?;
        if req.stdin {
            p.io.close_stdin();
        }
        Ok(Empty::new())
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let t = self.lock();
        let task_pid = t.procs.get(&req.id).map(|p| p.pid as u32).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
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

    fn pause(
        &self,
        _ctx: &TtrpcContext,
        _r: containerd_shim_protos::api::PauseRequest,
    ) -> ttrpc::Result<Empty> {
        unimplemented("Pause")
    }
    fn resume(
        &self,
        _ctx: &TtrpcContext,
        _r: containerd_shim_protos::api::ResumeRequest,
    ) -> ttrpc::Result<Empty> {
        unimplemented("Resume")
    }
    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _r: containerd_shim_protos::api::CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        unimplemented("Checkpoint")
    }
    fn exec(
        &self,
        _ctx: &TtrpcContext,
        _r: containerd_shim_protos::api::ExecProcessRequest,
    ) -> ttrpc::Result<Empty> {
        unimplemented("Exec")
    }
    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        _r: containerd_shim_protos::api::ResizePtyRequest,
    ) -> ttrpc::Result<Empty> {
        unimplemented("ResizePty")
    }
    fn update(
        &self,
        _ctx: &TtrpcContext,
        _r: containerd_shim_protos::api::UpdateTaskRequest,
    ) -> ttrpc::Result<Empty> {
        unimplemented("Update")
    }
    fn stats(
        &self,
        _ctx: &TtrpcContext,
        _r: containerd_shim_protos::api::StatsRequest,
    ) -> ttrpc::Result<containerd_shim_protos::api::StatsResponse> {
        unimplemented("Stats")
    }
}
