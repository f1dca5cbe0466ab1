//! A node's static key pair, and the node id derived from its public key.
//!
//! Every connection proves each side's static X25519 key in a Noise handshake
//! ([`Config`](crate::Config)). By default a node's [`NodeId`] is the first 16 bytes of the
//! SHA-256 of its public key ([`PublicKey::node_id`]), and a peer whose claimed id is not the one
//! derived from the key it proved is rejected: nobody can take an id (and so the keys it is
//! root for) without that id's secret key.

use core::fmt;

use curve25519_dalek::montgomery::MontgomeryPoint;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::id::NodeId;

/// Length of an X25519 key, secret or public.
pub const KEY_LEN: usize = 32;

/// An X25519 public key: what a peer proves it holds the secret of in every handshake.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// The node id derived from this key: the first 16 bytes of its SHA-256.
    ///
    /// ```
    /// # use wendy_proto::identity::Identity;
    /// let me = Identity::from_secret([7; 32]);
    /// assert_eq!(me.public().node_id(), me.node_id());
    /// ```
    pub fn node_id(&self) -> NodeId {
        NodeId::hash(&self.0)
    }

    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A node's static X25519 key pair. Its `Debug` output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    secret: [u8; KEY_LEN],
    public: PublicKey,
}

impl Identity {
    /// The key pair of a secret key (any 32 bytes: X25519 clamps them).
    pub fn from_secret(secret: [u8; KEY_LEN]) -> Self {
        let public = PublicKey(MontgomeryPoint::mul_base_clamped(secret).to_bytes());
        Identity { secret, public }
    }

    /// A key pair derived from 32 bytes of entropy. The secret is a hash of them, so the same
    /// entropy may also seed other generators without the secret leaking through them.
    /// Give it real entropy (the OS's), or a seed only in simulations and tests.
    pub fn from_entropy(entropy: &[u8; KEY_LEN]) -> Self {
        let mut h = Sha256::new();
        h.update(b"wendy/identity/v1");
        h.update(entropy);
        Identity::from_secret(h.finalize().into())
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The node id derived from the public key ([`PublicKey::node_id`]).
    pub fn node_id(&self) -> NodeId {
        self.public.node_id()
    }

    /// The secret key, to persist it (keep it private: whoever has it is this node).
    pub fn secret(&self) -> &[u8; KEY_LEN] {
        &self.secret
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("public", &self.public).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_is_x25519_of_the_secret() {
        // RFC 7748, section 6.1: Alice's key pair.
        let secret: [u8; 32] = [
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2, 0x66, 0x45, 0xdf, 0x4c,
            0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5, 0x1d, 0xb9, 0x2c, 0x2a,
        ];
        let id = Identity::from_secret(secret);
        assert_eq!(id.public().to_string(), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(id.node_id(), NodeId::hash(id.public().as_bytes()));
        assert!(!format!("{id:?}").contains("77076d"), "Debug must not show the secret");
    }

    #[test]
    fn entropy_gives_distinct_stable_keys() {
        let a = Identity::from_entropy(&[1; 32]);
        assert_eq!(a, Identity::from_entropy(&[1; 32]));
        assert_ne!(a.public(), Identity::from_entropy(&[2; 32]).public());
    }
}
