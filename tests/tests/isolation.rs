//! What the container sees: namespaces, rootfs, mounts, devices, masked/read-only paths, caps.
//! Expectations come from the spec containerd generates (read back with `ctr containers info`).

use std::collections::BTreeMap;
use std::fs;

use crt_e2e::spec::{self, CapSets};
use crt_e2e::util::parse_mountinfo;
use crt_e2e::{assert_no_leaks, assert_no_leaks_with, secs, Containerd, LeakOptions, Value};

crt_e2e::scenarios!(
    namespaces,
    fresh_network_namespaces,
    join_namespaces_by_path,
    pivot_root,
    mounts,
    devices,
    device_allow_list,
    masked_and_readonly_paths,
    capabilities,
    sysctl_and_domainname,
    scheduling_and_personality,
    time_namespace,
    recursive_read_only,
    deny_all_devices,
    session_keyring,
    cpu_affinity
);

/// Runs `sh -c script` with `--rm` and returns stdout; panics with the output unless it exits 0.
#[track_caller]
fn sh(c: &Containerd, id: &str, flags: &[&str], script: &str) -> String {
    let out = c.run_with(flags, id, &["sh", "-c", script]);
    assert!(out.success(), "container script failed:\n{out}");
    out.stdout
}

/// Each container that asks for a new network namespace gets one of its own with `lo` up, as
/// runc brings it up; also two in one shim (runc's group annotation), whose helpers are forks
/// of one zygote. None is the host's.
fn fresh_network_namespaces(c: &Containerd) {
    let group = c.new_id("netgroup");
    let script = "echo net=$(readlink /proc/self/ns/net); echo lo=$(cat /sys/class/net/lo/flags); \
                  echo ready; exec sleep 1000";
    let mut nets = Vec::new();
    let mut ids = Vec::new();
    let mut runs = Vec::new();
    for name in ["neta", "netb"] {
        let id = c.new_id(name);
        let mut spec = c.config_spec(&id, &["sh", "-c", script]);
        spec["annotations"]["io.containerd.runc.v2.group"] = group.clone().into();
        let mut run = c.spawn_config(&id, &spec);
        let seen = run.wait_for_line("ready", secs(60));
        let field = |k: &str| {
            seen.iter()
                .find_map(|l| l.strip_prefix(k))
                .unwrap_or_else(|| panic!("no {k} line from {id}: {seen:?}"))
                .trim()
                .to_string()
        };
        let lo = field("lo=");
        let flags = u32::from_str_radix(lo.trim_start_matches("0x"), 16)
            .unwrap_or_else(|e| panic!("lo flags {lo:?} of {id}: {e}"));
        assert_ne!(flags & 1, 0, "lo is down in {id}: {lo}");
        nets.push(field("net="));
        ids.push(id);
        runs.push(run);
    }
    let shim = c
        .shim_socket(&ids[0])
        .expect("the first container's shim socket");
    assert_eq!(Some(shim), c.shim_socket(&ids[1]), "one group, one shim");
    let host = fs::read_link("/proc/self/ns/net").expect("our net namespace");
    let host = host.to_string_lossy();
    assert!(
        nets.iter().all(|n| *n != host),
        "a container has the host's network namespace {host}: {nets:?}"
    );
    assert_ne!(nets[0], nets[1], "two containers share a network namespace");
    if !c.is_runc() {
        // The first container's namespace is the one its shim's `start` made beside its own
        // start-up (spare_net.rs); the second one's, its helper's clone3 made.
        let line = |id: &str| {
            let pid = c.task(id).unwrap_or_else(|| panic!("no task {id}")).pid;
            format!("helper {pid} cloned in the network namespace made at start")
        };
        let (first, second) = (line(&ids[0]), line(&ids[1]));
        let logged = |what: &str, within| {
            crt_e2e::util::poll(within, || {
                fs::read_to_string(c.log_path())
                    .ok()
                    .filter(|l| l.contains(what))
            })
            .is_some()
        };
        assert!(
            logged(&first, secs(10)),
            "the first container's helper was not cloned in the spare: no {first:?} in\n{}",
            c.log_tail(40)
        );
        assert!(
            !logged(&second, secs(1)),
            "only the first container gets the spare:\n{}",
            c.log_tail(40)
        );
    }
    for (id, run) in ids.iter().zip(runs) {
        c.ctr(&["task", "kill", "-s", "SIGKILL", id]).assert_ok();
        let _ = run.wait(secs(60));
    }
    // Seen with containerd 2.x: the runc shim of a group leaves its sockets behind after the
    // group's last container is gone. crt must not.
    assert_no_leaks_with(
        c,
        &[&ids[0], &ids[1]],
        LeakOptions {
            allow_stale_shim_sockets: c.is_runc(),
        },
    );
}

