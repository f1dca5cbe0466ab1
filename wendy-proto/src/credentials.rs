//! Pluggable credentials, proven over fresh nonces during every connection's handshake.

use core::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Proves and checks membership of a cluster.
///
/// During the handshake each side signs a transcript that contains a nonce freshly chosen by
/// the *other* side, so a recorded handshake cannot be replayed, and both node ids and the
/// prover's role, so a proof cannot be reflected back. A node with no credentials configured
/// proves nothing and accepts everyone, as the Go wendy did.
pub trait Credentials: Send + Sync + fmt::Debug {
    /// A proof over `transcript`.
    fn prove(&self, transcript: &[u8]) -> Vec<u8>;
    /// True if `proof` proves `transcript`. Must compare in constant time where it matters.
    fn verify(&self, transcript: &[u8], proof: &[u8]) -> bool;
}

/// Credentials from a secret shared by every member: HMAC-SHA256 over the transcript.
#[derive(Clone)]
pub struct SharedSecret {
    key: Vec<u8>,
}

impl SharedSecret {
    /// Credentials from the shared secret `key` (any length; use 32 random bytes).
    pub fn new(key: impl AsRef<[u8]>) -> Self {
        SharedSecret { key: key.as_ref().to_vec() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

impl Credentials for SharedSecret {
    fn prove(&self, transcript: &[u8]) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(transcript);
        mac.finalize().into_bytes().to_vec()
    }

    fn verify(&self, transcript: &[u8], proof: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(transcript);
        mac.verify_slice(proof).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_secret_proves_and_rejects() {
        let a = SharedSecret::new("alpha");
        let b = SharedSecret::new("beta");
        let p = a.prove(b"transcript");
        assert!(a.verify(b"transcript", &p));
        assert!(!a.verify(b"transcript!", &p));
        assert!(!b.verify(b"transcript", &p));
        assert!(!a.verify(b"transcript", &[]));
        assert_eq!(format!("{a:?}"), "SharedSecret(..)");
    }
}
