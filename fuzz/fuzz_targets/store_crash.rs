#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: sprite_tasks::testing::fuzzing::keep_heap(),
    |data: &[u8]| sprite_tasks::testing::fuzzing::store_crash(data)
);
