//! Fuzz entry points. Each `fuzz_targets/T.rs` calls the function `T` of
//! one harness module; the regression tests under `cargo test`
//! (`daemon/format/tests/fuzz_regressions.rs`, `daemon/tests/fuzz_regressions.rs`)
//! include the same modules and replay `fuzz/seeds/T/` and
//! `fuzz/regressions/T/` through the same functions.
//!
//! A harness panics when an input breaks a property (a panic in the code
//! under test, or a round trip that does not hold); any other outcome,
//! including a clean rejection, is a pass.

pub mod daemon_harness;
pub mod format_harness;
pub mod replay;
