//! File-level helpers shared by the v1 and v2 managers.
//!
//! Every knob write goes through [`write_file`], so a failure always says
//! which file, which value and which errno; [`set_knob`] adds the spec field
//! on top when the knob is missing.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use super::{CgroupError, Result};

/// The one place that writes to cgroup files.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    log::debug!("cgroup: {} <- {value:?}", path.display());
    #[cfg(test)]
    record::note(path, value);
    // No O_CREAT: cgroupfs creates every knob itself, so a missing file means
    // the kernel lacks it, and creating one would hide that. O_TRUNC matters
    // only for the tempdir fixtures (runc opens the same way). Rust opens
    // with O_CLOEXEC already.
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        // One write(2) per value: cgroupfs parses each write on its own.
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        })
}

/// Like [`write_file`], but each file stays open in `open` for the next value to it, one
/// write(2) per value still: v1's devices.allow takes one rule per write, and the usual list
/// is about twenty, each open and close of a cgroup file costing as much as the write.
pub(crate) fn write_file_kept(
    open: &mut Vec<(std::path::PathBuf, fs::File)>,
    path: &Path,
    value: &str,
) -> Result<()> {
    log::debug!("cgroup: {} <- {value:?}", path.display());
    #[cfg(test)]
    record::note(path, value);
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    let i = match open.iter().position(|(p, _)| p == path) {
        Some(i) => i,
        None => {
            let f = OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .map_err(err)?;
            open.push((path.to_path_buf(), f));
            open.len() - 1
        }
    };
    open[i].1.write_all(value.as_bytes()).map_err(err)
}

/// Like [`write_file`], to `f`, the file at `path` opened already (a helper's `tasks` files,
/// which the runtime opens for it: cgroups::join_self_through).
pub(crate) fn write_opened(f: &mut fs::File, path: &Path, value: &str) -> Result<()> {
    log::debug!("cgroup: {} <- {value:?}", path.display());
    #[cfg(test)]
    record::note(path, value);
    f.write_all(value.as_bytes())
        .map_err(|source| CgroupError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        })
}

