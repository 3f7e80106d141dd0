//! Fuzz target `patch`: runs `reverie::fuzzing::check("patch", data)`, the same
//! check `tests/fuzz_regressions.rs` runs on the corpus; a broken invariant panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = reverie::fuzzing::check("patch", data) {
        panic!("patch: {e}");
    }
});
