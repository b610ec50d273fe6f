//! A new network namespace starts with `lo` down; runc brings it up, and programs expect it.
//! A spare namespace (spare_net.rs) has it up already: then only its flags are read.

pub fn loopback_up() -> Result<(), String> {
    // SAFETY: a socket used only for the interface ioctls, closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(format!(
            "socket for lo: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: ifreq is plain data; the name fits.
    let r = unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut r = libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut ifr);
        let up = libc::IFF_UP as libc::c_short;
        if r == 0 && ifr.ifr_ifru.ifru_flags & up == 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &mut ifr);
        }
        r
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(sock) };
    if r != 0 {
        return Err(format!("bring up lo: {err}"));
    }
    Ok(())
}
