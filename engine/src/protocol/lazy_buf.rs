//! A byte buffer that costs one pointer while unused: connections keep message and
//! control-frame buffers only while a message or control frame is being assembled, and
//! most connections, most of the time, assemble nothing.

#![forbid(unsafe_code)]

/// A `Vec<u8>` allocated on first use. See the module docs.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)]
pub(crate) struct LazyBuf(Option<Box<Vec<u8>>>);

impl LazyBuf {
    /// The bytes held.
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.len())
    }

    /// Nothing held.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes that fit without reallocating (0 while unallocated).
    #[cfg_attr(not(fuzzing), allow(dead_code))]
    pub(crate) fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |v| v.capacity())
    }

    /// Makes room for `n` more bytes.
    pub(crate) fn reserve(&mut self, n: usize) {
        self.0.get_or_insert_default().reserve(n);
    }

    /// Appends `data`.
    pub(crate) fn extend_from_slice(&mut self, data: &[u8]) {
        self.0.get_or_insert_default().extend_from_slice(data);
    }

    /// Empties the buffer, keeping up to `keep` bytes of capacity for the next use (none
    /// when `keep` is 0).
    pub(crate) fn clear_keeping(&mut self, keep: usize) {
        match &mut self.0 {
            Some(v) if v.capacity() <= keep => v.clear(),
            _ => self.0 = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_on_first_use_and_releases_past_the_limit() {
        let mut b = LazyBuf::default();
        assert_eq!((b.len(), b.capacity(), b.as_slice()), (0, 0, &b""[..]));
        b.extend_from_slice(b"abc");
        assert_eq!(b.as_slice(), b"abc");
        b.clear_keeping(1024);
        assert!(b.is_empty() && b.capacity() > 0, "small capacity kept");
        b.reserve(4096);
        b.clear_keeping(1024);
        assert_eq!(b.capacity(), 0, "large capacity released");
        b.extend_from_slice(b"x");
        b.clear_keeping(0);
        assert_eq!(b.capacity(), 0);
    }
}
