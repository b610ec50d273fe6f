//! The init helper: our own binary re-exec'd by the runtime inside the container's new
//! namespaces. It is single-threaded and fresh, so ordinary Rust is fine here. It becomes the
//! container: see `channel.rs` for the handshake.

mod console;
mod hooks;
pub(crate) mod net;
mod paths;
mod process;
mod rootfs;
mod sources;

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sched::{setns, unshare, CloneFlags};

use crate::channel::{Channel, Msg};
use crate::spawn::{HOST_MNT_FD, SYNC_FD};
use crate::spec::{ExecPlan, Plan, ProcessPlan};

/// Set in a helper the zygote forked once it had left its throwaway mount namespace: the
/// helper starts in the runtime's already, and has no [`HOST_MNT_FD`] (zygote.rs).
static FORKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Entry point when argv[1] is [`crate::spawn::INIT_ARG`]. Never returns.
pub fn main() -> ! {
    serve()
}

/// Entry point of a helper forked by the zygote, its fds placed. Never returns.
pub(crate) fn main_forked() -> ! {
    FORKED.store(true, std::sync::atomic::Ordering::Relaxed);
    serve()
}

fn serve() -> ! {
    // Until it execs the user's program, nothing in the container may open this process's
    // /proc files (its exe is our binary): exec makes the program dumpable again.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // SAFETY: fd 3 was placed by the runtime's spawn and is ours alone.
    let sock = unsafe { UnixStream::from_raw_fd(SYNC_FD) };
    // The container's program must not inherit the channel: exec closes it, which tells the
    // runtime that exec succeeded.
    // SAFETY: fcntl on our own fd.
    unsafe { libc::fcntl(SYNC_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut ch = Channel::new(sock);
    let err = match run(&mut ch) {
        Ok(()) => std::process::exit(0),
        Err(e) => e,
    };
    let _ = ch.send(&Msg::Error(err));
    std::process::exit(1)
}

fn run(ch: &mut Channel) -> Result<(), String> {
    // SAFETY: umask never fails; device nodes and dirs get exactly the modes asked for.
    unsafe { libc::umask(0) };
    let plan = ch.recv().map_err(|e| format!("read plan: {e}"))?;
    // The cgroup's `tasks` files, opened by the runtime, if it could.
    let tasks = ch.take_fds();
    match plan {
        Some(Msg::Plan(plan)) => run_init(ch, &plan, tasks),
        Some(Msg::Exec(plan)) => run_exec(ch, &plan, tasks),
        Some(other) => Err(format!("expected a plan, got {other:?}")),
        None => Ok(()),
    }
}

/// setns on a pid namespace applies to children only: fork, hand the runtime the child's pid
/// (the shim, a subreaper, adopts it), and let this process go. Both share the channel, so the
/// child waits until the parent's message is out (the parent closing the pipe) before it
/// writes anything itself.
fn fork_into_pid_ns(ch: &mut Channel) -> Result<(), String> {
    let (rd, wr) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: this helper is single-threaded.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork into pid namespace: {e}"))? {
        nix::unistd::ForkResult::Parent { child } => {
            drop(rd);
            let sent = ch.send(&Msg::Pid(child.as_raw()));
            drop(wr);
            sent.map_err(|e| format!("report pid: {e}"))?;
            std::process::exit(0);
        }
        nix::unistd::ForkResult::Child => {
            drop(wr);
            let mut buf = [0u8; 1];
            let _ = nix::unistd::read(&rd, &mut buf);
            Ok(())
        }
    }
}

/// Leave the throwaway mount namespace the helper was started in (see spawn.rs): back to the
/// runtime's, and a copy of that one for the container when it gets a new one, so its mounts
/// propagate to and from the host exactly as the spec's propagation says.
/// `back` goes back without a new one (a user namespace comes first, see userns.rs).
fn container_mount_namespace(new: bool, back: bool) -> Result<(), String> {
    if FORKED.load(std::sync::atomic::Ordering::Relaxed) {
        if new {
            unshare(CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("unshare mount namespace: {e}"))?;
        }
        return Ok(());
    }
    // SAFETY: fd 4 was placed by the runtime's spawn and is ours alone.
    let host = unsafe { OwnedFd::from_raw_fd(HOST_MNT_FD) };
    if new || back {
        setns(&host, CloneFlags::CLONE_NEWNS)
            .map_err(|e| format!("back to the runtime's mount namespace: {e}"))?;
    }
    if new {
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare mount namespace: {e}"))?;
    }
    Ok(())
}

/// Enter the container's user namespace (new: the runtime writes its maps while we wait) and
/// become its root: until then we are the host's root, which has no id inside.
/// `join`: an opened namespace and its path.
fn enter_user_namespace(ch: &mut Channel, join: Option<(OwnedFd, String)>) -> Result<(), String> {
    match join {
        Some((fd, path)) => {
            setns(fd, CloneFlags::CLONE_NEWUSER).map_err(|e| format!("setns {path}: {e}"))?;
        }
        None => {
            unshare(CloneFlags::CLONE_NEWUSER)
                .map_err(|e| format!("unshare user namespace: {e}"))?;
            ch.send(&Msg::IdMaps)
                .map_err(|e| format!("ask for id maps: {e}"))?;
            match ch.recv() {
                Ok(Some(Msg::Continue)) => {}
                Ok(Some(Msg::Error(e))) => return Err(e),
                other => return Err(format!("waiting for id maps: {other:?}")),
            }
        }
    }
    // A joined namespace may deny setgroups; the host's groups then just stay unmapped until
    // process.user sets its own.
    let _ = nix::unistd::setgroups(&[]);
    let root = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
    nix::unistd::setresgid(root.0, root.0, root.0)
        .map_err(|e| format!("become gid 0 in the user namespace: {e}"))?;
    nix::unistd::setresuid(root.1, root.1, root.1)
        .map_err(|e| format!("become uid 0 in the user namespace: {e}"))?;
    Ok(())
}

fn run_init(ch: &mut Channel, plan: &Plan, tasks: Vec<OwnedFd>) -> Result<(), String> {
    let p = &plan.process;
    // First: before any fork (a pid namespace joined, a user namespace) and before the cgroup
    // namespace is made, whose root is the cgroup we are in then. A plan without those (and
    // without hooks, which look at our cgroup) lets the runtime make the cgroup meanwhile: we
    // join it once our mounts need it (`join_late`).
    let mut late = plan.cgroup_late;
    if !late {
        join_cgroup(p, tasks)?;
    }
    // Before any user namespace: raising a hard limit or lowering oom_score_adj takes the
    // host's privileges.
    process::raise_hard_limits(p)?;
    if let Some(adj) = p.oom_score_adj {
        if let Some(line) = process::set_oom_score_adj(adj)? {
            let _ = ch.send(&Msg::Log(line));
        }
    }
    let user = plan
        .namespaces
        .iter()
        .find(|n| n.flag == libc::CLONE_NEWUSER);
    container_mount_namespace(
        plan.has_new_ns(libc::CLONE_NEWNS) && user.is_none(),
        user.is_some(),
    )?;
    // While we are still the host's root.
    let sources = sources::prepare(plan)?;
    let mut joined = open_namespaces(plan)?;
    if user.is_some() {
        let join = match joined.first() {
            Some((flag, _, _)) if *flag == libc::CLONE_NEWUSER => {
                let (_, fd, path) = joined.remove(0);
                Some((fd, path))
            }
            _ => None,
        };
        enter_user_namespace(ch, join)?;
    }
    join_namespaces(joined)?;
    if user.is_some() {
        // What clone3 makes without a user namespace (container.rs), made now so that the
        // user namespace owns them.
        let flags = [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWPID,
        ]
        .into_iter()
        .filter(|f| plan.has_new_ns(*f))
        .fold(0, |a, f| a | f);
        unshare(CloneFlags::from_bits_retain(flags))
            .map_err(|e| format!("unshare namespaces {flags:#x}: {e}"))?;
    }
    if plan.has_ns(libc::CLONE_NEWPID) && (user.is_some() || !plan.has_new_ns(libc::CLONE_NEWPID)) {
        // Joined, or unshared above: either way only our children are in it.
        fork_into_pid_ns(ch)?;
    }
    if plan.has_new_ns(libc::CLONE_NEWTIME) {
        // Offsets can only be set before any process is in the namespace: unshare makes it the
        // one for our children and for the program we exec, so it is still empty here.
        unshare(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
            .map_err(|e| format!("unshare time namespace: {e}"))?;
        if !plan.time_offsets.is_empty() {
            let path = "/proc/self/timens_offsets";
            std::fs::write(path, plan.time_offsets.join("\n"))
                .map_err(|e| format!("linux.timeOffsets: write {path}: {e}"))?;
        }
        // Enter it ourselves: kernels before 6.x move a process into its time namespace for
        // children only at fork, not at exec, and the container's pid 1 is us after exec.
        let path = "/proc/self/ns/time_for_children";
        let ns = std::fs::File::open(path).map_err(|e| format!("open {path}: {e}"))?;
        setns(ns, CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
            .map_err(|e| format!("enter the time namespace: {e}"))?;
    }
    if plan.has_new_ns(libc::CLONE_NEWCGROUP) {
        // After the runtime placed us in the cgroup, so that cgroup becomes the namespace root.
        unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| format!("unshare cgroup namespace: {e}"))?;
    }
    if plan.has_new_ns(libc::CLONE_NEWNET) {
        net::loopback_up()?;
    }
    if let Some(h) = &plan.hostname {
        nix::unistd::sethostname(h).map_err(|e| format!("sethostname {h:?}: {e}"))?;
    }
    if let Some(pers) = plan.personality {
        // SAFETY: personality(2) with a plain value; it survives exec.
        if unsafe { libc::personality(pers as libc::c_ulong) } < 0 {
            return Err(format!(
                "apply linux.personality: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if let Some(d) = &plan.domainname {
        // SAFETY: pointer and length of a live string.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(format!(
                "setdomainname {d:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let mut devices_pending = false;
    rootfs::setup(plan, &sources, &mut |step| {
        if step == rootfs::Step::Cgroups {
            return join_late(ch, p, &mut late);
        }
        ch.send(&Msg::Devices)
            .map_err(|e| format!("report /dev made: {e}"))?;
        if plan.runtime_hooks || !plan.create_container.is_empty() {
            // Hooks see the device rules in place, as with runc: a prestart hook may add to
            // them (a GPU's), which rules written after it would wipe.
            await_continue(ch, "device rules")?;
        } else {
            devices_pending = true;
        }
        if plan.runtime_hooks {
            ch.send(&Msg::Hooks)
                .map_err(|e| format!("ask for createRuntime hooks: {e}"))?;
            await_continue(ch, "createRuntime hooks")?;
        }
        hooks::run(
            "createContainer",
            &plan.create_container,
            &plan.hook_state,
            "creating",
        )
    })?;
    if devices_pending {
        // Before the console's /dev/ptmx and anything else that opens a device.
        await_continue(ch, "device rules")?;
    }
    finish(ch, p, Some(plan))
}

/// Join the cgroup the runtime made while we started on our mounts (a plan's `cgroup_late`),
/// once its `tasks` files come; nothing once `pending` is false.
fn join_late(ch: &mut Channel, p: &ProcessPlan, pending: &mut bool) -> Result<(), String> {
    if !std::mem::take(pending) {
        return Ok(());
    }
    match ch.recv() {
        Ok(Some(Msg::Cgroups)) => join_cgroup(p, ch.take_fds()),
        Ok(Some(Msg::Error(e))) => Err(e),
        other => Err(format!("waiting for the cgroup: {other:?}")),
    }
}

/// The runtime's answer to a request of ours: Continue, or its error.
fn await_continue(ch: &mut Channel, what: &str) -> Result<(), String> {
    match ch.recv() {
        Ok(Some(Msg::Continue)) => Ok(()),
        Ok(Some(Msg::Error(e))) => Err(e),
        other => Err(format!("waiting for {what}: {other:?}")),
    }
}

/// Join every namespace of a running container through its init's /proc entries. All are
/// opened before the first setns: after joining the mount namespace, /proc is the container's.
fn run_exec(ch: &mut Channel, plan: &ExecPlan, tasks: Vec<OwnedFd>) -> Result<(), String> {
    join_cgroup(&plan.process, tasks)?;
    process::raise_hard_limits(&plan.process)?;
    if let Some(adj) = plan.process.oom_score_adj {
        if let Some(line) = process::set_oom_score_adj(adj)? {
            let _ = ch.send(&Msg::Log(line));
        }
    }
    let userns = plan.namespaces.contains(&libc::CLONE_NEWUSER);
    container_mount_namespace(false, userns)?;
    let mut fds = Vec::new();
    for flag in &plan.namespaces {
        let name = ns_name(*flag).ok_or_else(|| format!("unknown namespace flag {flag:#x}"))?;
        let path = format!("/proc/{}/ns/{name}", plan.init_pid);
        let f = std::fs::File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        fds.push((*flag, OwnedFd::from(f), path));
    }
    fds.sort_by_key(|(flag, _, _)| join_order(*flag));
    for (flag, fd, path) in fds {
        if flag == libc::CLONE_NEWUSER {
            enter_user_namespace(ch, Some((fd, path)))?;
            continue;
        }
        setns(&fd, CloneFlags::from_bits_truncate(flag))
            .map_err(|e| format!("setns {path}: {e}"))?;
    }
    if plan.namespaces.contains(&libc::CLONE_NEWPID) {
        fork_into_pid_ns(ch)?;
    }
    finish(ch, &plan.process, None)
}

/// Into the container's cgroup while the host's /sys/fs/cgroup is in view, through `tasks`
/// where the runtime sent the files opened; this helper is single-threaded, as
/// `cgroups::join_self` needs.
fn join_cgroup(p: &ProcessPlan, tasks: Vec<OwnedFd>) -> Result<(), String> {
    crate::cgroups::join_self_through(&p.cgroup_join, tasks)
        .map_err(|e| format!("join the container's cgroup: {e}"))
}

fn ns_name(flag: i32) -> Option<&'static str> {
    Some(match flag {
        libc::CLONE_NEWNS => "mnt",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWNET => "net",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        libc::CLONE_NEWUSER => "user",
        _ => return None,
    })
}

/// Limits, credentials, cwd, executable lookup; report ready, wait for start, exec.
/// `init` is the container's plan when this is its init (not an exec).
fn finish(ch: &mut Channel, p: &ProcessPlan, init: Option<&Plan>) -> Result<(), String> {
    let is_init = init.is_some();
    process::set_rlimits(p)?;
    if let Some(ring) = &p.session_keyring {
        let userns = init.is_some_and(|plan| plan.has_ns(libc::CLONE_NEWUSER));
        process::join_session_keyring(ring, is_init, userns)?;
    }
    if p.terminal {
        // Before credentials: binding /dev/console needs CAP_SYS_ADMIN.
        console::setup(ch, p, is_init)?;
    }
    process::set_lsm_exec_labels(p)?;
    process::set_scheduling(p)?;
    if !p.no_new_privileges {
        // Without no_new_privs loading seccomp takes CAP_SYS_ADMIN: before credentials drop it.
        // (With it, process::exec loads the filter right before execve.)
        if let Some(sc) = &p.seccomp {
            process::load_seccomp(sc, ch)?;
        }
    }
    process::set_credentials(p)?;
    if let Err(e) = std::env::set_current_dir(&p.cwd) {
        return Err(format!("chdir to cwd {:?} set in config.json: {e}", p.cwd));
    }
    let exe = process::lookup(&p.args[0], &process::env_path(&p.env))?;
    let prepared = process::prepare(p, &exe)?;
    process::reset_signals();
    // Never under a seccomp filter loaded already (Msg::Ready).
    let movable = p.seccomp.is_none() || p.no_new_privileges;
    ch.send(&Msg::Ready { movable })
        .map_err(|e| format!("report ready: {e}"))?;
    match ch.recv() {
        Ok(Some(Msg::Start { cpu })) => {
            if let Some(cpu) = cpu.filter(|_| movable) {
                crate::affinity::add_back(cpu);
            }
        }
        // The runtime went away or deleted us before Start: nothing to run.
        Ok(None) | Err(_) => return Ok(()),
        Ok(Some(other)) => return Err(format!("expected start, got {other:?}")),
    }
    if let Some(plan) = init {
        hooks::run(
            "startContainer",
            &plan.start_container,
            &plan.hook_state,
            "created",
        )?;
    }
    Err(process::exec(p, &prepared, ch))
}

/// The order namespaces are joined in: the user namespace first (it owns the others, and its
/// root may then join them), the mount namespace last (the others' paths are host paths).
fn join_order(flag: i32) -> u8 {
    match flag {
        libc::CLONE_NEWUSER => 0,
        libc::CLONE_NEWNS => 2,
        _ => 1,
    }
}

/// Open the namespaces given by path, in [`join_order`]. Opened while we are still the host's
/// root: inside a user namespace the paths (CRI's pinned namespaces under containerd's 0700
/// state dir) are out of reach.
fn open_namespaces(plan: &Plan) -> Result<Vec<(i32, OwnedFd, String)>, String> {
    let mut ordered: Vec<_> = plan
        .namespaces
        .iter()
        .filter(|n| n.path.is_some())
        .collect();
    ordered.sort_by_key(|n| join_order(n.flag));
    let mut out = Vec::new();
    for ns in ordered {
        let Some(path) = &ns.path else { continue };
        let f = std::fs::File::open(path)
            .map_err(|e| format!("open namespace {}: {e}", path.display()))?;
        out.push((ns.flag, OwnedFd::from(f), path.display().to_string()));
    }
    Ok(out)
}

fn join_namespaces(opened: Vec<(i32, OwnedFd, String)>) -> Result<(), String> {
    for (flag, fd, path) in opened {
        setns(&fd, CloneFlags::from_bits_truncate(flag))
            .map_err(|e| format!("setns {path}: {e}"))?;
    }
    Ok(())
}
