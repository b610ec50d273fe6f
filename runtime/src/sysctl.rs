//! linux.sysctl: only keys that live in a namespace the container has of its own may be set
//! (runc's rule), so a container can never change the host's kernel settings. Keys become paths
//! under /proc/sys ('.' separates components, '/' stands for a '.' inside one, as sysctl(8)
//! writes interface names).

use std::collections::BTreeMap;

use oci_spec::runtime::LinuxNamespaceType as Ns;

const IPC_KEYS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The namespace a key belongs to, if any.
fn namespace_of(key: &str) -> Option<Ns> {
    if IPC_KEYS.contains(&key) || key.starts_with("fs.mqueue.") {
        return Some(Ns::Ipc);
    }
    if key.starts_with("net.") {
        return Some(Ns::Network);
    }
    if key == "kernel.domainname" {
        return Some(Ns::Uts);
    }
    None
}

/// A key's path below /proc/sys, or a path's key: '.' and '/' swapped (runc's rule, so a key
/// like `net.ipv4.conf.eth0/1.forwarding` names the interface `eth0.1`). Its own inverse.
pub(crate) fn swap_separators(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect()
}

/// Validate `sysctl` against the container's own (new or joined) namespaces; returns
/// (path below /proc/sys, value) pairs.
pub fn plan(
    sysctl: &std::collections::HashMap<String, String>,
    has_ns: impl Fn(Ns) -> bool,
) -> Result<Vec<(String, String)>, String> {
    let sorted: BTreeMap<_, _> = sysctl.iter().collect();
    let mut out = Vec::new();
    for (key, value) in sorted {
        let ns = namespace_of(key).ok_or_else(|| {
            if key == "kernel.hostname" {
                "linux.sysctl: kernel.hostname cannot be set; use hostname".to_string()
            } else {
                format!("linux.sysctl: {key} is not in a namespace of the container's own")
            }
        })?;
        if !has_ns(ns) {
            return Err(format!(
                "linux.sysctl: {key} needs a {ns} namespace of the container's own"
            ));
        }
        let path = swap_separators(key);
        if path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!("linux.sysctl: bad key {key:?}"));
        }
        out.push((path, value.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kv: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn separators_swap_both_ways() {
        let key = "net.ipv4.conf.eth0/1.forwarding";
        assert_eq!(swap_separators(key), "net/ipv4/conf/eth0.1/forwarding");
        assert_eq!(swap_separators(&swap_separators(key)), key);
    }

    #[test]
    fn namespaced_keys_only_with_their_namespace() {
        let all = |_: Ns| true;
        let p = plan(
            &m(&[
                ("net.ipv4.ip_forward", "1"),
                ("kernel.shmmax", "100"),
                ("net.ipv4.conf.eth0/100.forwarding", "1"),
            ]),
            all,
        )
        .unwrap();
        assert_eq!(
            p,
            vec![
                ("kernel/shmmax".to_string(), "100".to_string()),
                (
                    "net/ipv4/conf/eth0.100/forwarding".to_string(),
                    "1".to_string()
                ),
                ("net/ipv4/ip_forward".to_string(), "1".to_string()),
            ]
        );
        let e = plan(&m(&[("vm.swappiness", "0")]), all).unwrap_err();
        assert!(e.contains("vm.swappiness"), "{e}");
        let e = plan(&m(&[("kernel.hostname", "x")]), all).unwrap_err();
        assert!(e.contains("use hostname"), "{e}");
        let e = plan(&m(&[("net.ipv4.ip_forward", "1")]), |n| n != Ns::Network).unwrap_err();
        assert!(e.contains("needs a net namespace"), "{e}");
        let e = plan(&m(&[("net.ipv4..x", "1")]), all).unwrap_err();
        assert!(e.contains("bad key"), "{e}");
        let e = plan(&m(&[("net.ipv4/../../x", "1")]), all).unwrap_err();
        assert!(e.contains("bad key"), "{e}");
    }
}
