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