/// A spec can join another container's namespaces by path (as a pod's containers join the
/// sandbox's): B, given /proc/<A>/ns/{pid,net,ipc,uts}, shares them with A — in A's pid
/// namespace B is not pid 1 and sees A's process — while its mount namespace is its own.
fn join_namespaces_by_path(c: &Containerd) {
    let a = c.new_id("nsowner");
    let apid = c.run_detached(&[], &a, &["sleep", "1000"]);
    let b = c.new_id("nsjoin");
    let script = "for n in pid net ipc uts mnt; do echo $n=$(readlink /proc/self/ns/$n); done; \
                  echo self=$$; echo comms=$(cat /proc/*/comm | tr '\\n' ' ')";
    let mut spec = c.config_spec(&b, &["sh", "-c", script]);
    let joined = ["pid", "network", "ipc", "uts"];
    for ns in spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
    {
        let t = ns["type"].as_str().unwrap_or_default().to_string();
        if joined.contains(&t.as_str()) {
            let file = if t == "network" { "net" } else { t.as_str() };
            ns["path"] = format!("/proc/{apid}/ns/{file}").into();
        }
    }
    let out = c.run_config(&b, &spec);
    assert!(out.success(), "run with joined namespaces failed:\n{out}");
    for n in ["pid", "net", "ipc", "uts", "mnt"] {
        let host_a = std::fs::read_link(format!("/proc/{apid}/ns/{n}")).expect("A's ns link");
        let line = format!("{n}={}", host_a.display());
        if n == "mnt" {
            assert!(
                !out.stdout.contains(&line),
                "B must have its own mount namespace:\n{out}"
            );
        } else {
            assert!(
                out.stdout.contains(&line),
                "B must share A's {n} namespace ({line}):\n{out}"
            );
        }
    }
    assert!(
        !out.stdout.contains("self=1\n"),
        "B is not pid 1 in A's pid namespace:\n{out}"
    );
    assert!(out.stdout.contains("sleep"), "B sees A's process:\n{out}");
    c.kill_and_remove(&a);
    assert_no_leaks(c, &[&a, &b]);
}

