use io_uring::IoUring;

use super::bufring::{BGID, BufRing};
use super::probe;
use super::ring::{Ring, Role};

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
    for commit in [true, false] {
        let mut bufs = BufRing::register(&ring, 4, 64, commit).expect("the probe registered one");
        assert_eq!(bufs.buf_size(), 64);
        bufs.get(3, 64).fill(0xAB);
        assert!(bufs.get(3, 10).iter().all(|&b| b == 0xAB));
        bufs.recycle(3);
        let _ = ring.submitter().unregister_buf_ring(BGID);
    }
}

#[test]
fn an_extra_ring_signals_the_eventfd_only_while_asked_to() {
    if crate::reactor::skip_without_uring("an_extra_ring_signals_the_eventfd_only_while_asked_to") {
        return;
    }
    let waker = crate::reactor::waker::Waker::eventfd().expect("eventfd");
    let fd = waker.eventfd_raw().expect("an eventfd");
    let read = || {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a local u64 from a non-blocking eventfd we own.
        let n = unsafe { libc::read(fd, (&raw mut v).cast(), 8) };
        (n == 8).then_some(v)
    };
    let mut ring = Ring::open(Role::Extra, 4, 16, Some(fd)).expect("an extra ring");
    let nop = io_uring::opcode::Nop::new().build().user_data(1);
    // Off: a completion does not signal.
    // SAFETY: a no-op points at nothing.
    unsafe { ring.push(&nop) };
    ring.submit().expect("submit");
    assert!(ring.has_work());
    assert_eq!(read(), None);
    let mut cqes = Vec::new();
    ring.take_completions(&mut cqes).expect("completions");
    assert_eq!(cqes.len(), 1);
    // On: it does.
    ring.sleep_notify(true);
    assert!(!ring.has_work());
    // SAFETY: as above.
    unsafe { ring.push(&nop) };
    ring.submit().expect("submit");
    assert!(read().is_some_and(|n| n > 0));
    ring.sleep_notify(false);
}
