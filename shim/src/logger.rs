//! Logs to the bundle's `log` fifo, which containerd copies into its own log. Non-blocking: a
//! full or readerless fifo drops lines instead of stalling the shim.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

struct FifoLogger {
    out: Mutex<Option<std::fs::File>>,
    id: String,
}

impl log::Log for FifoLogger {
    /// The level is log's max level: `-debug`, or a runtime option's LogLevel.
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let line = format!(
            "time={}.{:06} level={} runtime=io.containerd.crt.v1 id={} pid={} msg={:?}\n",
            now.as_secs(),
            now.subsec_micros(),
            r.level().as_str().to_lowercase(),
            self.id,
            std::process::id(),
            r.args().to_string()
        );
        if let Ok(mut g) = self.out.lock() {
            if let Some(f) = g.as_mut() {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// `level`: a LogLevel from the runtime options `start` got (containerd 1.6), else `-debug`.
pub fn init(bundle: &std::path::Path, id: &str, debug: bool, level: Option<log::LevelFilter>) {
    let out = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(bundle.join("log"))
        .ok();
    let level = level.unwrap_or(if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
    let logger = FifoLogger {
        out: Mutex::new(out),
        id: id.to_string(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
