//! The runtime's API to the shim: create / start / kill / delete of one container, and cleanup
//! from disk after a shim crash. No ttrpc or containerd types here.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cgroups::{Manager, MountSource};
use crate::channel::{Channel, Msg};
use crate::console::Console;
use crate::error::{io, Result, RuntimeError};
use crate::hooks::{self, Hook, StateBase};
use crate::ns_hold::{self, Release};
use crate::rootfs_mount::{self, RootfsMount};
use crate::spec::{self, CgroupBind, ExecPlan, ProcessPlan};
use crate::state::{self, State};
use crate::zygote::{spawn_helper, Spawning};

pub struct CreateOpts<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    /// containerd's rootfs mounts; empty means the spec's root.path is used as it is.
    pub rootfs: &'a [RootfsMount],
    /// The container's fds 0, 1, 2.
    pub stdio: [BorrowedFd<'a>; 3],
    /// Called with each line the init helper wants logged.
    pub log: &'a dyn Fn(&str),
    /// runc's NoNewKeyring: keep the caller's session keyring instead of the container's own.
    pub no_new_keyring: bool,
    /// The caller will want [`Container::oom_events`]: opened while the helper sets the
    /// container up, when this thread only waits, rather than after it is ready.
    pub oom_events: bool,
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    /// CLONE_NEW* flags of every namespace the container has (new or joined): what an exec joins.
    namespaces: Vec<i32>,
    /// The init made a pid namespace of its own (not joined by path): its exit ended every
    /// process of the container.
    own_pid_ns: bool,
    pid: i32,
    cgroup: Manager,
    channel: Option<Channel>,
    rootfs_mount: Option<PathBuf>,
    /// The init's mount namespace, held until the init exits ([`Container::exited`]).
    mount_ns: Option<OwnedFd>,
    /// The init's network namespace when it made one, held past its exit (`ns_hold.rs`).
    net_ns: Option<OwnedFd>,
    /// Ends the hold on the network namespace once the init has exited.
    net_release: Release,
    /// Once the init has exited: when its mount namespace, let go then, is gone.
    mount_gone: Option<ns_hold::Gone>,
    console: Option<Console>,
    seccomp: Option<crate::seccomp::SeccompProgram>,
    poststart: Vec<Hook>,
    poststop: Vec<Hook>,
    hook_state: StateBase,
    /// The device rules applied at create, which an update may only repeat.
    devices: Vec<oci_spec::runtime::LinuxDeviceCgroup>,
    /// The session keyring its processes join (runc's "_ses.<id>"), unless NoNewKeyring.
    keyring: Option<String>,
    /// [`Container::oom_events`] as opened during create, until taken.
    oom_events: Option<OwnedFd>,
}

