//! See `ringkv_node::fuzzing::handoff_page`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ringkv_node::fuzzing::handoff_page(data);
});
