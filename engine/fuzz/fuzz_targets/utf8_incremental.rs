#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringcast::protocol::fuzzing::utf8_incremental(data));
