//! Linux security modules as the host has them. A process's AppArmor profile or SELinux label
//! is applied when the host runs that module; on a host without it the spec asks for a
//! confinement that cannot be had, which is an error, as under runc (containerd and nerdctl
//! only set them where the host supports them).

use std::path::Path;

pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim_start().starts_with('Y'))
        .unwrap_or(false)
}

pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// `value` (if set) when `enabled`; an error naming the field when the host lacks `module`.
pub fn require(
    enabled: bool,
    field: &str,
    module: &str,
    value: Option<&String>,
) -> Result<Option<String>, String> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if enabled {
        return Ok(Some(v.clone()));
    }
    Err(format!(
        "{field} {v:?} is set but this host does not run {module}"
    ))
}

/// A value with no effect without the module (linux.mountLabel): dropped with a log line.
pub fn ignore_without(enabled: bool, field: &str, value: Option<&String>) {
    if let Some(v) = value.filter(|v| !v.is_empty() && !enabled) {
        log::warn!("{field} {v:?} ignored: the host does not run SELinux");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_where_set() {
        let v = "cri-containerd.apparmor.d".to_string();
        let f = "process.apparmorProfile";
        assert_eq!(require(true, f, "AppArmor", Some(&v)), Ok(Some(v.clone())));
        let e = require(false, f, "AppArmor", Some(&v)).unwrap_err();
        assert!(e.contains(f) && e.contains("does not run AppArmor"), "{e}");
        assert_eq!(
            require(false, f, "AppArmor", Some(&String::new())),
            Ok(None)
        );
        assert_eq!(require(false, f, "AppArmor", None), Ok(None));
    }
}
