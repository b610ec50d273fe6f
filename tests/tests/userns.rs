//! User namespaces: `ctr run --uidmap/--gidmap`, a user namespace joined by path (as a pod's
//! containers join the sandbox's), execs into them, cgroup delegation on v2, and id-mapped
//! bind mounts.

use std::fs;

use crt_e2e::{assert_no_leaks, json, Containerd};

crt_e2e::scenarios!(
    uidmap_with_ctr,
    join_user_namespace_by_path,
    cgroup_delegation,
    idmapped_mount,
    remap_labels
);

const MAP: &str = "0:100000:65536";

/// The fields of each line of a /proc/PID/{uid,gid}_map, whitespace normalised.
fn map_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

fn status_field(pid: u32, field: &str) -> String {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn ns_ino(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .ino()
}

/// The inode of the user namespace that owns the namespace at `path` (ioctl NS_GET_USERNS).
fn owner_ino(path: &str) -> u64 {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    let f = fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // SAFETY: ioctl on an open fd; a non-negative result is a new fd we own.
    let fd = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_USERNS as _) };
    assert!(
        fd >= 0,
        "NS_GET_USERNS {path}: {}",
        std::io::Error::last_os_error()
    );
    let owner = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    owner.metadata().unwrap().ino()
}

/// `ctr run --uidmap 0:100000:65536 --gidmap ...`: the container's root is host uid 100000 with
/// every capability inside its own user namespace and none outside (no mknod), every other
/// namespace belongs to it (hostname, mounts, sysfs of its own network namespace), the remapped
/// rootfs is its own, and an exec joins the same user namespace, as root or as another user.
fn uidmap_with_ctr(c: &Containerd) {
    let id = c.new_id("userns");
    let flags = ["--uidmap", MAP, "--gidmap", MAP];
    let pid = c.run_detached(&flags, &id, &["sleep", "1000"]);

    assert_eq!(status_field(pid, "Uid"), "100000 100000 100000 100000");
    assert_eq!(status_field(pid, "Gid"), "100000 100000 100000 100000");
    let uid_map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(map_lines(&uid_map), ["0 100000 65536"]);
    let gid_map = fs::read_to_string(format!("/proc/{pid}/gid_map")).unwrap();
    assert_eq!(map_lines(&gid_map), ["0 100000 65536"]);
    let userns = fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    assert_ne!(
        userns,
        fs::read_link("/proc/self/ns/user").unwrap(),
        "a user namespace of its own"
    );
    // Every other namespace belongs to the user namespace: made after it, not with the host's
    // root as owner (or its root could not mount its proc or sysfs, nor set its hostname).
    let user_ino = ns_ino(&format!("/proc/{pid}/ns/user"));
    for n in ["mnt", "pid", "net", "ipc", "uts"] {
        let path = format!("/proc/{pid}/ns/{n}");
        assert_eq!(
            owner_ino(&path),
            user_ino,
            "{path} is owned by the container's user namespace"
        );
    }

    let script = "cat /proc/self/uid_map; echo uid=$(id -u) gid=$(id -g); \
        echo ns=$(readlink /proc/self/ns/user); \
        mknod /tmp/n c 1 3 2>/dev/null && echo mknod=ok || echo mknod=denied; \
        echo x > /dev/null && echo devnull=ok; \
        echo owner=$(stat -c '%u:%g' /etc/passwd); \
        touch /written && echo write=ok; \
        echo via-dev-stdout > /dev/stdout; \
        echo net=$(ls /sys/class/net | tr '\\n' ' ')";
    let out = c.ctr(&["task", "exec", "--exec-id", "e1", &id, "sh", "-c", script]);
    assert!(out.success(), "exec into the user namespace failed:\n{out}");
    let o = &out.stdout;
    assert_eq!(
        map_lines(o).first().map(String::as_str),
        Some("0 100000 65536"),
        "{out}"
    );
    for want in [
        "uid=0 gid=0",
        &format!("ns={}", userns.display()),
        "mknod=denied",
        "devnull=ok",
        "owner=0:0",
        "write=ok",
        // Its stdio reopened by path: IoUid/IoGid made the container's root their owner.
        "via-dev-stdout",
    ] {
        assert!(o.contains(want), "exec output lacks {want:?}:\n{out}");
    }
    assert!(
        o.lines().any(|l| l.starts_with("net=") && l.contains("lo")),
        "sysfs of the container's network namespace:\n{out}"
    );
    // As another user of the namespace: host uid 100000 + 1000.
    let out = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "--user",
        "1000",
        &id,
        "sh",
        "-c",
        "echo uid=$(id -u); grep ^Uid /proc/self/status; readlink /proc/self/ns/user",
    ]);
    assert!(out.success(), "exec as uid 1000 failed:\n{out}");
    assert!(out.stdout.contains("uid=1000"), "{out}");
    assert!(out.stdout.contains(&userns.display().to_string()), "{out}");
    // The host file the container's root wrote is owned by the mapped root.
    let bundle_root = c.bundle_dir(&id).join("rootfs");
    let written = bundle_root.join("written");
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(&written).unwrap_or_else(|e| panic!("{}: {e}", written.display()));
    assert_eq!((meta.uid(), meta.gid()), (100000, 100000));

    c.kill_and_remove(&id);
    assert_no_leaks(c, &[&id]);
}

