//! Allocation bounds of decoding, measured with a counting global allocator: what the
//! `decoder` fuzz target checks under libFuzzer, replayed on stable over its committed corpus
//! and on hand-made hostile frames. One test in this binary, so that no other test thread
//! allocates while it measures.

use std::alloc::System;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use peakmem_alloc::{PeakMemAlloc, PeakMemAllocTrait, INSTRUMENTED_SYSTEM};
use wendy_proto::fuzzing;
use wendy_proto::wire::{self, FrameDecoder, Message, NONCE_LEN, PROTOCOL_VERSION};
use wendy_proto::{Config, Instant, Node, NodeId, NodeInfo};

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Peak bytes allocated while running `f` (beyond what was allocated before).
fn peak(f: impl FnOnce()) -> usize {
    GLOBAL.reset_peak_memory();
    f();
    GLOBAL.get_peak_memory()
}

/// Bodies that announce huge element counts for every variable-length field: a `u32::MAX`
/// varint where the count goes, after each message's discriminant.
fn hostile_bodies() -> Vec<Vec<u8>> {
    let huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
    let mut v = Vec::new();
    for variant in 0u8..20 {
        for skip in 0..24 {
            let mut b = vec![PROTOCOL_VERSION, variant];
            b.extend(std::iter::repeat_n(0u8, skip));
            b.extend_from_slice(&huge);
            v.push(b);
        }
    }
    v
}

#[test]
fn decoding_allocates_in_proportion_to_bytes_received() {
    // 1. The committed decoder corpus, under the fuzz target's own bound.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decoder");
    let mut files: Vec<_> = fs::read_dir(&dir).expect("decoder corpus").map(|e| e.expect("entry").path()).collect();
    files.sort();
    for path in files {
        let data = fs::read(&path).expect("corpus file");
        let p = peak(|| fuzzing::decoder(&data));
        let bound = fuzzing::decoder_alloc_bound(data.len());
        assert!(p <= bound, "{}: {p} bytes at peak for {} input bytes (bound {bound})", path.display(), data.len());
    }

    // 2. A length prefix of 4 GiB: refused before anything is buffered for the body.
    let p = peak(|| {
        let mut d = FrameDecoder::new(64 * 1024);
        d.push(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        assert!(d.next_frame().is_err());
    });
    assert!(p < 1024, "{p} bytes allocated for a refused 4 GiB prefix");

    // 3. Bodies announcing u32::MAX elements: no allocation in proportion to the count.
    for body in hostile_bodies() {
        let len = body.len();
        let p = peak(|| {
            let _ = wire::decode_body(Bytes::from(body));
        });
        assert!(p <= 4096, "a {len}-byte body announcing 2^32 elements allocated {p} bytes");
    }

    // 4. The same through a node, on an authenticated connection with a 4 KiB frame limit.
    let addr = SocketAddr::from(([10, 0, 0, 1], 7000));
    // Plaintext: the test plays the peer by hand.
    let mut cfg = Config::with_trusted_id(NodeId::from_u128(1 << 127), addr).insecure_plaintext();
    cfg.max_frame_size = 4096;
    let now = Instant::from_secs(1);
    let mut node = Node::new(cfg, now).expect("valid config");
    let peer = NodeInfo::new(NodeId::from_u128(5), SocketAddr::from(([10, 0, 0, 2], 7000)));
    let conn = node.handle_accepted(now, peer.global);
    node.handle_data(now, conn, &wire::encode(&Message::Hello { info: peer, nonce: [1; NONCE_LEN] }));
    node.handle_data(now, conn, &wire::encode(&Message::Auth { proof: Vec::new(), probe: None }));
    while node.poll_output().is_some() {}
    let mut stream = Vec::new();
    for body in hostile_bodies() {
        stream.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
        stream.extend_from_slice(&body);
    }
    let p = peak(|| {
        node.handle_data(now, conn, &stream);
        while node.poll_output().is_some() {}
    });
    assert!(p <= 4096 + 8 * stream.len(), "the node allocated {p} bytes for {} hostile bytes", stream.len());
    node.check_invariants().expect("the node survives");
}
