//! Linux security modules as the host has them. A process's AppArmor profile or SELinux label
//! is applied when the host runs that module; on a host without it the field cannot mean
//! anything and is dropped with a warning in the shim's log (containerd and nerdctl only set
//! them where the host supports them).

use std::path::Path;

pub fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim_start().starts_with('Y'))
        .unwrap_or(false)
}

pub fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// `value` if `enabled`, else `None` and a log line naming the field.
pub fn keep_if(enabled: bool, field: &str, value: Option<&String>) -> Option<String> {
    let v = value.filter(|v| !v.is_empty())?;
    if enabled {
        return Some(v.clone());
    }
    log::warn!("{field} {v:?} ignored: the host does not run this security module");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_only_where_the_module_runs() {
        let v = "cri-containerd.apparmor.d".to_string();
        assert_eq!(
            keep_if(true, "process.apparmorProfile", Some(&v)),
            Some(v.clone())
        );
        assert_eq!(keep_if(false, "process.apparmorProfile", Some(&v)), None);
        assert_eq!(keep_if(true, "x", Some(&String::new())), None);
        assert_eq!(keep_if(true, "x", None), None);
    }
}
