//! `SO_REUSEPORT` listeners, one per reactor, all on the same address.
//!
//! Accepted sockets inherit `TCP_NODELAY` and `SO_SNDBUF` from their listener on Linux, so
//! both are set here once rather than on every accepted socket: the io_uring backend
//! accepts into direct descriptors, on which plain `setsockopt(2)` cannot be called.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `n` listeners on `addr`. With port 0 a free port is picked and every listener
/// joins it, so every reactor serves the same port. `sndbuf` (0: autotuning) is the
/// `SO_SNDBUF` accepted sockets inherit; they also inherit `TCP_NODELAY`.
///
/// # Errors
/// `AddrInUse` ("address in use: ADDR ...") when any other socket already listens on the
/// address — another ringcast included: only this process's reactors may share it.
pub(crate) fn bind_all(
    addr: SocketAddr,
    n: usize,
    backlog: u32,
    sndbuf: usize,
) -> io::Result<Vec<TcpListener>> {
    let addr = claim(addr)?;
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(bind_one(addr, backlog, sndbuf)?);
    }
    Ok(all)
}

/// Checks that nobody listens on `addr` by binding it without `SO_REUSEPORT` (which a
/// listener of another process, even one with `SO_REUSEPORT`, refuses), and returns the
/// address with its port resolved. The reactors' listeners bind it right after; a
/// second server started later fails here. Without this check `SO_REUSEPORT` would let a
/// second server join the first silently, and the kernel would split new connections
/// between two processes whose publishers and subscribers never meet.
fn claim(addr: SocketAddr) -> io::Result<SocketAddr> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    if let Err(e) = probe.bind(&addr.into()) {
        return Err(if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                format!(
                    "address in use: {addr} (another server listens on it; only one \
                     ringcast process may serve an address)"
                ),
            )
        } else {
            io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
        });
    }
    probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))
}

fn bind_one(addr: SocketAddr, backlog: u32, sndbuf: usize) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if sndbuf > 0 {
        socket.set_send_buffer_size(sndbuf)?;
    }
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_server_on_the_same_address_is_refused() {
        let ls = bind_all("127.0.0.1:0".parse().unwrap(), 2, 16, 0).unwrap();
        let addr = ls[0].local_addr().unwrap();
        assert_eq!(
            ls[1].local_addr().unwrap(),
            addr,
            "the reactors share the port"
        );
        let e = bind_all(addr, 1, 16, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(
            e.to_string()
                .starts_with(&format!("address in use: {addr}")),
            "{e}"
        );
        drop(ls);
        // Free again once the first server is gone.
        assert!(bind_all(addr, 1, 16, 0).is_ok());
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_and_sndbuf() {
        let ls = bind_all("127.0.0.1:0".parse().unwrap(), 1, 16, 8192).unwrap();
        let _client = std::net::TcpStream::connect(ls[0].local_addr().unwrap()).unwrap();
        ls[0].set_nonblocking(false).unwrap();
        let (accepted, _) = ls[0].accept().unwrap();
        let s = socket2::SockRef::from(&accepted);
        assert!(s.tcp_nodelay().unwrap());
        // The kernel doubles the value asked for.
        assert_eq!(s.send_buffer_size().unwrap(), 16384);
    }
}
