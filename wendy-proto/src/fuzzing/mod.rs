//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and the stable replay test.
//!
//! Each target takes raw fuzzer bytes and panics when it finds a bug; it never panics on an
//! input that merely fails to parse. The same functions run under libFuzzer (nightly,
//! `cargo +nightly fuzz run <target>`) and in the workspace's stable test that replays the
//! committed corpus (`tests/tests/fuzz_replay.rs`), so a corpus entry means the same thing in
//! both places.
//!
//! - [`decoder`]: arbitrary bytes, fed to a [`FrameDecoder`] in arbitrary chunk sizes, with a
//!   small or default maximum frame size. It must never panic, never hold more than one
//!   incomplete frame, never hand out a body above the maximum, and split the stream the same
//!   way whatever the chunking; every body it accepts must survive re-encoding.
//! - [`round_trip`]: an arbitrary [`Message`] encodes to one frame that decodes to itself (or,
//!   if the message breaks a bound, to [`WireError::OutOfBounds`]), through
//!   [`decode_frame`] and byte by byte through a [`FrameDecoder`].
//! - [`node`]: one [`Node`] driven by an arbitrary sequence of [`Op`]s: peers dialling it and
//!   completing (or botching) the handshake, the node's own dials answered honestly or not,
//!   raw bytes, well-formed hostile messages, replies to the node's requests, timer jumps,
//!   application commands, joins and leaves. After every step it checks
//!   [`Node::check_invariants`] and the harness's own checks (see [`NodeHarness::check`]).
//!   That run is in plaintext, so that the harness can play every peer by hand; then, for one
//!   input in eight (its first byte a multiple of 8: each session costs a handshake), the rest
//!   of the bytes drive the encrypted half, [`node_secure`]: a node on the Noise transport, a peer
//!   that completes the handshake with it under a fixed key and feeds it fuzzed messages and
//!   records sealed with the real transport keys (and tampered, replayed and unsealed ones).
//!   The plaintext half reads the input as before, so the committed corpus keeps its meaning.
//!
//! This module exists only with the `arbitrary` and `testing` features.
//!
//! [`FrameDecoder`]: crate::wire::FrameDecoder
//! [`Message`]: crate::wire::Message
//! [`WireError::OutOfBounds`]: crate::wire::WireError::OutOfBounds
//! [`decode_frame`]: crate::wire::decode_frame
//! [`Node`]: crate::Node
//! [`Node::check_invariants`]: crate::Node::check_invariants

mod decoder;
mod node;
mod round_trip;
mod secure;

pub use decoder::{decoder, decoder_alloc_bound};
pub use node::{node, node_input, run_node, DialOutcome, FuzzConfig, Key, NodeHarness, Op, StateKind, Who};
pub use round_trip::round_trip;
pub use secure::node_secure;
