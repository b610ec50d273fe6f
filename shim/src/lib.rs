//! crt's containerd shim v2: `start`/`delete`, and the daemon serving the Task API.

pub mod args;
mod argv;
mod daemon;
mod events;
mod io;
mod logger;
mod logging;
mod metrics;
mod oom;
mod options;
pub mod protocol;
mod server;
mod service;

/// Everything `main` does for a shim invocation; returns the process exit code.
pub fn main(argv: &[String]) -> i32 {
    let a = match args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("containerd-shim-crt-v1: {e}");
            return 2;
        }
    };
    if a.version {
        println!("containerd-shim-crt-v1:");
        println!("  Version:  {}", env!("CARGO_PKG_VERSION"));
        println!(
            "  Revision: {}",
            option_env!("CRT_REVISION").unwrap_or("unknown")
        );
        println!(
            "  Rust:     {}",
            option_env!("CRT_RUSTC").unwrap_or("unknown")
        );
        return 0;
    }
    if a.info {
        return match protocol::info() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("containerd-shim-crt-v1: -info: {e}");
                1
            }
        };
    }
    let res = match a.action.as_str() {
        "start" => protocol::start(&a),
        "delete" => protocol::delete(&a),
        "features" => {
            println!("{:#}", crt_runtime::features::features());
            Ok(())
        }
        "" => Err("no action given (start, delete)".to_string()),
        other => Err(format!("unknown action {other:?}")),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-crt-v1: {e}");
            1
        }
    }
}