/// A pod's way: B joins A's user and network namespaces by path, with the same mappings in its
/// spec (containerd writes both), and makes the rest new inside A's user namespace. Different
/// mappings for a joined namespace are refused, and leave nothing behind.
fn join_user_namespace_by_path(c: &Containerd) {
    let a = c.new_id("usernsowner");
    let apid = c.run_detached(&["--uidmap", MAP, "--gidmap", MAP], &a, &["sleep", "1000"]);
    let b = c.new_id("usernsjoin");
    let script =
        "echo user=$(readlink /proc/self/ns/user); echo net=$(readlink /proc/self/ns/net); \
                  echo uts=$(readlink /proc/self/ns/uts); echo uid=$(id -u); echo pid=$$; \
                  echo hostname=$(hostname)";
    let mut spec = userns_spec(c, &b, &["sh", "-c", script]);
    spec["hostname"] = "b-host".into();
    for ns in spec["linux"]["namespaces"].as_array_mut().unwrap() {
        match ns["type"].as_str() {
            Some("network") => ns["path"] = format!("/proc/{apid}/ns/net").into(),
            Some("user") => ns["path"] = format!("/proc/{apid}/ns/user").into(),
            _ => {}
        }
    }
    let out = c.run_config(&b, &spec);
    assert!(out.success(), "run joining a user namespace failed:\n{out}");
    for n in ["user", "net"] {
        let link = fs::read_link(format!("/proc/{apid}/ns/{n}")).unwrap();
        assert!(
            out.stdout.contains(&format!("{n}={}", link.display())),
            "B shares A's {n} namespace:\n{out}"
        );
    }
    let uts = fs::read_link(format!("/proc/{apid}/ns/uts")).unwrap();
    assert!(
        !out.stdout.contains(&format!("uts={}", uts.display())),
        "B's uts namespace is its own:\n{out}"
    );
    for want in ["uid=0", "pid=1", "hostname=b-host"] {
        assert!(out.stdout.contains(want), "lacks {want:?}:\n{out}");
    }

    let bad = c.new_id("usernsbad");
    let mut spec2 = spec.clone();
    spec2["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    spec2["linux"]["cgroupsPath"] = spec["linux"]["cgroupsPath"]
        .as_str()
        .unwrap()
        .replace(&b, &bad)
        .into();
    let out = c.run_config(&bad, &spec2);
    assert!(
        !out.success(),
        "mismatched mappings must be refused:\n{out}"
    );
    assert!(
        out.stderr.contains("linux.uidMappings do not match"),
        "the error names the mismatch:\n{out}"
    );
    let _ = c.ctr(&["containers", "rm", &bad]);
    c.kill_and_remove(&a);
    assert_no_leaks(c, &[&a, &b, &bad]);
}

/// On cgroup v2 a container with a user namespace owns its cgroup: its root can make a
/// sub-cgroup and move itself there (through its own cgroup namespace and a writable cgroup
/// mount). cgroup v1 hierarchies are never handed out; there the same is refused.
fn cgroup_delegation(c: &Containerd) {
    let v2 = crt_e2e::cgroup::cgroup_mode() == crt_e2e::cgroup::CgroupMode::V2;
    let id = c.new_id("usernscg");
    // v1: the pids hierarchy's leaf, bound under the cgroup tmpfs.
    let dir = if v2 {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/pids"
    };
    let script = format!(
        "mkdir {dir}/sub 2>&1 && echo $$ > {dir}/sub/cgroup.procs && echo moved=$(cat /proc/self/cgroup)"
    );
    let mut spec = userns_spec(c, &id, &["sh", "-c", &script]);
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "cgroup"}));
    // ctr's spec has no cgroup mount (CRI adds one); a writable one here.
    spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "rw"]}));
    let out = c.run_config(&id, &spec);
    if v2 {
        assert!(out.success(), "delegated cgroup:\n{out}");
        assert!(out.stdout.contains("moved=0::/sub"), "{out}");
    } else {
        assert!(
            !out.success() && out.stdout.contains("Permission denied"),
            "v1 is not delegated:\n{out}"
        );
    }
    assert_no_leaks(c, &[&id]);
}

/// A spec for `ctr run --config` with a user namespace mapping 0:100000:65536 and a rootfs the
/// mapped root owns.
fn userns_spec(c: &Containerd, id: &str, args: &[&str]) -> crt_e2e::Value {
    let mut spec = c.config_spec(id, args);
    let root = spec["root"]["path"].as_str().unwrap().to_string();
    let chown = std::process::Command::new("chown")
        .args(["-R", "100000:100000", &root])
        .status()
        .unwrap();
    assert!(chown.success());
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    let maps = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    spec["linux"]["uidMappings"] = maps.clone();
    spec["linux"]["gidMappings"] = maps;
    spec
}

