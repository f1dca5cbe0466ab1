//! Target 4: a storage layer fed arbitrary storage messages, among its own operations.
//! See `wendy_proto::store::fuzz`.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wendy_proto::store::fuzz::store(data));
