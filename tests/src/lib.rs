//! crt e2e harness: a private containerd (Debian's 1.6 or the 2.x kit) driven with `ctr`.
//!
//! Every test gets its own [`Containerd`]: a short temp dir (`/tmp/crtXXXXXX`) holding root, state,
//! sockets, config and log; the busybox image is imported into it; dropping it removes every task
//! and container, stops containerd and the shims it started, unmounts what is left below the temp
//! dir and deletes it. [`assert_no_leaks`] checks that a scenario's containers left nothing behind.
//!
//! Environment:
//! - `CRT_TEST_RUNTIME`: runtime under test (default `io.containerd.crt.v1`); with
//!   `io.containerd.runc.v2` the runc shim is used and runc's state goes under the temp dir.
//! - `CRT_BIN_DIR`: directory holding `containerd-shim-crt-v1` (default `<workspace>/target/debug`),
//!   put first on containerd's PATH.
//! - `CONTAINERD2_DIR`: the 2.x kit (default `/opt/containerd2`).
//! - `CRT_SHARED_DIR`: the shared kit (default `<workspace>/../shared`).
//! - `CRT_TEST_TIMEOUT_SCALE`: multiply timeouts (default 1, 10 when `V2VM=1`).
//! - `CRT_TEST_KEEP=1`: keep the temp dir; `CRT_TEST_LOG_DIR`: where logs of failed tests are copied.
//! - `CRT_TEST_STATE_DIRS`: extra `:`-separated dirs (e.g. crt's own state root) searched for leaks.
//! - `CRT_TEST_IMAGE_TAR`: a prebuilt busybox OCI tarball; else one is built with the kit's
//!   `build-busybox-image.py` from `CRT_TEST_BUSYBOX` (default /bin/busybox) and cached in
//!   `CRT_TEST_IMAGE_CACHE` (default /tmp/crt-e2e-images).
//! - `CRT_TEST_RUNC`: runc binary for the runc shim (default: runc on PATH).

pub mod cgroup;
pub mod cmd;
pub mod event_sink;
pub mod image;
pub mod leaks;
pub mod procs;
pub mod shim_client;
pub mod spec;
pub mod tty;
pub mod util;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub use serde_json::{self, json, Value};

pub use cgroup::{cgroup_mode, CgroupMode};
pub use cmd::{Background, Output};
pub use image::IMAGE;
pub use leaks::{assert_no_leaks, assert_no_leaks_with, find_leaks, LeakOptions};
pub use util::{in_v2vm, poll, secs};

/// The runtime crt registers as.
pub const CRT_RUNTIME: &str = "io.containerd.crt.v1";
/// The stock runc shim (used to validate the harness).
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// The containerd namespace all tests use.
pub const NAMESPACE: &str = "default";
/// CRI's namespace.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// Binary name containerd derives from [`CRT_RUNTIME`].
pub const CRT_SHIM_BINARY: &str = "containerd-shim-crt-v1";

/// Which containerd to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Debian 12's containerd 1.6 (`/usr/bin`).
    V16,
    /// The 2.x kit (`$CONTAINERD2_DIR/bin`, default `/opt/containerd2/bin`).
    V2,
}

