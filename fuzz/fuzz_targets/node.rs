//! Target 3: the whole node under an arbitrary sequence of inputs.
//! See `wendy_proto::fuzzing::node`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wendy_proto::fuzzing::node(data));
