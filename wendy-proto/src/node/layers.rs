//! Hooks for the layers wendy builds above the node, such as [`store`](crate::store).
//!
//! Purposes 1..16 are reserved for them ([`LAYER_PURPOSES`]). An application cannot send
//! them ([`CommandError::ReservedPurpose`]); a layer sends them with
//! [`Node::route_layer`] and [`Node::send_layer_to`], and receives them as
//! [`Output::Deliver`](crate::Output::Deliver) with that purpose, once it has been enabled
//! with [`Node::enable_layer`]. A message with a layer purpose that is not enabled here is a
//! protocol error from the peer that sent it, as any other reserved purpose is. Layer
//! messages bypass the [`ForwardHook`](crate::ForwardHook), which is the application's.

use core::ops::Range;

use bytes::Bytes;

use crate::config::MIN_APP_PURPOSE;
use crate::id::NodeId;
use crate::output::{CommandError, ConnId};
use crate::time::Instant;
use crate::wire::{Direct, Message, Route};

use super::connections::SendFail;
use super::Node;

/// The purposes reserved for wendy's own layers above the node.
pub const LAYER_PURPOSES: Range<u8> = 1..16;

impl Node {
    /// Lets messages with the layer purpose `purpose` (in [`LAYER_PURPOSES`]) in, from peers
    /// and from [`route_layer`](Node::route_layer)/[`send_layer_to`](Node::send_layer_to).
    pub fn enable_layer(&mut self, purpose: u8) -> Result<(), CommandError> {
        if !LAYER_PURPOSES.contains(&purpose) {
            return Err(CommandError::ReservedPurpose(purpose));
        }
        self.layers |= 1 << purpose;
        Ok(())
    }

    /// True if the layer purpose `purpose` was enabled.
    pub fn layer_enabled(&self, purpose: u8) -> bool {
        LAYER_PURPOSES.contains(&purpose) && self.layers & (1 << purpose) != 0
    }

    /// Routes a layer message towards `key`, as [`send`](Node::send) does an application's.
    pub fn route_layer(&mut self, now: Instant, key: NodeId, purpose: u8, payload: Bytes) -> Result<(), CommandError> {
        let now = self.tick_now(now);
        self.check_layer(purpose, payload.len())?;
        let seq = self.next_route_seq();
        let route = Route { key, purpose, origin: self.id(), hops: 0, seq, payload };
        let r = self.route_app(now, route, true);
        self.finish();
        r
    }

    /// Sends a layer message straight to a known node (ourselves included).
    pub fn send_layer_to(&mut self, now: Instant, to: NodeId, purpose: u8, payload: Bytes) -> Result<(), CommandError> {
        let now = self.tick_now(now);
        self.check_layer(purpose, payload.len())?;
        let msg = Message::Direct(Direct { purpose, origin: self.id(), payload });
        let r = if to == self.id() {
            self.deliver_direct(msg);
            Ok(())
        } else {
            match self.send_msg(now, to, msg) {
                Ok(()) => Ok(()),
                Err(SendFail::Unknown) => Err(CommandError::UnknownNode(to)),
                Err(SendFail::Full) => Err(CommandError::Backpressure),
            }
        };
        self.finish();
        r
    }

    /// True if a message with `purpose` may arrive from a peer: an application purpose, or
    /// an enabled layer's.
    pub(super) fn accepts_purpose(&self, purpose: u8) -> bool {
        purpose >= MIN_APP_PURPOSE || self.layer_enabled(purpose)
    }

    /// A layer's direct message is from the node at the other end of its connection,
    /// whatever it claims (a layer trusts the origin of what it is sent directly).
    pub(super) fn layer_origin(&self, conn: ConnId, mut d: Direct) -> Direct {
        if d.purpose < MIN_APP_PURPOSE {
            if let Some(peer) = self.conns.get(&conn).and_then(|c| c.peer()) {
                d.origin = peer;
            }
        }
        d
    }

    fn check_layer(&self, purpose: u8, len: usize) -> Result<(), CommandError> {
        if !self.layer_enabled(purpose) {
            return Err(CommandError::ReservedPurpose(purpose));
        }
        match self.check_app(MIN_APP_PURPOSE, len) {
            Err(CommandError::ReservedPurpose(_)) => Err(CommandError::ReservedPurpose(purpose)),
            r => r,
        }
    }
}
