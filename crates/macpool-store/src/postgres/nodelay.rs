//! `TCP_NODELAY` on the connections to PostgreSQL.
//!
//! sqlx 0.9.0 stopped setting it (sqlx#4335; the fix, sqlx#4336, is not released yet). Without
//! it, a statement sent as two TLS records waits for the server's delayed ACK: measured here,
//! every batch took ~40 ms longer over TLS (`sslmode=prefer`, PostgreSQL's default) and
//! throughput fell from ~3,700 to ~700 allocations/s. libpq, pgbench and psql always set it.
//! sqlx gives no access to its socket, so after each new connection this sets the option on every
//! TCP socket of the process whose peer is the database's port — a no-op on sockets that have it.
//! Remove once sqlx sets it again.

#[cfg(target_os = "linux")]
pub fn set_on_connections_to(port: u16) {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in fds.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::c_int>().ok())
        else {
            continue;
        };
        if peer_port(fd) == Some(port) {
            let on: libc::c_int = 1;
            // SAFETY: setsockopt only reads `on`; on an fd that is not a TCP socket (or was
            // closed and reused meanwhile) it fails harmlessly with an error we ignore.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

/// The remote port of a connected IPv4/IPv6 stream socket.
#[cfg(target_os = "linux")]
fn peer_port(fd: libc::c_int) -> Option<u16> {
    // SAFETY: the buffers are sized for any socket address; getpeername writes at most `len`
    // bytes and fails (returning -1) on anything that is not a connected socket.
    unsafe {
        let mut kind: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        ) != 0
            || kind != libc::SOCK_STREAM
        {
            return None;
        }
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return None;
        }
        match i32::from(addr.ss_family) {
            libc::AF_INET => {
                let a = &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                Some(u16::from_be(a.sin_port))
            }
            libc::AF_INET6 => {
                let a = &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                Some(u16::from_be(a.sin6_port))
            }
            _ => None,
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn set_on_connections_to(_port: u16) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn sets_nodelay_on_sockets_to_the_port_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to_db = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let elsewhere = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_db.nodelay().unwrap());
        super::set_on_connections_to(port);
        assert!(to_db.nodelay().unwrap());
        assert!(!elsewhere.nodelay().unwrap());
    }
}
