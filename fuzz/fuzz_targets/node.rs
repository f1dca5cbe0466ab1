//! Target 3: the whole node under an arbitrary sequence of inputs, in plaintext; and, for one
//! input in eight, an encrypted node whose peer completes the Noise handshake and feeds it
//! fuzzed records sealed with the real transport keys.
//! See `wendy_proto::fuzzing::node` and `wendy_proto::fuzzing::node_secure`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wendy_proto::fuzzing::node(data));
