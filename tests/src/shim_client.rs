//! Calls on a shim's Task service over its ttrpc socket, the way containerd makes them, for the
//! methods `ctr` has no command for (Update reaches a shim only through CRI or the API), or
//! calls only on some paths (CloseIO: `ctr` sends it for stdin's end without a terminal only).

use std::path::Path;

use containerd_shim_protos::api::{CloseIORequest, UpdateTaskRequest, WaitRequest};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::TaskClient;

fn client(socket: &Path) -> Result<TaskClient, String> {
    let c = ttrpc::Client::connect(&format!("unix://{}", socket.display()))
        .map_err(|e| format!("connect {}: {e}", socket.display()))?;
    Ok(TaskClient::new(c))
}

fn ctx(namespace: &str) -> ttrpc::context::Context {
    let mut ctx = ttrpc::context::with_timeout(30_000_000_000);
    ctx.add(
        "containerd-namespace-ttrpc".to_string(),
        namespace.to_string(),
    );
    ctx
}

/// Task.Update with `resources` (OCI LinuxResources JSON), as CRI's UpdateContainerResources
/// sends it. The shim answers on the v3 name; containerd 1.6 uses v2, which crt serves too.
pub fn update(
    socket: &Path,
    namespace: &str,
    id: &str,
    resources: &serde_json::Value,
) -> Result<(), String> {
    let req = UpdateTaskRequest {
        id: id.to_string(),
        resources: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                .to_string(),
            value: resources.to_string().into_bytes(),
            ..Default::default()
        }),
        ..Default::default()
    };
    client(socket)?
        .update(ctx(namespace), &req)
        .map(|_| ())
        .map_err(|e| format!("Task.Update {id}: {e}"))
}

/// Task.CloseIO of the process's stdin (`exec_id` empty: the init).
pub fn close_stdin(socket: &Path, namespace: &str, id: &str, exec_id: &str) -> Result<(), String> {
    let req = CloseIORequest {
        id: id.to_string(),
        exec_id: exec_id.to_string(),
        stdin: true,
        ..Default::default()
    };
    client(socket)?
        .close_io(ctx(namespace), &req)
        .map(|_| ())
        .map_err(|e| format!("Task.CloseIO {id}: {e}"))
}

/// Task.Wait of the init: its exit status once it exited.
pub fn wait(socket: &Path, namespace: &str, id: &str) -> Result<u32, String> {
    let req = WaitRequest {
        id: id.to_string(),
        ..Default::default()
    };
    client(socket)?
        .wait(ctx(namespace), &req)
        .map(|r| r.exit_status)
        .map_err(|e| format!("Task.Wait {id}: {e}"))
}
