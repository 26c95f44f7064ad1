//! Loss, reordering and duplicate accounting for one subscriber's view of one
//! publisher's stream.
//!
//! A [`Tracker`] remembers the next sequence number it expects and which of the 128
//! before it have arrived. A jump ahead counts the skipped numbers as lost; a late arrival
//! of a skipped number moves it from lost to out-of-order; a second arrival is a
//! duplicate. Further back than the window, a late arrival cannot be told from a
//! duplicate: it counts as out-of-order while the stream has losses to take it from, else
//! as a duplicate. At the end, [`Tracker::finish`] adds the missing tail (numbers up to
//! the publisher's final count that never arrived). Invariant: for every stream,
//! `unique arrivals + lost == final count`.

/// Sequence numbers remembered behind the next expected one.
pub(crate) const WINDOW: u64 = 128;

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The expected next number.
    InOrder,
    /// Ahead of the expected number; that many were skipped (lost so far).
    Gap(u64),
    /// A number skipped earlier, arriving late.
    OutOfOrder,
    /// Seen before.
    Duplicate,
}

/// One stream as seen by one subscriber.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tracker {
    /// Next sequence number expected.
    next: u64,
    /// Bit `i` set: `next - 1 - i` has arrived.
    seen: u128,
    /// Numbers below `next` not (yet) arrived.
    lost: u64,
}

/// Totals over trackers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Never arrived (gaps plus missing tail).
    pub(crate) lost: u64,
    /// Arrived after a later number.
    pub(crate) out_of_order: u64,
    /// Arrived more than once.
    pub(crate) duplicates: u64,
}

impl Tracker {
    /// A stream whose first wanted number is `next` (a `ringcast.v1` topic joined part
    /// way, or resumed after a sequence number).
    pub(crate) fn starting_at(next: u64) -> Self {
        Self {
            next,
            ..Self::default()
        }
    }

    /// The next number expected.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// Numbers skipped so far that have not arrived since (the tail is not included).
    pub(crate) fn lost(&self) -> u64 {
        self.lost
    }

    /// Moves the expected number forward to `to` without counting the numbers passed as
    /// lost: the server announced them missing. They count as seen, so one arriving after
    /// all is a duplicate. Returns how many were passed (0 when `to` is not ahead).
    pub(crate) fn skip_to(&mut self, to: u64) -> u64 {
        let Some(n) = to.checked_sub(self.next).filter(|&n| n > 0) else {
            return 0;
        };
        self.seen = if n >= 128 {
            u128::MAX
        } else {
            self.seen << n | ((1u128 << n) - 1)
        };
        self.next = to;
        n
    }

    /// Moves the expected number forward to `to`, counting the numbers passed as lost
    /// (as a jump ahead would; they may still arrive late).
    pub(crate) fn lose_to(&mut self, to: u64) {
        let Some(n) = to.checked_sub(self.next).filter(|&n| n > 0) else {
            return;
        };
        self.seen = if n >= 128 { 0 } else { self.seen << n };
        self.next = to;
        self.lost = self.lost.saturating_add(n);
    }

    /// Records the arrival of `seq`, updating `counts`.
    pub(crate) fn record(&mut self, seq: u64, counts: &mut Counts) -> Arrival {
        // Nearly every arrival: a one-bit shift, not the general variable-width one.
        if seq == self.next {
            self.seen = self.seen << 1 | 1;
            self.next = seq.saturating_add(1);
            return Arrival::InOrder;
        }
        if seq > self.next {
            let skipped = seq - self.next;
            self.seen = if skipped >= 127 {
                0
            } else {
                self.seen << (skipped + 1)
            } | 1;
            self.next = seq.saturating_add(1);
            self.lost = self.lost.saturating_add(skipped);
            return Arrival::Gap(skipped);
        }
        let back = self.next - 1 - seq;
        if back < WINDOW {
            let bit = 1u128 << back;
            if self.seen & bit != 0 {
                counts.duplicates += 1;
                return Arrival::Duplicate;
            }
            self.seen |= bit;
        } else if self.lost == 0 {
            counts.duplicates += 1;
            return Arrival::Duplicate;
        }
        self.lost = self.lost.saturating_sub(1);
        counts.out_of_order += 1;
        Arrival::OutOfOrder
    }

    /// Whether every number below `final_count` has arrived or been given up for lost.
    pub(crate) fn complete(&self, final_count: u64) -> bool {
        self.next >= final_count
    }

