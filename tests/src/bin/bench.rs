//! `make bench`: crt against containerd-shim-runc-v2 + runc and + crun, on one private
//! containerd, interleaved (crt, runc, crun, then runc, crun, crt, …: the order turns run by
//! run) so drift hits all alike. Reports medians, the spread (p10-p90) and ratios to runc's
//! shim, as a Markdown table (`$BENCH_OUT`, default `target/bench.md`) and JSON
//! (`$BENCH_JSON`, default `target/bench.json`).
//!
//! - start: `ctr run --rm IMAGE ID true`, the whole create-start-exit-delete a user waits for;
//! - its phases: `ctr run -d` (create, shim start, start), `ctr task delete` once `true` has
//!   exited, `ctr containers rm`;
//! - exec: `ctr task exec` of `true` into a running container;
//! - one shim: RSS, Pss and threads idle, and RSS and Pss after `BENCH_EXECS` execs (a crt
//!   shim's numbers include its zygote, the process that forks its helpers);
//! - `BENCH_PODS` running containers (one shim each): Pss per shim, as `smaps_rollup` says;
//! - density: `BENCH_DENSITY` containers started one after another, then 4 at a time (wall
//!   clock each), and their removal;
//! - the shim alone, without containerd: `shim start` as containerd runs it, then Create,
//!   Start, Wait and Delete of `true` over ttrpc on a prepared bundle, the shim's events
//!   answered by this process (`event_sink.rs`), and the floor: fork, unshare, pivot_root and
//!   exec of `true`; the calls' sum (Create + Start + Wait + Delete) against the floor. Each
//!   run starts after a pause, in an order that turns run by run;
//! - the pod case: one CRI pod (another containerd, with CRI) of pause + min(`BENCH_PODS`, 10)
//!   containers on crt and on runc: RSS and Pss of the pod's one shim.
//!
//! containerd runs in a mount namespace of its own with a hybrid host's
//! /sys/fs/cgroup/unified unmounted (Debian 12's crun refuses hybrid cgroups), and every
//! runtime is measured in that view. Debian's crun 1.8 also refuses containerd 2.x's spec
//! version: `BENCH_CONTAINERD=1.6` measures it. Its state dir (bundles, shim and runc state) is
//! a tmpfs, as /run/containerd is on a systemd host.
//!
//! Knobs: `QUICK=1` (about a minute), `BENCH_ONLY=alone` (just the shim alone), `BENCH_RUNS` (20), `BENCH_PODS` (20), `BENCH_EXECS` (50),
//! `BENCH_CRT_BASELINE` (the shim alone: a directory with another crt build, interleaved),
//! `BENCH_CRT_ONLY=1` (the shim alone: no runc or crun), `BENCH_ALONE_EVENTS=containerd` (the
//! shim alone: events to the private containerd, as before), `BENCH_SETTLE_MS` (the shim alone:
//! the pause before each run, 20), `BENCH_TRACE=1` (the shim alone: a `bench: PHASE done` line
//! in /sys/kernel/tracing/trace_marker as each call returns, to line up an ftrace),
//! `BENCH_ALONE_TWICE=1` (the shim alone: two containers per shim, one after the other, as in
//! a pod; the second one's calls are measured),
//! `BENCH_DENSITY` (50), `BENCH_CONTAINERD` (`2` default, or `1.6`), `CRT_BIN_DIR` (make bench:
//! the release build).

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use crt_e2e::event_sink::EventSink;
use crt_e2e::{json, secs, Containerd, Value, Version, IMAGE};

struct Runtime {
    name: &'static str,
    flags: Vec<String>,
    shim: &'static str,
}

fn runtimes(c: &Containerd) -> Vec<Runtime> {
    let root = |n: &str| c.state_dir().join(n).to_string_lossy().into_owned();
    let fifo = c.fifo_dir().to_string_lossy().into_owned();
    let mut v = vec![Runtime {
        name: "crt",
        flags: vec![
            "--runtime".into(),
            "io.containerd.crt.v1".into(),
            "--fifo-dir".into(),
            fifo.clone(),
        ],
        shim: "containerd-shim-crt-v1",
    }];
    for (name, bin) in [("runc", "/usr/sbin/runc"), ("crun", "/usr/bin/crun")] {
        if !std::path::Path::new(bin).exists() {
            eprintln!("bench: {bin} missing, {name} skipped");
            continue;
        }
        v.push(Runtime {
            name,
            flags: vec![
                "--runtime".into(),
                "io.containerd.runc.v2".into(),
                "--runc-binary".into(),
                copied(c, bin).to_string_lossy().into_owned(),
                "--runc-root".into(),
                root(name),
                "--fifo-dir".into(),
                fifo.clone(),
            ],
            shim: "containerd-shim-runc-v2",
        });
    }
    v
}