/// Init is pid 1; every namespace the spec asks for is new (differs from the host's), the others
/// are shared with the host.
fn namespaces(c: &Containerd) {
    let spec = c.spec_for(&[]);
    let new_ns = spec::spec_new_namespaces(&spec);
    for must in ["pid", "mount", "uts", "ipc", "network"] {
        assert!(
            new_ns.iter().any(|n| n == must),
            "ctr's default spec lacks a {must} namespace: {new_ns:?}"
        );
    }
    let id = c.new_id("ns");
    let mut script = String::from("echo pid1=$$;");
    for t in spec::NS_TYPES {
        let f = spec::ns_file(t);
        script.push_str(&format!("echo {t}=$(readlink /proc/1/ns/{f});"));
    }
    let out = sh(c, &id, &[], &script);
    let kv: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(
        kv.get("pid1"),
        Some(&"1"),
        "the container's init is not pid 1:\n{out}"
    );
    for t in spec::NS_TYPES {
        let f = spec::ns_file(t);
        let host = fs::read_link(format!("/proc/self/ns/{f}"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if host.is_empty() {
            continue; // kernel without this namespace type
        }
        let inside = kv.get(t).copied().unwrap_or("");
        assert!(!inside.is_empty(), "no /proc/1/ns/{f} inside:\n{out}");
        if new_ns.iter().any(|n| n == t) {
            assert_ne!(
                inside, host,
                "{t} namespace is the host's although the spec asks for a new one"
            );
        } else {
            assert_eq!(
                inside, host,
                "{t} namespace differs from the host's although the spec does not ask for one"
            );
        }
    }
    assert_no_leaks(c, &[&id]);
}

/// The rootfs is pivot_root'ed: host paths are invisible, `/` in the container's mountinfo is the
/// image's rootfs, and no mount point outside what the spec mounts shows up.
fn pivot_root(c: &Containerd) {
    let spec = c.spec_for(&[]);
    let marker = c.harness_dir().join("host-only-marker");
    fs::write(&marker, "host").unwrap();
    let id = c.new_id("pivot");
    let script = format!(
        "if test -e {m}; then echo marker=visible; else echo marker=hidden; fi; \
         echo root=$(readlink /proc/1/root); echo ---; cat /proc/1/mountinfo",
        m = marker.display()
    );
    let out = sh(c, &id, &[], &script);
    let (head, mountinfo) = out
        .split_once("---\n")
        .unwrap_or_else(|| panic!("bad output:\n{out}"));
    assert!(
        head.contains("marker=hidden"),
        "host file {} is visible inside:\n{out}",
        marker.display()
    );
    assert!(head.contains("root=/\n"), "/proc/1/root is not /:\n{out}");

    let mounts = parse_mountinfo(mountinfo);
    let root = mounts
        .iter()
        .find(|m| m.mount_point == "/")
        .unwrap_or_else(|| panic!("no / in the container's mountinfo:\n{mountinfo}"));
    assert_eq!(
        root.fs_type, "overlay",
        "/ should be the overlay snapshot:\n{mountinfo}"
    );
    assert_eq!(
        root.root, "/",
        "/ should be the root of the rootfs mount:\n{mountinfo}"
    );

    let dir = c.dir.to_string_lossy().into_owned();
    let mut allowed: Vec<String> = vec!["/".into()];
    allowed.extend(
        spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["destination"].as_str().map(str::to_string)),
    );
    allowed.extend(spec::str_list(&spec["linux"]["maskedPaths"]));
    allowed.extend(spec::str_list(&spec["linux"]["readonlyPaths"]));
    for m in &mounts {
        assert!(
            !m.mount_point.contains(&dir) && !m.root.contains(&dir),
            "host path visible in the container's mountinfo: {}",
            m.line
        );
        assert!(
            allowed.contains(&m.mount_point),
            "unexpected mount {} inside (not in the spec; a chroot instead of pivot_root?):\n{mountinfo}",
            m.mount_point
        );
    }
    assert_no_leaks(c, &[&id]);
}

/// /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys, /run are mounted with the spec's fs type,
/// source and options (ro/nosuid/nodev/noexec exactly; data options as the kernel prints them).
fn mounts(c: &Containerd) {
    let spec = c.spec_for(&[]);
    let id = c.new_id("mounts");
    let out = sh(c, &id, &[], "cat /proc/self/mounts");
    // last entry per mount point wins (that is what the process sees)
    let mut table: BTreeMap<&str, (&str, &str, &str)> = BTreeMap::new();
    for l in out.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f.len() >= 4 {
            table.insert(f[1], (f[0], f[2], f[3]));
        }
    }
    let spec_mounts = spec["mounts"].as_array().expect("spec has mounts");
    for dest in ["/proc", "/dev", "/dev/pts", "/dev/shm", "/sys"] {
        assert!(
            spec_mounts.iter().any(|m| m["destination"] == dest),
            "ctr's default spec has no {dest} mount"
        );
    }
    let mut problems = Vec::new();
    for m in spec_mounts {
        let dest = m["destination"].as_str().unwrap();
        let typ = m["type"].as_str().unwrap_or("");
        if typ == "bind" || typ == "cgroup" {
            continue; // not in ctr's default spec; cgroup mounts are checked in the cgroup tests
        }
        let Some((source, fstype, opts)) = table.get(dest) else {
            problems.push(format!("{dest}: not mounted"));
            continue;
        };
        if *fstype != typ {
            problems.push(format!("{dest}: type {fstype}, spec says {typ}"));
        }
        if let Some(src) = m["source"].as_str() {
            if *source != src {
                problems.push(format!("{dest}: source {source}, spec says {src}"));
            }
        }
        let spec_opts = spec::str_list(&m["options"]);
        for p in spec::check_mount_options(&spec_opts, typ, opts) {
            problems.push(format!("{dest} ({opts}): {p}"));
        }
    }
    assert!(
        problems.is_empty(),
        "mounts differ from the spec:\n  {}\n/proc/self/mounts:\n{out}",
        problems.join("\n  ")
    );
    assert_no_leaks(c, &[&id]);
}

