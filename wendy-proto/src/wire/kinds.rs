//! The kinds of frame, by name and index: what a node's control traffic is counted by
//! ([`Stats::control_frames_by_kind`](crate::Stats)).

use super::Message;

/// The kinds of frame a node counts in [`Stats::control_frames_by_kind`](crate::Stats), by
/// index ([`Message::kind_index`]); the last, `noise_handshake`, is a message of the Noise
/// handshake of an encrypted connection, which is not a [`Message`].
pub const FRAME_KINDS: [&str; 25] = [
    "hello",
    "hello_ack",
    "auth",
    "route",
    "direct",
    "join_request",
    "join_state",
    "announce",
    "welcome",
    "leaf_set_request",
    "leaf_set",
    "row_request",
    "row",
    "ping",
    "pong",
    "leaving",
    "closing",
    "reject",
    "locate",
    "failed",
    "ack",
    "bounce",
    "unreachable",
    "heartbeat",
    "noise_handshake",
];

/// The index in [`FRAME_KINDS`] of a Noise handshake message.
pub const NOISE_HANDSHAKE_KIND: usize = 24;

impl Message {
    /// This message's index in [`FRAME_KINDS`].
    pub fn kind_index(&self) -> usize {
        match self {
            Message::Hello { .. } => 0,
            Message::HelloAck { .. } => 1,
            Message::Auth { .. } => 2,
            Message::Route(_) => 3,
            Message::Direct(_) => 4,
            Message::JoinRequest { .. } => 5,
            Message::JoinState { .. } => 6,
            Message::Announce { .. } => 7,
            Message::Welcome { .. } => 8,
            Message::LeafSetRequest => 9,
            Message::LeafSet { .. } => 10,
            Message::RowRequest { .. } => 11,
            Message::Row { .. } => 12,
            Message::Ping { .. } => 13,
            Message::Pong { .. } => 14,
            Message::Leaving => 15,
            Message::Closing => 16,
            Message::Reject { .. } => 17,
            Message::Locate { .. } => 18,
            Message::Failed { .. } => 19,
            Message::Ack { .. } => 20,
            Message::Bounce { .. } => 21,
            Message::Unreachable { .. } => 22,
            Message::Heartbeat { .. } => 23,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_name() {
        let named = |m: Message| FRAME_KINDS[m.kind_index()];
        assert_eq!(named(Message::Ping { seq: 1 }), "ping");
        assert_eq!(named(Message::Pong { seq: 1, ready: true }), "pong");
        assert_eq!(named(Message::Closing), "closing");
        assert_eq!(named(Message::Heartbeat { seq: 1, leaves: Vec::new() }), "heartbeat");
        assert_eq!(
            named(Message::Bounce {
                origin: Default::default(),
                key: Default::default(),
                purpose: 16,
                seq: 1,
                hops: 0
            }),
            "bounce"
        );
        assert_eq!(FRAME_KINDS[NOISE_HANDSHAKE_KIND], "noise_handshake");
        let mut names = FRAME_KINDS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FRAME_KINDS.len(), "a name used twice");
    }
}