impl Container {
    /// Build the container up to the point where only exec'ing the user's program is left.
    /// On failure nothing is left behind (helper killed, cgroup removed, rootfs unmounted,
    /// state file removed) and the first real cause is returned.
    pub fn create(opts: CreateOpts<'_>) -> Result<Container> {
        let data = spec::read(opts.bundle)?;
        // On v1 the helper is asked for first, on the namespaces alone: its clone3 (the new
        // namespaces) overlaps the parse and check of the rest of config.json, reading the
        // host's cgroup layout, the state save and the plan, sent once they are done, and
        // the cgroup's creation, which it joins once it needs it (`Plan::cgroup_late`), or
        // first thing. On v2 it is cloned straight into the cgroup, which must exist by
        // then. Until it has its plan it does nothing: dropped, it reads EOF and exits.
        let mut early = match spec::early_clone_flags(&data) {
            Some(flags) if !crate::cgroups::unified_root() => {
                Some((flags, request_helper(flags, None, opts.stdio)?))
            }
            _ => None,
        };
        // Read while the shim waited for this Create, where it is this bundle's (preload.rs).
        let (mut loaded, host) = match crate::preload::take(opts.bundle, &data) {
            Some(p) => (p.loaded, p.host),
            None => (spec::parse(opts.bundle, &data)?, None),
        };
        loaded.plan.hook_state.id = opts.id.to_string();
        if !opts.no_new_keyring {
            loaded.plan.process.session_keyring = Some(session_keyring(opts.id));
        }
        let mut st = State {
            id: opts.id.to_string(),
            poststop: loaded.hooks.poststop.clone(),
            hook_state: loaded.plan.hook_state.clone(),
            ..Default::default()
        };
        let mut undo = Undo::default();
        if !loaded.hooks.poststop.is_empty() {
            undo.poststop = Some((
                loaded.hooks.poststop.clone(),
                loaded.plan.hook_state.clone(),
            ));
        }
        let res = (|| {
            let flags = loaded.plan.clone_flags();
            // The same file parsed twice agrees with itself; should it not, the helper asked
            // for is not the one this plan wants.
            let mut early = early
                .take()
                .filter(|(f, _)| *f == flags)
                .map(|(_, helper)| helper);
            let cg = match &host {
                Some(h) => Manager::with_host(h, loaded.cgroups_path.as_deref(), opts.id)?,
                None => Manager::new(loaded.cgroups_path.as_deref(), opts.id)?,
            };
            if cg.is_v2() {
                // The root's statfs said v1 but mountinfo says v2: this one must be cloned
                // into the cgroup.
                early = None;
            }
            // Recorded before anything is made, so a crash in between still gets it removed.
            st.cgroup = Some(cg.state());
            let rootfs_target = (!opts.rootfs.is_empty()).then(|| opts.bundle.join("rootfs"));
            st.rootfs_mount = rootfs_target.clone();
            state::save(opts.bundle, &st)?;
            if let Some(target) = rootfs_target {
                rootfs_mount::mount_all(opts.rootfs, &target)?;
                undo.rootfs = Some(target);
            }
            undo.cgroup = Some(Manager::from_state(&cg.state()));
            // The helper, asked for already, starts on its mounts while this thread makes the
            // cgroup (nine mkdirs on v1, the longer half of Create's start), where its plan
            // allows: nothing in it forks or looks at its cgroup before its cgroup mount.
            let late = early.is_some() && cgroup_may_come_late(&loaded.plan);
            loaded.plan.cgroup_late = late;
            // Saved as soon as the pid is known, while the helper sets the container up (the
            // shim only waits then), not after it: a save is a write and a rename. Should the
            // shim die before Ready, the helper reads EOF and exits; `delete` finds the pid
            // gone (its start time tells a reused one apart) and removes the rest.
            let bundle = opts.bundle;
            let mut record_pid = |pid: i32| -> Result<()> {
                undo.pid = Some(pid);
                st.pid = pid;
                st.pid_start = state::pid_start(pid).unwrap_or(0);
                state::save(bundle, &st)
            };
            let resources = &loaded.resources;
            let owner = (
                crate::userns::to_host(&loaded.plan.id_maps.uid, 0),
                crate::userns::to_host(&loaded.plan.id_maps.gid, 0),
            );
            let make_cgroup = || -> Result<()> {
                cg.create()?;
                if let Some(r) = resources {
                    cg.apply_before_setup(r)?;
                }
                if let (Some(uid), Some(gid)) = owner {
                    cg.delegate(uid, gid)?;
                }
                Ok(())
            };
            if !late {
                make_cgroup()?;
            }
            loaded.plan.cgroup_v2 = cg.is_v2();
            loaded.plan.process.cgroup_join = cg.self_join_files()?;
            loaded.plan.cgroup_binds = cg
                .mount_sources()
                .into_iter()
                .map(|m| match m {
                    MountSource::V1 { name, source, .. } => CgroupBind {
                        name,
                        host_path: source,
                    },
                    MountSource::V2 { source } => CgroupBind {
                        name: String::new(),
                        host_path: source,
                    },
                })
                .collect();
            let helper = match early {
                Some(h) => h,
                None => request_helper(flags, Some(&cg), opts.stdio)?,
            };
            let (prestart, create_runtime) = (&loaded.hooks.prestart, &loaded.hooks.create_runtime);
            let state_base = &loaded.plan.hook_state;
            let mut runtime_hooks = |pid: i32| -> Result<()> {
                let state = state_base.json("creating", pid);
                hooks::run_all("prestart", prestart, &state)
                    .and_then(|()| hooks::run_all("createRuntime", create_runtime, &state))
                    .map_err(RuntimeError::Init)
            };
            let listener = Listener::of(&loaded.plan.process.seccomp, &loaded.plan.hook_state);
            // The device rules go in once the helper's /dev is made, before the prestart
            // hooks (which may add to them), as runc writes them; the helper finishes its
            // set-up meanwhile.
            let mut devices_applied = false;
            let mut oom_events = None;
            let mut on_sent = || {
                // What fails here is tried again, and reported, by the caller's own call.
                if opts.oom_events {
                    oom_events = cg.oom_events().ok().flatten();
                }
            };
            // The init's namespaces are held from here too, rather than after Ready: the
            // helper made them before its mounts, and goes on with its set-up meanwhile.
            let mut mount_ns = None;
            let mut net_ns = None;
            let new_mount_ns = loaded.plan.has_new_ns(libc::CLONE_NEWNS);
            // One joined by path lives on without the container: nothing to gain by a hold.
            let new_net_ns = loaded.plan.has_new_ns(libc::CLONE_NEWNET);
            let mut on_devices = |pid: i32| -> Result<()> {
                if let Some(r) = &loaded.resources {
                    cg.apply_devices(r)?;
                }
                devices_applied = true;
                if new_mount_ns {
                    mount_ns = ns_hold::open(pid, "mnt");
                }
                if new_net_ns {
                    net_ns = ns_hold::open(pid, "net");
                }
                Ok(())
            };
            let (pid, ch, console) = handshake(
                helper,
                Msg::Plan(Box::new(loaded.plan.clone())),
                opts.log,
                HandshakeEvents {
                    on_pid: &mut record_pid,
                    on_devices: Some(&mut on_devices),
                    on_sent: &mut on_sent,
                    on_hooks: &mut runtime_hooks,
                    listener: listener.as_ref(),
                    id_maps: Some(&loaded.plan.id_maps),
                    late_cgroup: late.then_some(&make_cgroup as &dyn Fn() -> Result<()>),
                },
            )?;
            if !devices_applied {
                return Err(RuntimeError::Init(
                    "init was ready without reporting /dev made".into(),
                ));
            }
            Ok((pid, cg, ch, console, [mount_ns, net_ns], oom_events))
        })();
        match res {
            Ok((pid, cgroup, ch, console, [mount_ns, net_ns], oom_events)) => Ok(Container {
                id: opts.id.to_string(),
                bundle: opts.bundle.to_path_buf(),
                namespaces: loaded.plan.namespaces.iter().map(|n| n.flag).collect(),
                own_pid_ns: loaded.plan.has_new_ns(libc::CLONE_NEWPID),
                pid,
                cgroup,
                channel: Some(ch),
                rootfs_mount: undo.rootfs.take(),
                mount_ns,
                net_ns,
                net_release: Release::default(),
                mount_gone: None,
                console,
                seccomp: loaded.plan.process.seccomp.clone(),
                poststart: loaded.hooks.poststart.clone(),
                poststop: loaded.hooks.poststop.clone(),
                hook_state: loaded.plan.hook_state.clone(),
                keyring: loaded.plan.process.session_keyring.clone(),
                devices: loaded
                    .resources
                    .as_ref()
                    .and_then(|r| r.devices().clone())
                    .unwrap_or_default(),
                oom_events,
            }),
            Err(e) => {
                undo.run(opts.bundle);
                Err(e)
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pty master of a process.terminal init, handed over once.
    pub fn take_console(&mut self) -> Option<Console> {
        self.console.take()
    }

    /// Release the init to exec the user's program; returns once exec succeeded or failed,
    /// and the poststart hooks ran (their failures are logged only, as the spec says).
    pub fn start(&mut self) -> Result<()> {
        let listener = Listener::of(&self.seccomp, &self.hook_state);
        release(&mut self.channel, listener.as_ref(), self.pid)?;
        if !self.poststart.is_empty() {
            let state = self.hook_state.json("running", self.pid);
            hooks::run_logged("poststart", &self.poststart, &state);
        }
        Ok(())
    }

    /// What an exec needs of this container, owned: spawning one ([`ExecContext::exec`], a
    /// handshake with a helper, slow on a loaded host) then borrows nothing the caller must keep
    /// locked.
    pub fn exec_context(&self) -> ExecContext {
        ExecContext {
            init_pid: self.pid,
            namespaces: self.namespaces.clone(),
            cgroup: self.cgroup.clone(),
            seccomp: self.seccomp.clone(),
            keyring: self.keyring.clone(),
            hook_state: self.hook_state.clone(),
        }
    }

    /// Signal the init, or every process of the container (`all`).
    pub fn kill(&self, signal: Signal, all: bool) -> Result<()> {
        if all {
            return Ok(self.cgroup.kill_all(signal)?);
        }
        kill(Pid::from_raw(self.pid), signal).map_err(|source| RuntimeError::Sys {
            op: "kill",
            path: format!("pid {}", self.pid),
            source,
        })
    }

    /// New limits for the running container (`ctr task update`, CRI UpdateContainerResources).
    /// Device rules are refused: on v2 another eBPF program could only narrow access, never
    /// widen it, so an update could not mean what it says.
    /// CRI's UpdateContainerResources resends the container's device rules with the new
    /// limits: the same rules are left as they are; changing them on a running container is
    /// refused (its processes would lose their devices while the rules are rewritten).
    pub fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let devices = resources.devices().clone().unwrap_or_default();
        if !devices.is_empty() && devices != self.devices {
            return Err(RuntimeError::Unsupported {
                field: "a change of linux.resources.devices on update".to_string(),
            });
        }
        let mut rest = resources.clone();
        rest.set_devices(None);
        Ok(self.cgroup.apply(&rest)?)
    }

    /// Freeze every process of the container (Pause) or thaw them (Resume).
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        Ok(self.cgroup.freeze(frozen)?)
    }

    /// How many processes the kernel's OOM killer has killed in the container so far.
    pub fn oom_kills(&self) -> u64 {
        self.cgroup.oom_kills()
    }

    /// An fd readable after OOM activity in the container (see `cgroups/oom.rs`); `None`
    /// without a memory controller.
    pub fn oom_events(&mut self) -> Result<Option<std::os::fd::OwnedFd>> {
        match self.oom_events.take() {
            Some(opened) => Ok(Some(opened)),
            None => Ok(self.cgroup.oom_events()?),
        }
    }

    /// The cgroup's counters now (Task.Stats).
    pub fn stats(&self) -> Result<crate::cgroups::stats::Stats> {
        Ok(self.cgroup.stats()?)
    }

    pub fn pids(&self) -> Result<Vec<i32>> {
        Ok(self.cgroup.pids()?)
    }

    /// The init has exited with `status`: record it on disk, so `delete` after a shim crash
    /// reports it, and hand back its namespaces for [`Exited::finish`] to let go once the
    /// caller let go of its lock (the network one at the [`Release`] that [`Container::delete`]
    /// returns). Recording is one small write, done here so that a Delete that follows at
    /// once finds it made and removes it.
    pub fn exited(&mut self, status: i32) -> Exited {
        state::record_exit(&self.bundle, status);
        let net = self.net_ns.take().map(|ns| {
            let (lingering, release) = ns_hold::net_hold(ns);
            self.net_release = release;
            lingering
        });
        let mount = self.mount_ns.take().map(|ns| {
            let (unmounting, gone) = ns_hold::mount_hold(ns);
            self.mount_gone = Some(gone);
            unmounting
        });
        Exited { mount, net }
    }

    /// Remove what create made. The init must have exited (the caller reaps it); anything
    /// still in the cgroup is killed first. The network namespace goes when the returned
    /// [`Release`] drops: once the caller has answered (`ns_hold.rs`).
    pub fn delete(mut self) -> Result<Release> {
        self.channel = None;
        // The kernel ended every process of a pid namespace before its init's exit was
        // reaped, so its cgroup is empty: no need to list the tree for stragglers (a read of
        // cgroup.procs and a directory listing per cgroup, ~0.1 ms on v1). One moved in from
        // outside still is killed by destroy, which reads a busy cgroup's pids and retries.
        if !self.own_pid_ns {
            let _ = self.cgroup.kill_all(Signal::SIGKILL);
        }
        self.cgroup.destroy()?;
        if let Some(r) = &self.rootfs_mount {
            rootfs_mount::unmount(r)?;
        }
        state::remove(&self.bundle);
        // The container's mounts go before Delete answers, as they do with runc, whose init
        // takes its mount namespace along: containerd unmounts the rootfs next, and a
        // snapshotter on block devices (devmapper) removes the device, busy while mounted.
        // The teardown is usually done by now (it started at the exit).
        if let Some(gone) = self.mount_gone.take() {
            if !gone.wait(MOUNT_TEARDOWN_LIMIT) {
                log::warn!(
                    "container {}: its mount namespace is not gone {MOUNT_TEARDOWN_LIMIT:?} after the exit's teardown began",
                    self.id
                );
            }
        }
        if !self.poststop.is_empty() {
            let state = self.hook_state.json("stopped", self.pid);
            hooks::run_logged("poststop", &self.poststop, &state);
        }
        // Where the exit was not handed to `exited` the namespace is still ours: it goes with
        // the release all the same.
        let mut release = std::mem::take(&mut self.net_release);
        release.hold(self.net_ns.take());
        Ok(release)
    }
}

/// What the handshake calls back for: every pid the helper is known by, the runtime-side hooks,
/// and where a seccomp listener fd goes.
struct HandshakeEvents<'a> {
    on_pid: &'a mut dyn FnMut(i32) -> Result<()>,
    /// The container's /dev is made (`Msg::Devices`); `None` for an exec.
    on_devices: Option<&'a mut dyn FnMut(i32) -> Result<()>>,
    /// The helper has its plan and its pid is recorded: what this thread may do meanwhile.
    on_sent: &'a mut dyn FnMut(),
    on_hooks: &'a mut dyn FnMut(i32) -> Result<()>,
    listener: Option<&'a Listener>,
    /// What to write when the helper has unshared its user namespace.
    id_maps: Option<&'a crate::userns::IdMaps>,
    /// Makes the cgroup once the plan is sent (a plan's `cgroup_late`); its `tasks` files
    /// follow as `Msg::Cgroups`.
    late_cgroup: Option<&'a dyn Fn() -> Result<()>>,
}