/// The default devices exist as char devices (0666) and the standard /dev symlinks are there.
/// The spec's device allow-list holds (devices cgroup on v1, the eBPF filter on v2): a device not
/// on containerd's list cannot be created (EPERM), a listed one can, and opens.
fn device_allow_list(c: &Containerd) {
    let spec = c.spec_for(&[]);
    let rules = spec["linux"]["resources"]["devices"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        rules
            .first()
            .is_some_and(|r| r["allow"] == false && r.get("type").is_none_or(|t| t == "a")),
        "ctr's default spec should start with deny-all: {rules:?}"
    );
    let id = c.new_id("devallow");
    // 1:1 is /dev/mem: on no allow-list. mknod itself is allowed (runc's "c *:* m"), opening
    // the node is what the device filter refuses; without one root could read host memory.
    let script = "mknod /tmp/mem c 1 1 && echo mem=created; \
                  head -c 1 /tmp/mem >/dev/null 2>&1 && echo mem=read || echo mem=denied; \
                  mknod /tmp/null c 1 3 && echo hi >/tmp/null && echo null=ok";
    let out = sh(c, &id, &[], script);
    assert!(
        out.contains("mem=created") && out.contains("mem=denied"),
        "opening c 1:1 must be refused by the device allow-list:\n{out}"
    );
    assert!(
        out.contains("null=ok"),
        "c 1:3 is on the allow-list:\n{out}"
    );
    assert_no_leaks(c, &[&id]);
}

fn devices(c: &Containerd) {
    let id = c.new_id("devices");
    let devs = [
        ("null", "1", "3"),
        ("zero", "1", "5"),
        ("full", "1", "7"),
        ("random", "1", "8"),
        ("urandom", "1", "9"),
        ("tty", "5", "0"),
    ];
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ];
    let mut script = String::new();
    for (d, _, _) in devs {
        // %t/%T: major/minor in hex; our numbers are < 10
        script.push_str(&format!("stat -c 'dev %n %F %t %T %a' /dev/{d};"));
    }
    for (l, _) in links {
        script.push_str(&format!("echo \"link /dev/{l} $(readlink /dev/{l})\";"));
    }
    script.push_str("test -c /dev/pts/ptmx && echo ptsptmx=ok; echo done");
    let out = sh(c, &id, &[], &script);
    for (d, maj, min) in devs {
        let want = format!("dev /dev/{d} character special file {maj} {min} 666");
        assert!(out.lines().any(|l| l == want), "expected `{want}`:\n{out}");
    }
    for (l, target) in links {
        let want = format!("link /dev/{l} {target}");
        assert!(out.lines().any(|x| x == want), "expected `{want}`:\n{out}");
    }
    assert!(out.contains("ptsptmx=ok"), "/dev/pts/ptmx missing:\n{out}");
    assert_no_leaks(c, &[&id]);
}

