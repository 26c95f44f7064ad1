//! Which backend an engine runs on, as `EngineHandle::backend()` reports it: an explicit
//! choice is kept, `Auto` resolves to io_uring exactly when the probe passes (else epoll, with
//! the reason). The forced fallback (`RINGCAST_URING=off`, logged) is tested on the binary in
//! `server_binary.rs`, since an environment variable is process-wide.

use ringcast::Engine;
use ringcast::server::{Backend, probe_uring};

fn start(backend: Backend) -> std::io::Result<ringcast::EngineHandle> {
    Engine::builder()
        .listen("127.0.0.1:0".parse().unwrap())
        .threads(1)
        .pin(false)
        .backend(backend)
        .start()
}

#[test]
fn explicit_epoll_is_kept() {
    let h = start(Backend::Epoll).expect("epoll starts");
    assert_eq!(h.backend(), Backend::Epoll);
    assert_eq!(h.fallback_reason(), None);
}

#[test]
fn explicit_uring_runs_or_fails_with_the_reason() {
    match (probe_uring(), start(Backend::Uring)) {
        (Ok(()), Ok(h)) => {
            assert_eq!(h.backend(), Backend::Uring);
            assert_eq!(h.fallback_reason(), None);
        }
        (Err(why), Err(e)) => {
            assert!(e.to_string().contains(&why), "{e}");
            // Fails under CI=true, prints the skip otherwise.
            assert!(ringcast::reactor::skip_without_uring(
                "explicit_uring_runs_or_fails_with_the_reason"
            ));
        }
        (probe, started) => panic!("probe {probe:?} but start {:?}", started.map(|_| ())),
    }
}

#[test]
fn auto_follows_the_probe() {
    let h = start(Backend::Auto).expect("auto always starts");
    match probe_uring() {
        Ok(()) => {
            assert_eq!(h.backend(), Backend::Uring);
            assert_eq!(h.fallback_reason(), None);
        }
        Err(why) => {
            assert_eq!(h.backend(), Backend::Epoll);
            assert_eq!(h.fallback_reason(), Some(why.as_str()));
        }
    }
}
