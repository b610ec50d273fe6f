//! `start` and `delete`, the two short-lived invocations containerd makes of the shim binary.

use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use sha2::{Digest, Sha256};

use crate::args::Args;

const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";

/// containerd 2.3+ sends BootstrapParams on stdin; older ones an options Any or nothing. A
/// legacy Any also decodes as BootstrapParams, so only trust one whose id and namespace match.
pub fn bootstrap(stdin: &[u8], a: &Args) -> Option<BootstrapParams> {
    if stdin.is_empty() {
        return None;
    }
    let p = BootstrapParams::parse_from_bytes(stdin).ok()?;
    (p.instance_id == a.id && p.namespace == a.namespace).then_some(p)
}

/// Containers of one pod share a shim: group by the sandbox id (or runc's group annotation).
pub fn group_id(config: Option<&[u8]>, id: &str) -> String {
    let Some(data) = config else {
        return id.to_string();
    };
    // Only the annotations: the rest of the spec is skipped, not built into a tree.
    #[derive(serde::Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    let Ok(v) = serde_json::from_slice::<Annotated>(data) else {
        return id.to_string();
    };
    [
        "io.containerd.runc.v2.group",
        "io.kubernetes.cri.sandbox-id",
    ]
    .iter()
    .find_map(|key| v.annotations.get(*key).filter(|g| !g.is_empty()))
    .cloned()
    .unwrap_or_else(|| id.to_string())
}

/// runc's scheme: sha256 of `<containerd address>/<namespace>/<group>` in the socket dir.
pub fn socket_path(dir: &str, address: &str, ns: &str, group: &str) -> PathBuf {
    let joined = Path::new(address).join(ns).join(group);
    let hash = Sha256::digest(joined.to_string_lossy().as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    Path::new(dir).join(hex)
}

pub fn start(a: &Args) -> Result<(), String> {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let boot = bootstrap(&stdin, a);
    // containerd 1.6 sends the runtime options only here (an Any), never with Create: check
    // them now, so a bad table fails the container with its reason.
    let opts = match &boot {
        Some(_) => crate::options::CrtOptions::default(),
        None if stdin.is_empty() => crate::options::CrtOptions::default(),
        None => {
            let any = Any::parse_from_bytes(&stdin)
                .map_err(|e| format!("runtime options on stdin: {e}"))?;
            crate::options::parse(Some(&any))?
        }
    };
    let bundle = std::env::current_dir().map_err(|e| format!("cwd: {e}"))?;
    let dir = boot
        .as_ref()
        .and_then(|b| b.socket_dir.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| DEFAULT_SOCKET_DIR.to_string());
    let config = std::fs::read(bundle.join("config.json")).ok();
    let group = group_id(config.as_deref(), &a.id);
    let path = socket_path(&dir, &a.address, &a.namespace, &group);
    let address = format!("unix://{}", path.display());

    if UnixStream::connect(&path).is_ok() {
        // A shim for this group is serving already: hand out its address.
        write_address(&bundle, &address)?;
        return reply(boot.is_some(), &address);
    }
    // A new shim: its first container's network namespace, where it gets a new one, is made
    // from here on, beside the rest of `start` and the daemon's start-up (spare_net.rs).
    let spare_net = config.as_deref().and_then(crt_runtime::spare_net::prepare);
    let _ = std::fs::remove_file(&path);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create socket dir {dir}: {e}"))?;
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?;
    // The daemon's events connection, made before the fork: containerd's side of it (its
    // accept, a new handler) then runs beside the rest of `start`, not beside the first
    // Create, which containerd sends as soon as `start` has answered.
    let events = std::env::var("TTRPC_ADDRESS")
        .ok()
        .filter(|s| !s.is_empty())
        .and_then(|a| crate::events::connect(&a));
    // `start` is single-threaded, so the daemon is a plain fork of it: no exec and no libc
    // start-up (about 0.5 ms), which containerd's first Create would otherwise wait for.
    // SAFETY: fork in a process with one thread; the child goes on as that process would.
    match unsafe { libc::fork() } {
        -1 => {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_file(&path);
            return Err(format!("fork shim daemon: {e}"));
        }
        0 => {
            let d = crate::args::Args {
                socket: path.to_string_lossy().into_owned(),
                action: "serve".to_string(),
                ..a.clone()
            };
            if let Some(spare) = spare_net {
                crt_runtime::spare_net::offer(spare);
            }
            std::process::exit(daemonize(d, &bundle, opts.log_level, listener, events));
        }
        _ => {}
    }
    drop(listener);
    drop(events);
    drop(spare_net);
    write_address(&bundle, &address)?;
    reply(boot.is_some(), &address)
}

/// The forked daemon's side of `start`: its own session, its stdio off containerd's pipes (which
/// containerd reads to EOF), then the daemon proper.
fn daemonize(
    d: Args,
    bundle: &Path,
    level: Option<log::LevelFilter>,
    listener: UnixListener,
    events: Option<UnixStream>,
) -> i32 {
    // SAFETY: setsid with no arguments.
    if unsafe { libc::setsid() } < 0 {
        return 1;
    }
    // First, in our session: the zygote's exec and start-up (about 1 ms on a VM) is what the
    // first Create waits for, so it starts before anything else of ours.
    let zygote = crt_runtime::zygote::start(&bundle.to_string_lossy());
    // SAFETY: open and dup2 with valid arguments.
    let detached = unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        null >= 0 && (0..3).all(|fd| libc::dup2(null, fd) == fd) && libc::close(null) == 0
    };
    if !detached {
        return 1;
    }
    if let Some(level) = level {
        std::env::set_var(crate::options::LOG_LEVEL_ENV, level.as_str());
    }
    match crate::daemon::run(&d, listener.into_raw_fd(), zygote, events) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("shim daemon: {e}");
            1
        }
    }
}

