//! cgroup v2 has no devices.allow/deny files: the allow-list is an eBPF program of type
//! BPF_PROG_TYPE_CGROUP_DEVICE attached to the container's cgroup. This builds that program from
//! the spec's rules with v1 semantics (the last matching rule decides; no match allows, as a fresh
//! v1 cgroup does) and attaches it.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

// struct bpf_cgroup_dev_ctx { u32 access_type (access << 16 | type); u32 major; u32 minor; }
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8, // dst in the low nibble, src in the high one
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV32_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95;

/// One rule, parsed: `kind` None = all types; `major`/`minor` None = any.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub allow: bool,
    pub kind: Option<i32>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: i32,
}

impl Rule {
    /// The same rule as a v1 `devices.allow`/`devices.deny` line.
    pub fn v1_entry(&self) -> String {
        let typ = match self.kind {
            None => 'a',
            Some(DEV_BLOCK) => 'b',
            Some(_) => 'c',
        };
        let num = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        let access: String = [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')]
            .iter()
            .filter(|(bit, _)| self.access & bit != 0)
            .map(|(_, c)| *c)
            .collect();
        format!("{typ} {}:{} {access}", num(self.major), num(self.minor))
    }
}

pub fn rule(d: &LinuxDeviceCgroup) -> Result<Rule, String> {
    let kind = match d.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => None,
        LinuxDeviceType::B => Some(DEV_BLOCK),
        LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
        LinuxDeviceType::P => {
            return Err("fifo (\"p\") devices cannot be controlled by the devices cgroup".into())
        }
    };
    let mut access = 0;
    for c in d
        .access()
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm")
        .chars()
    {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            other => return Err(format!("access {other:?} is not one of r, w, m")),
        };
    }
    Ok(Rule {
        allow: d.allow(),
        kind,
        major: d.major().filter(|m| *m >= 0),
        minor: d.minor().filter(|m| *m >= 0),
        access,
    })
}

/// The program: r2 = type, r3 = access, r4 = major, r5 = minor; then each rule from the last to
/// the first, each a block that jumps to the next block on mismatch and returns its verdict on
/// a match; finally allow.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let mut checks: Vec<(u8, u8, i32)> = Vec::new(); // (jump code, reg, imm): jump = mismatch
        if let Some(k) = r.kind {
            checks.push((JNE_K, 2, k));
        }
        if let Some(m) = r.major {
            checks.push((JNE_K, 4, m as i32));
        }
        if let Some(m) = r.minor {
            checks.push((JNE_K, 5, m as i32));
        }
        // Access: an allow rule matches when every requested bit is allowed; a deny rule when
        // any requested bit is denied.
        let mut block: Vec<Insn> = Vec::new();
        let access_check = r.access != ACC_READ | ACC_WRITE | ACC_MKNOD;
        let len = checks.len() + if access_check { 3 } else { 0 } + 2;
        let mut pos = 0;
        let jump = |code: u8, reg: u8, imm: i32, pos: usize| {
            insn(code, reg, 0, (len - pos - 1) as i16, imm)
        };
        if access_check {
            block.push(insn(MOV32_X, 6, 3, 0, 0));
            if r.allow {
                block.push(insn(AND32_K, 6, 0, 0, !r.access & 7));
                block.push(jump(JNE_K, 6, 0, 2));
            } else {
                block.push(insn(AND32_K, 6, 0, 0, r.access));
                block.push(jump(JEQ_K, 6, 0, 2));
            }
            pos = 3;
        }
        for (code, reg, imm) in checks {
            block.push(jump(code, reg, imm, pos));
            pos += 1;
        }
        block.push(insn(MOV64_K, 0, 0, 0, r.allow as i32));
        block.push(insn(EXIT, 0, 0, 0, 0));
        debug_assert_eq!(block.len(), len);
        p.extend(block);
        if len == 2 {
            // Unconditional: what follows is unreachable, and the verifier refuses dead code.
            return p;
        }
    }
    p.push(insn(MOV64_K, 0, 0, 0, 1));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

