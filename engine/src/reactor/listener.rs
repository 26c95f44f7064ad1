//! `SO_REUSEPORT` listeners, one per reactor, all on the same address.
//!
//! Accepted sockets inherit `TCP_NODELAY` and `SO_SNDBUF` from their listener on Linux, so
//! both are set here once rather than on every accepted socket: the io_uring backend
//! accepts into direct descriptors, on which plain `setsockopt(2)` cannot be called.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `n` listeners on `addr`. With port 0 the first picks a free port and the others
/// join it, so every reactor serves the same port. `sndbuf` (0: autotuning) is the
/// `SO_SNDBUF` accepted sockets inherit; they also inherit `TCP_NODELAY`.
pub(crate) fn bind_all(
    addr: SocketAddr,
    n: usize,
    backlog: u32,
    sndbuf: usize,
) -> io::Result<Vec<TcpListener>> {
    let first = bind_one(addr, backlog, sndbuf)?;
    let addr = first.local_addr()?;
    let mut all = Vec::with_capacity(n);
    all.push(first);
    for _ in 1..n {
        all.push(bind_one(addr, backlog, sndbuf)?);
    }
    Ok(all)
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