    /// Adds this stream's losses, including the missing tail up to `final_count`, to
    /// `counts`.
    pub(crate) fn finish(&self, final_count: u64, counts: &mut Counts) {
        counts.lost = counts
            .lost
            .saturating_add(self.lost)
            .saturating_add(final_count.saturating_sub(self.next));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64], final_count: u64) -> (Counts, Vec<Arrival>) {
        let mut t = Tracker::default();
        let mut c = Counts::default();
        let arrivals = seqs.iter().map(|&s| t.record(s, &mut c)).collect();
        t.finish(final_count, &mut c);
        (c, arrivals)
    }

    #[test]
    fn in_order_stream_is_clean() {
        let seqs: Vec<u64> = (0..1000).collect();
        let (c, _) = run(&seqs, 1000);
        assert_eq!(c, Counts::default());
    }

    #[test]
    fn gaps_and_tail_count_as_lost() {
        let (c, a) = run(&[0, 1, 4, 5], 8);
        assert_eq!(a[2], Arrival::Gap(2));
        assert_eq!(
            c,
            Counts {
                lost: 2 + 2,
                out_of_order: 0,
                duplicates: 0
            }
        );
    }

    #[test]
    fn late_arrival_moves_from_lost_to_out_of_order() {
        let (c, a) = run(&[0, 2, 1, 3], 4);
        assert_eq!(
            a,
            [
                Arrival::InOrder,
                Arrival::Gap(1),
                Arrival::OutOfOrder,
                Arrival::InOrder
            ]
        );
        assert_eq!(
            c,
            Counts {
                lost: 0,
                out_of_order: 1,
                duplicates: 0
            }
        );
    }

    #[test]
    fn duplicates_in_and_out_of_window() {
        let (c, _) = run(&[0, 1, 1, 2, 0], 3);
        assert_eq!(c.duplicates, 2);
        assert_eq!(c.lost, 0);
        // Beyond the window, with nothing lost: a duplicate.
        let mut seqs: Vec<u64> = (0..300).collect();
        seqs.push(5);
        let (c, _) = run(&seqs, 300);
        assert_eq!((c.duplicates, c.out_of_order, c.lost), (1, 0, 0));
        // Beyond the window, with a loss to fill: out of order.
        let mut seqs: Vec<u64> = (0..300).filter(|&s| s != 5).collect();
        seqs.push(5);
        let (c, _) = run(&seqs, 300);
        assert_eq!((c.duplicates, c.out_of_order, c.lost), (0, 1, 0));
    }

    #[test]
    fn invariant_unique_plus_lost_is_final() {
        // A scrambled stream: reversed blocks, drops and repeats.
        let mut seqs = Vec::new();
        for block in 0..50u64 {
            for s in (block * 10..block * 10 + 10).rev() {
                if s % 7 != 3 {
                    seqs.push(s);
                }
                if s % 11 == 0 {
                    seqs.push(s);
                }
            }
        }
        let unique: std::collections::HashSet<u64> = seqs.iter().copied().collect();
        let (c, _) = run(&seqs, 520);
        assert_eq!(unique.len() as u64 + c.lost, 520);
        assert_eq!(c.duplicates, seqs.len() as u64 - unique.len() as u64);
    }

    #[test]
    fn skips_are_not_losses_and_a_skipped_arrival_is_a_duplicate() {
        let mut t = Tracker::starting_at(42);
        let mut c = Counts::default();
        assert_eq!(t.record(42, &mut c), Arrival::InOrder);
        assert_eq!(t.skip_to(50), 7);
        assert_eq!(t.skip_to(45), 0, "not ahead");
        assert_eq!(t.next(), 50);
        assert_eq!(t.record(50, &mut c), Arrival::InOrder);
        assert_eq!(t.record(47, &mut c), Arrival::Duplicate);
        assert_eq!(t.record(53, &mut c), Arrival::Gap(2));
        assert_eq!(t.lost(), 2);
        // Far beyond the window: everything before counts as seen.
        assert_eq!(t.skip_to(1000), 1000 - 54);
        assert_eq!(t.record(990, &mut c), Arrival::Duplicate);
        t.finish(0, &mut c);
        assert_eq!((c.lost, c.duplicates, c.out_of_order), (2, 2, 0));
    }

    #[test]
    fn complete_tracks_progress() {
        let mut t = Tracker::default();
        let mut c = Counts::default();
        assert!(t.complete(0));
        assert!(!t.complete(2));
        t.record(0, &mut c);
        t.record(1, &mut c);
        assert!(t.complete(2));
    }

    #[test]
    fn the_largest_sequence_number_does_not_overflow() {
        // A server's envelope can carry any u64; the tracker must not panic on it.
        let mut t = Tracker::starting_at(u64::MAX - 1);
        let mut c = Counts::default();
        assert_eq!(t.record(u64::MAX - 1, &mut c), Arrival::InOrder);
        assert_eq!(t.record(u64::MAX, &mut c), Arrival::InOrder);
        let mut t = Tracker::default();
        assert_eq!(t.record(u64::MAX, &mut c), Arrival::Gap(u64::MAX));
    }
}
