//! crt's OCI runtime: turns a bundle (config.json + rootfs) into a container with its own
//! namespaces, cgroup, root filesystem and credentials. It knows nothing of ttrpc or containerd.

mod affinity;
pub mod caps;
pub mod cgroups;
mod channel;
pub mod console;
pub mod container;
pub mod error;
pub mod features;
pub mod hooks;
pub mod init;
pub mod lsm;
pub mod mount_api;
pub mod mountopts;
pub mod ns_hold;
pub mod preload;
pub mod rootfs_mount;
pub mod sched;
pub mod seccomp;
pub mod spare_net;
pub mod spawn;
pub mod spec;
pub mod spec_fields;
pub mod state;
pub mod sysctl;
pub mod userns;
pub mod zygote;

pub use console::Console;
pub use container::{cleanup, Container, CreateOpts, Exec, ExecContext, Exited};
pub use error::{Result, RuntimeError};
pub use ns_hold::Release;
pub use rootfs_mount::RootfsMount;
