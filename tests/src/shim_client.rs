//! Calls on a shim's Task service over its ttrpc socket, the way containerd makes them, for the
//! methods `ctr` has no command for (Update reaches a shim only through CRI or the API), or
//! calls only on some paths (CloseIO: `ctr` sends it for stdin's end without a terminal only).

use std::path::Path;

use containerd_shim_protos::api::{
    CloseIORequest, Empty, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};

/// One Task method by name, as containerd 2.x (v3) and then 1.6 (v2) name the service: a shim
/// serving only v2 (runc's with containerd 1.6) answers too.
pub fn call<Req: Message, Resp: Message>(
    socket: &Path,
    namespace: &str,
    method: &str,
    req: &Req,
) -> Result<Resp, String> {
    call_on(
        &["containerd.task.v3.Task", "containerd.task.v2.Task"],
        socket,
        namespace,
        method,
        req,
    )
}

/// [`call`] on the first of `services` the shim serves.
pub fn call_on<Req: Message, Resp: Message>(
    services: &[&str],
    socket: &Path,
    namespace: &str,
    method: &str,
    req: &Req,
) -> Result<Resp, String> {
    let mut last = String::new();
    for service in services {
        // A fresh connection each: containerd 1.6's runc shim drops one that named v3.
        let c = Conn::connect(socket, service, namespace)?;
        match c.request(method, req) {
            Ok(out) => return Ok(out),
            Err(ttrpc::Error::RpcStatus(st)) if st.code() == ttrpc::Code::UNIMPLEMENTED => {
                last = format!("{service}: {}", st.message());
            }
            Err(ttrpc::Error::Socket(e)) if service.contains("v3") => {
                last = format!("{service}: {e}");
            }
            Err(e) => return Err(format!("{service}/{method}: {e}")),
        }
    }
    Err(format!("{method}: {last}"))
}

/// One connection to a shim's Task service, kept for every call, as containerd keeps one.
pub struct Conn {
    client: ttrpc::Client,
    service: String,
    namespace: String,
}

impl Conn {
    pub fn connect(socket: &Path, service: &str, namespace: &str) -> Result<Conn, String> {
        let client = ttrpc::Client::connect(&format!("unix://{}", socket.display()))
            .map_err(|e| format!("connect {}: {e}", socket.display()))?;
        Ok(Conn {
            client,
            service: service.to_string(),
            namespace: namespace.to_string(),
        })
    }

    pub fn call<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp, String> {
        self.request(method, req)
            .map_err(|e| format!("{}/{method}: {e}", self.service))
    }

    fn request<Req: Message, Resp: Message>(&self, method: &str, req: &Req) -> ttrpc::Result<Resp> {
        use ttrpc::proto::{Codec, RequestInit};
        let ctx = ctx(&self.namespace);
        let payload =
            Codec::encode(req).map_err(|e| ttrpc::Error::Others(format!("encode: {e:?}")))?;
        let mut r = ttrpc::proto::Request::init_request(
            self.service.clone(),
            method.to_string(),
            ctx.timeout_nano,
            ttrpc::context::to_pb(ctx.metadata),
        );
        RequestInit::set_payload(&mut r, payload);
        let res = self.client.request(r)?;
        let mut out = Resp::new();
        Codec::merge(&mut out, &res.payload)
            .map_err(|e| ttrpc::Error::Others(format!("decode: {e:?}")))?;
        Ok(out)
    }
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
/// sends it.
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
    call::<_, Empty>(socket, namespace, "Update", &req)
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
    call::<_, Empty>(socket, namespace, "CloseIO", &req)
        .map(|_| ())
        .map_err(|e| format!("Task.CloseIO {id}: {e}"))
}

/// Task.Wait of the init: its exit status once it exited.
pub fn wait(socket: &Path, namespace: &str, id: &str) -> Result<u32, String> {
    let req = WaitRequest {
        id: id.to_string(),
        ..Default::default()
    };
    call::<_, WaitResponse>(socket, namespace, "Wait", &req)
        .map(|r| r.exit_status)
        .map_err(|e| format!("Task.Wait {id}: {e}"))
}
