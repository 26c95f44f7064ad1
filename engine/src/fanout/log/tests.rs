use bytes::Bytes;

use super::*;
use crate::fanout::chunk::{MAX_CHUNK, MIN_CHUNK};

fn frame(len: usize, fill: u8) -> Bytes {
    Bytes::from(vec![fill; len])
}

fn collect(log: &TopicLog, from: u64) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut slices = 0;
    log.pieces(from, usize::MAX, |b, _| {
        out.extend_from_slice(b);
        slices += 1;
        true
    });
    (out, slices)
}

/// Capacity of the last chunk the log holds (0 when it holds none).
fn tail_chunk_capacity(log: &TopicLog) -> usize {
    let mut cap = 0;
    log.pieces(log.tail(), usize::MAX, |_, k| {
        if let Backing::Chunk(ch) = k {
            cap = ch.capacity();
        }
        true
    });
    cap
}

#[test]
fn small_frames_are_one_contiguous_run() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::default();
    for i in 0..100u8 {
        assert_eq!(log.append_next(&frame(10, i), &pool), u64::from(i) + 1);
    }
    assert_eq!(log.head(), 1000);
    let (bytes, slices) = collect(&log, 0);
    assert_eq!(slices, 1, "100 messages, one slice");
    assert_eq!(bytes.len(), 1000);
    assert_eq!(&bytes[990..], &[99u8; 10]);
    // From the middle of a frame.
    let (bytes, slices) = collect(&log, 995);
    assert_eq!((bytes.len(), slices), (5, 1));
}

#[test]
fn runs_cross_chunk_edges_as_two_slices() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::default();
    // 4 KiB first chunk: 40 frames of 100 B fit, the 41st opens a second (8 KiB) chunk.
    for i in 0..41u8 {
        log.append_next(&frame(100, i), &pool);
    }
    assert_eq!(log.segments(), 2);
    let (bytes, slices) = collect(&log, 3950);
    assert_eq!(slices, 2);
    assert_eq!(bytes.len(), 150);
    assert_eq!(&bytes[..50], &[39u8; 50]);
    assert_eq!(&bytes[50..], &[40u8; 100]);
    // Chunks grow while they fill up (to MAX_CHUNK after about 124 KiB); under Miri, which
    // interprets each append, in fewer, larger frames.
    let (count, len) = if cfg!(miri) { (250, 1000) } else { (2000, 100) };
    for i in (0..count).map(|i: u32| i as u8) {
        log.append_next(&frame(len, i), &pool);
    }
    let mut caps = Vec::new();
    log.pieces(0, usize::MAX, |_, k| {
        if let Backing::Chunk(c) = k {
            caps.push(c.capacity());
        }
        true
    });
    assert_eq!(caps[0], MIN_CHUNK);
    assert!(caps.windows(2).all(|w| w[1] >= w[0]), "{caps:?}");
    assert_eq!(*caps.last().unwrap(), MAX_CHUNK, "{caps:?}");
}

#[test]
#[cfg_attr(miri, ignore = "25 000 appends: minutes under Miri")]
fn a_quiet_topic_shrinks_back_to_small_chunks() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::default();
    // Busy: chunks fill within a trim or two, and grow.
    for _ in 0..200 {
        for _ in 0..100 {
            log.append_next(&frame(100, 1), &pool);
        }
        log.trim(log.head(), 1);
    }
    assert_eq!(tail_chunk_capacity(&log), MAX_CHUNK);
    // Quiet: one message per trim; each chunk takes hundreds of trims to fill.
    for _ in 0..5000 {
        log.append_next(&frame(100, 2), &pool);
        log.trim(log.head(), 1);
    }
    assert_eq!(tail_chunk_capacity(&log), MIN_CHUNK);
}

#[test]
fn large_frames_are_referenced_not_copied() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::default();
    log.append_next(&frame(10, 1), &pool);
    let big = frame(LARGE_FRAME + 1, 2);
    log.append_next(&big, &pool);
    log.append_next(&frame(10, 3), &pool);
    assert_eq!(log.segments(), 3);
    let mut ptrs = Vec::new();
    log.pieces(0, usize::MAX, |b, _| {
        ptrs.push((b.as_ptr(), b.len()));
        true
    });
    assert_eq!(ptrs.len(), 3);
    assert_eq!(
        ptrs[1],
        (big.as_ptr(), big.len()),
        "the published buffer itself"
    );
    // The rest of the large frame, held, is a slice of the same buffer.
    let rest = log.hold_rest_of_frame(20).unwrap();
    assert_eq!(rest.len(), LARGE_FRAME + 1 - 10);
    assert_eq!(rest.bytes().as_ptr(), big[10..].as_ptr());
}

