#![no_main]
// The checks are in ../src/lib.rs, shared with the regression replay and the property tests.
libfuzzer_sys::fuzz_target!(|data: &[u8]| odmrd_fuzz::throttle_state(data));
