//! Pluggable membership: who, among the peers that proved a key, belongs to the cluster.
//!
//! The Noise handshake ([`crate::identity`]) proves which static key a peer holds; these
//! credentials decide whether that key is a member. They can contribute a pre-shared key that
//! every member must hold ([`SharedSecret`]), check the key against a list ([`AllowList`]), or
//! check a proof the peer sends with its key (for instance a signature of its key by a cluster
//! key, with [`Credentials::prove`] and [`Credentials::admit`]).

use core::fmt;
use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use crate::identity::PublicKey;

/// Length of a Noise pre-shared key.
pub const PSK_LEN: usize = 32;

/// Decides cluster membership over a peer's proven static key.
///
/// A node with no credentials configured admits every peer that completes the handshake (its
/// id still has to match its key, unless the node trusts claimed ids).
pub trait Credentials: Send + Sync + fmt::Debug {
    /// A pre-shared key mixed into every handshake (Noise `XXpsk3`): a peer without the same
    /// key fails the handshake, and is reported as having bad credentials. `None` by default.
    fn psk(&self) -> Option<[u8; PSK_LEN]> {
        None
    }

    /// A proof of membership sent (encrypted) with our node info in the handshake, for `key`,
    /// our own public key (e.g. a signature of it by a cluster key). Empty by default; at most
    /// [`MAX_PROOF`](crate::wire::MAX_PROOF) bytes are sent.
    fn prove(&self, key: &PublicKey) -> Vec<u8> {
        let _ = key;
        Vec::new()
    }

    /// True if the peer that proved it holds `key`, and sent `proof`, is a member.
    fn admit(&self, key: &PublicKey, proof: &[u8]) -> bool;
}

/// Membership by a secret shared by every member: it becomes the handshake's pre-shared key, so
/// only holders of the secret complete a handshake with each other.
#[derive(Clone)]
pub struct SharedSecret {
    psk: [u8; PSK_LEN],
}

impl SharedSecret {
    /// Credentials from the shared secret `key` (any length; use 32 random bytes). The
    /// pre-shared key is its SHA-256 under a label of wendy's own.
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        let mut h = Sha256::new();
        h.update(b"wendy/psk/v1");
        h.update(key.as_ref());
        SharedSecret { psk: h.finalize().into() }
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

impl Credentials for SharedSecret {
    fn psk(&self) -> Option<[u8; PSK_LEN]> {
        Some(self.psk)
    }

    fn admit(&self, _key: &PublicKey, _proof: &[u8]) -> bool {
        // Holding the pre-shared key is the membership proof, checked by the handshake itself.
        true
    }
}

/// Membership by a list of public keys, optionally together with a shared secret.
#[derive(Clone, Default)]
pub struct AllowList {
    keys: BTreeSet<PublicKey>,
    secret: Option<SharedSecret>,
}

impl AllowList {
    /// Admits exactly the peers holding one of `keys`.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        AllowList { keys: keys.into_iter().collect(), secret: None }
    }

    /// Also requires the shared secret `key` (as [`SharedSecret`] does).
    pub fn with_secret(mut self, key: impl AsRef<[u8]>) -> Self {
        self.secret = Some(SharedSecret::new(key));
        self
    }

    /// Adds a key.
    pub fn insert(&mut self, key: PublicKey) {
        self.keys.insert(key);
    }

    /// True if `key` is on the list.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys.contains(key)
    }
}

impl fmt::Debug for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllowList").field("keys", &self.keys.len()).field("secret", &self.secret.is_some()).finish()
    }
}

impl Credentials for AllowList {
    fn psk(&self) -> Option<[u8; PSK_LEN]> {
        self.secret.as_ref().and_then(Credentials::psk)
    }

    fn admit(&self, key: &PublicKey, _proof: &[u8]) -> bool {
        self.keys.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_secrets_differ_and_hide() {
        let a = SharedSecret::new("alpha");
        assert_eq!(a.psk(), SharedSecret::new("alpha").psk());
        assert_ne!(a.psk(), SharedSecret::new("beta").psk());
        assert!(a.admit(&PublicKey([1; 32]), &[]));
        assert_eq!(format!("{a:?}"), "SharedSecret(..)");
    }

    #[test]
    fn allow_list_admits_only_its_keys() {
        let mut l = AllowList::new([PublicKey([1; 32])]);
        assert!(l.admit(&PublicKey([1; 32]), &[]));
        assert!(!l.admit(&PublicKey([2; 32]), &[]));
        l.insert(PublicKey([2; 32]));
        assert!(l.admit(&PublicKey([2; 32]), &[]));
        assert_eq!(l.psk(), None);
        assert_eq!(l.with_secret("s").psk(), SharedSecret::new("s").psk());
    }
}
