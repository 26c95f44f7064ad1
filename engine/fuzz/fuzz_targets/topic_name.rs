#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringcast::fuzzing::topic_name(data));
