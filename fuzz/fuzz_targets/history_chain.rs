#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milspecd_fuzz::daemon_harness::history_chain(data));
