//! Log URIs in place of fifos (`ctr run --log-uri`, nerdctl): a `binary://` logger gets every
//! line of both streams, its arguments and environment, and is gone after delete; `file://`
//! appends both streams; a logger that cannot start is a clear error that leaves nothing.

use std::path::Path;

use crt_e2e::procs::all_procs;
use crt_e2e::{assert_no_leaks, poll, secs, Containerd};

crt_e2e::scenarios!(log_binary, log_file, log_binary_missing);

const LOGGER: &str = "#!/bin/sh
# containerd's logging contract: stdout on fd 3, stderr on fd 4, readiness on fd 5.
out=\"$2\"
echo \"id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE args=$*\" > \"$out.env\"
env | grep -v '^PWD=' | grep -v '^SHLVL=' | grep -v '^_=' > \"$out.fullenv\"
exec 5>&-
cat <&3 > \"$out.stdout\" &
cat <&4 > \"$out.stderr\" &
wait
";

const SCRIPT: &str = "for i in $(seq 1 2000); do echo line$i; done; echo err1 >&2; exit 4";

fn write_logger(dir: &Path) -> String {
    let p = dir.join("logger.sh");
    std::fs::write(&p, LOGGER).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p.to_string_lossy().into_owned()
}

fn logger_running(script: &str) -> bool {
    all_procs().iter().any(|p| p.cmdline().contains(script))
}

fn log_binary(c: &Containerd) {
    let dir = c.harness_dir();
    let script = write_logger(&dir);
    let base = dir.join("out");
    let id = c.new_id("logbin");
    let uri = format!("binary://{script}?out={}", base.display());
    let out = c.run_with(&["--log-uri", &uri], &id, &["sh", "-c", SCRIPT]);
    assert_eq!(out.code, Some(4), "{out}");
    let read = |ext: &str| {
        std::fs::read_to_string(format!("{}.{ext}", base.display())).unwrap_or_default()
    };
    let stdout = read("stdout");
    assert_eq!(
        stdout.lines().count(),
        2000,
        "every line reaches the logger"
    );
    assert!(stdout.starts_with("line1\n") && stdout.ends_with("line2000\n"));
    assert_eq!(read("stderr"), "err1\n");
    assert_eq!(
        read("env").trim(),
        format!("id={id} ns=default args=out {}", base.display())
    );
    let env = read("fullenv");
    assert_eq!(
        env.lines().count(),
        2,
        "only CONTAINER_ID and CONTAINER_NAMESPACE:\n{env}"
    );
    assert!(
        !logger_running(&script),
        "the logger must be gone once the task is deleted"
    );
    assert_no_leaks(c, &[&id]);
}

fn log_file(c: &Containerd) {
    let dir = c.harness_dir();
    let file = dir.join("logs/sub/c.log");
    let uri = format!("file://{}", file.display());
    for round in 1..=2 {
        let id = c.new_id("logfile");
        let out = c.run_with(&["--log-uri", &uri], &id, &["sh", "-c", SCRIPT]);
        assert_eq!(out.code, Some(4), "{out}");
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("line")).count(),
            2000 * round,
            "file:// appends every stdout line, run {round}"
        );
        assert_eq!(text.lines().filter(|l| *l == "err1").count(), round);
        assert_no_leaks(c, &[&id]);
    }
}

fn log_binary_missing(c: &Containerd) {
    let id = c.new_id("lognone");
    let out = c.run_with(
        &["--log-uri", "binary:///nonexistent/logger"],
        &id,
        &["true"],
    );
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("exec /nonexistent/logger") && out.stderr.contains("No such file"),
        "the error must name the logger:\n{out}"
    );
    // ctr leaves the container record behind after a failed task create.
    let _ = c.ctr(&["containers", "rm", &id]);
    poll(secs(10), || {
        (!c.tasks().iter().any(|t| t.id == id)).then_some(())
    });
    assert_no_leaks(c, &[&id]);
}