/// Masked paths read empty; read-only paths are read-only mounts and refuse writes.
fn masked_and_readonly_paths(c: &Containerd) {
    let spec = c.spec_for(&[]);
    let masked = spec::str_list(&spec["linux"]["maskedPaths"]);
    let readonly = spec::str_list(&spec["linux"]["readonlyPaths"]);
    assert!(
        !masked.is_empty() && !readonly.is_empty(),
        "spec has no masked/readonly paths: {spec}"
    );

    // the mask must hide something: at least one masked path has content on the host
    let host_has_content = |p: &str| {
        let meta = fs::metadata(p);
        match meta {
            Ok(m) if m.is_dir() => fs::read_dir(p)
                .map(|mut r| r.next().is_some())
                .unwrap_or(false),
            Ok(_) => fs::read(p).map(|b| !b.is_empty()).unwrap_or(false),
            Err(_) => false,
        }
    };
    let meaningful: Vec<&String> = masked.iter().filter(|p| host_has_content(p)).collect();
    assert!(
        !meaningful.is_empty(),
        "no masked path has content on this host: {masked:?}"
    );

    let id = c.new_id("masked");
    let mut script = String::new();
    for p in &masked {
        script.push_str(&format!(
            "if [ -d {p} ]; then echo \"masked {p} dir $(ls -A {p} | wc -l)\"; \
             elif [ -e {p} ]; then echo \"masked {p} file $(head -c 64 {p} | wc -c)\"; \
             else echo \"masked {p} absent\"; fi;"
        ));
    }
    script.push_str(
        "if echo crt > /proc/sys/kernel/domainname; then echo domainname=written; fi; echo ---; cat /proc/self/mounts",
    );
    let out = c.run_with(&[], &id, &["sh", "-c", &script]);
    assert!(out.success(), "container script failed:\n{out}");
    let (report, mounts) = out
        .stdout
        .split_once("---\n")
        .unwrap_or_else(|| panic!("bad output:\n{out}"));
    for p in &masked {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("masked {p} ")))
            .unwrap_or_else(|| panic!("no report for {p}:\n{out}"));
        assert!(
            line.ends_with(" 0") || line.ends_with(" absent"),
            "masked path {p} is not empty inside: `{line}`"
        );
        if meaningful.contains(&p) {
            assert!(
                !line.ends_with(" absent"),
                "masked path {p} exists on the host but not inside: `{line}`"
            );
        }
    }
    assert!(
        !report.contains("domainname=written"),
        "/proc/sys/kernel/domainname was writable:\n{out}"
    );
    assert!(
        out.stderr.contains("Read-only file system"),
        "writing /proc/sys/kernel/domainname should fail with EROFS:\n{out}"
    );
    let mut ro_mounts: BTreeMap<&str, &str> = BTreeMap::new();
    for l in mounts.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        if f.len() >= 4 {
            ro_mounts.insert(f[1], f[3]);
        }
    }
    for p in &readonly {
        if !std::path::Path::new(p).exists() {
            continue; // runtimes skip read-only paths that do not exist
        }
        let opts = ro_mounts
            .get(p.as_str())
            .unwrap_or_else(|| panic!("read-only path {p} is not a mount point inside:\n{mounts}"));
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "read-only path {p} is mounted {opts}"
        );
    }
    assert_no_leaks(c, &[&id]);
}

#[track_caller]
fn caps_of(c: &Containerd, id: &str, flags: &[&str]) -> CapSets {
    let out = c.run_with(flags, id, &["cat", "/proc/self/status"]);
    assert!(out.success(), "cat /proc/self/status failed:\n{out}");
    CapSets::from_status(&out.stdout).unwrap_or_else(|| panic!("no Cap* lines:\n{out}"))
}

/// The process's capability sets equal the spec's: default spec, `--cap-drop`/`--cap-add`, and a
/// non-root user (via `--config`), whose permitted/effective sets are empty after exec.
fn capabilities(c: &Containerd) {
    // default
    let spec = c.spec_for(&[]);
    let want = CapSets::from_spec(&spec);
    assert_ne!(
        want.bounding, 0,
        "default spec has no bounding caps: {}",
        spec["process"]
    );
    let id = c.new_id("caps");
    let got = caps_of(c, &id, &[]);
    assert!(
        got == want,
        "caps differ from the default spec (got vs spec):\n{}",
        got.diff(&want)
    );

    // --cap-drop / --cap-add
    let flags = ["--cap-drop", "CAP_NET_RAW", "--cap-add", "CAP_SYS_PTRACE"];
    let spec2 = c.spec_for(&flags);
    let want2 = CapSets::from_spec(&spec2);
    let raw = 1u64 << spec::cap_bit("CAP_NET_RAW").unwrap();
    let ptrace = 1u64 << spec::cap_bit("CAP_SYS_PTRACE").unwrap();
    assert!(
        want2.bounding & raw == 0 && want2.bounding & ptrace != 0,
        "ctr ignored --cap-drop/--cap-add: {}",
        spec2["process"]
    );
    let id2 = c.new_id("capsdrop");
    let got2 = caps_of(c, &id2, &flags);
    assert!(
        got2 == want2,
        "caps differ from the --cap-drop/--cap-add spec (got vs spec):\n{}",
        got2.diff(&want2)
    );

    // non-root user: caps are still set up as the spec says, but exec as uid 65534 (no file caps,
    // no ambient set) leaves permitted/effective empty; the bounding set stays
    let id3 = c.new_id("capsuser");
    let mut spec3 = c.config_spec(&id3, &["cat", "/proc/self/status"]);
    spec3["process"]["user"] = crt_e2e::json!({"uid": 65534, "gid": 65534});
    let out = c.run_config(&id3, &spec3);
    assert!(out.success(), "running as uid 65534 failed:\n{out}");
    let got3 = CapSets::from_status(&out.stdout).unwrap_or_else(|| panic!("no Cap* lines:\n{out}"));
    let spec3_caps = CapSets::from_spec(&spec3);
    let want3 = CapSets {
        inheritable: spec3_caps.inheritable,
        permitted: spec3_caps.ambient,
        effective: spec3_caps.ambient,
        bounding: spec3_caps.bounding,
        ambient: spec3_caps.ambient,
    };
    assert!(
        got3 == want3,
        "caps of a uid 65534 process (got vs expected):\n{}",
        got3.diff(&want3)
    );
    assert!(
        out.stdout.contains("Uid:\t65534\t65534\t65534\t65534"),
        "process is not uid 65534:\n{out}"
    );
    assert_no_leaks(c, &[&id, &id2, &id3]);
}

