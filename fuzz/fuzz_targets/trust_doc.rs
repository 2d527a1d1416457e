#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| milspecd_fuzz::format_harness::trust_doc(data));
