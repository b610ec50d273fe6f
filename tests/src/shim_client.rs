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
///
/// Each call writes its request and reads the answer on the calling thread. ttrpc's own
/// client hands every request to a sender thread and every answer back from a receiver
/// thread: four thread wake-ups a call, which the shim-alone bench would otherwise count in
/// each shim's calls.
pub struct Conn {
    sock: std::sync::Mutex<(std::os::unix::net::UnixStream, u32)>,
    service: String,
    namespace: String,
}

impl Conn {
    pub fn connect(socket: &Path, service: &str, namespace: &str) -> Result<Conn, String> {
        let sock = std::os::unix::net::UnixStream::connect(socket)
            .map_err(|e| format!("connect {}: {e}", socket.display()))?;
        sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        Ok(Conn {
            // Client streams are odd.
            sock: std::sync::Mutex::new((sock, 1)),
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
        use std::io::{Read, Write};
        let ctx = ctx(&self.namespace);
        let mut r = ttrpc::Request::new();
        r.service = self.service.clone();
        r.method = method.to_string();
        r.timeout_nano = ctx.timeout_nano;
        r.metadata = ttrpc::context::to_pb(ctx.metadata);
        r.payload = req
            .write_to_bytes()
            .map_err(|e| ttrpc::Error::Others(format!("encode: {e}")))?;
        let body = r
            .write_to_bytes()
            .map_err(|e| ttrpc::Error::Others(format!("encode: {e}")))?;
        let mut g = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        let (sock, next) = &mut *g;
        let id = *next;
        *next = next.wrapping_add(2);
        let mut frame: Vec<u8> = ttrpc::MessageHeader::new_request(id, body.len() as u32).into();
        frame.extend_from_slice(&body);
        sock.write_all(&frame).map_err(socket_err)?;
        loop {
            let mut h = [0u8; ttrpc::proto::MESSAGE_HEADER_LENGTH];
            sock.read_exact(&mut h).map_err(socket_err)?;
            let h = ttrpc::MessageHeader::from(h);
            let mut payload = vec![0u8; h.length as usize];
            sock.read_exact(&mut payload).map_err(socket_err)?;
            if h.stream_id != id || h.type_ != ttrpc::proto::MESSAGE_TYPE_RESPONSE {
                continue;
            }
            let res = ttrpc::Response::parse_from_bytes(&payload)
                .map_err(|e| ttrpc::Error::Others(format!("decode: {e}")))?;
            let status = res.status.get_or_default();
            if status.code() != ttrpc::Code::OK {
                return Err(ttrpc::Error::RpcStatus(status.clone()));
            }
            let mut out = Resp::new();
            out.merge_from_bytes(&res.payload)
                .map_err(|e| ttrpc::Error::Others(format!("decode: {e}")))?;
            return Ok(out);
        }
    }
}

fn socket_err(e: std::io::Error) -> ttrpc::Error {
    ttrpc::Error::Socket(e.to_string())
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
