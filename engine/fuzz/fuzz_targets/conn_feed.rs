#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringcast::protocol::fuzzing::conn_feed(data));
