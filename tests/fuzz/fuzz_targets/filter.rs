#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| s3mirror::fuzzing::filter(data));
