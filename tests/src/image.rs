//! The busybox test image: built once per test process from the host's static busybox with the
//! shared kit's `build-busybox-image.py`, cached on disk by content hash.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::cmd::run_timeout;
use crate::util::{secs, sha256_file};

/// The reference the tarball carries (its `io.containerd.image.name` annotation).
pub const IMAGE: &str = "docker.io/library/busybox:latest";

/// The shared kit directory: `CRT_SHARED_DIR`, else `<repo>/../shared` (CI's layout).
pub fn shared_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CRT_SHARED_DIR") {
        return PathBuf::from(d);
    }
    repo_root().join("..").join("shared")
}

/// The workspace root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    p.canonicalize().unwrap_or(p)
}

/// Static busybox used for the image and for hand-made rootfs dirs (`CRT_TEST_BUSYBOX`).
pub fn busybox_bin() -> PathBuf {
    PathBuf::from(std::env::var("CRT_TEST_BUSYBOX").unwrap_or_else(|_| "/bin/busybox".into()))
}

/// Path of the OCI-layout tarball of the busybox image (built on first use).
pub fn busybox_image_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(build).as_path()
}

fn build() -> PathBuf {
    // a tarball built beforehand (tests/v2vm.sh builds it on the host: python is slow in the VM)
    if let Ok(t) = std::env::var("CRT_TEST_IMAGE_TAR") {
        let t = PathBuf::from(t);
        assert!(
            t.is_file(),
            "CRT_TEST_IMAGE_TAR={} does not exist",
            t.display()
        );
        return t;
    }
    let script = shared_dir().join("containerd2/build-busybox-image.py");
    assert!(
        script.is_file(),
        "{} not found: the shared kit must sit next to the repo (or set CRT_SHARED_DIR)",
        script.display()
    );
    let bb = busybox_bin();
    assert!(
        bb.is_file(),
        "{} not found: apt-get install busybox-static",
        bb.display()
    );
    build_cached(
        &format!("{}-{}", &sha256_file(&bb)[..16], &sha256_file(&script)[..8]),
        "busybox-oci.tar",
        &["busybox".as_ref(), "--busybox".as_ref(), bb.as_os_str()],
        IMAGE,
    )
}

/// Run the kit's image builder with `args` once per `key`: the tarball is cached under
/// `CRT_TEST_IMAGE_CACHE` (default /tmp/crt-e2e-images), built under a name of this build's own
/// (process and sequence number: parallel test binaries, and parallel tests of one binary, race
/// here) and renamed into place.
fn build_cached(key: &str, name: &str, args: &[&std::ffi::OsStr], reference: &str) -> PathBuf {
    let root = PathBuf::from(
        std::env::var("CRT_TEST_IMAGE_CACHE").unwrap_or_else(|_| "/tmp/crt-e2e-images".into()),
    );
    build_cached_in(&root, key, name, args, reference)
}

fn build_cached_in(
    root: &Path,
    key: &str,
    name: &str,
    args: &[&std::ffi::OsStr],
    reference: &str,
) -> PathBuf {
    let script = shared_dir().join("containerd2/build-busybox-image.py");
    let cache = root.join(key);
    let tar = cache.join(name);
    if tar.is_file() {
        return tar;
    }
    std::fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("mkdir {}: {e}", cache.display()));
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = cache.join(format!("build-{}-{seq}.tar", std::process::id()));
    let mut cmd = Command::new("python3");
    cmd.arg(&script).args(args).arg("-o").arg(&tmp);
    let out = run_timeout(cmd, secs(120));
    assert!(out.success(), "building {name} failed:\n{out}");
    assert!(
        out.stdout.contains(reference),
        "image builder did not report {reference}:\n{out}"
    );
    std::fs::rename(&tmp, &tar).unwrap_or_else(|e| panic!("rename to {}: {e}", tar.display()));
    tar
}

/// The pause image's OCI tarball ([`crate::PAUSE_IMAGE`]), built once from the kit's static
/// `libexec/pause` next to `bin_dir` (`CRT_TEST_PAUSE_TAR` names a prebuilt one).
pub fn pause_image_tar(bin_dir: &Path) -> PathBuf {
    if let Ok(t) = std::env::var("CRT_TEST_PAUSE_TAR") {
        return PathBuf::from(t);
    }
    let pause = bin_dir.join("../libexec/pause");
    let pause = if pause.is_file() {
        pause
    } else {
        crate::Version::V2.bin_dir().join("../libexec/pause")
    };
    assert!(
        pause.is_file(),
        "{} not found (the 2.x kit's pause)",
        pause.display()
    );
    build_cached(
        &format!("pause-{}", &sha256_file(&pause)[..16]),
        "pause-oci.tar",
        &["pause".as_ref(), "--pause-bin".as_ref(), pause.as_os_str()],
        crate::PAUSE_IMAGE,
    )
}

/// Applets linked into a hand-made rootfs (for `ctr run --config` specs with an absolute root).
pub const ROOTFS_APPLETS: &[&str] = &[
    "sh", "cat", "echo", "sleep", "grep", "sed", "ls", "wc", "head", "test", "readlink", "stat",
    "id", "true", "false", "mkdir", "touch",
];

/// Creates a minimal busybox rootfs at `dir` (bin/busybox + symlinked applets, empty mount points).
pub fn make_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for d in ["proc", "dev", "sys", "tmp", "etc", "run"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(busybox_bin(), bin.join("busybox")).expect("copy busybox");
    for a in ROOTFS_APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests of one binary asking for the same uncached image at once must all get it (CI
    /// once lost `cri::container_restart` to both building under one per-process name).
    #[test]
    fn concurrent_builds_in_one_process_all_succeed() {
        let root = std::env::temp_dir().join(format!("crt-image-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let bb = busybox_bin();
        let build = || {
            build_cached_in(
                &root,
                "k",
                "busybox-oci.tar",
                &["busybox".as_ref(), "--busybox".as_ref(), bb.as_os_str()],
                IMAGE,
            )
        };
        let tars: Vec<PathBuf> = std::thread::scope(|s| {
            let builders: Vec<_> = (0..4).map(|_| s.spawn(build)).collect();
            builders
                .into_iter()
                .map(|b| b.join().expect("a concurrent build failed"))
                .collect()
        });
        assert!(
            tars.iter().all(|t| t == &tars[0]),
            "different paths: {tars:?}"
        );
        assert!(tars[0].is_file(), "{} missing", tars[0].display());
        let leftovers: Vec<_> = std::fs::read_dir(root.join("k"))
            .expect("read cache dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("build-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "temporary tarballs left: {leftovers:?}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