/// Namespaced sysctls and the domain name apply inside; the host keeps its values; a key of
/// no namespace of the container's is refused by name.
fn sysctl_and_domainname(c: &Containerd) {
    let host = |k: &str| fs::read_to_string(format!("/proc/sys/{k}")).unwrap_or_default();
    let (fwd, shm, dom) = (
        host("net/ipv4/ip_forward"),
        host("kernel/shmmax"),
        host("kernel/domainname"),
    );
    let id = c.new_id("sysctl");
    let mut spec = c.config_spec(
        &id,
        &[
            "sh",
            "-c",
            "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax /proc/sys/kernel/domainname",
        ],
    );
    let want_fwd = if fwd.trim() == "1" { "0" } else { "1" };
    spec["linux"]["sysctl"] =
        crt_e2e::json!({"net.ipv4.ip_forward": want_fwd, "kernel.shmmax": "123456789"});
    spec["domainname"] = "crt.example".into();
    let out = c.run_config(&id, &spec);
    assert!(out.success(), "{out}");
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got, [want_fwd, "123456789", "crt.example"], "{out}");
    assert_eq!(
        host("net/ipv4/ip_forward"),
        fwd,
        "host ip_forward untouched"
    );
    assert_eq!(host("kernel/shmmax"), shm, "host shmmax untouched");
    assert_eq!(host("kernel/domainname"), dom, "host domain name untouched");
    assert_no_leaks(c, &[&id]);

    // A key the create must fail on, with the key named in the error and nothing left.
    let refused = |key: &str| {
        let id = c.new_id("sysctlbad");
        let mut spec = c.config_spec(&id, &["true"]);
        spec["linux"]["sysctl"] = crt_e2e::json!({ key: "1" });
        let out = c.run_config(&id, &spec);
        assert!(!out.success(), "{key}: {out}");
        assert!(out.stderr.contains(key), "the error names {key}:\n{out}");
        assert_no_leaks(c, &[&id]);
    };
    // Of no namespace of the container's: refused by name, before anything is made.
    refused("vm.swappiness");
    // Of the container's network namespace but not a key there: refused by the kernel, in the
    // helper, after it told the runtime /dev is made (Msg::Devices) and while the runtime
    // writes the device rules. The helper's error is the one reported.
    refused("net.ipv4.crt_no_such_key");
}

/// process.scheduler, process.ioPriority and linux.personality reach the process.
fn scheduling_and_personality(c: &Containerd) {
    let id = c.new_id("sched");
    let mut spec = c.config_spec(
        &id,
        &[
            "sh",
            "-c",
            "uname -m; ionice; set -- $(cat /proc/self/stat); echo nice=${19} policy=${41}",
        ],
    );
    spec["process"]["scheduler"] = crt_e2e::json!({"policy": "SCHED_BATCH", "nice": 7});
    spec["process"]["ioPriority"] = crt_e2e::json!({"class": "IOPRIO_CLASS_IDLE", "priority": 0});
    spec["linux"]["personality"] = crt_e2e::json!({"domain": "LINUX32"});
    let out = c.run_config(&id, &spec);
    assert!(out.success(), "{out}");
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        l.first().copied(),
        Some("i686"),
        "LINUX32 personality:\n{out}"
    );
    // ctr 1.6 parses --config with a runtime-spec older than scheduler and ioPriority and drops
    // them before they reach the runtime.
    if c.version == crt_e2e::Version::V2 {
        assert!(
            l.get(1).is_some_and(|s| s.starts_with("idle")),
            "I/O class:\n{out}"
        );
        assert_eq!(
            l.get(2).copied(),
            Some("nice=7 policy=3"),
            "SCHED_BATCH, nice 7:\n{out}"
        );
    }
    assert_no_leaks(c, &[&id]);
}

