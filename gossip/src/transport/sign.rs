//! Ed25519 signing of membership statements with the node's identity key
//! (the key its TLS certificate carries, so a member's id, certificate and
//! statements all name the same key). Implements the core's [`Auth`].

use std::fmt;

use ring::signature::{self, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use ringkv_ring::NodeId;

use crate::proto::auth::{Auth, PublicKey, Sig};
use crate::transport::tls::{node_id_of_public_key, NodeIdentity, TlsError};

/// Signs with a node's Ed25519 identity key; verifies anyone's.
///
/// `Debug` prints the node id only, never the private key.
pub struct Ed25519Auth {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl Ed25519Auth {
    /// The signer of `identity`.
    ///
    /// # Errors
    /// [`TlsError::BadIdentity`] if its key does not load (it loaded once
    /// already, so only for a corrupted identity).
    pub fn new(identity: &NodeIdentity) -> Result<Self, TlsError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&identity.to_pkcs8_der())
            .map_err(|e| TlsError::BadIdentity(e.to_string()))?;
        let public: PublicKey = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| TlsError::BadIdentity("public key is not 32 bytes".into()))?;
        Ok(Self { pair, public })
    }
}

impl fmt::Debug for Ed25519Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Ed25519Auth({})",
            node_id_of_public_key(&self.public).short()
        )
    }
}

impl Auth for Ed25519Auth {
    fn public_key(&self) -> PublicKey {
        self.public
    }

    fn sign(&self, msg: &[u8]) -> Sig {
        Sig::from_slice(self.pair.sign(msg).as_ref()).expect("Ed25519 signatures are 64 bytes")
    }

    fn verify(&self, key: &PublicKey, msg: &[u8], sig: &Sig) -> bool {
        UnparsedPublicKey::new(&signature::ED25519, key)
            .verify(msg, &sig.to_bytes())
            .is_ok()
    }

    fn key_matches(&self, id: &NodeId, key: &PublicKey) -> bool {
        node_id_of_public_key(key) == *id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_its_identity_and_rejects_others() {
        let (a, b) = (
            NodeIdentity::generate().unwrap(),
            NodeIdentity::generate().unwrap(),
        );
        let (sa, sb) = (Ed25519Auth::new(&a).unwrap(), Ed25519Auth::new(&b).unwrap());
        assert!(sa.key_matches(&a.node_id(), &sa.public_key()));
        assert!(!sa.key_matches(&b.node_id(), &sa.public_key()));
        let sig = sa.sign(b"statement");
        assert!(sb.verify(&sa.public_key(), b"statement", &sig));
        assert!(!sb.verify(&sb.public_key(), b"statement", &sig));
        assert!(!sb.verify(&sa.public_key(), b"statement!", &sig));
        assert!(!sb.verify(&sa.public_key(), b"statement", &Sig::NONE));
        let reloaded = NodeIdentity::from_pkcs8_der(&a.to_pkcs8_der()).unwrap();
        assert_eq!(
            Ed25519Auth::new(&reloaded).unwrap().public_key(),
            sa.public_key()
        );
    }
}
