//! One ordered queue of events to containerd (`Events/Forward` over ttrpc at TTRPC_ADDRESS),
//! drained by one thread that reconnects and retries, so a slow or restarting containerd
//! never blocks a Task call.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::EventsClient;

pub struct Event {
    topic: &'static str,
    any: Any,
}

#[derive(Clone)]
pub struct Publisher(Sender<Event>);

fn any<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: m.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}

pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

impl Publisher {
    /// Start the publishing thread. Without a ttrpc address (tests) events are only logged.
    pub fn start(ttrpc_address: Option<String>, namespace: String) -> Publisher {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || run(rx, ttrpc_address, namespace))
            .ok();
        Publisher(tx)
    }

    fn send(&self, topic: &'static str, any: Any) {
        let _ = self.0.send(Event { topic, any });
    }

    pub fn create(&self, id: &str, bundle: &str, pid: u32, io: [&str; 3], terminal: bool) {
        let mut e = TaskCreate::new();
        e.container_id = id.into();
        e.bundle = bundle.into();
        e.pid = pid;
        let mut tio = containerd_shim_protos::events::task::TaskIO::new();
        tio.stdin = io[0].into();
        tio.stdout = io[1].into();
        tio.stderr = io[2].into();
        tio.terminal = terminal;
        e.io = MessageField::some(tio);
        self.send("/tasks/create", any("containerd.events.TaskCreate", &e));
    }

    pub fn start_(&self, id: &str, pid: u32) {
        let mut e = TaskStart::new();
        e.container_id = id.into();
        e.pid = pid;
        self.send("/tasks/start", any("containerd.events.TaskStart", &e));
    }

    pub fn exit(&self, id: &str, exec_id: &str, pid: u32, status: u32, at: &Timestamp) {
        let mut e = TaskExit::new();
        e.container_id = id.into();
        e.id = exec_id.into();
        e.pid = pid;
        e.exit_status = status;
        e.exited_at = MessageField::some(at.clone());
        self.send("/tasks/exit", any("containerd.events.TaskExit", &e));
    }

    pub fn exec_added(&self, id: &str, exec_id: &str) {
        let mut e = TaskExecAdded::new();
        e.container_id = id.into();
        e.exec_id = exec_id.into();
        self.send(
            "/tasks/exec-added",
            any("containerd.events.TaskExecAdded", &e),
        );
    }

    pub fn exec_started(&self, id: &str, exec_id: &str, pid: u32) {
        let mut e = TaskExecStarted::new();
        e.container_id = id.into();
        e.exec_id = exec_id.into();
        e.pid = pid;
        self.send(
            "/tasks/exec-started",
            any("containerd.events.TaskExecStarted", &e),
        );
    }

    pub fn oom(&self, id: &str) {
        let mut e = TaskOOM::new();
        e.container_id = id.into();
        self.send("/tasks/oom", any("containerd.events.TaskOOM", &e));
    }

    pub fn paused(&self, id: &str) {
        let mut e = TaskPaused::new();
        e.container_id = id.into();
        self.send("/tasks/paused", any("containerd.events.TaskPaused", &e));
    }

    pub fn resumed(&self, id: &str) {
        let mut e = TaskResumed::new();
        e.container_id = id.into();
        self.send("/tasks/resumed", any("containerd.events.TaskResumed", &e));
    }

    pub fn delete(&self, id: &str, pid: u32, status: u32, at: &Timestamp) {
        let mut e = TaskDelete::new();
        e.container_id = id.into();
        e.id = id.into();
        e.pid = pid;
        e.exit_status = status;
        e.exited_at = MessageField::some(at.clone());
        self.send("/tasks/delete", any("containerd.events.TaskDelete", &e));
    }
}

fn run(rx: Receiver<Event>, address: Option<String>, namespace: String) {
    let mut client: Option<EventsClient> = None;
    for ev in rx {
        let Some(addr) = &address else {
            log::debug!("event {} (no containerd address)", ev.topic);
            continue;
        };
        let mut env = Envelope::new();
        env.timestamp = MessageField::some(now());
        env.namespace = namespace.clone();
        env.topic = ev.topic.to_string();
        env.event = MessageField::some(ev.any);
        let mut req = ForwardRequest::new();
        req.envelope = MessageField::some(env);
        for attempt in 0..5u64 {
            if client.is_none() {
                let url = if addr.contains("://") {
                    addr.clone()
                } else {
                    format!("unix://{addr}")
                };
                match ttrpc::Client::connect(&url) {
                    Ok(c) => client = Some(EventsClient::new(c)),
                    Err(e) => log::warn!("connect to containerd at {url} for events: {e}"),
                }
            }
            if let Some(c) = &client {
                match c.forward(ttrpc::context::with_timeout(5_000_000_000), &req) {
                    Ok(_) => break,
                    Err(e) => {
                        log::warn!("publish {}: {e}", ev.topic);
                        client = None;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50 * (attempt + 1)));
        }
    }
}
