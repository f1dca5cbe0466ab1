//! Target 1: the frame decoder over arbitrary bytes in arbitrary chunk sizes.
//! See `wendy_proto::fuzzing::decoder`; this wrapper adds the allocation bound.
#![no_main]
#![forbid(unsafe_code)]

use std::alloc::System;

use libfuzzer_sys::fuzz_target;
use peakmem_alloc::{PeakMemAlloc, PeakMemAllocTrait, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

fuzz_target!(|data: &[u8]| {
    GLOBAL.reset_peak_memory();
    wendy_proto::fuzzing::decoder(data);
    // Decoding never allocates in proportion to what a length prefix announces, only to the
    // bytes actually received (the stream is decoded three times and its messages kept).
    let peak = GLOBAL.get_peak_memory();
    let bound = wendy_proto::fuzzing::decoder_alloc_bound(data.len());
    assert!(peak <= bound, "decoding {} bytes allocated {peak} bytes at peak (bound {bound})", data.len());
});