fn bpf(cmd: i32, attr: &[u64; 16]) -> std::io::Result<i64> {
    // SAFETY: the attr buffer is larger than every field the kernel reads for these commands.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Load the program and attach it to the cgroup behind `cgroup_dir`.
pub fn attach(rules: &[Rule], cgroup_dir: BorrowedFd<'_>) -> std::io::Result<()> {
    const BPF_PROG_LOAD: i32 = 5;
    const BPF_PROG_ATTACH: i32 = 8;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u64 = 15;
    const BPF_CGROUP_DEVICE: u64 = 6;
    const BPF_F_ALLOW_MULTI: u64 = 2;
    let prog = program(rules);
    let license = c"Apache";
    let mut attr = [0u64; 16];
    // prog_type (u32), insn_cnt (u32), insns (u64), license (u64)
    attr[0] = BPF_PROG_TYPE_CGROUP_DEVICE | ((prog.len() as u64) << 32);
    attr[1] = prog.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    let fd = match bpf(BPF_PROG_LOAD, &attr) {
        Ok(fd) => fd,
        Err(e) => {
            // Once more with the verifier's log, so the error says why.
            let mut log = vec![0u8; 64 * 1024];
            attr[3] = 1 | ((log.len() as u64) << 32); // log_level, log_size
            attr[4] = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &attr).map(|fd| {
                // SAFETY: the kernel returned this fd; close it.
                drop(unsafe { OwnedFd::from_raw_fd(fd as i32) })
            });
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            return Err(std::io::Error::new(
                e.kind(),
                format!("load eBPF device program: {e}: {text}"),
            ));
        }
    };
    // SAFETY: the kernel returned this fd.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut attr = [0u64; 16];
    // target_fd (u32), attach_bpf_fd (u32), attach_type (u32), attach_flags (u32)
    attr[0] = cgroup_dir.as_raw_fd() as u64 | ((prog_fd.as_raw_fd() as u64) << 32);
    attr[1] = BPF_CGROUP_DEVICE | (BPF_F_ALLOW_MULTI << 32);
    bpf(BPF_PROG_ATTACH, &attr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("attach eBPF device program: {e}")))?;
    // The attachment holds the program; it goes with the cgroup.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the program the way the kernel would, for the handful of opcodes it uses.
    fn eval(p: &[Insn], kind: i32, access: i32, major: i32, minor: i32) -> bool {
        let ctx = [((access << 16) | kind) as u32, major as u32, minor as u32];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_W => {
                    assert_eq!(src, 1);
                    r[dst] = ctx[i.off as usize / 4] as u64;
                }
                AND32_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                RSH32_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                MOV32_X => r[dst] = r[src] as u32 as u64,
                MOV64_K => r[dst] = i.imm as i64 as u64,
                JNE_K if r[dst] != i.imm as u32 as u64 => pc += i.off as usize,
                JEQ_K if r[dst] == i.imm as u32 as u64 => pc += i.off as usize,
                JNE_K | JEQ_K => {}
                EXIT => return r[0] == 1,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    fn r(
        allow: bool,
        kind: Option<i32>,
        major: Option<i64>,
        minor: Option<i64>,
        access: i32,
    ) -> Rule {
        Rule {
            allow,
            kind,
            major,
            minor,
            access,
        }
    }

    #[test]
    fn containerd_default_rules() {
        let rwm = ACC_READ | ACC_WRITE | ACC_MKNOD;
        let rules = vec![
            r(false, None, None, None, rwm),
            r(true, Some(DEV_CHAR), None, None, ACC_MKNOD),
            r(true, Some(DEV_BLOCK), None, None, ACC_MKNOD),
            r(true, Some(DEV_CHAR), Some(1), Some(3), ACC_READ | ACC_WRITE),
            r(true, Some(DEV_CHAR), Some(136), None, rwm),
        ];
        let p = program(&rules);
        assert!(
            eval(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3),
            "/dev/null rw"
        );
        assert!(eval(&p, DEV_CHAR, ACC_MKNOD, 1, 3), "mknod /dev/null");
        assert!(
            eval(&p, DEV_CHAR, ACC_MKNOD, 10, 200),
            "mknod of any char device"
        );
        assert!(
            eval(&p, DEV_BLOCK, ACC_MKNOD, 8, 0),
            "mknod of any block device"
        );
        assert!(!eval(&p, DEV_CHAR, ACC_READ, 10, 200), "tun read denied");
        assert!(!eval(&p, DEV_BLOCK, ACC_READ, 8, 0), "sda read denied");
        assert!(!eval(&p, DEV_CHAR, ACC_WRITE, 1, 4), "wrong minor denied");
        assert!(eval(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 136, 5), "any pts");
    }

    #[test]
    fn no_code_after_an_unconditional_rule() {
        let rwm = ACC_READ | ACC_WRITE | ACC_MKNOD;
        let p = program(&[
            r(false, None, None, None, rwm),
            r(true, Some(DEV_CHAR), Some(1), Some(3), rwm),
        ]);
        // prologue 6 + the c 1:3 block (type, major, minor + verdict 2) + deny-all verdict 2
        assert_eq!(p.len(), 6 + 5 + 2);
        assert_eq!(p.last().map(|i| i.code), Some(EXIT));
        assert!(!eval(&p, DEV_CHAR, ACC_READ, 1, 5));
    }

    #[test]
    fn last_rule_wins_and_no_match_allows() {
        let rwm = ACC_READ | ACC_WRITE | ACC_MKNOD;
        let p = program(&[
            r(true, None, None, None, rwm),
            r(false, Some(DEV_CHAR), Some(1), Some(1), ACC_WRITE),
        ]);
        assert!(!eval(&p, DEV_CHAR, ACC_WRITE, 1, 1));
        assert!(
            !eval(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 1),
            "any denied bit denies"
        );
        assert!(eval(&p, DEV_CHAR, ACC_READ, 1, 1));
        assert!(eval(&program(&[]), DEV_BLOCK, ACC_READ, 8, 0));
    }

    #[test]
    fn parses_spec_rules() {
        let d: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow":true,"type":"c","major":1,"minor":-1,"access":"rw"}"#)
                .unwrap();
        assert_eq!(
            rule(&d).unwrap(),
            r(true, Some(DEV_CHAR), Some(1), None, ACC_READ | ACC_WRITE)
        );
        let d: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow":false,"access":"rwx"}"#).unwrap();
        assert!(rule(&d).unwrap_err().contains("'x'"));
    }
}
