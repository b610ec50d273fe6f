//! Small helpers: timeouts scaled for the slow cgroup v2 VM, polling, temp dirs, mountinfo.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Factor applied to every timeout. `CRT_TEST_TIMEOUT_SCALE` wins; inside the QEMU cgroup v2 VM
/// (`V2VM=1`, where a fork+exec is ~50x slower than on the host) it defaults to 10.
pub fn timeout_scale() -> u64 {
    if let Some(n) = std::env::var("CRT_TEST_TIMEOUT_SCALE")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    if in_v2vm() {
        10
    } else {
        1
    }
}

/// True inside `run-in-v2-vm.sh`.
pub fn in_v2vm() -> bool {
    std::env::var("V2VM").map(|v| v == "1").unwrap_or(false)
}

/// `n` seconds, scaled by [`timeout_scale`].
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n * timeout_scale())
}

/// Calls `f` until it returns `Some`, or `timeout` passes (then `None`). Never a timing assertion:
/// callers use it to wait for something that must happen eventually, with a generous deadline.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

fn random_suffix(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes
        .iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect()
}

/// Creates a fresh directory `<prefix><6 random chars>` (like `mktemp -d`) and returns it with its
/// random part. Short on purpose: containerd 2.x shim sockets live in `<dir>/s/<64 hex>` and a unix
/// socket path is limited to 107 bytes.
pub fn make_temp_dir(prefix: &str) -> (PathBuf, String) {
    for _ in 0..100 {
        let suffix = random_suffix(6);
        let p = PathBuf::from(format!("{prefix}{suffix}"));
        match fs::create_dir(&p) {
            Ok(()) => return (p, suffix),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", p.display()),
        }
    }
    panic!("could not create a temp dir {prefix}XXXXXX");
}

/// Hex SHA-256 of `data` (via coreutils `sha256sum`, to stay std-only).
pub fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn sha256sum");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(data)
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Hex SHA-256 of a file's content.
pub fn sha256_file(path: &Path) -> String {
    let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    sha256_hex(&data)
}

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Path inside the mounted filesystem that is the root of this mount (field 4).
    pub root: String,
    /// Mount point (field 5), octal escapes decoded.
    pub mount_point: String,
    /// Per-mount options (field 6), e.g. `rw,nosuid`.
    pub mount_opts: String,
    pub fs_type: String,
    pub source: String,
    pub super_opts: String,
    /// The raw line, for messages.
    pub line: String,
}

/// Decodes the `\040`-style escapes used in /proc mount tables.
pub fn unescape_mount_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text (`/proc/<pid>/mountinfo` format).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let mut v = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 2 {
            continue;
        }
        v.push(MountInfo {
            root: unescape_mount_field(l[3]),
            mount_point: unescape_mount_field(l[4]),
            mount_opts: l[5].to_string(),
            fs_type: r[0].to_string(),
            source: unescape_mount_field(r[1]),
            super_opts: r.get(2).unwrap_or(&"").to_string(),
            line: line.to_string(),
        });
    }
    v
}

/// The calling process's mount table.
pub fn host_mounts() -> Vec<MountInfo> {
    parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
}

/// True when `path` has a component equal to `name` (`/a/b/name/c`, `name`, ...).
pub fn has_component(path: &str, name: &str) -> bool {
    path.split('/').any(|c| c == name)
}

/// Last `n` lines of a file (for logs in failure messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Sends `sig` (e.g. "KILL", "TERM") to `pid` with kill(1). Returns whether kill succeeded.
pub fn kill(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether the filesystem of `path` takes id-mapped mounts: all this suite uses do on the
/// kernels it runs on, except tmpfs before Linux 6.3.
pub fn idmap_supported(path: &std::path::Path) -> bool {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .unwrap();
    if String::from_utf8_lossy(&out.stdout).trim() != "tmpfs" {
        return true;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 3)
}

/// Unshare `flags` (CLONE_NEWNS among them) and make every mount private, so nothing this
/// process mounts reaches the host. Raw syscalls only: safe between fork and exec.
pub fn unshare_private_mounts(flags: libc::c_int) -> std::io::Result<()> {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: plain syscalls with constant arguments.
    let failed = unsafe {
        libc::unshare(flags) != 0
            || libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Make `cmd` run in a mount namespace of its own where a hybrid host's
/// /sys/fs/cgroup/unified is unmounted (Debian 12's crun refuses hybrid cgroups).
pub fn in_v1_view(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: raw syscalls only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            unshare_private_mounts(libc::CLONE_NEWNS)?;
            // Not a hybrid host: nothing to hide.
            libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH);
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parses_and_unescapes() {
        let t = "44 27 0:39 / /tmp/a\\040b/rootfs rw,relatime - overlay overlay rw,lowerdir=/x\n\
                 59 92 0:53 /bus /proc/bus ro,nosuid - proc proc rw\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, "/tmp/a b/rootfs");
        assert_eq!(m[0].fs_type, "overlay");
        assert_eq!(m[0].super_opts, "rw,lowerdir=/x");
        assert_eq!(m[1].root, "/bus");
        assert_eq!(m[1].mount_opts, "ro,nosuid");
    }

    #[test]
    fn component_match_is_exact() {
        assert!(has_component("/sys/fs/cgroup/memory/default/abc", "abc"));
        assert!(!has_component("/sys/fs/cgroup/memory/default/abcd", "abc"));
    }
}
