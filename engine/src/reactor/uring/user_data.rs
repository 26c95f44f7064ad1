//! What a completion belongs to: an SQE's `user_data` carries the operation kind, the
//! generation of the slot it acts on and the slot itself (the direct descriptor's index
//! in its ring's file table), so a late completion is never taken for the operation of a
//! newer connection in the same slot. Completions are read per ring, so the ring needs no
//! bits of its own.

/// Operation kinds, in the top byte of `user_data`.
pub(super) mod op {
    pub(in super::super) const ACCEPT: u8 = 1;
    pub(in super::super) const WAKE: u8 = 2;
    pub(in super::super) const RECV: u8 = 3;
    pub(in super::super) const SEND: u8 = 4;
    pub(in super::super) const SHUTDOWN: u8 = 5;
    pub(in super::super) const CLOSE: u8 = 6;
    pub(in super::super) const CANCEL: u8 = 7;
    /// A cancel of an operation that belongs to no slot (accept, wake read).
    pub(in super::super) const CANCEL_OTHER: u8 = 8;
}

/// Generations wrap at this many bits.
pub(super) const GEN_BITS: u32 = 24;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

/// `user_data`: operation kind (8 bits) | generation (24 bits) | slot (32 bits).
pub(super) fn user_data(kind: u8, gen_: u32, slot: u32) -> u64 {
    (u64::from(kind) << 56) | (u64::from(gen_ & GEN_MASK) << 32) | u64::from(slot)
}

/// The kind, generation and slot of a `user_data`.
pub(super) fn split(ud: u64) -> (u8, u32, u32) {
    ((ud >> 56) as u8, ((ud >> 32) as u32) & GEN_MASK, ud as u32)
}

/// The generation after `g`, within [`GEN_BITS`].
pub(super) fn next_gen(g: u32) -> u32 {
    g.wrapping_add(1) & GEN_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for (kind, gen_, slot) in [
            (op::RECV, 0, 0),
            (op::SEND, GEN_MASK, u32::MAX),
            (op::CLOSE, 7, 12345),
        ] {
            assert_eq!(split(user_data(kind, gen_, slot)), (kind, gen_, slot));
        }
        // Generations wrap at 24 bits rather than spilling into the kind.
        assert_eq!(split(user_data(op::RECV, 0x100_0001, 3)), (op::RECV, 1, 3));
        assert_eq!(next_gen(GEN_MASK), 0);
    }
}
