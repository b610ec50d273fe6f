//! Paths inside the rootfs, resolved by the kernel with RESOLVE_IN_ROOT so that a symlink in the
//! image (`/proc -> /`, `/dev -> /etc`) can never send a mount outside the container's root.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Lexically clean a container path into components: no "", ".", and ".." pops (clamped at /).
pub fn components(path: &str) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

pub fn openat2_in_root(root: &OwnedFd, rel: &str, flags: i32) -> std::io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    let c = CString::new(rel).map_err(std::io::Error::other)?;
    // SAFETY: open_how is plain data; zero is "no flags".
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: plain syscall on a valid fd and NUL-terminated path.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Open (creating as needed) a directory inside the root; returns an O_PATH fd. A dangling
/// symlink on the way is followed as the kernel would inside the root, and its target created
/// (runc does the same), so `/var/run -> /run` style images take mounts below such links.
pub fn mkdir_all(root: &OwnedFd, path: &str) -> std::io::Result<OwnedFd> {
    mkdir_all_depth(root, path, 0)
}

fn mkdir_all_depth(root: &OwnedFd, path: &str, depth: u32) -> std::io::Result<OwnedFd> {
    if depth > 40 {
        return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
    }
    let comps = components(path);
    let mut cur = openat2_in_root(root, ".", libc::O_PATH | libc::O_DIRECTORY)?;
    let mut done = String::new();
    for c in comps {
        let parent = done.clone();
        if !done.is_empty() {
            done.push('/');
        }
        done.push_str(c);
        match openat2_in_root(root, &done, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => cur = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let name = CString::new(c).map_err(std::io::Error::other)?;
                // SAFETY: mkdirat on a valid dir fd.
                let r = unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o755) };
                if r < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(e);
                    }
                    // Something is there but does not resolve: a dangling symlink. Create its
                    // target, resolved inside the root, then go on through it.
                    if let Ok(target) = nix::fcntl::readlinkat(&cur, c) {
                        let target = target.to_string_lossy().into_owned();
                        let inside = if target.starts_with('/') {
                            target
                        } else {
                            format!("{parent}/{target}")
                        };
                        mkdir_all_depth(root, &inside, depth + 1)?;
                    }
                }
                cur = openat2_in_root(root, &done, libc::O_PATH | libc::O_DIRECTORY)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

/// Split into (parent, name); `name` is empty for the root itself.
pub fn split(path: &str) -> (String, String) {
    let mut comps = components(path);
    let name = comps.pop().unwrap_or_default().to_string();
    (comps.join("/"), name)
}

/// Open an existing path, or create it as a directory (`dir`) or an empty file. O_PATH fd.
pub fn ensure(root: &OwnedFd, path: &str, dir: bool) -> std::io::Result<OwnedFd> {
    let rel = components(path).join("/");
    match openat2_in_root(root, &rel, libc::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    if dir {
        return mkdir_all(root, &rel);
    }
    let (parent, name) = split(&rel);
    let pfd = mkdir_all(root, &parent)?;
    let dfd = openat2_in_root(root, &parent, libc::O_DIRECTORY | libc::O_RDONLY)?;
    drop(pfd);
    let cname = CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: openat on a valid dir fd; O_NOFOLLOW so a racing symlink is refused, not followed.
    let fd = unsafe {
        libc::openat(
            dfd.as_raw_fd(),
            cname.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o644,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    } else {
        // SAFETY: fd was just returned by the kernel.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    openat2_in_root(root, &rel, libc::O_PATH)
}

/// The path through which mount(2) reaches what an fd refers to.
pub fn proc_fd(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_components() {
        assert_eq!(components("/a//b/./c/"), vec!["a", "b", "c"]);
        assert_eq!(components("/../../etc"), vec!["etc"]);
        assert_eq!(components("/a/../b"), vec!["b"]);
        assert_eq!(split("/dev/pts"), ("dev".to_string(), "pts".to_string()));
    }

    #[test]
    fn symlinks_resolve_inside_root() {
        let dir = std::env::temp_dir().join(format!("crt-paths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real")).unwrap();
        // An absolute symlink pointing "outside" must land inside the root.
        std::os::unix::fs::symlink("/real", dir.join("escape")).unwrap();
        std::os::unix::fs::symlink("/../../../../tmp", dir.join("up")).unwrap();
        std::fs::create_dir(dir.join("tmp")).unwrap();
        let root: OwnedFd = std::fs::File::open(&dir).unwrap().into();
        ensure(&root, "/escape/sub", true).unwrap();
        assert!(dir.join("real/sub").is_dir());
        ensure(&root, "/up/file", false).unwrap();
        assert!(
            dir.join("tmp/file").is_file(),
            "`up` must resolve to <root>/tmp"
        );
        // Dangling links: their targets are created inside the root, never outside.
        let outside = dir.join("outside-never");
        std::os::unix::fs::symlink(&outside, dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../new/dir", dir.join("rel")).unwrap();
        ensure(&root, "/abs/x", true).unwrap();
        let inside = dir.join(outside.strip_prefix("/").unwrap()).join("x");
        assert!(inside.is_dir(), "{} must exist", inside.display());
        assert!(!outside.exists(), "nothing is created outside the root");
        ensure(&root, "/rel/y", false).unwrap();
        assert!(dir.join("new/dir/y").is_file());
        std::os::unix::fs::symlink("loop", dir.join("loop")).unwrap();
        assert!(
            ensure(&root, "/loop/z", true).is_err(),
            "a symlink loop ends in an error"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
