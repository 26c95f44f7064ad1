//! Backends and the test server: `for_each_backend!`, the in-process server (or an
//! external one, `RINGCAST_TEST_URL`), and table-driven case checks.

#![allow(dead_code)]

use super::*;

/// Turns test functions `fn name(backend: Backend)` into one `#[test]` per backend, named
/// `name::epoll` and `name::uring`. Adding a backend is one line below.
macro_rules! for_each_backend {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[test]
                fn epoll() {
                    crate::util::run_on(ringcast::server::Backend::Epoll, super::$name);
                }
                #[test]
                fn uring() {
                    crate::util::run_on(ringcast::server::Backend::Uring, super::$name);
                }
            }
        )+
    };
}
pub(crate) use for_each_backend;

/// The running test's name (libtest names its threads after the tests).
fn current_test() -> String {
    thread::current().name().unwrap_or("a test").to_owned()
}

/// Runs one test body on one backend. A backend the kernel refuses (io_uring: EPERM/ENOSYS
/// from `io_uring_setup`, a missing opcode) is skipped with the printed reason, except under
/// `CI=true`, where a skip is a failure (DESIGN.md).
pub(crate) fn run_on(backend: Backend, test: fn(Backend)) {
    if backend == Backend::Uring
        && external_addr().is_none()
        && ringcast::reactor::skip_without_uring(&current_test())
    {
        return;
    }
    test(backend);
}

/// A running server for one test: the in-process engine, or the external one of [`URL_ENV`].
/// Dropping it shuts the engine down.
pub(crate) struct TestServer {
    addr: SocketAddr,
    /// In a mutex so that tests can share `&TestServer` between threads.
    handle: Mutex<Option<EngineHandle>>,
}

impl TestServer {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client connected to `/` with a completed handshake.
    pub(crate) fn client(&self) -> Client {
        self.client_at("/")
    }

    /// A client connected to `path` with a completed handshake.
    pub(crate) fn client_at(&self, path: &str) -> Client {
        let mut client = Client::connect_tcp(self.addr);
        let response = client.handshake(&Request::new(path));
        client.check_upgrade(&response);
        client
    }

    /// The engine's counters (`None` for an external server).
    pub(crate) fn stats(&self) -> Option<ringcast::server::Stats> {
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner());
        handle.as_ref().map(EngineHandle::stats)
    }

    /// A TCP connection with no handshake yet.
    pub(crate) fn tcp(&self) -> Client {
        Client::connect_tcp(self.addr)
    }

    /// Sends a raw HTTP request on a new connection and reads the whole response.
    pub(crate) fn http(&self, request: &[u8]) -> HttpResponse {
        let mut client = Client::connect_tcp(self.addr);
        client.write_raw(request);
        client.read_http_response()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let handle = self.handle.get_mut().map_or(None, Option::take);
        if let Some(handle) = handle {
            handle.shutdown();
        }
    }
}

/// Starts an echo server with default settings and `threads` reactors.
pub(crate) fn start_server(backend: Backend, threads: usize) -> TestServer {
    start_server_with(backend, threads, |builder| builder)
}

/// Starts an echo server; `configure` adjusts the builder (limits, handshake settings).
pub(crate) fn start_server_with(
    backend: Backend,
    threads: usize,
    configure: impl FnOnce(EngineBuilder) -> EngineBuilder,
) -> TestServer {
    if let Some(addr) = external_addr() {
        return TestServer {
            addr,
            handle: Mutex::new(None),
        };
    }
    let builder = Engine::builder()
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .threads(threads)
        .backend(backend);
    let handle = configure(builder)
        .start()
        .unwrap_or_else(|e| panic!("engine failed to start on {backend:?}: {e}"));
    TestServer {
        addr: handle.local_addr(),
        handle: Mutex::new(Some(handle)),
    }
}

fn external_addr() -> Option<SocketAddr> {
    let url = std::env::var(URL_ENV).ok().filter(|u| !u.is_empty())?;
    let rest = url
        .strip_prefix("ws://")
        .unwrap_or_else(|| panic!("{URL_ENV}={url}: only ws://HOST:PORT is supported"));
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr = authority
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("{URL_ENV}={url}: cannot resolve {authority}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{URL_ENV}={url}: no address for {authority}"));
    Some(addr)
}

/// Runs every case, even after failures, then fails with the list of failing cases. For
/// table-driven tests (close codes, UTF-8 vectors, reserved opcodes). Cases run on their own
/// connections, up to 32 at a time, so a server that never answers costs one [`TIMEOUT`] per
/// batch rather than per case.
#[track_caller]
pub(crate) fn check_cases<T: Send>(
    cases: impl IntoIterator<Item = (String, T)>,
    check: impl Fn(T) + Sync,
) {
    let check = &check;
    let mut cases = cases.into_iter().peekable();
    let mut failed = Vec::new();
    let mut total = 0;
    while cases.peek().is_some() {
        let batch: Vec<(String, T)> = cases.by_ref().take(32).collect();
        total += batch.len();
        thread::scope(|scope| {
            let running: Vec<_> = batch
                .into_iter()
                .map(|(name, case)| (name, scope.spawn(move || check(case))))
                .collect();
            for (name, thread) in running {
                if let Err(e) = thread.join() {
                    failed.push(format!("  {name}: {}", panic_message(&*e)));
                }
            }
        });
    }
    assert!(
        failed.is_empty(),
        "{} of {total} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn panic_message(e: &(dyn Any + Send)) -> String {
    if let Some(s) = e.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".to_owned()
    }
}
