//! Target 2: an arbitrary message encodes and decodes to itself.

use std::net::SocketAddr;

use arbitrary::{Arbitrary, Unstructured};

use crate::info::NodeInfo;
use crate::wire::{self, FrameDecoder, Message, DEFAULT_MAX_FRAME, LENGTH_PREFIX};

/// Target 2: an arbitrary message encodes and decodes to itself.
///
/// # Panics
/// If encoding then decoding does not give back the message (or `OutOfBounds` for a message
/// that breaks a bound), or if the frame's length prefix is wrong.
pub fn round_trip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(prefix_len) = u.int_in_range(0u8..=7) else { return };
    let Ok(msg) = Message::arbitrary(&mut u) else { return };
    let frame = wire::encode(&msg);
    let body_len = u32::from_be_bytes(frame[..LENGTH_PREFIX].try_into().expect("4 bytes"));
    assert_eq!(body_len as usize, frame.len() - LENGTH_PREFIX, "wrong length prefix");

    // encode_into appends after whatever the buffer held.
    let mut buf = vec![0xAA; usize::from(prefix_len)];
    wire::encode_into(&msg, &mut buf);
    assert_eq!(&buf[usize::from(prefix_len)..], &frame[..], "encode_into differs from encode");

    let expected = msg.validate().map(|()| on_the_wire(msg.clone()));
    let got = wire::decode_frame(frame.clone(), DEFAULT_MAX_FRAME);
    if frame.len() - LENGTH_PREFIX > DEFAULT_MAX_FRAME {
        assert!(matches!(got, Err(wire::WireError::FrameTooLarge { .. })));
        return;
    }
    assert_eq!(got, expected, "round trip changed the message");

    // The same through the stream decoder, one byte at a time.
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut bodies = Vec::new();
    for b in frame.iter() {
        dec.push(std::slice::from_ref(b));
        while let Some(body) = dec.next_frame().expect("a frame of ours is within the maximum") {
            bodies.push(body);
        }
    }
    assert_eq!(bodies.len(), 1, "one frame in, one body out");
    assert_eq!(dec.buffered(), 0);
    let body = bodies.pop().expect("one body");
    assert_eq!(wire::decode_body(body), expected, "stream decoding changed the message");
}

/// `msg` as it can arrive: the wire carries an IPv6 socket address as address and port only,
/// so its flow label and scope id (host-local values) read back as zero (fuzz finding 3).
fn on_the_wire(mut msg: Message) -> Message {
    let strip = |i: &mut NodeInfo| {
        for a in [&mut i.local, &mut i.global] {
            if let SocketAddr::V6(v6) = a {
                v6.set_flowinfo(0);
                v6.set_scope_id(0);
            }
        }
    };
    match &mut msg {
        Message::Hello { info, .. } | Message::HelloAck { info, .. } => strip(info),
        Message::JoinRequest { joiner, .. } | Message::Locate { origin: joiner, .. } => strip(joiner),
        Message::JoinState { rows, hood, leaves } => {
            rows.iter_mut().chain(hood.iter_mut()).chain(leaves.iter_mut().flatten()).for_each(strip)
        }
        Message::Welcome { leaves, .. } | Message::LeafSet { leaves } | Message::Heartbeat { leaves, .. } => {
            leaves.iter_mut().for_each(strip)
        }
        Message::Row { entries, .. } => entries.iter_mut().for_each(strip),
        _ => {}
    }
    msg
}