/// A time namespace of its own, with a boottime offset of 100 days (on 2.x: ctr 1.6 drops
/// linux.timeOffsets while parsing --config); an exec joins it.
fn time_namespace(c: &Containerd) {
    let host_ns = fs::read_link("/proc/self/ns/time").unwrap();
    let host_ns = host_ns.to_string_lossy().into_owned();
    let id = c.new_id("timens");
    let mut spec = c.config_spec(
        &id,
        &[
            "sh",
            "-c",
            "readlink /proc/1/ns/time; readlink /proc/self/ns/time; cut -d. -f1 /proc/uptime; sleep 1000",
        ],
    );
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(crt_e2e::json!({"type": "time"}));
    spec["linux"]["timeOffsets"] = crt_e2e::json!({"boottime": {"secs": 8640000, "nanosecs": 0}});
    let mut bg = c.spawn_config(&id, &spec);
    let lines = bg.wait_until(
        "uptime",
        |l| l.chars().all(|ch| ch.is_ascii_digit()),
        crt_e2e::secs(60),
    );
    let ns_lines: Vec<&String> = lines.iter().filter(|l| l.starts_with("time:")).collect();
    let ns = ns_lines.first().map(|l| l.to_string()).unwrap_or_default();
    assert!(
        !ns.is_empty() && ns != host_ns,
        "a time namespace of its own: {lines:?}"
    );
    assert!(
        ns_lines.iter().all(|l| **l == ns),
        "pid 1 itself is in it, not only its children: {lines:?}"
    );
    let uptime: u64 = lines.last().and_then(|l| l.parse().ok()).unwrap_or(0);
    if c.version == crt_e2e::Version::V2 {
        assert!(
            uptime >= 8_640_000,
            "boottime offset of 100 days: uptime {uptime}"
        );
    }
    let ex = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "t",
        &id,
        "readlink",
        "/proc/self/ns/time",
    ]);
    assert_eq!(
        ex.stdout.trim(),
        ns,
        "an exec joins the container's time namespace:\n{ex}"
    );
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    let _ = bg.wait(crt_e2e::secs(60));
    assert_no_leaks(c, &[&id]);
}

/// `rro` makes a whole rbind tree read-only (mount_setattr AT_RECURSIVE), where `ro` covers the
/// top mount only: a host directory with a tmpfs mounted inside, bound both ways.
fn recursive_read_only(c: &Containerd) {
    let dir = c.harness_dir().join("rro-src");
    let sub = dir.join("sub");
    fs::create_dir_all(&sub).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "crt-rro-test", sub.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success(), "mount a tmpfs for the test");
    let script = "touch /data/top 2>/dev/null && echo top=rw || echo top=ro; \
                  touch /data/sub/x 2>/dev/null && echo sub=rw || echo sub=ro";
    let run = |opt: &str| {
        let id = c.new_id("rro");
        let mut spec = c.config_spec(&id, &["sh", "-c", script]);
        spec["mounts"].as_array_mut().unwrap().push(crt_e2e::json!({
            "destination": "/data", "type": "bind", "source": dir.to_string_lossy(),
            "options": ["rbind", opt]}));
        let out = c.run_config(&id, &spec);
        (id, out)
    };
    let (ro_id, ro) = run("ro");
    let (rro_id, rro) = run("rro");
    let _ = std::process::Command::new("umount").arg(&sub).status();
    assert!(ro.success() && rro.success(), "{ro}\n{rro}");
    assert!(
        ro.stdout.contains("top=ro") && ro.stdout.contains("sub=rw"),
        "ro covers the top mount only:\n{ro}"
    );
    assert!(
        rro.stdout.contains("top=ro") && rro.stdout.contains("sub=ro"),
        "rro covers every mount of the tree:\n{rro}"
    );
    assert_no_leaks(c, &[&ro_id, &rro_id]);
}