/// A host directory owned by the host's root, bound into a user-namespaced container: plainly
/// its files belong to nobody there and its root cannot write; id-mapped with the container's
/// mappings (mounts[].uidMappings) they are the container's root's and 1000's, and what the
/// container writes lands on the host as uid 0.
fn idmapped_mount(c: &Containerd) {
    use std::os::unix::fs::MetadataExt;
    let dir = c.harness_dir().join("idmap-src");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("f"), "root's\n").unwrap();
    fs::write(dir.join("g"), "1000's\n").unwrap();
    std::os::unix::fs::chown(dir.join("g"), Some(1000), Some(1000)).unwrap();
    let script = "echo f=$(stat -c %u:%g /data/f) g=$(stat -c %u:%g /data/g); \
                  touch /data/new 2>/dev/null && echo write=ok || echo write=denied";
    let bind = |mapped: bool| {
        let mut m = json!({"destination": "/data", "type": "bind",
            "source": dir.to_string_lossy(), "options": ["rbind", "rw"]});
        if mapped {
            let maps = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            m["uidMappings"] = maps.clone();
            m["gidMappings"] = maps;
        }
        m
    };

    let plain = c.new_id("idmapplain");
    let mut spec = userns_spec(c, &plain, &["sh", "-c", script]);
    spec["mounts"].as_array_mut().unwrap().push(bind(false));
    let out = c.run_config(&plain, &spec);
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("f=65534:65534 g=65534:65534") && out.stdout.contains("write=denied"),
        "without an id mapping the host's files are nobody's:\n{out}"
    );

    let mapped = c.new_id("idmapped");
    let mut spec = userns_spec(c, &mapped, &["sh", "-c", script]);
    spec["mounts"].as_array_mut().unwrap().push(bind(true));
    let out = c.run_config(&mapped, &spec);
    if !crt_e2e::util::idmap_supported(&dir) {
        // tmpfs takes id mappings from Linux 6.3 (the cgroup v2 VM runs 6.1 with /tmp on tmpfs).
        assert!(
            !out.success() && out.stderr.contains("cannot be id-mapped on this kernel"),
            "{out}"
        );
        let _ = c.ctr(&["containers", "rm", &mapped]);
        assert_no_leaks(c, &[&plain, &mapped]);
        return;
    }
    assert!(out.success(), "{out}");
    assert!(
        out.stdout.contains("f=0:0 g=1000:1000") && out.stdout.contains("write=ok"),
        "id-mapped, the host's root's files are the container root's:\n{out}"
    );
    let meta = fs::metadata(dir.join("new")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (0, 0),
        "written through the id mapping"
    );

    // Only bind mounts can be id-mapped.
    let bad = c.new_id("idmapbad");
    let mut spec = userns_spec(c, &bad, &["true"]);
    let mut m = bind(true);
    m["type"] = "tmpfs".into();
    m["source"] = "tmpfs".into();
    m["options"] = json!(["nosuid"]);
    spec["mounts"].as_array_mut().unwrap().push(m);
    let out = c.run_config(&bad, &spec);
    assert!(
        !out.success() && out.stderr.contains("only bind mounts can be id-mapped"),
        "{out}"
    );
    let _ = c.ctr(&["containers", "rm", &bad]);
    assert_no_leaks(c, &[&plain, &mapped, &bad]);
}

/// `ctr run --remap-labels`: containerd 2.x's overlay snapshotter hands over layers that stay
/// owned by the host's root, with `uidmap=`/`gidmap=` options; crt mounts the lower layers
/// through an id-mapped mount, so the container's root owns its image without a chown.
/// containerd 1.6's snapshotter ignores the labels: its unmapped rootfs is refused by the
/// container's own root, with the path in the error, and nothing is left behind.
fn remap_labels(c: &Containerd) {
    let id = c.new_id("remap");
    let out = c.run_with(
        &["--remap-labels", "--uidmap", MAP, "--gidmap", MAP],
        &id,
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map; echo owner=$(stat -c %u:%g /etc/passwd); \
                       touch /etc/new && echo write=ok",
        ],
    );
    if c.version == crt_e2e::Version::V2 && !crt_e2e::util::idmap_supported(&c.dir) {
        // tmpfs (the cgroup v2 VM's /tmp) takes id mappings from Linux 6.3.
        assert!(
            !out.success() && out.stderr.contains("cannot be id-mapped on this kernel"),
            "{out}"
        );
    } else if c.version == crt_e2e::Version::V2 {
        assert!(out.success(), "{out}");
        assert_eq!(
            map_lines(&out.stdout).first().map(String::as_str),
            Some("0 100000 65536")
        );
        assert!(
            out.stdout.contains("owner=0:0") && out.stdout.contains("write=ok"),
            "{out}"
        );
    } else {
        assert!(
            !out.success() && out.stderr.contains("Permission denied"),
            "{out}"
        );
    }
    assert_no_leaks(c, &[&id]);
}
