use super::*;

#[test]
fn user_data_round_trips() {
    for (kind, gen_, slot) in [
        (op::RECV, 0, 0),
        (op::SEND, 0xff_ffff, 0xffff_ffff),
        (op::CLOSE, 7, 12345),
    ] {
        assert_eq!(split(user_data(kind, gen_, slot)), (kind, gen_, slot));
    }
    // Generations wrap at 24 bits rather than spilling into the kind.
    assert_eq!(split(user_data(op::RECV, 0x100_0001, 3)), (op::RECV, 1, 3));
}

#[test]
fn probe_says_yes_or_why_not() {
    match probe() {
        Ok(()) => {}
        Err(why) => assert!(!why.is_empty()),
    }
}

#[test]
fn buffer_ring_hands_out_and_takes_back_buffers() {
    if crate::reactor::skip_without_uring("buffer_ring_hands_out_and_takes_back_buffers") {
        return;
    }
    let ring = IoUring::new(8).expect("the probe passed");
    let mut bufs = BufRing::register(&ring, 4, 64).expect("the probe registered one");
    assert_eq!(bufs.buf_size(), 64);
    bufs.get(3, 64).fill(0xAB);
    assert!(bufs.get(3, 10).iter().all(|&b| b == 0xAB));
    bufs.recycle(3);
    let _ = ring.submitter().unregister_buf_ring(BGID);
}
