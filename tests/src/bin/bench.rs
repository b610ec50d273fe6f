//! `make bench`: crt against containerd-shim-runc-v2 + runc and + crun, on one private
//! containerd, interleaved (crt, runc, crun, crt, …) so drift hits all alike. Reports medians,
//! the spread (p10-p90) and ratios to runc's shim, and writes the table to
//! `$BENCH_OUT` (default `target/bench.md`).
//!
//! - start: `ctr run --rm IMAGE ID true`, the whole create-start-exit-delete a user waits for;
//! - exec: `ctr task exec` of `true` into a running container;
//! - memory per shim: proportional set size (Pss) of each shim process while `BENCH_PODS`
//!   containers run (one shim each), as `smaps_rollup` reports it.
//!
//! Knobs: `BENCH_RUNS` (default 20 per runtime and measure), `BENCH_PODS` (default 10),
//! `BENCH_CONTAINERD` (`2` default, or `1.6`), `CRT_BIN_DIR` (make bench: the release build).

use std::time::{Duration, Instant};

use crt_e2e::{secs, Containerd, Version, IMAGE};

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
                bin.into(),
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

fn ctr_ok(c: &Containerd, args: &[String]) {
    let out = c.ctr_timeout(args, secs(120));
    assert!(out.success(), "bench: {out}");
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
fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.1), at(0.9))
}

fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let pods: usize = std::env::var("BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let version = match std::env::var("BENCH_CONTAINERD").as_deref() {
        Ok("1.6") => Version::V16,
        _ => Version::V2,
    };
    let c = Containerd::start(version);
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
    let mut start: Vec<Vec<Duration>> = vec![Vec::new(); rts.len()];
    let mut exec: Vec<Vec<Duration>> = vec![Vec::new(); rts.len()];

    for _ in 0..runs {
        for (i, rt) in rts.iter().enumerate() {
            let id = c.new_id(&format!("start{}", rt.name));
            start[i].push(timed(|| ctr_ok(&c, &run_args(rt, "--rm", &id, &["true"]))));
        }
    }
    // exec into one running container per runtime
    let targets: Vec<String> = rts
        .iter()
        .map(|rt| {
            let id = c.new_id(&format!("exec{}", rt.name));
            ctr_ok(&c, &run_args(rt, "-d", &id, &["sleep", "1000"]));
            id
        })
        .collect();
    for n in 0..runs {
        for (i, id) in targets.iter().enumerate() {
            let args: Vec<String> = ["task", "exec", "--exec-id", &format!("e{n}"), id, "true"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            exec[i].push(timed(|| ctr_ok(&c, &args)));
        }
    }
    for id in &targets {
        c.kill_and_remove(id);
    }
    // memory: `pods` running containers per runtime, one shim each
    let mut mem = Vec::new();
    for rt in &rts {
        let before: Vec<u32> = c.shim_procs().iter().map(|p| p.pid).collect();
        let ids: Vec<String> = (0..pods)
            .map(|_| {
                let id = c.new_id(&format!("mem{}", rt.name));
                ctr_ok(&c, &run_args(rt, "-d", &id, &["sleep", "1000"]));
                id
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        let shims: Vec<u32> = c
            .shim_procs()
            .iter()
            .filter(|p| !before.contains(&p.pid) && p.exe_name() == rt.shim)
            .map(|p| p.pid)
            .collect();
        let total: u64 = shims.iter().map(|p| pss_kib(*p)).sum();
        mem.push((shims.len(), total as f64 / shims.len().max(1) as f64));
        for id in &ids {
            c.kill_and_remove(id);
        }
    }

    let base = 1; // runc's shim + runc
    let mut out = format!(
        "containerd {}, {} runs each (interleaved), {} containers for memory; host: {} cores\n\n\
         | runtime | start median ms (p10-p90) | vs runc | exec median ms (p10-p90) | vs runc | shim Pss KiB | vs runc |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        version.name(),
        runs,
        pods,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let s: Vec<_> = start.into_iter().map(stats).collect();
    let e: Vec<_> = exec.into_iter().map(stats).collect();
    for (i, rt) in rts.iter().enumerate() {
        let r = |v: f64, b: f64| {
            if rts.len() > base {
                format!("{:.2}", v / b)
            } else {
                "-".into()
            }
        };
        out.push_str(&format!(
            "| {} | {:.1} ({:.1}-{:.1}) | {} | {:.1} ({:.1}-{:.1}) | {} | {:.0} ({} shims) | {} |\n",
            rt.name,
            s[i].0,
            s[i].1,
            s[i].2,
            r(s[i].0, s.get(base).map(|x| x.0).unwrap_or(1.0)),
            e[i].0,
            e[i].1,
            e[i].2,
            r(e[i].0, e.get(base).map(|x| x.0).unwrap_or(1.0)),
            mem[i].1,
            mem[i].0,
            r(mem[i].1, mem.get(base).map(|x| x.1).unwrap_or(1.0)),
        ));
    }
    for n in &notes {
        out.push_str(&format!("\n{n}\n"));
    }
    print!("{out}");
    let path = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench.md".into());
    if let Err(e) = std::fs::write(&path, &out) {
        eprintln!("bench: write {path}: {e}");
    }
}
