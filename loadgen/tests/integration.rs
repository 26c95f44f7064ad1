//! loadgen's integration tests: the `loadgen` binary run as a user runs it, against the
//! ringcast server and small servers of the tests' own. One test binary for all of them:
//! each file of this directory is a module here, so the shared helpers are compiled once
//! and the binary linked once, not once per file.

mod util;

mod accounting;
mod cluster;
mod echo_connect;
mod errors;
mod fanout;
mod resume;
mod v1_faults;
