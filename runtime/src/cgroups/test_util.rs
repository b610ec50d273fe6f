//! Test fixtures: a fake cgroup root in a tempdir, described to the code
//! through generated mountinfo text exactly like a real host.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::Host;

/// A directory removed on drop (the crate has no tempfile dependency).
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "crt-cgroups-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create test tempdir");
        TempDir(p)
    }

    /// With an empty `leaf/` inside, for tests that build a manager on a plain directory.
    pub(crate) fn with_leaf() -> TempDir {
        let d = TempDir::new();
        fs::create_dir_all(d.path().join("leaf")).expect("create leaf");
        d
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn escape(p: &Path) -> String {
    p.to_string_lossy().replace(' ', "\\040")
}

/// A fake host whose cgroup root is a tempdir.
pub(crate) struct Fixture {
    _tmp: TempDir,
    pub root: PathBuf,
    pub host: Host,
}

impl Fixture {
    /// v1 hierarchies mounted at `<root>/<name>`; "systemd" is the named
    /// name=systemd hierarchy, other names are comma-joined controllers.
    /// Our own cgroup is "/" everywhere.
    pub(crate) fn v1(names: &[&str]) -> Fixture {
        Fixture::v1_with_own(names, "/")
    }

    pub(crate) fn v1_with_own(names: &[&str], own: &str) -> Fixture {
        let tmp = TempDir::new();
        let root = tmp.path().to_path_buf();
        let mut mountinfo = format!(
            "31 23 0:28 / {} rw,relatime - tmpfs tmpfs rw\n",
            escape(&root)
        );
        let mut self_cgroup = String::new();
        for (i, name) in names.iter().enumerate() {
            let mp = root.join(name);
            fs::create_dir_all(&mp).expect("fixture hierarchy");
            let opts = if *name == "systemd" {
                "name=systemd".to_string()
            } else {
                (*name).to_string()
            };
            mountinfo.push_str(&format!(
                "{} 31 0:{} / {} rw,relatime - cgroup cgroup rw,{opts}\n",
                40 + i,
                40 + i,
                escape(&mp)
            ));
            self_cgroup.push_str(&format!("{}:{opts}:{own}\n", i + 1));
        }
        self_cgroup.push_str("0::/\n");
        let host = Host::parse_with_root(&mountinfo, &self_cgroup, &root).expect("fixture host");
        Fixture {
            _tmp: tmp,
            root,
            host,
        }
    }

    /// Pure v2: cgroup2 at the root; our own cgroup is "/".
    pub(crate) fn v2() -> Fixture {
        let tmp = TempDir::new();
        let root = tmp.path().to_path_buf();
        let mountinfo = format!(
            "24 23 0:22 / {} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
            escape(&root)
        );
        let host = Host::parse_with_root(&mountinfo, "0::/\n", &root).expect("fixture host");
        let fx = Fixture {
            _tmp: tmp,
            root,
            host,
        };
        // Like a root cgroup with no controllers to hand out.
        fx.put("cgroup.controllers", "");
        fx.put("cgroup.subtree_control", "");
        fx
    }

    /// Create (or overwrite) a knob file, making parent dirs.
    pub(crate) fn put(&self, rel: &str, content: &str) {
        let p = self.root.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).expect("fixture dir");
        }
        fs::write(&p, content).expect("fixture file");
    }

    /// Create empty knob files under `dir` (relative to the root).
    pub(crate) fn knobs(&self, dir: &str, files: &[&str]) {
        for f in files {
            self.put(&format!("{dir}/{f}"), "");
        }
    }

    pub(crate) fn get(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }
}