#[test]
fn boundaries_and_counts() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::after(6);
    for len in [3usize, 5, 2] {
        log.append_next(&frame(len, len as u8), &pool);
    }
    // Frames at 0, 3, 8; head 10.
    assert!(log.is_boundary(0) && log.is_boundary(3) && log.is_boundary(8) && log.is_boundary(10));
    assert!(!log.is_boundary(4));
    assert_eq!(log.frame_end(4), 8);
    assert_eq!(log.frame_end(9), 10);
    assert_eq!(log.frame_end(3), 3);
    assert_eq!(log.frames_before(0), 0);
    assert_eq!(log.frames_before(4), 2);
    assert_eq!(log.frames_before(10), 3);
    assert_eq!(log.latest_frame(), Some(8));
    assert_eq!(log.frame_at_or_after(4), 8);
    assert_eq!(log.frame_at_or_after(9), 10);
    let seqs: Vec<u64> = log.frames().map(|f| f.seq).collect();
    assert_eq!(seqs, [7, 8, 9]);
    assert_eq!(log.last_seq(), 9);
    let rest = log.hold_rest_of_frame(5).unwrap();
    assert_eq!(rest.bytes(), &[5u8; 3]);
    assert!(log.hold_rest_of_frame(8).is_none());
}

#[test]
fn trim_returns_chunks_every_cursor_passed() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::default();
    // 100 KB; under Miri, which interprets each append, in fewer, larger frames.
    let (count, len) = if cfg!(miri) {
        (250u32, 400)
    } else {
        (1000, 100)
    };
    for i in 0..count {
        log.append_next(&frame(len, i as u8), &pool);
    }
    let segs = log.segments();
    assert!(segs > 3);
    let live = pool.live();
    // A cursor in the middle keeps its chunk and everything after it.
    log.trim(50_000, 1);
    assert!(log.tail() <= 50_000 && log.tail() > 0);
    assert!(pool.live() < live);
    // Records are kept from the frame the cursor is in.
    let first = log.frames().next().unwrap().pos;
    assert!(first >= log.tail() && first <= 50_000 && first + len as u64 + 2 > 50_000);
    let (bytes, _) = collect(&log, 50_000);
    assert_eq!(bytes.len(), 50_000);
    // Every cursor at the head: nothing but (at most) the tail chunk, with room, stays.
    log.trim(log.head(), 1);
    assert!(log.held_bytes() < MAX_CHUNK as u64);
    assert!(log.segments() <= 1 && pool.live() <= 1);
    // A pinned chunk stays alive (not reused) after the log let it go.
    let mut log = TopicLog::default();
    log.append_next(&frame(100, 9), &pool);
    log.append_next(&frame(4000, 9), &pool);
    let held = log.hold_rest_of_frame(50).unwrap();
    log.trim(log.head(), 1);
    assert_eq!(log.segments(), 1, "only the tail chunk, with room, stays");
    assert_eq!(
        held.bytes(),
        &[9u8; 50],
        "the first chunk lives on for its holder"
    );
}

#[test]
#[should_panic(expected = "outside the log")]
fn a_dropped_cursor_is_a_bug() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::default();
    for _ in 0..100 {
        log.append_next(&frame(1000, 0), &pool);
    }
    log.trim(90_000, 1);
    log.pieces(0, usize::MAX, |_, _| true);
}

#[test]
fn history_floor_binds_by_count_or_bytes() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::default();
    for i in 0..10u8 {
        log.append_next(&frame(10, i), &pool); // 10-byte frames at 0, 10, … 90
    }
    assert_eq!(log.history_floor(3, 1 << 20), 70, "the newest 3");
    assert_eq!(
        log.history_floor(100, 25),
        80,
        "the newest that fit in 25 bytes"
    );
    assert_eq!(log.history_floor(100, 1 << 20), 0, "everything");
    assert_eq!(log.history_floor(0, 1 << 20), log.head(), "no history");
    // Trimmed to the floor, the records start exactly there (the chunk stays whole).
    log.trim(log.history_floor(3, 1 << 20), 1);
    let seqs: Vec<u64> = log.frames().map(|f| f.seq).collect();
    assert_eq!(seqs, [8, 9, 10]);
    assert_eq!(log.tail(), 0, "bytes are dropped a chunk at a time");
}

#[test]
fn resume_points_and_gaps() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::after(40);
    for i in 41..=50u64 {
        log.append(&frame(10, i as u8), i, &pool);
    }
    let pos = |seq: u64| (seq - 41) * 10;
    assert_eq!(
        log.resume(45),
        Resume {
            cursor: pos(46),
            gap: None
        }
    );
    assert_eq!(
        log.resume(40),
        Resume {
            cursor: pos(41),
            gap: None
        }
    );
    assert_eq!(
        log.resume(30),
        Resume {
            cursor: pos(41),
            gap: Some((31, 40))
        }
    );
    assert_eq!(
        log.resume(50),
        Resume {
            cursor: log.head(),
            gap: None
        }
    );
    assert_eq!(
        log.resume(99),
        Resume {
            cursor: log.head(),
            gap: None
        }
    );
    // Nothing held: everything after `since` is a gap.
    log.trim(log.head(), 1);
    assert_eq!(
        log.resume(45),
        Resume {
            cursor: log.head(),
            gap: Some((46, 50))
        }
    );
    // A gap frame stands for the messages a reactor never got.
    let head = log.head();
    log.append_gap(&frame(30, 0), 51, 57, &pool);
    log.append(&frame(10, 58), 58, &pool);
    assert_eq!(
        log.resume(52),
        Resume {
            cursor: head,
            gap: None
        },
        "the gap frame tells"
    );
    assert_eq!(
        log.resume(57),
        Resume {
            cursor: head + 30,
            gap: None
        }
    );
    assert_eq!(log.seq_range(head, log.head()), Some((51, 58)));
    assert_eq!(log.seq_range(head + 30, head + 30), None);
}

