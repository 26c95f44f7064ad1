//! How publishers (and the shutdown trigger) interrupt a reactor waiting for I/O.
//!
//! epoll reactors use a `mio::Waker` (an eventfd registered with their poll); io_uring
//! reactors use an eventfd of their own on which they keep one read in flight. Either way
//! a wake is one `write(2)` of an eventfd, and the inbox flag logic
//! ([`crate::fanout::ring`]) makes it one per batch of publications, not one per message.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

use super::sys::cvt;

/// Interrupts one reactor's wait.
#[derive(Debug)]
pub(crate) enum Waker {
    /// The epoll backend's waker.
    Mio(mio::Waker),
    /// An eventfd the io_uring backend keeps a read armed on.
    EventFd(File),
}

impl Waker {
    /// A non-blocking eventfd for an io_uring reactor.
    pub(crate) fn eventfd() -> io::Result<Self> {
        // SAFETY: eventfd(2) takes no pointers; flags are valid constants.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: eventfd(2) returned a new descriptor that nothing else owns.
        Ok(Self::EventFd(unsafe { File::from_raw_fd(fd) }))
    }

    /// Wakes the reactor (its wait returns soon).
    pub(crate) fn wake(&self) -> io::Result<()> {
        <Self as crate::fanout::ring::Wake>::wake(self)
    }

    /// The eventfd, for the io_uring reactor to read.
    pub(crate) fn eventfd_raw(&self) -> Option<RawFd> {
        match self {
            Self::Mio(_) => None,
            Self::EventFd(f) => Some(f.as_raw_fd()),
        }
    }
}

impl crate::fanout::ring::Wake for Waker {
    fn wake(&self) -> io::Result<()> {
        match self {
            Self::Mio(w) => w.wake(),
            Self::EventFd(f) => match (&*f).write(&1u64.to_ne_bytes()) {
                Ok(_) => Ok(()),
                // The counter is saturated: the reactor has a wake pending anyway.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(e),
            },
        }
    }
}
