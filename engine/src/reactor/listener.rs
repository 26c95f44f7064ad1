//! `SO_REUSEPORT` listeners, one per reactor, all on the same address.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `n` listeners on `addr`. With port 0 the first picks a free port and the others
/// join it, so every reactor serves the same port.
pub(crate) fn bind_all(addr: SocketAddr, n: usize, backlog: u32) -> io::Result<Vec<TcpListener>> {
    let first = bind_one(addr, backlog)?;
    let addr = first.local_addr()?;
    let mut all = Vec::with_capacity(n);
    all.push(first);
    for _ in 1..n {
        all.push(bind_one(addr, backlog)?);
    }
    Ok(all)
}

fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}
