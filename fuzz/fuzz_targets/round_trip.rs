//! Target 2: an arbitrary message encodes and decodes to itself.
//! See `wendy_proto::fuzzing::round_trip`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wendy_proto::fuzzing::round_trip(data));