impl Version {
    /// Directory with containerd, ctr and that version's containerd-shim-runc-v2.
    pub fn bin_dir(self) -> PathBuf {
        match self {
            Version::V16 => PathBuf::from("/usr/bin"),
            Version::V2 => PathBuf::from(
                std::env::var("CONTAINERD2_DIR").unwrap_or_else(|_| "/opt/containerd2".into()),
            )
            .join("bin"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Version::V16 => "containerd-1.6",
            Version::V2 => "containerd-2.x",
        }
    }
}

/// The runtime under test (`CRT_TEST_RUNTIME`, default [`CRT_RUNTIME`]).
pub fn runtime_under_test() -> String {
    std::env::var("CRT_TEST_RUNTIME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| CRT_RUNTIME.to_string())
}

/// Directory of `containerd-shim-crt-v1` (`CRT_BIN_DIR`, default `<workspace>/target/debug`).
pub fn crt_bin_dir() -> PathBuf {
    match std::env::var("CRT_BIN_DIR") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => image::repo_root().join("target").join("debug"),
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// One row of `ctr task ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub pid: u32,
    pub status: String,
}

/// A private containerd instance. See the crate docs.
pub struct Containerd {
    pub version: Version,
    /// The temp dir everything lives in (e.g. `/tmp/crtab12cd`).
    pub dir: PathBuf,
    /// Its random part; used in container ids so they are unique host-wide.
    pub suffix: String,
    /// Runtime name passed to `ctr --runtime`.
    pub runtime: String,
    child: Mutex<Option<Child>>,
    pid: AtomicU32,
    counter: AtomicUsize,
    ids: Mutex<Vec<String>>,
    shim_sockets: Mutex<Vec<PathBuf>>,
    baseline_mounts: Vec<String>,
    /// The containerd namespace ctr works in: `default`, or `k8s.io` with CRI.
    pub ns: &'static str,
    /// With the CRI plugin: the private CNI bridge this instance made.
    cri_bridge: Option<String>,
    /// containerd runs where /sys/fs/cgroup/unified is unmounted ([`Containerd::start_v1_view`]).
    hide_unified: bool,
}

/// The pause image CRI's sandboxes run (the kit's static pause; imported, never pulled).
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.2";
/// The CRI runtime handler that maps to the runtime under test.
pub const CRI_HANDLER: &str = "crt";

impl Containerd {
    /// Starts a private containerd of `version`, waits until it answers and imports the image.
    pub fn start(version: Version) -> Containerd {
        Self::start_with(version, false, false, false)
    }

    /// Like [`Containerd::start`], with containerd (and so every shim and runtime it starts)
    /// in a mount namespace of its own where a hybrid host's `/sys/fs/cgroup/unified` is
    /// unmounted: Debian 12's crun refuses hybrid cgroups, and the benchmark measures every
    /// runtime in that same view.
    pub fn start_v1_view(version: Version) -> Containerd {
        Self::start_with(version, false, true, false)
    }

    /// [`Containerd::start_v1_view`] with the state dir (bundles, shim and runc state) on a
    /// tmpfs, as `/run/containerd` is on any systemd host; the benchmark's view.
    pub fn start_bench(version: Version) -> Containerd {
        Self::start_with(version, false, true, true)
    }

    /// Like [`Containerd::start`], with the CRI plugin on (handler [`CRI_HANDLER`]), a private
    /// CNI bridge and range, and the busybox and pause images in namespace `k8s.io`; ctr then
    /// works in `k8s.io` too.
    pub fn start_cri(version: Version) -> Containerd {
        Self::start_with(version, true, false, false)
    }

    fn start_with(
        version: Version,
        cri: bool,
        hide_unified: bool,
        state_tmpfs: bool,
    ) -> Containerd {
        let uid = fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
            })
            .unwrap_or_default();
        assert_eq!(uid, "0", "the e2e tests must run as root");
        let bin = version.bin_dir();
        for b in ["containerd", "ctr"] {
            assert!(
                bin.join(b).is_file(),
                "{} not found for {}: {}",
                bin.join(b).display(),
                version.name(),
                match version {
                    Version::V16 => "apt-get install containerd".to_string(),
                    Version::V2 => format!(
                        "bash {}/containerd2/install.sh /opt/containerd2 (or set CONTAINERD2_DIR)",
                        image::shared_dir().display()
                    ),
                }
            );
        }
        let runtime = runtime_under_test();
        let crt_dir = crt_bin_dir();
        if runtime == CRT_RUNTIME {
            assert!(
                crt_dir.join(CRT_SHIM_BINARY).is_file(),
                "{} not found: build it (make build / cargo build) or set CRT_BIN_DIR; \
                 set CRT_TEST_RUNTIME={RUNC_RUNTIME} to test the harness with runc",
                crt_dir.join(CRT_SHIM_BINARY).display()
            );
        }
        // build (or find) the image before starting anything
        let tar = image::busybox_image_tar();

        let (dir, suffix) = util::make_temp_dir("/tmp/crt");
        for d in ["root", "state", "s", "harness", "opt"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        if state_tmpfs {
            // Unmounted by stop(), with everything else below the dir.
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "mode=0711", "tmpfs"])
                .arg(dir.join("state"))
                .status();
            assert!(
                st.is_ok_and(|s| s.success()),
                "mount a tmpfs on the state dir"
            );
        }
        let cri_bridge = cri.then(|| cri_setup(&dir, &suffix));
        let config = dir.join("config.toml");
        fs::write(
            &config,
            config_toml(version, &dir, cri.then_some(runtime.as_str())),
        )
        .unwrap();
        let c = Containerd {
            version,
            dir,
            suffix,
            runtime,
            child: Mutex::new(None),
            pid: AtomicU32::new(0),
            counter: AtomicUsize::new(0),
            ids: Mutex::new(Vec::new()),
            shim_sockets: Mutex::new(Vec::new()),
            baseline_mounts: Vec::new(),
            ns: if cri { CRI_NAMESPACE } else { NAMESPACE },
            cri_bridge,
            hide_unified,
        };
        c.spawn_daemon();
        let mut c = c;
        let tar_s = tar.to_string_lossy().into_owned();
        let out = c.ctr_timeout(&["images", "import", &tar_s], secs(120));
        assert!(out.success(), "image import failed:\n{out}");
        if cri {
            let pause = image::pause_image_tar(&version.bin_dir());
            let out = c.ctr_timeout(&["images", "import", &pause.to_string_lossy()], secs(120));
            assert!(out.success(), "pause image import failed:\n{out}");
        }
        let images = c.ctr(&["images", "ls", "-q"]);
        assert!(
            images.stdout.lines().any(|l| l.trim() == IMAGE),
            "{IMAGE} not listed after import:\n{images}"
        );
        c.baseline_mounts = util::host_mounts().into_iter().map(|m| m.line).collect();
        c
    }

    /// Start containerd on this instance's config (its log appended) and wait until it answers.
    fn spawn_daemon(&self) {
        let bin = self.version.bin_dir();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let path = format!(
            "{}:{}:{}",
            crt_bin_dir().display(),
            bin.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let mut cmd = Command::new(bin.join("containerd"));
        cmd.arg("--config")
            .arg(self.dir.join("config.toml"))
            .current_dir(&self.dir) // containerd first looks for the shim relative to its cwd
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if self.hide_unified {
            util::in_v1_view(&mut cmd);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.join("containerd").display()));
        self.pid.store(child.id(), Ordering::SeqCst);
        *self.child.lock().unwrap() = Some(child);
        let version = self.version;
        let ready = poll(secs(30), || {
            if !self.containerd_alive() {
                panic!(
                    "containerd ({}) exited during start-up; log tail:\n{}",
                    version.name(),
                    self.log_tail(40)
                );
            }
            self.ctr_timeout(&["version"], Duration::from_secs(5))
                .success()
                .then_some(())
        });
        assert!(
            ready.is_some(),
            "containerd ({}) did not answer `ctr version` in time; log tail:\n{}",
            version.name(),
            self.log_tail(40)
        );
    }

    /// SIGKILL containerd (not its shims) and reap it, as a crash would end it.
    pub fn kill_daemon(&self) {
        if let Some(mut ch) = self.child.lock().unwrap().take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }

    /// Start containerd again on the same root, state and sockets, as after a crash or an
    /// upgrade; it reconnects to the shims it finds.
    pub fn restart_daemon(&self) {
        assert!(
            !self.containerd_alive(),
            "restart_daemon: containerd still running"
        );
        self.spawn_daemon();
    }

    /// containerd's gRPC socket.
    pub fn sock(&self) -> PathBuf {
        self.dir.join("state/containerd.sock")
    }

    /// containerd's state dir (bundles live in `<state>/io.containerd.runtime.v2.task/<ns>/<id>`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The 2.x shim manager's `socket_dir` (1.6 has no such setting: shims use /run/containerd/s).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("s")
    }

    /// Where `ctr` puts its stdio FIFOs (`--fifo-dir`).
    pub fn fifo_dir(&self) -> PathBuf {
        self.dir.join("state/fifo")
    }

    /// A scratch dir for test files (specs, hand-made rootfs, markers); not checked for leaks.
    pub fn harness_dir(&self) -> PathBuf {
        self.dir.join("harness")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// containerd's pid.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::SeqCst)
    }

    /// Bundle dir containerd makes for container `id`.
    pub fn bundle_dir(&self, id: &str) -> PathBuf {
        self.state_dir()
            .join("io.containerd.runtime.v2.task")
            .join(self.ns)
            .join(id)
    }

    /// Last `n` lines of containerd's log (shim logs included: debug level is on).
    pub fn log_tail(&self, n: usize) -> String {
        util::tail(&self.log_path(), n)
    }

    fn containerd_alive(&self) -> bool {
        let mut g = self.child.lock().unwrap();
        match g.as_mut() {
            Some(ch) => matches!(ch.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// True when the runtime under test is the runc shim.
    pub fn is_runc(&self) -> bool {
        self.runtime == RUNC_RUNTIME
    }

    /// A `ctr -a <sock> -n default <args>` command for this instance.
    pub fn ctr_command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(self.version.bin_dir().join("ctr"));
        cmd.arg("-a").arg(self.sock()).arg("-n").arg(self.ns);
        for a in args {
            cmd.arg(a);
        }
        cmd
    }

    /// Runs ctr with a 60 s (scaled) deadline.
    pub fn ctr<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        self.ctr_timeout(args, secs(60))
    }

    pub fn ctr_timeout<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], timeout: Duration) -> Output {
        cmd::run_timeout(self.ctr_command(args), timeout)
    }

    /// `crictl --config <this instance's crictl.yaml> <args>` with a 60 s (scaled) deadline.
    pub fn crictl<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        self.crictl_timeout(args, secs(60))
    }

    pub fn crictl_timeout<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], t: Duration) -> Output {
        cmd::run_timeout(self.crictl_command(args), t)
    }

    /// The command `crictl --config <this instance's crictl.yaml> <args>`, not started.
    pub fn crictl_command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(Version::V2.bin_dir().join("crictl"));
        cmd.arg("--config").arg(self.dir.join("etc/crictl.yaml"));
        for a in args {
            cmd.arg(a);
        }
        cmd
    }

    /// Remember an id CRI made (a pod's or a container's), so cleanup and leak checks know it.
    pub fn track_id(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_string());
    }

    /// A container id unique on this host (`<name>-<instance suffix>-<n>`), remembered for cleanup.
    pub fn new_id(&self, name: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let id = format!("{name}-{}-{n}", self.suffix);
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// `--runtime` plus, for runc only, runc's binary and a private runc root; and a private
    /// `--fifo-dir` for ctr's stdio FIFOs.
    pub fn runtime_flags(&self) -> Vec<String> {
        let mut v = vec!["--runtime".to_string(), self.runtime.clone()];
        if self.is_runc() {
            let runc = std::env::var("CRT_TEST_RUNC")
                .map(PathBuf::from)
                .ok()
                .or_else(|| find_in_path("runc"))
                .unwrap_or_else(|| PathBuf::from("/usr/sbin/runc"));
            v.push("--runc-binary".into());
            v.push(runc.to_string_lossy().into_owned());
            v.push("--runc-root".into());
            v.push(self.state_dir().join("runc").to_string_lossy().into_owned());
        }
        v.push("--fifo-dir".into());
        v.push(self.fifo_dir().to_string_lossy().into_owned());
        v
    }

    /// The `ctr run` argument list: `run [--rm|-d] <runtime flags> <flags> IMAGE ID args...`.
    /// With `image = None` the image is left out (for `--config`).
    fn run_args(
        &self,
        mode: &str,
        flags: &[&str],
        image: Option<&str>,
        id: &str,
        args: &[&str],
    ) -> Vec<String> {
        let mut v = vec!["run".to_string()];
        if !mode.is_empty() {
            v.push(mode.to_string());
        }
        v.extend(self.runtime_flags());
        v.extend(flags.iter().map(|s| s.to_string()));
        if let Some(i) = image {
            v.push(i.to_string());
        }
        v.push(id.to_string());
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// `ctr run --rm --runtime $RT IMAGE ID args...`
    pub fn run(&self, id: &str, args: &[&str]) -> Output {
        self.run_with(&[], id, args)
    }

    /// `ctr run --rm --runtime $RT <flags> IMAGE ID args...`
    pub fn run_with(&self, flags: &[&str], id: &str, args: &[&str]) -> Output {
        self.ctr_timeout(
            &self.run_args("--rm", flags, Some(IMAGE), id, args),
            secs(120),
        )
    }

    /// A foreground `ctr run --rm <flags> IMAGE ID args...` left running in the background.
    pub fn spawn_run(&self, flags: &[&str], id: &str, args: &[&str]) -> Background {
        Background::spawn(self.run_command(flags, id, args))
    }

    /// The command `ctr run --rm <runtime flags> <flags> IMAGE ID args...`, not started.
    pub fn run_command(&self, flags: &[&str], id: &str, args: &[&str]) -> Command {
        self.run_command_mode("--rm", flags, id, args)
    }

    /// The command `ctr run <mode> <runtime flags> <flags> IMAGE ID args...` (mode `--rm`,
    /// `-d`), not started.
    pub fn run_command_mode(&self, mode: &str, flags: &[&str], id: &str, args: &[&str]) -> Command {
        self.ctr_command(&self.run_args(mode, flags, Some(IMAGE), id, args))
    }

    /// The end of a detached task's life: SIGKILL, wait until STOPPED, `ctr task delete` and
    /// `ctr containers rm`, each required to succeed.
    #[track_caller]
    pub fn kill_and_remove(&self, id: &str) {
        self.ctr(&["task", "kill", "-s", "SIGKILL", id]).assert_ok();
        self.wait_task_status(id, "STOPPED");
        self.ctr(&["task", "delete", id]).assert_ok();
        self.ctr(&["containers", "rm", id]).assert_ok();
    }

    /// `ctr run -d <flags> IMAGE ID args...`; waits until the task is RUNNING; returns its pid.
    #[track_caller]
    pub fn run_detached(&self, flags: &[&str], id: &str, args: &[&str]) -> u32 {
        let out = self.ctr_timeout(
            &self.run_args("-d", flags, Some(IMAGE), id, args),
            secs(120),
        );
        assert!(out.success(), "ctr run -d failed:\n{out}");
        self.wait_task_status(id, "RUNNING").pid
    }

    /// Rows of `ctr task ls` (panics if ctr fails).
    #[track_caller]
    pub fn tasks(&self) -> Vec<Task> {
        let out = self.ctr(&["task", "ls"]);
        assert!(out.success(), "ctr task ls failed:\n{out}");
        parse_task_ls(&out.stdout)
    }

    /// Rows of `ctr task ls`, or `None` if ctr fails (for clean-up paths that must not panic).
    fn try_tasks(&self, timeout: Duration) -> Option<Vec<Task>> {
        let out = self.ctr_timeout(&["task", "ls"], timeout);
        out.success().then(|| parse_task_ls(&out.stdout))
    }

    pub fn task(&self, id: &str) -> Option<Task> {
        self.tasks().into_iter().find(|t| t.id == id)
    }

    /// Waits until `ctr task ls` shows `id` with `status` (e.g. RUNNING, STOPPED); records the
    /// shim's socket while it is there.
    #[track_caller]
    pub fn wait_task_status(&self, id: &str, status: &str) -> Task {
        let mut last = None;
        let t = poll(secs(30), || {
            let t = self.task(id);
            last = t.clone();
            t.filter(|t| t.status == status)
        });
        let t = t.unwrap_or_else(|| {
            panic!(
                "task {id} did not reach {status}; last `ctr task ls` row: {last:?}\nlog tail:\n{}",
                self.log_tail(30)
            )
        });
        self.record_shim_socket(id);
        t
    }

    /// Container ids (`ctr containers ls -q`).
    pub fn containers(&self) -> Vec<String> {
        let out = self.ctr(&["containers", "ls", "-q"]);
        assert!(out.success(), "ctr containers ls failed:\n{out}");
        out.stdout
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// The full OCI spec stored for container `id` (`ctr containers info`).
    #[track_caller]
    pub fn container_spec(&self, id: &str) -> Value {
        let out = self.ctr(&["containers", "info", id]);
        assert!(out.success(), "ctr containers info failed:\n{out}");
        let info: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("containers info is not JSON ({e}):\n{out}"));
        info["Spec"].clone()
    }

    /// The spec ctr generates for `ctr run <flags> IMAGE <id> sh`: made with `ctr containers
    /// create`, read back with `containers info`, then the container is removed again.
    #[track_caller]
    pub fn spec_for(&self, flags: &[&str]) -> Value {
        let id = self.new_id("spec");
        let mut args = vec!["containers", "create", "--runtime", &self.runtime];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[IMAGE, &id, "sh"]);
        self.ctr(&args).assert_ok();
        let spec = self.container_spec(&id);
        self.ctr(&["containers", "rm", &id]).assert_ok();
        spec
    }

    /// A spec for `ctr run --config`: ctr's default spec with an absolute root (a fresh busybox
    /// rootfs under the harness dir), `args`, and the cgroupsPath re-pointed at `id`.
    pub fn config_spec(&self, id: &str, args: &[&str]) -> Value {
        let mut spec = self.spec_for(&[]);
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let rootfs = self.harness_dir().join(format!("rootfs-{n}"));
        image::make_rootfs(&rootfs);
        spec["root"] = json!({ "path": rootfs.to_string_lossy() });
        spec["process"]["args"] = json!(args);
        let cg = spec["linux"]["cgroupsPath"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let new_cg = match cg.rsplit_once('/') {
            Some((parent, _)) => format!("{parent}/{id}"),
            None => format!("/{NAMESPACE}/{id}"),
        };
        spec["linux"]["cgroupsPath"] = json!(new_cg);
        spec
    }

    fn write_spec(&self, spec: &Value) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let p = self.harness_dir().join(format!("spec-{n}.json"));
        fs::write(&p, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
        p
    }

    /// `ctr run --rm --config <spec> ID` (no image: ctr takes root, args, everything from the spec).
    pub fn run_config(&self, id: &str, spec: &Value) -> Output {
        let p = self.write_spec(spec);
        let flags = ["--config", p.to_str().unwrap()];
        self.ctr_timeout(&self.run_args("--rm", &flags, None, id, &[]), secs(120))
    }

    /// Like [`Self::run_config`] but left running in the background.
    pub fn spawn_config(&self, id: &str, spec: &Value) -> Background {
        let p = self.write_spec(spec);
        let flags = ["--config", p.to_str().unwrap()];
        Background::spawn(self.ctr_command(&self.run_args("--rm", &flags, None, id, &[])))
    }

    /// The shim's socket path for `id` as containerd recorded it in the bundle (2.x:
    /// `bootstrap.json`, 1.6: `address`), if present.
    pub fn shim_socket(&self, id: &str) -> Option<PathBuf> {
        let b = self.bundle_dir(id);
        let addr = if let Ok(j) = fs::read_to_string(b.join("bootstrap.json")) {
            serde_json::from_str::<Value>(&j).ok()?["address"]
                .as_str()?
                .to_string()
        } else {
            fs::read_to_string(b.join("address"))
                .ok()?
                .trim()
                .to_string()
        };
        let path = addr.strip_prefix("unix://").unwrap_or(&addr);
        (!path.is_empty() && path.starts_with('/')).then(|| PathBuf::from(path))
    }

    /// Removes the stdio FIFOs `ctr run -d` made for `id` in the fifo dir. They are the client's:
    /// ctr removes them in `ctr task delete`, which has nothing to delete once a task vanished with
    /// its shim, so a test that kills a shim does the client's part with this.
    pub fn remove_ctr_fifos(&self, id: &str) {
        let Ok(rd) = fs::read_dir(self.fifo_dir()) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let mine = fs::read_dir(&p)
                .map(|r| {
                    r.flatten().any(|f| {
                        f.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{id}-std"))
                    })
                })
                .unwrap_or(false);
            if mine {
                let _ = fs::remove_dir_all(&p);
            }
        }
    }

    /// Remembers the shim socket of `id` so the leak check can verify it is removed.
    pub fn record_shim_socket(&self, id: &str) {
        if let Some(s) = self.shim_socket(id) {
            let mut v = self.shim_sockets.lock().unwrap();
            if !v.contains(&s) {
                v.push(s);
            }
        }
    }

    pub fn recorded_shim_sockets(&self) -> Vec<PathBuf> {
        self.shim_sockets.lock().unwrap().clone()
    }

    /// The socket path the runc shim (and crt, which should do the same) uses on 1.6:
    /// `/run/containerd/s/<sha256(<grpc address>/<ns>/<id>)>`, and in the 2.x socket dir.
    pub fn hashed_socket_paths(&self, id: &str) -> Vec<PathBuf> {
        let h = util::sha256_hex(format!("{}/{}/{id}", self.sock().display(), self.ns).as_bytes());
        vec![
            Path::new("/run/containerd/s").join(&h),
            self.socket_dir().join(&h),
        ]
    }

    /// Shim processes of this instance (exe `containerd-shim-*`, `-address <our socket>`).
    pub fn shim_procs(&self) -> Vec<procs::Proc> {
        let sock = self.sock().to_string_lossy().into_owned();
        procs::all_procs()
            .into_iter()
            .filter(|p| {
                p.exe_name().starts_with("containerd-shim")
                    && p.flag("-address") == Some(sock.as_str())
            })
            .collect()
    }

    /// The shim daemon serving container `id`: started with `-id <id>`, or the parent of the
    /// container's init process.
    pub fn shim_pid_for(&self, id: &str, init_pid: u32) -> Option<u32> {
        let shims = self.shim_procs();
        let daemons: Vec<&procs::Proc> = shims
            .iter()
            .filter(|p| !p.args.iter().any(|a| a == "start" || a == "delete"))
            .collect();
        if let Some(p) = daemons.iter().find(|p| p.flag("-id") == Some(id)) {
            return Some(p.pid);
        }
        let parent = procs::parent(init_pid)?;
        daemons.iter().find(|p| p.pid == parent).map(|p| p.pid)
    }

    /// Best-effort removal of every task and container (SIGKILL, delete --force, rm). Never
    /// panics: it runs from `Drop`, possibly while a failed test unwinds.
    fn remove_all(&self) {
        let t = Duration::from_secs(10 * util::timeout_scale());
        for task in self.try_tasks(t).unwrap_or_default() {
            let _ = self.ctr_timeout(&["task", "kill", "-s", "SIGKILL", &task.id], t);
            let _ = poll(t, || {
                let running = self
                    .try_tasks(t)
                    .map(|v| v.iter().any(|x| x.id == task.id && x.status == "RUNNING"))
                    .unwrap_or(false);
                (!running).then_some(())
            });
            let _ = self.ctr_timeout(&["task", "delete", "--force", &task.id], t);
        }
        let out = self.ctr_timeout(&["containers", "ls", "-q"], t);
        if out.success() {
            for c in out.stdout.lines().map(str::trim).filter(|s| !s.is_empty()) {
                let _ = self.ctr_timeout(&["containers", "rm", c], t);
            }
        }
    }

    fn stop(&mut self) {
        let panicking = std::thread::panicking();
        let alive = self.containerd_alive();
        if alive && self.cri_bridge.is_some() {
            let _ = self.crictl_timeout(&["rmp", "-fa"], secs(60));
        }
        if alive {
            self.remove_all();
        }
        if panicking {
            let keep_dir = PathBuf::from(
                std::env::var("CRT_TEST_LOG_DIR").unwrap_or_else(|_| "/tmp/crt-e2e-logs".into()),
            );
            let saved = keep_dir.join(format!("{}-{}.log", self.version.name(), self.suffix));
            let copied =
                fs::create_dir_all(&keep_dir).and_then(|_| fs::copy(self.log_path(), &saved));
            eprintln!(
                "---- {} log tail ({}; full log {}) ----\n{}\n---- end of log ----",
                self.version.name(),
                self.dir.display(),
                if copied.is_ok() {
                    saved.display().to_string()
                } else {
                    "not saved".into()
                },
                self.log_tail(80)
            );
        }
        // stop containerd: SIGTERM, then SIGKILL
        if let Some(mut ch) = self.child.lock().unwrap().take() {
            if matches!(ch.try_wait(), Ok(None)) {
                util::kill(self.pid(), "TERM");
                let gone = poll(secs(15), || {
                    matches!(ch.try_wait(), Ok(Some(_))).then_some(())
                });
                if gone.is_none() {
                    let _ = ch.kill();
                }
            }
            let _ = ch.wait();
        }
        // whatever is still tied to this instance: shims (cmdline/environ mention the dir),
        // container processes (in a cgroup named after one of our ids)
        let ids = self.ids.lock().unwrap().clone();
        let dir_s = format!("{}/", self.dir.display());
        for _ in 0..3 {
            let mut killed = false;
            for p in procs::all_procs() {
                let ours = p.cmdline().contains(&dir_s)
                    || p.environ.contains(&dir_s)
                    || p.cgroup_paths()
                        .iter()
                        .any(|cg| ids.iter().any(|id| util::has_component(cg, id)));
                if ours {
                    killed |= util::kill(p.pid, "KILL");
                }
            }
            if !killed {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let idrefs: Vec<&str> = ids.iter().map(String::as_str).collect();
        cgroup::remove_cgroup_dirs(cgroup::find_cgroup_dirs(&idrefs));
        if let Some(br) = &self.cri_bridge {
            let _ = Command::new("ip")
                .args(["link", "del", br])
                .stderr(Stdio::null())
                .status();
        }
        // unmount everything below the dir, deepest first
        let mut mps: Vec<String> = util::host_mounts()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|m| m.starts_with(&dir_s))
            .collect();
        mps.sort_by_key(|m| std::cmp::Reverse(m.matches('/').count()));
        mps.dedup();
        for m in mps {
            let ok = Command::new("umount")
                .arg(&m)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&m)
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // stale shim sockets outside the dir (1.6 shims use /run/containerd/s)
        for id in &ids {
            for p in self.hashed_socket_paths(id) {
                let _ = fs::remove_file(p);
            }
        }
        for s in self.recorded_shim_sockets() {
            let _ = fs::remove_file(s);
        }
        if std::env::var("CRT_TEST_KEEP")
            .map(|v| v == "1")
            .unwrap_or(false)
        {
            eprintln!("CRT_TEST_KEEP=1: kept {}", self.dir.display());
        } else if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: cannot remove {}: {e}", self.dir.display());
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// containerd's config, everything under `dir`; with `cri` (the runtime its handler runs),
/// [`cri_config_toml`]'s tables are added, else the CRI plugins are disabled.
fn config_toml(version: Version, dir: &Path, cri: Option<&str>) -> String {
    let d = dir.display();
    let base = match version {
        // containerd 1.6: config schema version 2; shim sockets always go to /run/containerd/s
        Version::V16 => format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
{disabled}

[grpc]
  address = "{d}/state/containerd.sock"

[ttrpc]
  address = "{d}/state/containerd.sock.ttrpc"

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
            disabled = if cri.is_some() {
                ""
            } else {
                r#"disabled_plugins = ["io.containerd.grpc.v1.cri"]"#
            }
        ),
        // containerd 2.x (kit at 301026e5): schema version 4; everything under the dir
        Version::V2 => format!(
            r#"version = 4
root = '{d}/root'
state = '{d}/state'
imports = []
{disabled}

[debug]
  level = 'debug'

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = '{d}/state/containerd.sock'
  [plugins.'io.containerd.server.v1.ttrpc']
    address = '{d}/state/containerd.sock.ttrpc'
  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = '{d}/s'
  [plugins.'io.containerd.internal.v1.opt']
    path = '{d}/opt'
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = '{d}/opt/image-verifier/bin'
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
    socket_path = '{d}/state/nri.sock'
"#,
            disabled = if cri.is_some() {
                ""
            } else {
                "disabled_plugins = ['io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.images', \
                 'io.containerd.cri.v1.runtime', 'io.containerd.podsandbox.controller.v1.podsandbox']"
            }
        ),
    };
    match cri {
        Some(runtime) => base + &cri_config_toml(version, dir, runtime),
        None => base,
    }
}

/// CNI config and crictl's config for a CRI instance under `dir`; returns the bridge's name.
/// Each instance gets its own bridge and /24, so parallel instances never meet.
fn cri_setup(dir: &Path, suffix: &str) -> String {
    let etc = dir.join("etc");
    fs::create_dir_all(etc.join("cni")).unwrap();
    fs::create_dir_all(dir.join("pods")).unwrap();
    let bridge = format!("crt{suffix}");
    let net = suffix
        .bytes()
        .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32))
        % 250;
    let conflist = json!({
        "cniVersion": "1.0.0", "name": format!("crt{suffix}"),
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
             "ipam": {"type": "host-local", "dataDir": dir.join("cni-ipam"),
                      "ranges": [[{"subnet": format!("10.234.{net}.0/24")}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "loopback"}]
    });
    fs::write(
        etc.join("cni/10-crt.conflist"),
        serde_json::to_vec_pretty(&conflist).unwrap(),
    )
    .unwrap();
    let sock = dir.join("state/containerd.sock");
    fs::write(
        etc.join("crictl.yaml"),
        format!(
            "runtime-endpoint: unix://{s}\nimage-endpoint: unix://{s}\ntimeout: 60\n",
            s = sock.display()
        ),
    )
    .unwrap();
    bridge
}

/// The CRI plugin's tables: handler [`CRI_HANDLER`] runs `runtime`, every path private,
/// oom_score_adj restricted (no CAP_SYS_RESOURCE on the test host), the pause image
/// [`PAUSE_IMAGE`] (imported, never pulled).
fn cri_config_toml(version: Version, dir: &Path, runtime: &str) -> String {
    let d = dir.display();
    let runc_options = |key: &str| {
        if runtime == RUNC_RUNTIME {
            format!("\n      [{key}.options]\n        Root = '{d}/state/runc'\n")
        } else {
            // Two more handlers for crt's own options: one valid table, one with a bad key; and
            // runc's, for the benchmark's pod.
            // containerd 1.6 decodes the table into runtimeoptions.v1.Options' own fields
            // (ConfigPath), dropping any other key: there the options live in files.
            let base = key.trim_end_matches(".crt");
            let table = |name: &str, body: &str| {
                if version == Version::V16 {
                    let file = dir.join(format!("etc/{name}.toml"));
                    fs::write(&file, body).unwrap();
                    format!("ConfigPath = '{}'", file.display())
                } else {
                    body.to_string()
                }
            };
            format!(
                "\n      [{base}.crt-opts]\n        runtime_type = '{runtime}'\n        \
                 [{base}.crt-opts.options]\n          {}\n      \
                 [{base}.crt-bad]\n        runtime_type = '{runtime}'\n        \
                 [{base}.crt-bad.options]\n          {}\n      \
                 [{base}.runc]\n        runtime_type = '{RUNC_RUNTIME}'\n        \
                 [{base}.runc.options]\n          Root = '{d}/state/runc'\n",
                table("crt-opts", "LogLevel = 'debug'"),
                table("crt-bad", "Bogus = 1")
            )
        }
    };
    match version {
        Version::V16 => {
            let rt = r#"plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crt"#;
            format!(
                r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "{CRI_HANDLER}"
    [{rt}]
      runtime_type = "{runtime}"{opts}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/etc/cni"
"#,
                opts = runc_options(rt)
            )
        }
        Version::V2 => {
            let rt = "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.crt";
            format!(
                r#"  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{PAUSE_IMAGE}'
  [plugins.'io.containerd.cri.v1.runtime']
    disable_apparmor = true
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = '{CRI_HANDLER}'
      [{rt}]
        runtime_type = '{runtime}'{opts}
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '{d}/etc/cni'
  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
"#,
                opts = runc_options(rt)
            )
        }
    }
}

/// Parses `ctr task ls` (`TASK PID STATUS` columns).
pub fn parse_task_ls(text: &str) -> Vec<Task> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 3 {
                return None;
            }
            Some(Task {
                id: f[0].to_string(),
                pid: f[1].parse().ok()?,
                status: f[2].to_string(),
            })
        })
        .collect()
}