/// A running container as its execs see it ([`Container::exec_context`]).
#[derive(Debug, Clone)]
pub struct ExecContext {
    init_pid: i32,
    namespaces: Vec<i32>,
    cgroup: Manager,
    seccomp: Option<crate::seccomp::SeccompProgram>,
    keyring: Option<String>,
    hook_state: StateBase,
}

impl ExecContext {
    /// Prepare an extra process in the running container: it joins the init's namespaces and
    /// cgroup, is set up as `process` says, and waits for [`Exec::start`].
    pub fn exec(
        &self,
        mut process: ProcessPlan,
        stdio: [BorrowedFd<'_>; 3],
        log: &dyn Fn(&str),
    ) -> Result<Exec> {
        process.seccomp = self.seccomp.clone();
        process.session_keyring = self.keyring.clone();
        process.cgroup_join = self.cgroup.self_join_files()?;
        let listener = Listener::of(&self.seccomp, &self.hook_state);
        let plan = ExecPlan {
            init_pid: self.init_pid,
            namespaces: self.namespaces.clone(),
            process,
        };
        let mut helper = None;
        let mut note = |pid: i32| -> Result<()> {
            helper = Some(pid);
            Ok(())
        };
        let res = spawn_handshake(
            0,
            &self.cgroup,
            stdio,
            Msg::Exec(Box::new(plan)),
            log,
            HandshakeEvents {
                on_pid: &mut note,
                on_devices: None,
                on_sent: &mut || {},
                on_hooks: &mut |_| Err(RuntimeError::Init("an exec asked for hooks".into())),
                listener: listener.as_ref(),
                id_maps: None,
                late_cgroup: None,
            },
        );
        match res {
            Ok((pid, channel, console)) => Ok(Exec {
                pid,
                channel: Some(channel),
                console,
                listener,
            }),
            Err(e) => {
                if let Some(pid) = helper {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                Err(e)
            }
        }
    }
}

/// Whether the helper may start on its mounts before its cgroup is made (`Plan::cgroup_late`):
/// nothing it does before its cgroup mount may depend on the cgroup. Not with a user namespace
/// (the cgroup is delegated to its root first), a pid namespace joined by path (the helper
/// forks into it, and the child must be born in the cgroup), a cgroup or time namespace (made
/// from, or entered by, the cgroup we are in), or hooks (they see the helper's pid, and may
/// look at its cgroup).
fn cgroup_may_come_late(plan: &spec::Plan) -> bool {
    !plan.has_ns(libc::CLONE_NEWUSER)
        && !plan
            .namespaces
            .iter()
            .any(|n| n.flag == libc::CLONE_NEWPID && n.path.is_some())
        && !plan.has_ns(libc::CLONE_NEWCGROUP)
        && !plan.has_ns(libc::CLONE_NEWTIME)
        // Prestart or createRuntime hooks.
        && !plan.runtime_hooks
        && plan.create_container.is_empty()
}

/// runc's name for a container's session keyring, which its execs join too.
fn session_keyring(id: &str) -> String {
    format!("_ses.{id}")
}

/// Start the helper in `cgroup` and take it through the handshake up to Ready. `on_pid` hears
/// every pid the process is known by (the helper, then the forked child when it joins a pid
/// namespace), so the caller can kill it if this fails. Returns the pty master too when the
/// process asked for a terminal.
fn spawn_handshake(
    ns_flags: i32,
    cgroup: &Manager,
    stdio: [BorrowedFd<'_>; 3],
    plan: Msg,
    log: &dyn Fn(&str),
    ev: HandshakeEvents<'_>,
) -> Result<(i32, Channel, Option<Console>)> {
    let helper = request_helper(ns_flags, Some(cgroup), stdio)?;
    handshake(helper, plan, log, ev)
}

/// A helper asked for: its pid comes with the handshake.
struct PendingHelper {
    spawning: Spawning,
    ch: Channel,
}

/// Ask for a helper: on v2 cloned into `cgroup` (which must exist then); with `None`, or on
/// v1, in the caller's cgroup, which the helper leaves for the container's by itself.
fn request_helper(
    ns_flags: i32,
    cgroup: Option<&Manager>,
    stdio: [BorrowedFd<'_>; 3],
) -> Result<PendingHelper> {
    let (ours, theirs) = UnixStream::pair().map_err(io("socketpair"))?;
    let cg_fd = match cgroup {
        Some(cg) => cg.dir_fd()?,
        None => None,
    };
    let spawning = spawn_helper(
        ns_flags,
        cg_fd.as_ref().map(|f| f.as_fd()),
        stdio,
        theirs.as_fd(),
    )?;
    Ok(PendingHelper {
        spawning,
        ch: Channel::new(ours),
    })
}

/// The cgroup v1 `tasks` files the helper of `plan` joins through, opened, to go with the plan
/// (cgroups::open_join_files): on the helper's path they were nine path walks through
/// cgroupfs, here they overlap its clone3.
fn open_join_files(plan: &Msg) -> Option<Vec<std::fs::File>> {
    let files = match plan {
        Msg::Plan(p) => &p.process.cgroup_join,
        Msg::Exec(p) => &p.process.cgroup_join,
        _ => return None,
    };
    if files.is_empty() || files.len() > crate::channel::MAX_FDS {
        return None;
    }
    crate::cgroups::open_join_files(files)
}

/// Send the helper its plan and take it through the handshake up to Ready.
fn handshake(
    helper: PendingHelper,
    plan: Msg,
    log: &dyn Fn(&str),
    mut ev: HandshakeEvents<'_>,
) -> Result<(i32, Channel, Option<Console>)> {
    let PendingHelper { spawning, mut ch } = helper;
    let lost = |e: std::io::Error| RuntimeError::Init(format!("talk to init: {e}"));
    // Sent before the helper's pid is read: the socket holds it until the helper, maybe not
    // cloned yet, reads it. On v2 the helper was cloned into its cgroup; on v1 it moves itself
    // in (the plan's cgroup_join, cgroups::join_self) before anything else. Should the clone
    // have failed, its error is the one to report, not this send's.
    let send_with_files = |ch: &mut Channel, msg: &Msg| match open_join_files(&plan) {
        Some(files) => {
            let fds: Vec<_> = files.iter().map(AsFd::as_fd).collect();
            ch.send_fds(msg, &fds)
        }
        None => ch.send(msg),
    };
    let sent = match ev.late_cgroup {
        Some(_) => ch.send(&plan),
        None => send_with_files(&mut ch, &plan),
    };
    // Made while the zygote's clone3 runs, before its pid is read: the helper needs it only
    // at its cgroup mount. Its error goes to the helper once it is known and recorded.
    let made = ev.late_cgroup.map(|make| {
        make().inspect(|()| {
            // Should the helper have failed meanwhile, its error is a frame to come.
            let _ = send_with_files(&mut ch, &Msg::Cgroups);
        })
    });
    let mut pid = spawning.pid()?;
    (ev.on_pid)(pid)?;
    sent.map_err(lost)?;
    if let Some(Err(e)) = made {
        let _ = ch.send(&Msg::Error(e.to_string()));
        return Err(e);
    }
    (ev.on_sent)();
    let mut console = None;
    loop {
        match ch.recv().map_err(lost)? {
            Some(Msg::Log(line)) => log(&line),
            Some(Msg::Console) => {
                let fd = ch
                    .take_fd()
                    .ok_or_else(|| RuntimeError::Init("pty master missing from init".into()))?;
                console = Some(Console::new(fd));
            }
            Some(Msg::SeccompListener) => forward_listener(&mut ch, ev.listener, pid, "creating")?,
            Some(Msg::Devices) => {
                let res = match ev.on_devices.as_mut() {
                    Some(f) => f(pid),
                    None => Err(RuntimeError::Init("an exec reported /dev made".into())),
                };
                if let Err(e) = res {
                    let _ = ch.send(&Msg::Error(e.to_string()));
                    return Err(e);
                }
                // The helper went on meanwhile: should it have failed and gone, its error is
                // the next frame, not this send's.
                let _ = ch.send(&Msg::Continue);
            }
            Some(Msg::Hooks) => {
                if let Err(e) = (ev.on_hooks)(pid) {
                    let _ = ch.send(&Msg::Error(e.to_string()));
                    return Err(e);
                }
                ch.send(&Msg::Continue).map_err(lost)?;
            }
            Some(Msg::IdMaps) => {
                let maps = ev
                    .id_maps
                    .filter(|m| !m.uid.is_empty())
                    .ok_or_else(|| RuntimeError::Init("unexpected request for id maps".into()))?;
                if let Err(e) = maps.write(pid) {
                    let e = RuntimeError::Init(format!("user namespace: {e}"));
                    let _ = ch.send(&Msg::Error(e.to_string()));
                    return Err(e);
                }
                ch.send(&Msg::Continue).map_err(lost)?;
            }
            Some(Msg::Pid(p)) => {
                pid = p;
                (ev.on_pid)(p)?;
            }
            Some(Msg::Ready { movable }) => {
                ch.movable = movable;
                return Ok((pid, ch, console));
            }
            Some(Msg::Error(e)) => return Err(RuntimeError::Init(e)),
            Some(other) => {
                return Err(RuntimeError::Init(format!(
                    "unexpected {other:?} from init"
                )))
            }
            None => return Err(RuntimeError::Init("init exited before it was ready".into())),
        }
    }
}

/// Release a helper waiting at Ready to exec; returns once exec succeeded or failed.
fn release(channel: &mut Option<Channel>, listener: Option<&Listener>, pid: i32) -> Result<()> {
    let mut ch = channel
        .take()
        .ok_or(RuntimeError::BadState("already started"))?;
    let lost = |e: std::io::Error| RuntimeError::Init(format!("talk to init: {e}"));
    // Off this core: this thread waits for the exec's proof and replies while the program
    // starts (affinity.rs).
    let cpu = ch
        .movable
        .then(|| crate::affinity::away_from_this_cpu(pid))
        .flatten();
    ch.send(&Msg::Start { cpu }).map_err(lost)?;
    loop {
        match ch.recv().map_err(lost)? {
            None => return Ok(()),
            Some(Msg::SeccompListener) => forward_listener(&mut ch, listener, pid, "created")?,
            Some(Msg::Error(e)) => return Err(RuntimeError::Init(e)),
            Some(other) => {
                return Err(RuntimeError::Init(format!(
                    "unexpected {other:?} from init"
                )))
            }
        }
    }
}

/// Where a seccomp user-notification fd goes (linux.seccomp.listenerPath), and what the
/// listener is told with it.
#[derive(Clone)]
struct Listener {
    path: PathBuf,
    metadata: String,
    state: StateBase,
}

impl Listener {
    fn of(seccomp: &Option<crate::seccomp::SeccompProgram>, state: &StateBase) -> Option<Self> {
        let (path, metadata) = seccomp.as_ref()?.listener.clone()?;
        Some(Listener {
            path,
            metadata,
            state: state.clone(),
        })
    }
}

/// The fd that came with a SeccompListener frame, on to the spec's listener.
fn forward_listener(
    ch: &mut Channel,
    listener: Option<&Listener>,
    pid: i32,
    status: &str,
) -> Result<()> {
    let fd = ch
        .take_fd()
        .ok_or_else(|| RuntimeError::Init("seccomp listener fd missing from init".into()))?;
    let l = listener
        .ok_or_else(|| RuntimeError::Init("a seccomp listener fd nobody asked for".into()))?;
    let state = serde_json::from_slice(&l.state.json(status, pid)).unwrap_or_default();
    crate::seccomp::send_to_listener(&l.path, &l.metadata, pid, state, fd.as_fd())
}

/// An exec'd process between Exec and Start. Dropping it before Start makes it exit.
pub struct Exec {
    pid: i32,
    channel: Option<Channel>,
    console: Option<Console>,
    listener: Option<Listener>,
}

impl Exec {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The pty master of a process.terminal exec, handed over once.
    pub fn take_console(&mut self) -> Option<Console> {
        self.console.take()
    }

    pub fn start(&mut self) -> Result<()> {
        release(&mut self.channel, self.listener.as_ref(), self.pid)
    }
}

/// What a failed create must take back, in reverse order of making.
#[derive(Default)]
struct Undo {
    pid: Option<i32>,
    cgroup: Option<Manager>,
    rootfs: Option<PathBuf>,
    /// A failed create still runs poststop: createRuntime hooks may have set things up
    /// (networking) that only poststop takes down (runc does the same).
    poststop: Option<(Vec<Hook>, StateBase)>,
}

impl Undo {
    fn run(&mut self, bundle: &Path) {
        if let Some(pid) = self.pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.kill_all(Signal::SIGKILL);
            if let Err(e) = cg.destroy() {
                log::warn!("failed create: remove cgroup: {e}");
            }
        }
        if let Some(r) = &self.rootfs {
            if let Err(e) = rootfs_mount::unmount(r) {
                log::warn!("failed create: {e}");
            }
        }
        state::remove(bundle);
        if let Some((list, base)) = &self.poststop {
            hooks::run_logged(
                "poststop",
                list,
                &base.json("stopped", self.pid.unwrap_or(0)),
            );
        }
    }
}

/// How long a Delete waits for the teardown of the init's mount namespace before it goes on.
const MOUNT_TEARDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A container's init has exited ([`Container::exited`]).
pub struct Exited {
    mount: Option<ns_hold::Unmounting>,
    net: Option<ns_hold::Lingering>,
}

impl Exited {
    /// Let the init's namespaces go, off the caller's path (`ns_hold.rs`): the mount namespace
    /// now, on a thread of its own beside the report of the exit, the network namespace at its
    /// release.
    pub fn finish(self) {
        ns_hold::let_go(self.mount, self.net, ns_hold::NET_LINGER);
    }
}

/// `delete` after the shim is gone: kill what is left, remove the cgroup, unmount the rootfs,
/// forget the state. Returns the init's pid and its exit status when they were recorded.
pub fn cleanup(bundle: &Path) -> Result<(i32, Option<i32>)> {
    let Some(st) = state::load(bundle)? else {
        return Ok((0, None));
    };
    let exit = state::recorded_exit(bundle).or(st.exit_status);
    if st.pid > 0 && st.pid_start != 0 && state::pid_start(st.pid) == Some(st.pid_start) {
        let _ = kill(Pid::from_raw(st.pid), Signal::SIGKILL);
    }
    if let Some(cs) = &st.cgroup {
        let cg = Manager::from_state(cs);
        let _ = cg.kill_all(Signal::SIGKILL);
        cg.destroy()?;
    }
    if let Some(r) = &st.rootfs_mount {
        rootfs_mount::unmount(r)?;
    }
    state::remove(bundle);
    if !st.poststop.is_empty() {
        hooks::run_logged(
            "poststop",
            &st.poststop,
            &st.hook_state.json("stopped", st.pid),
        );
    }
    Ok((st.pid, exit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("crt-cleanup-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn cleanup_reports_the_recorded_exit_and_forgets_it() {
        let dir = bundle("exit");
        let st = State {
            id: "c".into(),
            ..Default::default()
        };
        state::save(&dir, &st).unwrap();
        assert_eq!(cleanup(&dir).unwrap(), (0, None), "no exit recorded yet");
        state::save(&dir, &st).unwrap();
        state::record_exit(&dir, 3);
        assert_eq!(cleanup(&dir).unwrap(), (0, Some(3)));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "state left behind"
        );
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn cleanup_reads_an_exit_an_earlier_version_recorded_in_the_state() {
        let dir = bundle("legacy");
        let st = State {
            id: "c".into(),
            exit_status: Some(5),
            ..Default::default()
        };
        state::save(&dir, &st).unwrap();
        assert_eq!(cleanup(&dir).unwrap(), (0, Some(5)));
        std::fs::remove_dir(&dir).unwrap();
    }

    /// The cgroup comes late (the helper starts on its mounts meanwhile) only where nothing the
    /// helper does before its cgroup mount depends on it.
    #[test]
    fn a_cgroup_comes_late_only_to_a_plan_that_does_not_need_it_early() {
        use serde_json::json;
        let late = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = crate::spec::tests_base();
            edit(&mut v);
            let data = serde_json::to_vec(&v).unwrap();
            cgroup_may_come_late(&spec::parse(Path::new("/b"), &data).unwrap().plan)
        };
        assert!(late(&|_| {}), "a plain spec");
        let hook = json!([{"path": "/bin/true"}]);
        for kind in ["prestart", "createRuntime", "createContainer"] {
            assert!(
                !late(&|v| v["hooks"][kind] = hook.clone()),
                "{kind} hooks see the helper's cgroup"
            );
        }
        assert!(
            late(&|v| v["hooks"]["poststart"] = hook.clone()),
            "poststart hooks run after Start"
        );
        let ns = |extra: serde_json::Value| {
            move |v: &mut serde_json::Value| {
                v["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(extra.clone())
            }
        };
        assert!(!late(&ns(json!({"type": "cgroup"}))), "a cgroup namespace");
        assert!(!late(&ns(json!({"type": "time"}))), "a time namespace");
        assert!(
            !late(&|v| v["linux"]["namespaces"][0] =
                json!({"type": "pid", "path": "/proc/self/ns/pid"})),
            "a pid namespace joined: the helper forks into it"
        );
    }
}
