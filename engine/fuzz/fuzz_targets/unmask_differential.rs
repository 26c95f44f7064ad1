#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringcast::protocol::fuzzing::unmask_differential(data));
