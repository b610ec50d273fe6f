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
}

const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";

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

/// runtimeoptions.v1.Options: 1 type_url, 2 config_path, 3 config_body.
fn decode(bytes: &[u8]) -> Result<(String, Vec<u8>), String> {
    let bad = |e| format!("runtime options: malformed {RUNTIME_OPTIONS}: {e}");
    let mut is = CodedInputStream::from_bytes(bytes);
    let (mut path, mut body) = (String::new(), Vec::new());
    while let Some(tag) = is.read_raw_tag_or_eof().map_err(bad)? {
        match tag {
            0x0a => {
                is.read_string().map_err(bad)?;
            }
            0x12 => path = is.read_string().map_err(bad)?,
            0x1a => body = is.read_bytes().map_err(bad)?,
            t => {
                let wt = WireType::new(t & 7)
                    .ok_or_else(|| format!("runtime options: bad wire type in tag {t:#x}"))?;
                is.skip_field(wt).map_err(bad)?
            }
        }
    }
    Ok((path, body))
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
        let a = any("containerd.runc.v1.Options", "", "");
        assert!(parse(Some(&a))
            .unwrap_err()
            .contains("containerd.runc.v1.Options"));
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
