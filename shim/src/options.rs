//! crt's runtime options, as containerd hands them to a create (CreateTaskRequest.options).
//!
//! CRI sends a runtime type other than runc's the `[...runtimes.<handler>.options]` table of
//! its config as `runtimeoptions.v1.Options`: the table as TOML (`config_body`), or a file to
//! read it from (`config_path`, also what `ctr run --runtime-config-path` sends). crt reads a
//! flat table of its own keys; any other key, or another options type, is an error naming it
//! rather than an option silently dropped.

use containerd_shim_protos::protobuf::rt::WireType;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::CodedInputStream;

/// What crt's options set.
#[derive(Debug, Default, PartialEq)]
pub struct CrtOptions {
    /// `LogLevel`: the shim's log level from this create on ("error" ... "trace").
    pub log_level: Option<log::LevelFilter>,
    /// runc's IoUid/IoGid (ctr sends them for a container with a user namespace): the owner
    /// of the pipes and fifos the container's stdio is, so its root can reopen them.
    pub io_owner: Option<(u32, u32)>,
    /// runc's NoNewKeyring: the container keeps the shim's session keyring.
    pub no_new_keyring: bool,
}

const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
const RUNC_V1_CREATE_OPTIONS: &str = "containerd.linux.runc.CreateOptions";

/// How `start` hands the daemon a LogLevel it read (containerd 1.6 passes options there only).
pub const LOG_LEVEL_ENV: &str = "CRT_SHIM_LOG_LEVEL";

pub fn parse(any: Option<&Any>) -> Result<CrtOptions, String> {
    let Some(any) = any else {
        return Ok(CrtOptions::default());
    };
    if any.type_url.is_empty() && any.value.is_empty() {
        return Ok(CrtOptions::default());
    }
    let kind = any.type_url.rsplit('/').next().unwrap_or_default();
    if kind == RUNC_OPTIONS {
        return runc_options(&any.value, &RUNC_V2, kind);
    }
    if kind == RUNC_V1_CREATE_OPTIONS {
        return runc_options(&any.value, &RUNC_V1_CREATE, kind);
    }
    if kind != RUNTIME_OPTIONS {
        return Err(format!(
            "runtime options of type {:?}: crt takes {RUNTIME_OPTIONS} (a CRI handler's options table) only",
            any.type_url
        ));
    }
    let (path, body) = decode(&any.value)?;
    let text = if path.is_empty() {
        String::from_utf8(body)
            .map_err(|_| "runtime options: config_body is not UTF-8".to_string())?
    } else {
        std::fs::read_to_string(&path)
            .map_err(|e| format!("runtime options: read config_path {path}: {e}"))?
    };
    parse_table(&text)
}

/// A protobuf message's fields as (number, varint value, length-delimited bytes); other wire
/// types are skipped. Both option messages crt reads are flat.
fn fields(bytes: &[u8], kind: &str) -> Result<Vec<(u32, u64, Vec<u8>)>, String> {
    let bad = |e| format!("runtime options: malformed {kind}: {e}");
    let mut is = CodedInputStream::from_bytes(bytes);
    let mut out = Vec::new();
    while let Some(tag) = is.read_raw_tag_or_eof().map_err(bad)? {
        let wt = WireType::new(tag & 7)
            .ok_or_else(|| format!("runtime options: bad wire type in tag {tag:#x}"))?;
        match wt {
            WireType::Varint => out.push((tag >> 3, is.read_uint64().map_err(bad)?, Vec::new())),
            WireType::LengthDelimited => out.push((tag >> 3, 0, is.read_bytes().map_err(bad)?)),
            _ => is.skip_field(wt).map_err(bad)?,
        }
    }
    Ok(out)
}

/// runtimeoptions.v1.Options: 1 type_url, 2 config_path, 3 config_body.
fn decode(bytes: &[u8]) -> Result<(String, Vec<u8>), String> {
    let (mut path, mut body) = (String::new(), Vec::new());
    for (field, _, value) in fields(bytes, RUNTIME_OPTIONS)? {
        match field {
            2 => {
                path = String::from_utf8(value)
                    .map_err(|_| "runtime options: config_path is not UTF-8".to_string())?
            }
            3 => body = value,
            _ => {}
        }
    }
    Ok((path, body))
}

/// Field numbers of runc's two options messages: containerd.runc.v1.Options (shim v2) and
/// containerd.linux.runc.CreateOptions (what ctr 1.6 sends for a user namespace).
struct RuncLayout {
    no_pivot_root: u32,
    no_new_keyring: u32,
    shim_cgroup: u32,
    io_uid: u32,
    io_gid: u32,
    /// runc's own paths (binary, state root, ...): no meaning without runc.
    runc_paths: &'static [u32],
    /// CRIU's settings: crt has no CRIU.
    criu: &'static [u32],
}

const RUNC_V2: RuncLayout = RuncLayout {
    no_pivot_root: 1,
    no_new_keyring: 2,
    shim_cgroup: 3,
    io_uid: 4,
    io_gid: 5,
    runc_paths: &[6, 7, 8, 9, 12, 13],
    criu: &[10, 11],
};

const RUNC_V1_CREATE: RuncLayout = RuncLayout {
    no_pivot_root: 1,
    no_new_keyring: 8,
    shim_cgroup: 9,
    io_uid: 10,
    io_gid: 11,
    runc_paths: &[],
    criu: &[2, 3, 4, 5, 6, 7, 12, 13],
};

