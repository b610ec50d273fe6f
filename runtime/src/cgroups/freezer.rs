//! Freezing a container's processes (Pause/Resume): the v1 freezer controller's freezer.state,
//! or v2's cgroup.freeze. Both are asynchronous in the kernel, so the call waits until the
//! cgroup reports the new state.

use std::path::Path;
use std::time::{Duration, Instant};

use super::fs::{read_file, write_file};
use super::{CgroupError, Manager, Result};

const TIMEOUT: Duration = Duration::from_secs(5);

impl Manager {
    /// Freeze (`true`) or thaw every process of the container.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        match self {
            Manager::V1(m) => {
                let leaf = m
                    .leaf_of("freezer")
                    .ok_or_else(|| CgroupError::ControllerMissing {
                        field: "pause".to_string(),
                        controller: "freezer".to_string(),
                        dir: Path::new("/sys/fs/cgroup").to_path_buf(),
                    })?;
                let want = if frozen { "FROZEN" } else { "THAWED" };
                let file = leaf.join("freezer.state");
                // A task in an uninterruptible sleep can leave the cgroup FREEZING: writing again
                // retries the freeze, as runc does.
                wait(&file, |s| s.trim() == want, || write_file(&file, want))
            }
            Manager::V2(m) => {
                let file = m.leaf().join("cgroup.freeze");
                write_file(&file, if frozen { "1" } else { "0" })?;
                let events = m.leaf().join("cgroup.events");
                let want = if frozen { "frozen 1" } else { "frozen 0" };
                wait(&events, |s| s.lines().any(|l| l.trim() == want), || Ok(()))
            }
        }
    }
}

fn wait(
    file: &Path,
    done: impl Fn(&str) -> bool,
    mut again: impl FnMut() -> Result<()>,
) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    again()?;
    loop {
        if done(&read_file(file)?) {
            return Ok(());
        }
        if start.elapsed() > TIMEOUT {
            return Err(CgroupError::Parse {
                path: file.to_path_buf(),
                reason: format!("the cgroup did not reach the requested state within {TIMEOUT:?}"),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
        again()?;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::TempDir;
    use super::super::{v1, v2, Manager};

    #[test]
    fn v2_writes_freeze_and_waits_for_events() {
        let t = TempDir::with_leaf();
        let d = t.path().to_path_buf();
        std::fs::write(d.join("leaf/cgroup.events"), "populated 1\nfrozen 1\n").unwrap();
        std::fs::write(d.join("leaf/cgroup.freeze"), "0").unwrap();
        let m = Manager::V2(v2::Manager::new(d.clone(), d.join("leaf")));
        m.freeze(true).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("leaf/cgroup.freeze")).unwrap(),
            "1"
        );
    }

    #[test]
    fn v1_writes_state_and_missing_freezer_is_an_error() {
        let t = TempDir::with_leaf();
        let d = t.path().to_path_buf();
        let h = |c: &str| v1::Hierarchy {
            mount_point: d.clone(),
            controllers: vec![c.to_string()],
            leaf: d.join("leaf"),
        };
        std::fs::write(d.join("leaf/freezer.state"), "FROZEN").unwrap();
        Manager::V1(v1::Manager::new(vec![h("freezer")]))
            .freeze(false)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("leaf/freezer.state")).unwrap(),
            "THAWED"
        );
        let e = Manager::V1(v1::Manager::new(vec![h("memory")]))
            .freeze(true)
            .unwrap_err();
        assert!(e.to_string().contains("freezer"), "{e}");
    }
}