#[test]
fn seq_before_a_cursor() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::after(6);
    for _ in 0..3 {
        log.append_next(&frame(10, 0), &pool); // 7, 8, 9 at 0, 10, 20
    }
    assert_eq!(log.seq_before(0), 6);
    assert_eq!(log.seq_before(10), 7);
    assert_eq!(log.seq_before(15), 7, "inside frame 8");
    assert_eq!(log.seq_before(30), 9);
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(if cfg!(miri) { 2 } else { 256 }))]

    /// `frames_before` (its guess for frames of one size, then its search) counts what a
    /// scan of the held frames counts, at every position, for frames of one size or of
    /// many, with the log's front trimmed or not.
    #[test]
    fn frames_before_counts_what_a_scan_counts(
        lens in proptest::collection::vec(1usize..3000, 1..80),
        uniform in proptest::bool::ANY,
        trim in 0usize..30,
    ) {
        let pool = ChunkPool::default();
        let mut log = TopicLog::default();
        for (i, &len) in lens.iter().enumerate() {
            let len = if uniform { lens[0] } else { len };
            log.append_next(&frame(len, i as u8), &pool);
        }
        let cut = log.frames().nth(trim.min(lens.len() - 1)).map(|f| f.pos);
        if let Some(pos) = cut {
            log.trim(pos, 1);
        }
        let starts: Vec<u64> = log.frames().map(|f| f.pos).collect();
        let head = log.head();
        let near = starts.iter().chain([&head]).flat_map(|&p| [p.saturating_sub(1), p, p + 1]);
        for pos in near.filter(|&p| p <= head) {
            let want = starts.iter().filter(|&&p| p < pos).count();
            proptest::prop_assert_eq!(log.frames_before(pos), want, "at {}", pos);
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "8 000 appends: minutes under Miri")]
fn a_wide_topic_keeps_large_chunks_however_slowly_they_fill() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::default();
    // Two messages per trim, as a long pass over thousands of subscribers may see them: a
    // narrow topic's chunks take too many trims to fill and stay small ...
    for _ in 0..2000 {
        for _ in 0..2 {
            log.append_next(&frame(100, 1), &pool);
        }
        log.trim(log.head(), 1);
    }
    assert_eq!(tail_chunk_capacity(&log), MIN_CHUNK);
    // ... while a wide one's grow to the largest and stay there.
    for _ in 0..2000 {
        for _ in 0..2 {
            log.append_next(&frame(100, 1), &pool);
        }
        log.trim(log.head(), 10_000);
    }
    assert_eq!(tail_chunk_capacity(&log), MAX_CHUNK);
}

#[test]
#[cfg_attr(miri, ignore = "100 000 appends: minutes under Miri")]
fn a_trimmed_burst_gives_back_its_records_and_chunks() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::default();
    for i in 0..100_000u32 {
        log.append_next(&frame(8, i as u8), &pool);
    }
    assert!(log.frames.capacity() >= 100_000);
    assert!(
        log.would_free(log.head()),
        "full chunks behind every cursor"
    );
    log.trim(log.head() - 80, 1);
    assert!(log.frames().count() <= MAX_CHUNK / 8);
    assert!(
        log.frames.capacity() <= 4 * MAX_CHUNK / 8,
        "records of the burst not kept as spare room: {}",
        log.frames.capacity()
    );
    assert!(
        !log.would_free(log.head()),
        "only the chunk being filled is left"
    );
    assert_eq!(log.segments(), 1);
}

#[test]
fn a_replay_floor_counts_bytes_and_records() {
    let pool = ChunkPool::default();
    let mut log = TopicLog::default();
    for i in 0..100u8 {
        log.append_next(&frame(10, i), &pool);
    }
    let per = (10 + RECORD_BYTES) as u64;
    assert_eq!(log.replay_floor(u64::MAX), 0, "everything fits");
    assert_eq!(log.replay_floor(per * 100), 0);
    assert_eq!(log.replay_floor(per * 100 - 1), 10, "one frame less");
    assert_eq!(log.replay_floor(per * 3 + per / 2), 970, "the newest three");
    assert_eq!(log.replay_floor(per - 1), log.head(), "not even the newest");
    assert_eq!(TopicLog::default().replay_floor(1 << 20), 0, "an empty log");
}