/// containerd 1.6 reconnects after a restart from `<bundle>/address`.
fn write_address(bundle: &Path, address: &str) -> Result<(), String> {
    std::fs::write(bundle.join("address"), address).map_err(|e| format!("write address file: {e}"))
}

fn reply(bootstrapped: bool, address: &str) -> Result<(), String> {
    let mut out = std::io::stdout();
    if bootstrapped {
        // containerd 2.3+: a protobuf BootstrapResult; version 3 lets pod containers attach to
        // this shim without a `start` each.
        let r = BootstrapResult {
            version: 3,
            address: address.to_string(),
            protocol: "ttrpc".to_string(),
            ..Default::default()
        };
        let bytes = r
            .write_to_bytes()
            .map_err(|e| format!("encode reply: {e}"))?;
        out.write_all(&bytes).map_err(|e| e.to_string())?;
    } else {
        // containerd 1.6 reads the whole output as the address (task API v2).
        out.write_all(address.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

/// `-info` (containerd 2.x, CRI at startup): a protobuf RuntimeInfo with the OCI features.
pub fn info() -> Result<(), String> {
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let features =
        serde_json::to_vec(&crt_runtime::features::features()).map_err(|e| e.to_string())?;
    let r = RuntimeInfo {
        name: "io.containerd.crt.v1".to_string(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            revision: option_env!("CRT_REVISION").unwrap_or("unknown").to_string(),
            ..Default::default()
        }),
        features: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
                .to_string(),
            value: features,
            ..Default::default()
        }),
        ..Default::default()
    };
    let bytes = r.write_to_bytes().map_err(|e| e.to_string())?;
    let mut out = std::io::stdout();
    out.write_all(&bytes).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}

/// Clean up one container after its shim went away, and say how it ended.
pub fn delete(a: &Args) -> Result<(), String> {
    let bundle = if a.bundle.is_empty() {
        std::env::current_dir().map_err(|e| format!("cwd: {e}"))?
    } else {
        PathBuf::from(&a.bundle)
    };
    let cleaned = crt_runtime::cleanup(&bundle);
    // Whatever the clean-up says: a dead shim's socket is of no use to anyone.
    remove_dead_socket(&bundle);
    let (pid, status) = cleaned.map_err(|e| format!("cleanup {}: {e}", a.id))?;
    let mut r = DeleteResponse::new();
    r.pid = pid.max(0) as u32;
    r.exit_status = status.map(|s| s as u32).unwrap_or(137);
    r.exited_at = MessageField::some(crate::events::now());
    let bytes = r.write_to_bytes().map_err(|e| format!("encode: {e}"))?;
    let mut out = std::io::stdout();
    out.write_all(&bytes).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}

/// A shim killed with SIGKILL leaves its socket file; nobody else would remove it.
fn remove_dead_socket(bundle: &Path) {
    let Ok(addr) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let Some(path) = addr.trim().strip_prefix("unix://") else {
        return;
    };
    if let Err(e) = UnixStream::connect(path) {
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_is_stable_per_group() {
        let a = socket_path("/s", "/run/c.sock", "default", "pod1");
        assert_eq!(a, socket_path("/s", "/run/c.sock", "default", "pod1"));
        assert_ne!(a, socket_path("/s", "/run/c.sock", "k8s.io", "pod1"));
        assert_eq!(a.parent(), Some(Path::new("/s")));
        assert_eq!(a.file_name().unwrap().len(), 64);
    }

    #[test]
    fn bootstrap_only_when_id_and_namespace_match() {
        let a = Args {
            id: "c1".into(),
            namespace: "default".into(),
            ..Default::default()
        };
        let mut p = BootstrapParams::new();
        p.instance_id = "c1".into();
        p.namespace = "default".into();
        p.socket_dir = Some("/tmp/x/s".into());
        let bytes = p.write_to_bytes().unwrap();
        assert_eq!(
            bootstrap(&bytes, &a).unwrap().socket_dir.as_deref(),
            Some("/tmp/x/s")
        );
        p.instance_id = "other".into();
        assert!(bootstrap(&p.write_to_bytes().unwrap(), &a).is_none());
        assert!(bootstrap(&[], &a).is_none());
    }

    #[test]
    fn group_from_annotations() {
        let pod = br#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod9"}}"#;
        assert_eq!(group_id(Some(pod), "c1"), "pod9");
        assert_eq!(group_id(Some(b"{}"), "c1"), "c1");
        assert_eq!(group_id(None, "c1"), "c1");
    }
}
