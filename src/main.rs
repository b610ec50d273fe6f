//! `containerd-shim-crt-v1`: the shim containerd starts for `io.containerd.crt.v1`, or — when
//! re-exec'd by the runtime — a container's init helper.

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some(crt_runtime::spawn::INIT_ARG) {
        crt_runtime::init::main();
    }
    std::process::exit(crt_shim::main(&argv));
}
