#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sva_fuzz_targets::scenario(data));