/// Starts a private containerd of `version` and runs `scenario` against it.
pub fn run_scenario(version: Version, scenario: fn(&Containerd)) {
    let c = Containerd::start(version);
    scenario(&c);
}

/// Starts a private containerd of `version` with CRI and runs `scenario` against it.
pub fn run_cri_scenario(version: Version, scenario: fn(&Containerd)) {
    let c = Containerd::start_cri(version);
    scenario(&c);
}

/// [`scenarios!`] for scenarios that need the CRI plugin ([`Containerd::start_cri`]).
#[macro_export]
macro_rules! cri_scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn c16() {
                    $crate::run_cri_scenario($crate::Version::V16, super::$name)
                }
                #[test]
                fn c2() {
                    $crate::run_cri_scenario($crate::Version::V2, super::$name)
                }
            }
        )*
    };
}

/// Generates, for each scenario function `f(&Containerd)`, a module `f` with the tests `c16`
/// (containerd 1.6) and `c2` (containerd 2.x): `cargo test -p crt-e2e hello::` runs both.
#[macro_export]
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn c16() {
                    $crate::run_scenario($crate::Version::V16, super::$name)
                }
                #[test]
                fn c2() {
                    $crate::run_scenario($crate::Version::V2, super::$name)
                }
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ls_parses() {
        let t = "TASK    PID     STATUS    \nd1      1865    RUNNING\nx   0   STOPPED\n";
        let v = parse_task_ls(t);
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0],
            Task {
                id: "d1".into(),
                pid: 1865,
                status: "RUNNING".into()
            }
        );
    }
}