/// runc's options, which ctr and other clients send whatever the runtime: what means something
/// without runc is honoured, runc's own paths are left aside with a log line, and what crt
/// cannot do is an error.
fn runc_options(bytes: &[u8], layout: &RuncLayout, kind: &str) -> Result<CrtOptions, String> {
    let mut o = CrtOptions::default();
    let (mut uid, mut gid) = (0u32, 0u32);
    for (field, num, bytes) in fields(bytes, kind)? {
        let set = num != 0 || !bytes.is_empty();
        let text = String::from_utf8_lossy(&bytes).to_string();
        if field == layout.no_pivot_root && set {
            return Err("runtime option NoPivotRoot: crt always uses pivot_root".into());
        } else if field == layout.no_new_keyring {
            o.no_new_keyring = set;
        } else if field == layout.shim_cgroup && set {
            return Err(format!(
                "runtime option ShimCgroup {text:?}: not supported by crt"
            ));
        } else if field == layout.io_uid {
            uid = num as u32;
        } else if field == layout.io_gid {
            gid = num as u32;
        } else if layout.criu.contains(&field) && set {
            return Err(format!(
                "runtime options: {kind} field {field} is a CRIU setting, and crt has no CRIU integration"
            ));
        } else if layout.runc_paths.contains(&field) && set {
            log::info!("runtime options: {kind} field {field} ({text:?}) has no meaning for crt (no runc binary or state)");
        }
    }
    if uid != 0 || gid != 0 {
        o.io_owner = Some((uid, gid));
    }
    Ok(o)
}

/// A flat TOML table (`Key = "string"`, comments, blank lines): all crt's options need.
fn parse_table(text: &str) -> Result<CrtOptions, String> {
    let mut o = CrtOptions::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |what: &str| format!("runtime options line {}: {what}: {line:?}", n + 1);
        let (key, value) = line.split_once('=').ok_or_else(|| err("not key = value"))?;
        let key = key.trim().trim_matches('"');
        let value = value.trim();
        let string = || {
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .ok_or_else(|| err("expected a quoted string"))
        };
        match key {
            "LogLevel" => {
                let v = string()?;
                o.log_level = Some(
                    v.parse()
                        .map_err(|_| err("LogLevel is one of error, warn, info, debug, trace"))?,
                );
            }
            other => {
                return Err(format!(
                    "runtime options: unknown key {other:?} (crt knows LogLevel)"
                ))
            }
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(url: &str, path: &str, body: &str) -> Any {
        // Encoded by hand as containerd's proto does.
        let mut v = Vec::new();
        for (tag, s) in [(0x0a, url), (0x12, path), (0x1a, body)] {
            if !s.is_empty() {
                v.push(tag);
                v.push(s.len() as u8);
                v.extend_from_slice(s.as_bytes());
            }
        }
        Any {
            type_url: url.to_string(),
            value: v,
            ..Default::default()
        }
    }

    #[test]
    fn reads_the_cri_options_table() {
        assert_eq!(parse(None).unwrap(), CrtOptions::default());
        let a = any(RUNTIME_OPTIONS, "", "# crt\nLogLevel = 'debug'\n");
        assert_eq!(
            parse(Some(&a)).unwrap().log_level,
            Some(log::LevelFilter::Debug)
        );
        let a = any(RUNTIME_OPTIONS, "", "Bogus = 1\n");
        assert!(parse(Some(&a))
            .unwrap_err()
            .contains("unknown key \"Bogus\""));
        let a = any(RUNTIME_OPTIONS, "", "LogLevel = 'loud'\n");
        assert!(parse(Some(&a)).unwrap_err().contains("LogLevel is one of"));
        let a = any("containerd.other.v1.Options", "", "");
        assert!(parse(Some(&a))
            .unwrap_err()
            .contains("containerd.other.v1.Options"));
        // runc's: IoUid 100000 (field 4), IoGid 100000 (5), NoNewKeyring (2).
        let runc = |v: Vec<u8>| Any {
            type_url: RUNC_OPTIONS.to_string(),
            value: v,
            ..Default::default()
        };
        let varint = |mut n: u32| {
            let mut out = Vec::new();
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    out.push(b);
                    return out;
                }
                out.push(b | 0x80);
            }
        };
        let mut v = vec![0x20];
        v.extend(varint(100000));
        v.push(0x28);
        v.extend(varint(100000));
        v.extend([0x10, 1]);
        let o = parse(Some(&runc(v))).unwrap();
        assert_eq!(o.io_owner, Some((100000, 100000)));
        assert!(o.no_new_keyring);
        assert!(parse(Some(&runc(vec![0x08, 1])))
            .unwrap_err()
            .contains("NoPivotRoot"));
        let dir = std::env::temp_dir().join(format!("crt-opts-{}", std::process::id()));
        std::fs::write(&dir, "LogLevel = \"warn\"\n").unwrap();
        let a = any(RUNTIME_OPTIONS, dir.to_str().unwrap(), "");
        assert_eq!(
            parse(Some(&a)).unwrap().log_level,
            Some(log::LevelFilter::Warn)
        );
        let _ = std::fs::remove_file(&dir);
    }
}