/// Tests observe the order of writes (it matters to the kernel, but a
/// tempdir accepts any order).
#[cfg(test)]
pub(crate) mod record {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    thread_local! {
        static WRITES: RefCell<Vec<(PathBuf, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn note(path: &Path, value: &str) {
        WRITES.with(|w| w.borrow_mut().push((path.to_path_buf(), value.to_string())));
    }

    /// Writes attempted on this thread since the last call.
    pub(crate) fn take() -> Vec<(PathBuf, String)> {
        WRITES.with(|w| std::mem::take(&mut *w.borrow_mut()))
    }
}

pub(crate) fn read_file(path: &Path) -> Result<String> {
    read_small(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A procfs or cgroupfs file, whole. These report a size of 0, so fs::read_to_string (an
/// fstat first) starts from a 32-byte probe and doubles: mountinfo took eight read(2)s, each
/// regenerating text. With room for what they hold it is one read and the one that sees EOF.
fn read_small(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match io::Read::read(&mut f, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Write a knob for a spec field. A missing knob in an existing cgroup dir
/// becomes [`CgroupError::KnobMissing`] naming the field, so the user learns
/// which setting this kernel cannot honour.
pub(crate) fn set_knob(field: &str, path: &Path, value: &str) -> Result<()> {
    write_file(path, value).map_err(|e| knob_error(field, path, e))
}

/// Turn a write error on `path` into KnobMissing when the file (not its
/// cgroup dir) is what is missing.
pub(crate) fn knob_error(field: &str, path: &Path, err: CgroupError) -> CgroupError {
    match &err {
        CgroupError::Write { source, .. }
            if source.kind() == io::ErrorKind::NotFound
                && path.parent().is_some_and(Path::is_dir) =>
        {
            CgroupError::KnobMissing {
                field: field.to_string(),
                path: path.to_path_buf(),
            }
        }
        _ => err,
    }
}

/// Is this error an errno from writing a knob (for write-order retries)?
pub(crate) fn is_write_errno(err: &CgroupError, errno: i32) -> bool {
    matches!(err, CgroupError::Write { source, .. } if source.raw_os_error() == Some(errno))
}

/// Pids listed in `dir/cgroup.procs`. 0 entries (processes outside our pid
/// namespace show as 0) are dropped: signalling pid 0 would hit our own
/// process group.
pub(crate) fn read_procs(dir: &Path) -> Result<Vec<i32>> {
    let path = dir.join("cgroup.procs");
    let text = read_file(&path)?;
    let mut pids = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let pid: i32 = line.parse().map_err(|_| CgroupError::Parse {
            path: path.clone(),
            reason: format!("not a pid: {line:?}"),
        })?;
        if pid > 0 {
            pids.push(pid);
        }
    }
    Ok(pids)
}

fn is_not_found(err: &CgroupError) -> bool {
    matches!(err, CgroupError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

/// Pids of `dir` and every descendant cgroup, sorted and deduplicated. A
/// cgroup that vanishes while we walk (it is being destroyed) has no pids.
pub(crate) fn pids_recursive(dir: &Path) -> Result<Vec<i32>> {
    let mut pids = Vec::new();
    collect_pids(dir, &mut pids)?;
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    match read_procs(dir) {
        Ok(p) => out.extend(p),
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => return Err(e),
    }
    for sub in subdirs(dir)? {
        collect_pids(&sub, out)?;
    }
    Ok(())
}

/// Child cgroups of `dir` (cgroup knobs are regular files, children are
/// directories). A vanished `dir` has none.
fn subdirs(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let read_err = |source| CgroupError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_err)?;
        let ft = entry.file_type().map_err(read_err)?;
        if ft.is_dir() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// Send `signal` to each pid; a pid that already exited (ESRCH) is fine.
pub(crate) fn signal_pids(dir: &Path, pids: &[i32], signal: Signal) -> Result<()> {
    for &pid in pids {
        // Never 0 or negative: kill(2) would read those as process groups
        // (or "everything" for -1).
        if pid <= 0 {
            continue;
        }
        match signal::kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::Signal {
                    path: dir.to_path_buf(),
                    pid,
                    signal,
                    source,
                })
            }
        }
    }
    Ok(())
}

/// mkdir one level; an existing dir is fine. Returns whether we created it.
pub(crate) fn mkdir(path: &Path) -> Result<bool> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(source) => Err(CgroupError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Total time `remove_tree` keeps retrying one busy cgroup: 1+2+4+..+512 ms.
const RMDIR_MAX_WAIT: Duration = Duration::from_millis(1000);

/// Remove `dir` and its descendant cgroups, deepest first. A missing dir is
/// Ok, so destroy is idempotent.
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    // A container's cgroup is nearly always an empty leaf, and listing a cgroup directory
    // costs more than the rmdir (kernfs makes an entry per knob): list only when refused.
    match fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    for sub in subdirs(dir)? {
        remove_tree(&sub)?;
    }
    rmdir_retry(dir)
}

fn rmdir_retry(dir: &Path) -> Result<()> {
    let mut delay = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // EBUSY: tasks still inside (exiting, or forked after kill_all).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && waited < RMDIR_MAX_WAIT => {
                // Best effort: if cgroup.procs cannot be read we still wait
                // and retry, and the final EBUSY is what gets reported.
                match read_procs(dir) {
                    Ok(pids) => signal_pids(dir, &pids, Signal::SIGKILL)?,
                    Err(err) => log::debug!("cgroup: rmdir retry: {err}"),
                }
                thread::sleep(delay);
                waited += delay;
                delay *= 2;
            }
            Err(source) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::*;

    #[test]
    fn reads_a_file_whole_past_the_first_buffer() {
        let d = TempDir::new();
        let p = d.path().join("big");
        let text: String = (0..3000).map(|i| format!("line {i}\n")).collect();
        fs::write(&p, &text).unwrap();
        assert_eq!(read_file(&p).unwrap(), text);
        let mountinfo = read_file(Path::new("/proc/self/mountinfo")).unwrap();
        assert_eq!(
            mountinfo,
            fs::read_to_string("/proc/self/mountinfo").unwrap()
        );
    }

    #[test]
    fn write_file_reports_path_value_and_errno() {
        let tmp = TempDir::new();
        let missing = tmp.path().join("nope/memory.max");
        let err = write_file(&missing, "42").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"42\""), "{msg}");
        assert!(msg.contains(&*missing.to_string_lossy()), "{msg}");
        assert!(msg.contains("No such file"), "{msg}");
    }

    #[test]
    fn write_file_does_not_create_and_truncates() {
        let tmp = TempDir::new();
        let p = tmp.path().join("knob");
        assert!(write_file(&p, "1").is_err());
        assert!(!p.exists());
        fs::write(&p, "longer old value").unwrap();
        write_file(&p, "max").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "max");
    }

