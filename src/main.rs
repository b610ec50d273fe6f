//! `containerd-shim-crt-v1`: the shim containerd starts for `io.containerd.crt.v1`, or — when
//! re-exec'd by the runtime — a container's init helper or the zygote that forks them.

// Unit-tested on every target; the allocator only where it helps (musl).
#[cfg_attr(not(target_env = "musl"), allow(dead_code))]
mod block_cache;

#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: block_cache::BlockCache = block_cache::BlockCache::new();

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match argv.first().map(String::as_str) {
        Some(crt_runtime::spawn::INIT_ARG) => crt_runtime::init::main(),
        Some(crt_runtime::zygote::ZYGOTE_ARG) => crt_runtime::zygote::main(),
        _ => {}
    }
    std::process::exit(crt_shim::main(&argv));
}
