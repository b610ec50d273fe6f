//! The long-lived shim: serves the Task API (v2 and v3 names) on the listener `start` bound
//! (`server.rs`), reaps children, and exits on Shutdown once no container is left.

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::args::Args;
use crate::events::Publisher;
use crate::service::Service;

/// `zygote`: how starting the zygote went (`start` did it first thing); `events`: the
/// connection for events `start` made, if it could.
pub fn run(
    a: &Args,
    listener: RawFd,
    zygote: crt_runtime::Result<()>,
    events: Option<std::os::unix::net::UnixStream>,
) -> Result<(), String> {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // Blocked before any thread exists, so every thread inherits it and only the reaper
    // receives SIGCHLD (via signalfd).
    let chld = crate::server::block_sigchld()?;
    let bundle = std::env::current_dir().map_err(|e| format!("cwd: {e}"))?;
    // Forked from `start`, this process still shows its command line.
    crate::argv::rename_action("start", "serve");
    let level = std::env::var(crate::options::LOG_LEVEL_ENV)
        .ok()
        .and_then(|l| l.parse().ok());
    crate::logger::init(&bundle, &a.id, a.debug, level);
    if let Err(e) = zygote {
        log::warn!("no zygote ({e}): every helper is exec'd");
    }
    let workers = crate::server::prestarted_workers();
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .ok()
        .filter(|s| !s.is_empty());
    // The first call is the Create of this bundle: its config.json and the host's cgroup
    // layout are read meanwhile, on the events thread, idle until that Create's TaskCreate
    // (crt_runtime::preload).
    let preload_bundle = bundle.clone();
    let events = Publisher::start(ttrpc_address, a.namespace.clone(), events, move || {
        crt_runtime::preload::preload(&preload_bundle)
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let svc = Arc::new(Service::new(events.clone(), tx, a.namespace.clone()));

    log::info!("shim serving on {}", a.socket);
    crate::server::serve(svc, workers, listener, chld, rx)?;
    log::info!("shutdown: no container left");
    crt_runtime::zygote::stop();
    // Under containerd's 3 s shutdown timeout; the publisher's own retries take at most 0.75 s
    // per event.
    events.flush(std::time::Duration::from_secs(2));
    if !a.socket.is_empty() {
        let _ = std::fs::remove_file(&a.socket);
    }
    // Replying to Shutdown is optional for containerd (it accepts a closed connection).
    std::process::exit(0);
}
