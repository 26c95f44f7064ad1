#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringcast::protocol::fuzzing::http_request(data));