/// A copy of the binary at `path` in the harness's dir (the original where that fails), run in
/// its place. A binary's page cache, as the kernel read it in through its processes' page
/// faults, is in 4 KiB folios; a copy's in 64 KiB ones, which map and unmap faster (0.5 ms of
/// crt's calls); `make build` copies crt's. So every runtime runs from a copy.
fn copied(c: &Containerd, path: &str) -> std::path::PathBuf {
    let src = std::path::Path::new(path);
    let dir = c.harness_dir().join("bin");
    let Some(name) = src.file_name() else {
        return src.to_path_buf();
    };
    let dst = dir.join(name);
    if dst.exists() {
        return dst;
    }
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::copy(src, &dst)) {
        Ok(_) => dst,
        Err(e) => {
            eprintln!("bench: copy {path}: {e}; run from where it is");
            src.to_path_buf()
        }
    }
}

fn ctr_ok(c: &Containerd, args: &[String]) {
    let out = c.ctr_timeout(args, secs(120));
    assert!(out.success(), "bench: {out}");
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn run_args(rt: &Runtime, mode: &str, id: &str, cmd: &[&str]) -> Vec<String> {
    let mut a = vec!["run".to_string(), mode.to_string()];
    a.extend(rt.flags.iter().cloned());
    a.push(IMAGE.to_string());
    a.push(id.to_string());
    a.extend(cmd.iter().map(|s| s.to_string()));
    a
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// (median, p10, p90) in milliseconds.
type Spread = (f64, f64, f64);

fn stats(mut v: Vec<Duration>) -> Spread {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.1), at(0.9))
}

/// A field of /proc/PID/smaps_rollup or /proc/PID/status (kB, or a count).
fn proc_field(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// [`proc_field`] summed over a shim and, for crt's, the zygote it keeps to fork its helpers:
/// memory and threads per shim are the shim's and its zygote's together.
fn shim_field(shim: u32, file: &str, field: &str) -> u64 {
    std::iter::once(shim)
        .chain(crt_e2e::procs::zygote_of(shim))
        .map(|p| proc_field(p, file, field))
        .sum()
}

fn knob(name: &str, full: usize, quick: usize, is_quick: bool) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if is_quick { quick } else { full })
}

/// The shims of `rt` that are not in `before`.
fn new_shims(c: &Containerd, rt: &Runtime, before: &[u32]) -> Vec<u32> {
    c.shim_procs()
        .iter()
        .filter(|p| !before.contains(&p.pid) && p.exe_name() == rt.shim)
        .map(|p| p.pid)
        .collect()
}

/// Start `n` containers (`sleep`) of `rt`, `parallel` at a time; the wall clock.
fn start_many(c: &Containerd, rt: &Runtime, ids: &[String], parallel: usize) -> Duration {
    timed(|| {
        std::thread::scope(|s| {
            for chunk in ids.chunks(ids.len().div_ceil(parallel).max(1)) {
                s.spawn(move || {
                    for id in chunk {
                        ctr_ok(c, &run_args(rt, "-d", id, &["sleep", "1000"]));
                    }
                });
            }
        })
    })
}

fn remove_all(c: &Containerd, ids: &[String]) -> Duration {
    timed(|| {
        for id in ids {
            c.kill_and_remove(id);
        }
    })
}

#[derive(Default)]
struct Results {
    start: Vec<Duration>,
    run_d: Vec<Duration>,
    task_delete: Vec<Duration>,
    container_rm: Vec<Duration>,
    exec: Vec<Duration>,
    idle: (u64, u64, u64),
    after_execs: (u64, u64),
    pods_pss: (usize, f64),
    density: (Duration, Duration, Duration),
}

