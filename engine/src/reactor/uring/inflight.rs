//! What an in-flight send owns until its completion arrives.
//!
//! A `sendmsg` SQE points at a `msghdr`, which points at an iovec array, which points into
//! frames. All three belong to one boxed [`SendOp`]: the frames are `Bytes` clones of the
//! out-queue's front (a refcount bump each, no copy), so even if the session drops its queue
//! (the connection closes, a slow-consumer policy fires) the memory the kernel reads stays
//! alive. The reactor keeps the box in the connection's slot until the CQE names it, and
//! only then drops it (STYLE habit 8). Nothing in it is touched while it is in flight.

use bytes::Bytes;

/// One `sendmsg` in flight: the frames, their iovecs and the message header.
pub(crate) struct SendOp {
    frames: Vec<Bytes>,
    iovs: Vec<libc::iovec>,
    msg: libc::msghdr,
    len: usize,
}

impl std::fmt::Debug for SendOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendOp")
            .field("frames", &self.frames.len())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl SendOp {
    /// A send of `frames`, boxed so that the header's address is stable.
    pub(crate) fn new(frames: Vec<Bytes>) -> Box<Self> {
        let iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            })
            .collect();
        let len = frames.iter().map(Bytes::len).sum();
        // SAFETY: `msghdr` is a plain C struct for which all-zero is a valid value (no
        // address, no control data, no flags).
        let msg: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut op = Box::new(Self {
            frames,
            iovs,
            msg,
            len,
        });
        let iov = op.iovs.as_mut_ptr();
        op.msg.msg_iov = iov;
        op.msg.msg_iovlen = op.iovs.len() as _;
        op
    }

    /// The header to put in the SQE. Valid while `self` is neither moved out of its box
    /// nor dropped; its iovecs and frames are never changed after [`new`](Self::new).
    pub(crate) fn msg_ptr(&self) -> *const libc::msghdr {
        &raw const self.msg
    }

    /// Bytes this send carries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_points_at_the_frames_themselves() {
        let a = Bytes::from_static(b"hello ");
        let b = Bytes::from(vec![b'w'; 100]);
        let op = SendOp::new(vec![a.clone(), b.clone()]);
        assert_eq!(op.len(), 106);
        let msg = op.msg_ptr();
        // SAFETY: `msg` points into `op`, alive for this whole test, and the iovecs it
        // names are `op.iovs`, two initialised entries.
        let iovs = unsafe {
            assert_eq!((*msg).msg_iovlen, 2);
            std::slice::from_raw_parts((*msg).msg_iov, 2)
        };
        assert_eq!(iovs[0].iov_base.cast_const().cast::<u8>(), a.as_ptr());
        assert_eq!(iovs[1].iov_len, 100);
        // Zero-copy: the clone shares the frame's storage.
        assert_eq!(iovs[1].iov_base.cast_const().cast::<u8>(), b.as_ptr());
    }
}