    #[test]
    fn set_knob_names_field_when_file_missing() {
        let tmp = TempDir::new();
        let p = tmp.path().join("memory.swap.max");
        let err = set_knob("linux.resources.memory.swap", &p, "0").unwrap_err();
        match err {
            CgroupError::KnobMissing { field, path } => {
                assert_eq!(field, "linux.resources.memory.swap");
                assert_eq!(path, p);
            }
            other => panic!("unexpected {other:?}"),
        }
        // A missing cgroup dir is not a missing knob: keep the write error.
        let p2 = tmp.path().join("gone/memory.max");
        assert!(matches!(
            set_knob("f", &p2, "1").unwrap_err(),
            CgroupError::Write { .. }
        ));
    }

    #[test]
    fn read_procs_skips_zero_and_rejects_garbage() {
        let tmp = TempDir::new();
        fs::write(tmp.path().join("cgroup.procs"), "12\n0\n7\n").unwrap();
        assert_eq!(read_procs(tmp.path()).unwrap(), vec![12, 7]);
        fs::write(tmp.path().join("cgroup.procs"), "12\nx\n").unwrap();
        assert!(matches!(
            read_procs(tmp.path()).unwrap_err(),
            CgroupError::Parse { .. }
        ));
    }

    #[test]
    fn pids_recursive_walks_descendants_and_tolerates_missing() {
        let tmp = TempDir::new();
        let leaf = tmp.path().join("leaf");
        fs::create_dir_all(leaf.join("sub/deeper")).unwrap();
        fs::write(leaf.join("cgroup.procs"), "5\n3\n").unwrap();
        fs::write(leaf.join("sub/cgroup.procs"), "9\n3\n").unwrap();
        fs::write(leaf.join("sub/deeper/cgroup.procs"), "1\n").unwrap();
        assert_eq!(pids_recursive(&leaf).unwrap(), vec![1, 3, 5, 9]);
        assert!(pids_recursive(&tmp.path().join("absent"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn remove_tree_is_deepest_first_and_idempotent() {
        let tmp = TempDir::new();
        let leaf = tmp.path().join("leaf");
        fs::create_dir_all(leaf.join("a/b")).unwrap();
        fs::create_dir_all(leaf.join("c")).unwrap();
        remove_tree(&leaf).unwrap();
        assert!(!leaf.exists());
        assert!(tmp.path().exists());
        remove_tree(&leaf).unwrap();
    }

    #[test]
    fn remove_tree_reports_other_errors() {
        let tmp = TempDir::new();
        let leaf = tmp.path().join("leaf");
        fs::create_dir_all(&leaf).unwrap();
        // A regular file makes rmdir fail with ENOTEMPTY on a normal fs.
        fs::write(leaf.join("f"), "").unwrap();
        let err = remove_tree(&leaf).unwrap_err();
        assert!(matches!(err, CgroupError::Remove { ref path, .. } if *path == leaf));
    }

    #[test]
    fn mkdir_is_idempotent() {
        let tmp = TempDir::new();
        let d = tmp.path().join("d");
        assert!(mkdir(&d).unwrap());
        assert!(!mkdir(&d).unwrap());
        fs::write(tmp.path().join("f"), "").unwrap();
        assert!(mkdir(&tmp.path().join("f")).is_err());
    }

    #[test]
    fn signal_pids_ignores_gone_and_nonpositive() {
        // pid 0 / -1 must never be signalled; a huge pid does not exist.
        signal_pids(Path::new("/x"), &[0, -1, i32::MAX], Signal::SIGKILL).unwrap();
    }
}
