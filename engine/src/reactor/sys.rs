//! The one way libc is called from the reactors: [`syscall!`] turns the C convention
//! (-1 and `errno`) into `io::Result`.

/// Calls a libc function, mapping a return of -1 to `io::Error::last_os_error()`.
///
/// The call itself is `unsafe`: each use site says why its arguments are valid.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller of `syscall!` states, above the macro use, why the
        // arguments satisfy the function's contract.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

/// A reusable array of `iovec`s for one vectored write at a time. It is filled, handed to
/// the kernel and cleared within one flush, so the pointers it holds never outlive the
/// buffers they point to; between flushes it is empty and only its capacity is kept.
#[derive(Debug, Default)]
pub(crate) struct IoVecs(pub(crate) Vec<libc::iovec>);

// SAFETY: between uses the vector is empty (every user clears it before returning), so
// moving it to another thread moves no pointer; while filled it is used by one thread.
unsafe impl Send for IoVecs {}

impl IoVecs {
    /// Appends a slice.
    pub(crate) fn push(&mut self, b: &[u8]) {
        self.0.push(libc::iovec {
            iov_base: b.as_ptr().cast_mut().cast(),
            iov_len: b.len(),
        });
    }
}
