//! The command line containerd gives a shim, in Go `flag` syntax (`-id X`, `--id=X`, action last).

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Args {
    pub namespace: String,
    pub id: String,
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    pub socket: String,
    pub debug: bool,
    pub version: bool,
    pub info: bool,
    pub action: String,
}

pub fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = argv.iter().peekable();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            if !a.action.is_empty() {
                return Err(format!("unexpected argument {arg:?}"));
            }
            a.action = arg.clone();
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("flag -{name} needs a value")),
            }
        };
        match name {
            "namespace" => a.namespace = value()?,
            "id" => a.id = value()?,
            "address" => a.address = value()?,
            "publish-binary" => a.publish_binary = value()?,
            "bundle" => a.bundle = value()?,
            "socket" => a.socket = value()?,
            "debug" => a.debug = inline.as_deref() != Some("false"),
            "v" | "version" => a.version = true,
            "info" => a.info = true,
            other => return Err(format!("flag provided but not defined: -{other}")),
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn containerd_start_line() {
        let a = parse(&v("-namespace default -address /run/c.sock -publish-binary /usr/bin/containerd -id demo -debug start")).unwrap();
        assert_eq!(a.namespace, "default");
        assert_eq!(a.id, "demo");
        assert!(a.debug);
        assert_eq!(a.action, "start");
    }

    #[test]
    fn equals_form_and_errors() {
        let a = parse(&v("--id=x -bundle=/b delete")).unwrap();
        assert_eq!(
            (a.id.as_str(), a.bundle.as_str(), a.action.as_str()),
            ("x", "/b", "delete")
        );
        assert!(parse(&v("-bogus 1")).unwrap_err().contains("bogus"));
        assert!(parse(&v("-id")).is_err());
    }
}