/// CRI's specs deny every device and allow none: as with runc, the container still gets its
/// default nodes, the devices every container may use (/dev/null, terminals, ...) stay
/// usable, and anything else is refused. The pause sandbox's /dev/null is made before the
/// rules apply (its mknod would otherwise be refused).
fn deny_all_devices(c: &Containerd) {
    let id = c.new_id("denydev");
    let script = "ls -l /dev/null; echo x > /dev/null && echo null=ok; mknod /tmp/mem c 1 1; \
                  head -c 1 /tmp/mem >/dev/null 2>&1 && echo mem=read || echo mem=denied";
    let mut spec = c.config_spec(&id, &["sh", "-c", script]);
    spec["linux"]["resources"]["devices"] = crt_e2e::json!([{"allow": false, "access": "rwm"}]);
    spec["linux"]["devices"] = crt_e2e::json!([]);
    let out = c.run_config(&id, &spec);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("1,   3"), "/dev/null is made:\n{out}");
    assert!(out.stdout.contains("null=ok"), "and usable:\n{out}");
    assert!(
        out.stdout.contains("mem=denied"),
        "the deny-all rule holds for the rest:\n{out}"
    );
    assert_no_leaks(c, &[&id]);
}

/// Each container gets a session keyring of its own, "_ses.<id>" as under runc (the runtime's
/// keys stay out of reach), which its execs join too. /proc/keys is unmasked for the look.
fn session_keyring(c: &Containerd) {
    if !std::path::Path::new("/proc/keys").exists() {
        eprintln!("no /proc/keys on this kernel: nothing to check");
        return;
    }
    let id = c.new_id("keyring");
    let mut spec = c.config_spec(
        &id,
        &[
            "sh",
            "-c",
            "grep -c keyring /proc/keys; grep _ses /proc/keys; sleep 1000",
        ],
    );
    let masked: Vec<Value> = spec["linux"]["maskedPaths"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p != "/proc/keys")
        .collect();
    spec["linux"]["maskedPaths"] = Value::Array(masked);
    let mut bg = c.spawn_config(&id, &spec);
    let name = format!("_ses.{id}");
    // wait_until panics with every line seen if the container's keyring never shows up.
    let own = format!("keyring   {name}:");
    bg.wait_until(
        "the init's own session keyring",
        |l| l.contains(&own),
        secs(60),
    );
    let ex = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "k",
        &id,
        "grep",
        "_ses",
        "/proc/keys",
    ]);
    assert!(
        ex.stdout.contains(&name),
        "an exec joins the container's session keyring:\n{ex}"
    );
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    let _ = bg.wait(secs(60));
    assert_no_leaks(c, &[&id]);
}

/// The init and an exec may run on every CPU the host gives the container (here all of the
/// test's own): the runtime moves each helper off its own core for the moment of Start, and
/// the helper puts its affinity back before it execs (runtime/src/affinity.rs).
fn cpu_affinity(c: &Containerd) {
    let field = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let want = field(&fs::read_to_string("/proc/self/status").expect("read /proc/self/status"));
    assert!(!want.is_empty());
    let id = c.new_id("affinity");
    c.run_detached(&[], &id, &["sleep", "1000"]);
    // A status file read through an exec, and the CPUs it lists.
    let cpus_in = |exec_id: &str, status: &str| {
        let out = c.ctr_timeout(
            &["task", "exec", "--exec-id", exec_id, &id, "cat", status],
            secs(60),
        );
        assert!(out.success(), "{out}");
        (field(&out.stdout), out)
    };
    let (init, out) = cpus_in("a1", "/proc/1/status");
    assert_eq!(init, want, "the init's CPUs:\n{out}");
    let (exec, out) = cpus_in("a2", "/proc/self/status");
    assert_eq!(exec, want, "an exec's CPUs:\n{out}");
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).assert_ok();
    c.wait_task_status(&id, "STOPPED");
    c.ctr(&["task", "delete", &id]).assert_ok();
    c.ctr(&["containers", "rm", &id]).assert_ok();
    assert_no_leaks(c, &[&id]);
}
