//! The one way libc results are read in the reactors: [`cvt`] turns the C convention
//! (-1 and `errno`) into `io::Result`. Each call site spells its own `unsafe` block,
//! with its `// SAFETY:` comment, around the libc call: `cvt(unsafe { libc::f(..) })`.

use std::io;

/// A libc return type whose -1 means failure with `errno` set.
pub(crate) trait MinusOne: Copy + PartialEq {
    /// The failure value.
    const MINUS_ONE: Self;
}

impl MinusOne for i32 {
    const MINUS_ONE: Self = -1;
}

impl MinusOne for isize {
    const MINUS_ONE: Self = -1;
}

/// Maps a libc return of -1 to `io::Error::last_os_error()`; any other value is `Ok`.
///
/// Call it directly on the libc call's result, before anything else can change `errno`.
pub(crate) fn cvt<T: MinusOne>(res: T) -> io::Result<T> {
    if res == T::MINUS_ONE {
        Err(io::Error::last_os_error())
    } else {
        Ok(res)
    }
}

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
