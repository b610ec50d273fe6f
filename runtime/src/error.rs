//! Errors of the runtime. Every variant names the step and the path or syscall that failed, so
//! the message that reaches `ctr` is enough to act on.

use std::path::PathBuf;

use crate::cgroups::CgroupError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("read {path}: {source}")]
    ReadSpec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse {path}: {msg}")]
    ParseSpec { path: PathBuf, msg: String },
    #[error("invalid config.json: {0}")]
    InvalidSpec(String),
    #[error("config.json: {field} is not supported by crt yet")]
    Unsupported { field: String },
    #[error("cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The init helper reported a failure: its text is already the whole cause.
    #[error("{0}")]
    Init(String),
    #[error("rootfs: {0}")]
    Rootfs(String),
    #[error("container is {0}")]
    BadState(&'static str),
    #[error("state file {path}: {msg}")]
    State { path: PathBuf, msg: String },
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    move |source| RuntimeError::Io { op, source }
}
