//! The long-lived shim: serves the Task API (v2 and v3 names) on the listener `start` bound,
//! reaps children, and exits on Shutdown once no container is left.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::Arc;

use containerd_shim_protos::create_task;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::args::Args;
use crate::events::Publisher;
use crate::service::Service;

type Methods = HashMap<String, Box<dyn ttrpc::MethodHandler + Send + Sync>>;

/// The same implementation under `containerd.task.v2.Task` (containerd 1.6, and 2.x when we
/// answered `start` with a plain address) and `containerd.task.v3.Task`: the messages are
/// identical on the wire.
fn both_versions(svc: Arc<Service>) -> Methods {
    let mut m = create_task(svc.clone());
    let v2: Methods = create_task(svc)
        .into_iter()
        .map(|(k, v)| {
            (
                k.replacen("containerd.task.v3.Task", "containerd.task.v2.Task", 1),
                v,
            )
        })
        .collect();
    m.extend(v2);
    m
}

pub fn run(a: &Args, listener: RawFd) -> Result<(), String> {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // Blocked before any thread exists, so every thread inherits it and only the reaper
    // receives SIGCHLD (via sigwait).
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    chld.thread_block()
        .map_err(|e| format!("block SIGCHLD: {e}"))?;

    let bundle = std::env::current_dir().map_err(|e| format!("cwd: {e}"))?;
    let level = std::env::var(crate::options::LOG_LEVEL_ENV)
        .ok()
        .and_then(|l| l.parse().ok());
    crate::logger::init(&bundle, &a.id, a.debug, level);
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .ok()
        .filter(|s| !s.is_empty());
    let events = Publisher::start(ttrpc_address, a.namespace.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let svc = Arc::new(Service::new(events, tx, a.namespace.clone()));

    let reaper = svc.clone();
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || reap(reaper, chld))
        .map_err(|e| format!("spawn reaper: {e}"))?;

    let watcher = svc.clone();
    std::thread::Builder::new()
        .name("oom".into())
        .spawn(move || watcher.watch_oom())
        .map_err(|e| format!("spawn OOM watcher: {e}"))?;

    // ttrpc starts workers (two at a time, one after the other) whenever fewer than `min` are
    // idle, and lets idle ones beyond `max` go. A burst of execs each holds a worker, and its
    // Wait another, until it ends: with a `max` of 3 the pool churned so that 20 concurrent
    // execs in the (emulated) cgroup v2 VM outlasted containerd's patience; 8 keeps enough.
    let mut server = ttrpc::Server::new()
        .set_thread_count_default(2)
        .set_thread_count_min(1)
        .set_thread_count_max(8)
        .add_listener(listener)
        .map_err(|e| format!("listen: {e}"))?
        .register_service(both_versions(svc));
    server.start().map_err(|e| format!("serve: {e}"))?;
    log::info!("shim serving on {}", a.socket);

    let _ = rx.recv();
    log::info!("shutdown: no container left");
    if !a.socket.is_empty() {
        let _ = std::fs::remove_file(&a.socket);
    }
    // Replying to Shutdown is optional for containerd (it accepts a closed connection).
    std::process::exit(0);
}

/// The one owner of child exits: a coalesced SIGCHLD can stand for many exits, so drain all.
fn reap(svc: Arc<Service>, set: SigSet) {
    loop {
        let _ = set.wait();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => svc.on_exit(pid.as_raw(), code as u32),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    svc.on_exit(pid.as_raw(), 128 + sig as u32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