fn main() {
    let quick = std::env::var("QUICK").is_ok_and(|v| v == "1");
    let runs = knob("BENCH_RUNS", 20, 5, quick);
    let pods = knob("BENCH_PODS", 20, 5, quick);
    let execs = knob("BENCH_EXECS", 50, 10, quick);
    let density = knob("BENCH_DENSITY", 50, 8, quick);
    let version = match std::env::var("BENCH_CONTAINERD").as_deref() {
        Ok("1.6") => Version::V16,
        _ => Version::V2,
    };
    let c = Containerd::start_bench(version);
    if std::env::var("BENCH_ONLY").as_deref() == Ok("alone") {
        let alone = shim_alone(&c, runs);
        for (n, v, p) in &alone {
            let (m, lo, hi) = stats(v.clone());
            let phases = if p.is_empty() {
                String::new()
            } else {
                format!(" [{}]", phase_medians(p))
            };
            println!("{n}: {m:.1} ms ({lo:.1}-{hi:.1}){phases}");
        }
        println!("Create+Start+Wait+Delete: {}", calls_line(&alone));
        // Finer than the table, for A/B runs: the means of the calls and of each phase (ms).
        for (n, _, p) in alone.iter().filter(|(_, _, p)| !p.is_empty()) {
            let mean = |f: &dyn Fn(&Phases) -> Duration| {
                p.iter().map(|x| f(x).as_secs_f64()).sum::<f64>() * 1000.0 / p.len() as f64
            };
            let phases: Vec<String> = (1..PHASES.len())
                .map(|i| format!("{} {:.3}", PHASES[i], mean(&|x| x[i])))
                .collect();
            println!(
                "{n} means: calls {:.3} [{}]",
                mean(&calls),
                phases.join(", ")
            );
        }
        return;
    }
    let mut notes = Vec::new();
    // Warm-up (page cache, image unpacking, first shim of each kind), and drop what cannot run
    // here (Debian 12's crun refuses containerd 2.x's spec version).
    let rts: Vec<Runtime> = runtimes(&c)
        .into_iter()
        .filter(|rt| {
            let id = c.new_id(&format!("warm{}", rt.name));
            let out = c.ctr_timeout(&run_args(rt, "--rm", &id, &["true"]), secs(120));
            if !out.success() {
                let why = out.stderr.trim().to_string();
                eprintln!("bench: {} skipped: {why}", rt.name);
                notes.push(format!("{}: skipped ({why})", rt.name));
                let _ = c.ctr(&["containers", "rm", &id]);
            }
            out.success()
        })
        .collect();
    let mut res: Vec<Results> = rts.iter().map(|_| Results::default()).collect();

    // Interleaved: start, phases.
    for k in 0..runs {
        // Each runtime takes every place in the order in turn (see `shim_alone`).
        for j in 0..rts.len() {
            let i = (j + k) % rts.len();
            let rt = &rts[i];
            let id = c.new_id(&format!("start{}", rt.name));
            res[i]
                .start
                .push(timed(|| ctr_ok(&c, &run_args(rt, "--rm", &id, &["true"]))));
            let id = c.new_id(&format!("phase{}", rt.name));
            res[i]
                .run_d
                .push(timed(|| ctr_ok(&c, &run_args(rt, "-d", &id, &["true"]))));
            c.wait_task_status(&id, "STOPPED");
            res[i]
                .task_delete
                .push(timed(|| ctr_ok(&c, &strings(&["task", "delete", &id]))));
            res[i]
                .container_rm
                .push(timed(|| ctr_ok(&c, &strings(&["containers", "rm", &id]))));
        }
    }
    // Exec into one running container per runtime; its shim's memory idle and after execs.
    let targets: Vec<(String, u32)> = rts
        .iter()
        .map(|rt| {
            let before: Vec<u32> = c.shim_procs().iter().map(|p| p.pid).collect();
            let id = c.new_id(&format!("exec{}", rt.name));
            ctr_ok(&c, &run_args(rt, "-d", &id, &["sleep", "1000"]));
            let shim = new_shims(&c, rt, &before).first().copied().unwrap_or(0);
            (id, shim)
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    for (i, (_, shim)) in targets.iter().enumerate() {
        // Where an idle shim's memory goes, mapping by mapping, for whoever digs further.
        if let Ok(smaps) = std::fs::read_to_string(format!("/proc/{shim}/smaps")) {
            // Beside target/bench.md, which `cargo run` writes from the repository root too.
            let _ = std::fs::write(format!("target/shim-idle-smaps-{}.txt", rts[i].name), smaps);
        }
        if let Some(z) = crt_e2e::procs::zygote_of(*shim) {
            if let Ok(smaps) = std::fs::read_to_string(format!("/proc/{z}/smaps")) {
                let _ = std::fs::write(
                    format!("target/shim-idle-smaps-{}-zygote.txt", rts[i].name),
                    smaps,
                );
            }
        }
        res[i].idle = (
            shim_field(*shim, "status", "VmRSS"),
            shim_field(*shim, "smaps_rollup", "Pss"),
            shim_field(*shim, "status", "Threads"),
        );
    }
    for n in 0..runs.max(execs) {
        for (i, (id, _)) in targets.iter().enumerate() {
            let args = strings(&["task", "exec", "--exec-id", &format!("e{n}"), id, "true"]);
            let d = timed(|| ctr_ok(&c, &args));
            if n < runs {
                res[i].exec.push(d);
            }
        }
    }
    for (i, (id, shim)) in targets.iter().enumerate() {
        res[i].after_execs = (
            shim_field(*shim, "status", "VmRSS"),
            shim_field(*shim, "smaps_rollup", "Pss"),
        );
        c.kill_and_remove(id);
    }
    // Memory of `pods` shims, and density, one runtime after the other.
    for (i, rt) in rts.iter().enumerate() {
        let before: Vec<u32> = c.shim_procs().iter().map(|p| p.pid).collect();
        let ids: Vec<String> = (0..pods)
            .map(|_| c.new_id(&format!("mem{}", rt.name)))
            .collect();
        start_many(&c, rt, &ids, 1);
        std::thread::sleep(Duration::from_secs(1));
        let shims = new_shims(&c, rt, &before);
        let total: u64 = shims
            .iter()
            .map(|p| shim_field(*p, "smaps_rollup", "Pss"))
            .sum();
        res[i].pods_pss = (shims.len(), total as f64 / shims.len().max(1) as f64);
        remove_all(&c, &ids);

        let seq: Vec<String> = (0..density)
            .map(|_| c.new_id(&format!("dens{}", rt.name)))
            .collect();
        let one = start_many(&c, rt, &seq, 1);
        let rm = remove_all(&c, &seq);
        let par: Vec<String> = (0..density)
            .map(|_| c.new_id(&format!("densp{}", rt.name)))
            .collect();
        let four = start_many(&c, rt, &par, 4);
        remove_all(&c, &par);
        res[i].density = (one, four, rm);
    }

    let alone = shim_alone(&c, runs);
    drop(c);
    let pod = pod_memory(version, pods.min(10));
    let (mut table, mut json) = report(version, runs, pods, execs, density, &rts, res, &notes);
    table.push_str(&format!(
        "\nOne pod (CRI, pause + {} containers), its one shim: {}\n",
        pods.min(10),
        pod.iter()
            .map(|(n, rss, pss)| format!("{n} RSS {rss} KiB, Pss {pss} KiB"))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    table.push_str(&format!(
        "\nThe shim alone (start + Create + Start + Wait + Delete of `true`), median ms \
         (p10-p90): {}\n",
        alone
            .iter()
            .map(|(n, v, _)| {
                let (m, lo, hi) = stats(v.clone());
                format!("{n} {m:.1} ({lo:.1}-{hi:.1})")
            })
            .collect::<Vec<_>>()
            .join("; ")
    ));
    for (n, _, p) in alone.iter().filter(|(_, _, p)| !p.is_empty()) {
        table.push_str(&format!(
            "- {n}, per phase (median ms): {}\n",
            phase_medians(p)
        ));
    }
    table.push_str(&format!(
        "- Create + Start + Wait + Delete (the calls, without `start`), median ms (p10-p90): {}\n",
        calls_line(&alone)
    ));
    json["shim_alone"] = json!(alone
        .iter()
        .map(|(n, v, p)| {
            let (m, lo, hi) = stats(v.clone());
            let calls_ms = (!p.is_empty()).then(|| stats(p.iter().map(calls).collect()).0);
            json!({"name": n, "median_ms": m, "p10_ms": lo, "p90_ms": hi, "calls_median_ms": calls_ms})
        })
        .collect::<Vec<_>>());
    json["pod"] = json!(pod
        .iter()
        .map(|(n, rss, pss)| json!({"handler": n, "rss_kib": rss, "pss_kib": pss}))
        .collect::<Vec<_>>());
    print!("{table}");
    for (var, default, text) in [
        ("BENCH_OUT", "target/bench.md", table),
        ("BENCH_JSON", "target/bench.json", json.to_string()),
    ] {
        let path = std::env::var(var).unwrap_or_else(|_| default.into());
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("bench: write {path}: {e}");
        }
    }
}

/// runc's shim options: BinaryName (6) and Root (7), as containerd.runc.v1.Options.
fn runc_options(binary: &str, root: &str) -> Any {
    let mut v = Vec::new();
    for (tag, s) in [(0x32u8, binary), (0x3a, root)] {
        v.push(tag);
        let mut n = s.len();
        while n >= 0x80 {
            v.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        v.push(n as u8);
        v.extend_from_slice(s.as_bytes());
    }
    Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: v,
        ..Default::default()
    }
}

/// One container's life on a shim driven directly: `start`, Create, Start, Wait, Delete,
/// then Shutdown (not timed).
fn drive_shim(
    c: &Containerd,
    shim: &std::path::Path,
    options: Option<Any>,
    id: &str,
    events: Option<&EventSink>,
    settle: Duration,
) -> Result<(Duration, Phases), String> {
    use containerd_shim_protos::api::{
        CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, Empty,
        ShutdownRequest, StartRequest, StartResponse, WaitRequest, WaitResponse,
    };
    // containerd 1.6's runc shim serves task v2 only, and drops a connection that names v3.
    let service = if options.is_some() {
        "containerd.task.v2.Task"
    } else {
        "containerd.task.v3.Task"
    };
    let ns = "bench";
    // On the state dir's tmpfs, as containerd's bundles.
    let bundle = c.state_dir().join("alone").join(id);
    std::fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
    let mut spec = c.config_spec(id, &["true"]);
    // Every runtime takes this one (Debian's crun refuses 2.x's 1.2 spec version).
    spec["ociVersion"] = "1.0.2".into();
    std::fs::write(bundle.join("config.json"), spec.to_string()).map_err(|e| e.to_string())?;
    // The shim's log fifo, as containerd makes it (runc's shim exits without one); kept open
    // for reading, unread (its pipe buffer holds a run's lines).
    let log = bundle.join("log");
    let log_c =
        std::ffi::CString::new(log.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: mkfifo with a valid C string.
    if unsafe { libc::mkfifo(log_c.as_ptr(), 0o600) } != 0 {
        return Err(format!(
            "mkfifo {}: {}",
            log.display(),
            std::io::Error::last_os_error()
        ));
    }
    let _log_reader = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&log)
        .map_err(|e| format!("open {}: {e}", log.display()))?;
    let containerd = c.version.bin_dir().join("containerd");
    // The pause comes after the bundle is made: its rootfs (a busybox copy and its applets'
    // links) leaves ext4 and block work behind, which the floor's one rootfs does not.
    std::thread::sleep(settle);
    let t = Instant::now();
    let mut cmd = Command::new(shim);
    cmd.args(["-namespace", ns, "-id", id, "-address"])
        .arg(c.sock())
        .arg("-publish-binary")
        .arg(&containerd)
        .arg("start")
        .current_dir(&bundle)
        .env(
            "TTRPC_ADDRESS",
            events.map_or_else(
                || format!("{}.ttrpc", c.sock().display()),
                EventSink::address,
            ),
        )
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    crt_e2e::util::in_v1_view(&mut cmd);
    let out = cmd
        .output()
        .map_err(|e| format!("start {}: {e}", shim.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} start: {}",
            shim.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let address = if text.starts_with('{') {
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["address"].as_str().map(str::to_string))
            .unwrap_or_default()
    } else {
        text
    };
    let socket = std::path::PathBuf::from(address.trim_start_matches("unix://"));
    let create = CreateTaskRequest {
        id: id.into(),
        bundle: bundle.to_string_lossy().into_owned(),
        options: options.into(),
        ..Default::default()
    };
    // One connection for every call, as containerd keeps one (its dial is part of `start`).
    let conn = crt_e2e::shim_client::Conn::connect(&socket, service, ns);
    let mut phases = [t.elapsed(); 5];
    let marker = std::env::var_os("BENCH_TRACE").and_then(|_| {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/sys/kernel/tracing/trace_marker")
            .ok()
    });
    let twice = twice();
    // The calls' clock starts again before a second run's Create (BENCH_ALONE_TWICE); `start`
    // is the first run's.
    let mut from: Option<Instant> = None;
    let mut mark = |i: usize| {
        if i == 0 {
            if from.is_none() {
                phases[0] = t.elapsed();
            }
            from = Some(Instant::now());
        } else {
            phases[i] = phases[0] + from.map_or(Duration::ZERO, |f| f.elapsed());
        }
        if let Some(mut m) = marker.as_ref() {
            use std::io::Write;
            // One write: each write is one trace line.
            let _ = m.write_all(format!("bench: {} done", PHASES[i]).as_bytes());
        }
    };
    let mut run = || -> Result<(), String> {
        let conn = conn.as_ref().map_err(|e| e.clone())?;
        mark(0);
        conn.call::<_, CreateTaskResponse>("Create", &create)?;
        mark(1);
        let start = StartRequest {
            id: id.into(),
            ..Default::default()
        };
        conn.call::<_, StartResponse>("Start", &start)?;
        mark(2);
        let wait = WaitRequest {
            id: id.into(),
            ..Default::default()
        };
        conn.call::<_, WaitResponse>("Wait", &wait)?;
        mark(3);
        let del = DeleteRequest {
            id: id.into(),
            ..Default::default()
        };
        conn.call::<_, DeleteResponse>("Delete", &del)?;
        mark(4);
        Ok(())
    };
    let mut res = run();
    if twice && res.is_ok() {
        // The same id and bundle again, once the first run's events are in.
        if let Some(sink) = events {
            sink.wait_for(id, 4, Duration::from_secs(5));
        }
        std::thread::sleep(settle);
        res = run();
    }
    // start and the measured run's calls.
    let took = if twice { phases[4] } else { t.elapsed() };
    // Every shim sends these four; waited for here, off the clock, so that none is still
    // being handled when the next run starts, and a shim that skipped one is not measured.
    let res = res.and_then(|()| match events {
        Some(sink) => {
            let n = if twice { 8 } else { 4 };
            let got = sink.wait_for(id, n, Duration::from_secs(5));
            // The (last) run's own.
            let got = got[got.len().saturating_sub(4)..].to_vec();
            let want = [
                "/tasks/create",
                "/tasks/start",
                "/tasks/exit",
                "/tasks/delete",
            ];
            if got == want {
                Ok(())
            } else {
                Err(format!("events: expected {want:?}, got {got:?}"))
            }
        }
        None => Ok(()),
    });
    // Each phase's own time, from the marks' running times.
    for i in (1..5).rev() {
        phases[i] = phases[i].saturating_sub(phases[i - 1]);
    }
    let shutdown = ShutdownRequest {
        id: id.into(),
        ..Default::default()
    };
    if let Ok(conn) = &conn {
        let _ = conn.call::<_, Empty>("Shutdown", &shutdown);
    }
    res.map(|()| (took, phases))
}

/// The pause before each run of the shim alone, for what the previous run left to the kernel's
/// workers to finish.
const SETTLE: Duration = Duration::from_millis(20);

/// `BENCH_ALONE_TWICE`: each shim runs two containers, one after the other, as a pod's shim
/// does; the second one's calls are measured.
fn twice() -> bool {
    std::env::var_os("BENCH_ALONE_TWICE").is_some_and(|v| v == "1")
}

/// `start`, Create, Start, Wait and Delete of one driven run.
type Phases = [Duration; 5];
const PHASES: [&str; 5] = ["start", "Create", "Start", "Wait", "Delete"];

/// The floor under any runtime: fork, new namespaces, pivot_root into a prepared rootfs and
/// exec of `true`, waited for.
fn syscall_floor(rootfs: &std::path::Path) -> Result<Duration, String> {
    let root =
        std::ffi::CString::new(rootfs.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("/bin/true");
    // SAFETY: raw syscalls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            crt_e2e::util::unshare_private_mounts(
                libc::CLONE_NEWNS
                    | libc::CLONE_NEWUTS
                    | libc::CLONE_NEWIPC
                    | libc::CLONE_NEWNET
                    | libc::CLONE_NEWPID,
            )?;
            let none = std::ptr::null::<libc::c_char>();
            if libc::mount(
                root.as_ptr(),
                root.as_ptr(),
                none,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) != 0
                || libc::chdir(root.as_ptr()) != 0
                || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0
                || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0
                || libc::chdir(c"/".as_ptr()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t = Instant::now();
    let st = cmd.status().map_err(|e| format!("floor: {e}"))?;
    let took = t.elapsed();
    if !st.success() {
        return Err(format!("floor: true exited {st}"));
    }
    Ok(took)
}

/// The shim alone, `runs` times each, interleaved: crt, runc's shim with runc and with crun,
/// and the syscall floor.
fn shim_alone(c: &Containerd, runs: usize) -> Vec<(String, Vec<Duration>, Vec<Phases>)> {
    let state = |n: &str| {
        c.state_dir()
            .join(format!("alone-{n}"))
            .to_string_lossy()
            .into_owned()
    };
    // containerd 1.6's runc shim: 2.x's wants containerd's bootstrap parameters on stdin.
    let runc_shim = copied(
        c,
        &Version::V16
            .bin_dir()
            .join("containerd-shim-runc-v2")
            .to_string_lossy(),
    );
    let mut shims: Vec<(String, std::path::PathBuf, Option<Any>)> = vec![(
        "crt".into(),
        crt_e2e::crt_bin_dir().join("containerd-shim-crt-v1"),
        None,
    )];
    // Another crt build (a directory holding its binary), interleaved run by run: a change's
    // effect measured under the same drift.
    if let Ok(dir) = std::env::var("BENCH_CRT_BASELINE") {
        shims.push((
            "crt-baseline".into(),
            std::path::Path::new(&dir).join("containerd-shim-crt-v1"),
            None,
        ));
    }
    for (name, bin) in [("runc", "/usr/sbin/runc"), ("crun", "/usr/bin/crun")] {
        if std::path::Path::new(bin).exists() && std::env::var_os("BENCH_CRT_ONLY").is_none() {
            shims.push((
                name.into(),
                runc_shim.clone(),
                Some(runc_options(
                    &copied(c, bin).to_string_lossy(),
                    &state(name),
                )),
            ));
        }
    }
    let rootfs = c.harness_dir().join("floor-rootfs");
    crt_e2e::image::make_rootfs(&rootfs);
    // The shims' events go to this process, not to containerd (issue #7: the shim alone,
    // without containerd), unless BENCH_ALONE_EVENTS=containerd.
    let sink = match std::env::var("BENCH_ALONE_EVENTS").as_deref() {
        Ok("containerd") => None,
        _ => match EventSink::start(&c.harness_dir().join("events.ttrpc")) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("bench: the shim alone: an events socket: {e}");
                return Vec::new();
            }
        },
    };
    let mut out: Vec<(String, Vec<Duration>, Vec<Phases>)> = shims
        .iter()
        .map(|(n, _, _)| (n.clone(), Vec::new(), Vec::new()))
        .chain(std::iter::once((
            "floor".to_string(),
            Vec::new(),
            Vec::new(),
        )))
        .collect();
    let mut failed = vec![false; shims.len()];
    // The floor is index shims.len().
    let n = shims.len() + 1;
    let settle = std::env::var("BENCH_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(SETTLE, Duration::from_millis);
    for k in 0..runs {
        // Each takes every place in the order in turn, and each starts on a quiet host: a run
        // leaves work behind (its shim's and zygote's exits, the network namespace's teardown
        // and the cgroups' release in kernel workers, for a millisecond or more) that slowed
        // whichever came next. An A/A run (one build as both crt and crt-baseline) in a fixed
        // order put the first 0.2-0.3 ms ahead of the second.
        for j in 0..n {
            let i = (j + k) % n;
            if i == shims.len() {
                std::thread::sleep(settle);
                match syscall_floor(&rootfs) {
                    Ok(d) => out[i].1.push(d),
                    Err(e) => eprintln!("bench: {e}"),
                }
                continue;
            }
            if failed[i] {
                continue;
            }
            let (name, bin, opts) = &shims[i];
            let id = c.new_id(&format!("alone{name}"));
            match drive_shim(c, bin, opts.clone(), &id, sink.as_ref(), settle) {
                Ok((d, p)) => {
                    out[i].1.push(d);
                    out[i].2.push(p);
                }
                Err(e) => {
                    eprintln!("bench: the shim alone, {name}: {e}");
                    failed[i] = true;
                }
            }
        }
    }
    out.retain(|(_, v, _)| !v.is_empty());
    out
}

/// Median of each phase, in ms: where a shim's time goes.
/// Create + Start + Wait + Delete of one run: the sum the floor target is about (issue #7),
/// without the `start` that forks the daemon.
fn calls(p: &Phases) -> Duration {
    p[1..].iter().sum()
}

/// The calls' median and spread, and the median's ratio to the floor's, as one line.
fn calls_line(alone: &[(String, Vec<Duration>, Vec<Phases>)]) -> String {
    let floor = alone
        .iter()
        .find(|(n, _, _)| n == "floor")
        .map(|(_, v, _)| stats(v.clone()).0);
    alone
        .iter()
        .filter(|(_, _, p)| !p.is_empty())
        .map(|(n, _, p)| {
            let (m, lo, hi) = stats(p.iter().map(calls).collect());
            let ratio = floor
                .map(|f| format!(", {:.1}x the floor", m / f))
                .unwrap_or_default();
            format!("{n} {m:.1} ({lo:.1}-{hi:.1}){ratio}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn phase_medians(p: &[Phases]) -> String {
    PHASES
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (m, _, _) = stats(p.iter().map(|x| x[i]).collect());
            format!("{n} {m:.1}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The pod case: one CRI pod with `n` containers per handler (crt, runc), and the RSS and
/// Pss of the one shim that serves it.
fn pod_memory(version: Version, n: usize) -> Vec<(&'static str, u64, u64)> {
    let c = Containerd::start_cri(version);
    let write = |name: &str, v: &Value| {
        let p = c.harness_dir().join(name);
        std::fs::write(&p, v.to_string()).expect("write a CRI config");
        p.to_string_lossy().into_owned()
    };
    let mut out = Vec::new();
    for handler in ["crt", "runc"] {
        let before: Vec<u32> = c.shim_procs().iter().map(|p| p.pid).collect();
        let logs = c.dir.join("pods").join(handler);
        let _ = std::fs::create_dir_all(&logs);
        let pod_cfg = write(
            &format!("bench-pod-{handler}.json"),
            &json!({"metadata": {"name": format!("bench-{handler}"), "namespace": "default",
                                 "uid": format!("bench-{handler}"), "attempt": 0},
                    "log_directory": logs.to_string_lossy(), "linux": {}}),
        );
        let runp = c.crictl(&["runp", "--runtime", handler, &pod_cfg]);
        if !runp.success() {
            eprintln!("bench: pod on {handler} skipped: {runp}");
            continue;
        }
        let pod = runp.stdout.trim().to_string();
        for i in 0..n {
            let cfg = write(
                &format!("bench-ctr-{handler}-{i}.json"),
                &json!({"metadata": {"name": format!("c{i}")}, "image": {"image": IMAGE},
                        "command": ["sleep", "1000"], "log_path": format!("c{i}.log"),
                        "linux": {}}),
            );
            let cid = c.crictl(&["create", &pod, &cfg, &pod_cfg]);
            assert!(cid.success(), "bench: {cid}");
            let started = c.crictl(&["start", cid.stdout.trim()]);
            assert!(started.success(), "bench: {started}");
        }
        std::thread::sleep(Duration::from_secs(1));
        let shim = c
            .shim_procs()
            .iter()
            .map(|p| p.pid)
            .find(|p| !before.contains(p))
            .unwrap_or(0);
        out.push((
            handler,
            shim_field(shim, "status", "VmRSS"),
            shim_field(shim, "smaps_rollup", "Pss"),
        ));
        let _ = c.crictl(&["rmp", "-f", &pod]);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn report(
    version: Version,
    runs: usize,
    pods: usize,
    execs: usize,
    density: usize,
    rts: &[Runtime],
    res: Vec<Results>,
    notes: &[String],
) -> (String, Value) {
    const BASE: usize = 1; // runc's shim + runc
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let timing = |v: &Vec<Duration>| stats(v.clone());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut out = format!(
        "containerd {}, {runs} runs each (interleaved), {execs} execs, {pods} containers for \
         memory, {density} for density; host: {cores} cores, cgroup v1 view\n\n",
        version.name()
    );
    let ratio = |v: f64, i: usize, base: Option<f64>| match base {
        Some(b) if rts.len() > BASE && i != BASE && b > 0.0 => format!(" ({:.2}×)", v / b),
        _ => String::new(),
    };
    let times: Vec<(&str, Vec<Spread>)> = vec![
        (
            "ctr run --rm true",
            res.iter().map(|r| timing(&r.start)).collect(),
        ),
        (
            "ctr run -d true",
            res.iter().map(|r| timing(&r.run_d)).collect(),
        ),
        (
            "ctr task delete",
            res.iter().map(|r| timing(&r.task_delete)).collect(),
        ),
        (
            "ctr containers rm",
            res.iter().map(|r| timing(&r.container_rm)).collect(),
        ),
        (
            "ctr task exec true",
            res.iter().map(|r| timing(&r.exec)).collect(),
        ),
    ];
    out.push_str("| median ms (p10-p90), ratio to runc |");
    for rt in rts {
        out.push_str(&format!(" {} |", rt.name));
    }
    out.push_str("\n| --- |");
    out.push_str(&" --- |".repeat(rts.len()));
    out.push('\n');
    for (what, v) in &times {
        out.push_str(&format!("| {what} |"));
        for (i, (m, lo, hi)) in v.iter().enumerate() {
            let r = ratio(*m, i, v.get(BASE).map(|x| x.0));
            out.push_str(&format!(" {m:.1} ({lo:.1}-{hi:.1}){r} |"));
        }
        out.push('\n');
    }
    let mut rows: Vec<(String, Vec<f64>)> = vec![
        (
            "shim idle RSS KiB".into(),
            res.iter().map(|r| r.idle.0 as f64).collect(),
        ),
        (
            "shim idle Pss KiB".into(),
            res.iter().map(|r| r.idle.1 as f64).collect(),
        ),
        (
            "shim threads".into(),
            res.iter().map(|r| r.idle.2 as f64).collect(),
        ),
        (
            format!("shim RSS KiB after {execs} execs"),
            res.iter().map(|r| r.after_execs.0 as f64).collect(),
        ),
        (
            format!("shim Pss KiB after {execs} execs"),
            res.iter().map(|r| r.after_execs.1 as f64).collect(),
        ),
        (
            format!("Pss KiB per shim, {pods} running"),
            res.iter().map(|r| r.pods_pss.1).collect(),
        ),
        (
            format!("{density} started one by one, ms"),
            res.iter().map(|r| ms(r.density.0)).collect(),
        ),
        (
            format!("{density} started 4 at a time, ms"),
            res.iter().map(|r| ms(r.density.1)).collect(),
        ),
        (
            format!("{density} removed, ms"),
            res.iter().map(|r| ms(r.density.2)).collect(),
        ),
    ];
    for (what, v) in rows.iter_mut() {
        out.push_str(&format!("| {what} |"));
        for (i, x) in v.iter().enumerate() {
            out.push_str(&format!(" {x:.0}{} |", ratio(*x, i, v.get(BASE).copied())));
        }
        out.push('\n');
    }
    for n in notes {
        out.push_str(&format!("\n{n}\n"));
    }
    let json = json!({
        "containerd": version.name(),
        "cores": cores,
        "runs": runs, "execs": execs, "pods": pods, "density": density,
        "runtimes": rts.iter().zip(&res).map(|(rt, r)| {
            let t = |v: &Vec<Duration>| {
                let (m, lo, hi) = stats(v.clone());
                json!({"median_ms": m, "p10_ms": lo, "p90_ms": hi})
            };
            json!({
                "name": rt.name,
                "start": t(&r.start), "run_d": t(&r.run_d), "task_delete": t(&r.task_delete),
                "container_rm": t(&r.container_rm), "exec": t(&r.exec),
                "idle_rss_kib": r.idle.0, "idle_pss_kib": r.idle.1, "threads": r.idle.2,
                "after_execs_rss_kib": r.after_execs.0, "after_execs_pss_kib": r.after_execs.1,
                "pss_per_shim_kib": r.pods_pss.1, "shims_counted": r.pods_pss.0,
                "density_sequential_ms": ms(r.density.0), "density_4_ms": ms(r.density.1),
                "density_remove_ms": ms(r.density.2),
            })
        }).collect::<Vec<_>>(),
        "notes": notes,
    });
    (out, json)
}
