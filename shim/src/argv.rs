//! The daemon is forked from `start`, so it keeps `start`'s command line: rename that action in
//! place, as `ps` (and anyone telling a running shim from a `start` or `delete` call) reads it.

/// Overwrites the last argument if it is `from` with `to` (same length) in this process's
/// argument area, the memory `/proc/<pid>/cmdline` reads.
pub fn rename_action(from: &str, to: &str) {
    if from.len() != to.len() {
        return;
    }
    let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else {
        return;
    };
    let Some((arg_start, arg_end)) = arg_area() else {
        return;
    };
    let Some(offset) = last_arg_offset(&cmdline, from.as_bytes()) else {
        return;
    };
    // The area must be what cmdline showed: a changed argv[0] (prctl) would move it.
    if arg_end.checked_sub(arg_start) != Some(cmdline.len()) {
        return;
    }
    // SAFETY: [arg_start, arg_end) is this process's argument block (on its initial stack,
    // mapped for the process's life); the bytes written lie inside it, at the last argument
    // read above, and no Rust reference to that memory is held.
    unsafe {
        std::ptr::copy_nonoverlapping(to.as_ptr(), (arg_start + offset) as *mut u8, to.len());
    }
}

/// Fields 48 and 49 of /proc/self/stat, after the parenthesised command name.
fn arg_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(45);
    let start = f.next()?.parse().ok()?;
    let end = f.next()?.parse().ok()?;
    Some((start, end))
}

/// Where the last NUL-terminated argument starts, if it is `arg`.
fn last_arg_offset(cmdline: &[u8], arg: &[u8]) -> Option<usize> {
    let body = cmdline.strip_suffix(b"\0")?;
    let offset = body.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
    (&body[offset..] == arg).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_the_last_argument() {
        let c = b"shim\0-id\0start\0start\0";
        assert_eq!(last_arg_offset(c, b"start"), Some(15));
        assert_eq!(last_arg_offset(b"shim\0start\0-id\0x\0", b"start"), None);
        assert_eq!(last_arg_offset(b"start\0", b"start"), Some(0));
        assert_eq!(last_arg_offset(b"start", b"start"), None);
    }

    #[test]
    fn reads_this_process_argument_area() {
        let (start, end) = arg_area().expect("arg_start and arg_end");
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        assert_eq!(end - start, cmdline.len());
    }
}
