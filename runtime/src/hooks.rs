//! OCI hooks. The runtime runs prestart, createRuntime, poststart and poststop in the runtime
//! namespace (`run_all` here); the init helper runs createContainer (before pivot_root) and
//! startContainer (right before exec) in the container's (`init/hooks.rs`). Each hook gets the
//! container's state JSON on stdin, exactly its `env`, `args` as argv and its `timeout`; a
//! failure carries the hook's exit status and output.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Hook {
    pub path: PathBuf,
    /// argv, argv[0] included; empty means just the path.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Hooks {
    pub prestart: Vec<Hook>,
    pub create_runtime: Vec<Hook>,
    pub create_container: Vec<Hook>,
    pub start_container: Vec<Hook>,
    pub poststart: Vec<Hook>,
    pub poststop: Vec<Hook>,
}

/// The OCI state a hook reads on stdin, less status and pid (set per call).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StateBase {
    pub id: String,
    pub bundle: PathBuf,
    pub annotations: std::collections::BTreeMap<String, String>,
}

impl StateBase {
    pub fn json(&self, status: &str, pid: i32) -> Vec<u8> {
        let mut v = serde_json::json!({
            "ociVersion": "1.2.0",
            "id": self.id,
            "status": status,
            "bundle": self.bundle,
            "annotations": self.annotations,
        });
        if pid > 0 {
            v["pid"] = pid.into();
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

fn validate(kind: &str, list: &[oci_spec::runtime::Hook]) -> Result<Vec<Hook>> {
    list.iter()
        .enumerate()
        .map(|(i, h)| {
            if !h.path().is_absolute() {
                return Err(RuntimeError::InvalidSpec(format!(
                    "hooks.{kind}[{i}].path {:?} is not absolute",
                    h.path()
                )));
            }
            if h.timeout().is_some_and(|t| t <= 0) {
                return Err(RuntimeError::InvalidSpec(format!(
                    "hooks.{kind}[{i}].timeout must be positive"
                )));
            }
            Ok(Hook {
                path: h.path().clone(),
                args: h.args().clone().unwrap_or_default(),
                env: h.env().clone().unwrap_or_default(),
                timeout: h.timeout().map(|t| t as u64),
            })
        })
        .collect()
}

pub fn plan(h: Option<&oci_spec::runtime::Hooks>) -> Result<Hooks> {
    let Some(h) = h else {
        return Ok(Hooks::default());
    };
    let v = |kind: &str, l: &Option<Vec<oci_spec::runtime::Hook>>| {
        validate(kind, l.as_deref().unwrap_or_default())
    };
    #[allow(deprecated)]
    let prestart = v("prestart", h.prestart())?;
    Ok(Hooks {
        prestart,
        create_runtime: v("createRuntime", h.create_runtime())?,
        create_container: v("createContainer", h.create_container())?,
        start_container: v("startContainer", h.start_container())?,
        poststart: v("poststart", h.poststart())?,
        poststop: v("poststop", h.poststop())?,
    })
}

/// How a hook's failure reads: runc's form, with its output.
pub fn failure(kind: &str, i: usize, h: &Hook, what: &str, out: &[u8], err: &[u8]) -> String {
    format!(
        "{kind} hook #{i} {}: {what}, stdout: {}, stderr: {}",
        h.path.display(),
        String::from_utf8_lossy(out).trim(),
        String::from_utf8_lossy(err).trim()
    )
}

/// Run hook #`i` of `kind` in the runtime namespace.
fn run_one(kind: &str, i: usize, h: &Hook, state: &[u8]) -> std::result::Result<(), String> {
    let timeout = h.timeout.map(Duration::from_secs);
    let r = crate::spawn::run_program(&h.path, &h.args, &h.env, state, timeout)
        .map_err(|e| format!("{kind} hook #{i} {}: {e}", h.path.display()))?;
    let what = match r.status {
        Some(0) => return Ok(()),
        Some(code) => format!("exit status {code}"),
        None => format!("timed out after {}s", h.timeout.unwrap_or(0)),
    };
    Err(failure(kind, i, h, &what, &r.stdout, &r.stderr))
}

/// Run `list` in the runtime namespace, in order, stopping at the first failure.
pub fn run_all(kind: &str, list: &[Hook], state: &[u8]) -> std::result::Result<(), String> {
    list.iter()
        .enumerate()
        .try_for_each(|(i, h)| run_one(kind, i, h, state))
}

/// As `run_all`, for the hooks whose failures are only logged (poststart, poststop): every hook
/// runs.
pub fn run_logged(kind: &str, list: &[Hook], state: &[u8]) {
    for (i, h) in list.iter().enumerate() {
        if let Err(e) = run_one(kind, i, h, state) {
            log::warn!("{e}");
        }
    }
}
