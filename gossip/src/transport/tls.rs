//! Mutual TLS for the QUIC transport, rooted in a shared cluster secret.
//!
//! Trust model: every peer holds the same [`ClusterKey`]. From it each peer
//! derives, deterministically, the same cluster CA (an Ed25519 key pair and a
//! self-signed certificate with a fixed subject), and signs a certificate for
//! its own [`NodeIdentity`] with it. Servers require a client certificate and
//! both sides verify the other's chain against that CA, so anyone holding the
//! secret can join and nobody else can complete a handshake.
//!
//! Invariants:
//! - A peer's [`NodeId`] is derived from the public key in its certificate
//!   ([`node_id_of_public_key`]), and the TLS handshake proves possession of
//!   the matching private key. Holding the cluster secret lets one mint
//!   certificates, but not claim another node's id without its private key.
//! - Every rustls config is built with `rustls::crypto::ring` explicitly,
//!   never the process-wide default provider; TLS 1.3 only, ALPN [`ALPN`].
//! - Session resumption is off, so every connection's peer identity comes
//!   from a full certificate verification.
//! - Peer certificates never expire (validity 1975 to 4096): revoking a
//!   peer means rotating the cluster secret.
//! - Servers also trust a second CA derived from the secret, the client CA
//!   ([`crate::transport::credentials`]): its certificates expire, can be
//!   revoked, and serve client requests only. The client config trusts the
//!   cluster CA alone, so a client credential cannot pose as a peer.
//!
//! This module does no IO itself; it builds configs for quinn endpoints.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber, PKCS_ED25519,
};
use ringkv_ring::NodeId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::RootCertStore;
use thiserror::Error;

use crate::proto::message::ClusterId;

/// The server name clients must use in `quinn::Endpoint::connect`; every
/// node certificate carries it as its DNS subject alternative name.
pub const SERVER_NAME: &str = "ringkv";

/// The ALPN protocol both sides offer and require: wire version 3, the
/// token every build since the first offers.
pub const ALPN: &[u8] = b"ringkv/1";

/// The ALPN tokens of a peer speaking wire versions
/// `codec::MIN_VERSION..=max`, newest first: [`ALPN`] for version 3 (so
/// builds from before negotiation still connect), `ringkv/1+w<v>` above.
/// rustls picks the server's first token the client also offers, so a
/// connection speaks the highest version both ends do
/// (docs/upgrades.md).
pub fn alpn_protocols(max: u8) -> Vec<Vec<u8>> {
    let max = max.min(crate::proto::codec::MAX_KNOWN_VERSION);
    (crate::proto::codec::MIN_VERSION..=max)
        .rev()
        .map(|v| {
            if v <= crate::proto::codec::VERSION {
                ALPN.to_vec()
            } else {
                format!("ringkv/1+w{v}").into_bytes()
            }
        })
        .collect()
}

/// The wire version an ALPN token agreed on; `None` for a token this
/// build does not know.
pub fn alpn_version(token: &[u8]) -> Option<u8> {
    if token == ALPN {
        return Some(crate::proto::codec::VERSION);
    }
    let v: u8 = std::str::from_utf8(token.strip_prefix(b"ringkv/1+w")?)
        .ok()?
        .parse()
        .ok()?;
    (v > crate::proto::codec::VERSION && v <= crate::proto::codec::MAX_KNOWN_VERSION).then_some(v)
}

/// The wire version `conn` negotiated (its ALPN token); version 3 when
/// the handshake data says nothing this build knows.
pub fn connection_version(conn: &quinn::Connection) -> u8 {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol.as_deref().and_then(alpn_version))
        .unwrap_or(crate::proto::codec::VERSION)
}

/// Prefix of a [`ClusterKey`]'s text form; the `1` is the format version.
const KEY_TEXT_PREFIX: &str = "rkv1-";

/// Key-derivation contexts (blake3 `derive_key`); changing one splits clusters.
const CLUSTER_ID_CONTEXT: &str = "ringkv 2026 cluster id";
const CLUSTER_CA_CONTEXT: &str = "ringkv 2026 cluster ca";
const CLIENT_CA_CONTEXT: &str = "ringkv 2026 client ca";
const NODE_ID_CONTEXT: &str = "ringkv 2026 node id";

/// Subject common name of the cluster CA; the same on every peer.
const CA_COMMON_NAME: &str = "ringkv cluster ca";

/// DER of a PKCS#8 v1 `PrivateKeyInfo` for Ed25519, up to the 32-byte seed
/// (RFC 8410): version 0, algorithm id-Ed25519 (1.3.101.112), and an OCTET
/// STRING holding the OCTET STRING of the seed.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// DER of an Ed25519 `SubjectPublicKeyInfo` up to the 32-byte raw key
/// (RFC 8410): algorithm id-Ed25519, BIT STRING with no unused bits.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// TLS setup failed. No variant changes any state: configs are built fresh
/// on each call and nothing is persisted here.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TlsError {
    /// The text given as a cluster key is not `rkv1-` followed by 64 hex
    /// digits. The reason never repeats the key text, which may be secret.
    #[error("invalid cluster key: {reason}")]
    BadKey {
        /// What is wrong with the text.
        reason: String,
    },
    /// A client credentials file or name is malformed (the reason never
    /// repeats the private key). Nothing was written.
    #[error("invalid client credentials: {0}")]
    BadCredentials(String),
    /// Bytes given as a node's private key are not a PKCS#8 Ed25519 key.
    #[error("invalid node identity key: {0}")]
    BadIdentity(String),
    /// The operating system's random source failed while generating a key.
    #[error("cannot generate node identity key: {0}")]
    KeyGeneration(String),
    /// rcgen could not build or sign a certificate.
    #[error("cannot create certificate: {0}")]
    Certificate(String),
    /// rustls or quinn rejected the TLS configuration.
    #[error("invalid tls configuration: {0}")]
    Rustls(String),
}

pub(crate) fn certificate_error(e: rcgen::Error) -> TlsError {
    TlsError::Certificate(e.to_string())
}

pub(crate) fn rustls_error(e: impl fmt::Display) -> TlsError {
    TlsError::Rustls(e.to_string())
}

/// The cluster secret: 32 random bytes. Whoever holds it can join the
/// cluster. Text form: `rkv1-` followed by 64 lowercase hex digits.
///
/// `Debug` prints only a prefix of the public [`ClusterId`], never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    /// A fresh secret from `rng` (which should be a cryptographic generator
    /// seeded from the OS outside tests).
    pub fn generate<R: rand::RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses the text form that `Display` writes. Whitespace around it (such
    /// as a key file's trailing newline) is ignored; hex digits may be upper
    /// or lower case.
    ///
    /// # Errors
    ///
    /// [`TlsError::BadKey`] if the prefix, the length or a digit is wrong.
    pub fn parse(s: &str) -> Result<Self, TlsError> {
        let bad = |reason: String| TlsError::BadKey { reason };
        let Some(digits) = s.trim().strip_prefix(KEY_TEXT_PREFIX) else {
            return Err(bad(format!(
                "expected it to start with {KEY_TEXT_PREFIX:?}"
            )));
        };
        if digits.len() != 64 || !digits.is_ascii() {
            return Err(bad(format!(
                "expected 64 hex digits after {KEY_TEXT_PREFIX:?}, found {} characters",
                digits.chars().count()
            )));
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in digits.as_bytes().chunks_exact(2).enumerate() {
            let digit = |j: usize| {
                hex_value(pair[j])
                    .ok_or_else(|| bad(format!("character {} is not a hex digit", 2 * i + j + 1)))
            };
            bytes[i] = (digit(0)? << 4) | digit(1)?;
        }
        Ok(Self(bytes))
    }

    /// Fewest distinct byte values a key given to `keyring install` must
    /// have. 32 random bytes have about 30; fewer than 16 happens by
    /// chance with a probability below 10^-12, so such a key was typed,
    /// patterned or derived from something guessable (`rkv1-000...`).
    pub const DISTINCT_BYTES_MIN: usize = 16;

    /// Whether this key looks made by hand rather than drawn at random:
    /// fewer than [`Self::DISTINCT_BYTES_MIN`] distinct byte values.
    pub fn looks_weak(&self) -> bool {
        let mut seen = [false; 256];
        for &b in &self.0 {
            seen[usize::from(b)] = true;
        }
        seen.iter().filter(|&&s| s).count() < Self::DISTINCT_BYTES_MIN
    }

    /// The id every message of this cluster carries: the first 16 bytes of
    /// `blake3::derive_key("ringkv 2026 cluster id", secret)`. Public; it
    /// reveals nothing about the secret.
    pub fn cluster_id(&self) -> ClusterId {
        ClusterId(first_16(&blake3::derive_key(CLUSTER_ID_CONTEXT, &self.0)))
    }

    /// The cluster CA's PKCS#8 v1 key: the Ed25519 seed is
    /// `blake3::derive_key("ringkv 2026 cluster ca", secret)`.
    pub(crate) fn ca_pkcs8(&self) -> Vec<u8> {
        self.derived_pkcs8(CLUSTER_CA_CONTEXT)
    }

    /// The client CA's PKCS#8 v1 key: the Ed25519 seed is
    /// `blake3::derive_key("ringkv 2026 client ca", secret)`.
    pub(crate) fn client_ca_pkcs8(&self) -> Vec<u8> {
        self.derived_pkcs8(CLIENT_CA_CONTEXT)
    }

    fn derived_pkcs8(&self, context: &str) -> Vec<u8> {
        let seed = blake3::derive_key(context, &self.0);
        let mut der = Vec::with_capacity(ED25519_PKCS8_V1_PREFIX.len() + seed.len());
        der.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
        der.extend_from_slice(&seed);
        der
    }
}

impl fmt::Display for ClusterKey {
    /// The text form: `rkv1-` and 64 lowercase hex digits. This prints the
    /// secret; use it only to write a key file or show a new key to its owner.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(KEY_TEXT_PREFIX)?;
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(")?;
        write_hex(f, &self.cluster_id().0[..4])?;
        f.write_str(")")
    }
}

impl FromStr for ClusterKey {
    type Err = TlsError;

    /// Same as [`ClusterKey::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A node's own Ed25519 key pair, kept in its data dir. Its [`NodeId`] is
/// derived from the public key, so identity survives address changes.
///
/// `Debug` prints the node id only, never the private key.
#[derive(Clone)]
pub struct NodeIdentity {
    /// The private key as PKCS#8 DER, exactly as generated or loaded.
    pkcs8: Vec<u8>,
    /// The raw 32-byte Ed25519 public key.
    public_key: Vec<u8>,
}

impl NodeIdentity {
    /// A fresh key pair from the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`TlsError::KeyGeneration`] if the random source fails.
    pub fn generate() -> Result<Self, TlsError> {
        let pair = KeyPair::generate_for(&PKCS_ED25519)
            .map_err(|e| TlsError::KeyGeneration(e.to_string()))?;
        Ok(Self {
            pkcs8: pair.serialize_der(),
            public_key: pair.public_key_raw().to_vec(),
        })
    }

    /// Loads a key pair saved with [`NodeIdentity::to_pkcs8_der`]
    /// (PKCS#8 v1 or v2).
    ///
    /// # Errors
    ///
    /// [`TlsError::BadIdentity`] if `der` is not a PKCS#8 Ed25519 key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, TlsError> {
        let pair = ed25519_key_pair(der).map_err(|e| TlsError::BadIdentity(e.to_string()))?;
        Ok(Self {
            pkcs8: der.to_vec(),
            public_key: pair.public_key_raw().to_vec(),
        })
    }

    /// The private key as PKCS#8 DER, for saving in the data dir. Secret.
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        self.pkcs8.clone()
    }

    /// This node's id: [`node_id_of_public_key`] of its public key.
    pub fn node_id(&self) -> NodeId {
        node_id_of_public_key(&self.public_key)
    }

    pub(crate) fn key_pair(&self) -> Result<KeyPair, TlsError> {
        ed25519_key_pair(&self.pkcs8).map_err(|e| TlsError::BadIdentity(e.to_string()))
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeIdentity({})", self.node_id().short())
    }
}

/// A node's id from its raw public key: the first 16 bytes of
/// `blake3::derive_key("ringkv 2026 node id", public_key)`.
pub fn node_id_of_public_key(public_key: &[u8]) -> NodeId {
    NodeId(first_16(&blake3::derive_key(NODE_ID_CONTEXT, public_key)))
}

/// The quinn server config for this node: presents `me`'s certificate,
/// requires a client certificate, and verifies it against the cluster CA
/// or the client CA (which one, [`crate::transport::credentials::Roles`]
/// tells after the handshake).
/// It uses [`transport_config`].
///
/// # Errors
///
/// [`TlsError::Certificate`] if a certificate cannot be made,
/// [`TlsError::Rustls`] if rustls or quinn reject the config.
pub fn server_config(key: &ClusterKey, me: &NodeIdentity) -> Result<quinn::ServerConfig, TlsError> {
    let credentials = Credentials::new(key, me)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = credentials.roots()?;
    roots
        .add(crate::transport::credentials::client_ca_cert(key)?)
        .map_err(rustls_error)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(rustls_error)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![credentials.node_cert], credentials.node_key)
        .map_err(rustls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // No tickets: clients do not resume (see `client_config`).
    tls.send_tls13_tickets = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(rustls_error)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(server_transport_config()));
    Ok(config)
}

/// The quinn client config for this node: presents `me`'s certificate and
/// verifies the server's against the cluster CA under [`SERVER_NAME`].
/// It uses [`transport_config`].
///
/// # Errors
///
/// [`TlsError::Certificate`] if a certificate cannot be made,
/// [`TlsError::Rustls`] if rustls or quinn reject the config.
pub fn client_config(key: &ClusterKey, me: &NodeIdentity) -> Result<quinn::ClientConfig, TlsError> {
    client_config_for(Credentials::new(key, me)?)
}

fn client_config_for(credentials: Credentials) -> Result<quinn::ClientConfig, TlsError> {
    client_config_from(
        credentials.ca_cert,
        credentials.node_cert,
        credentials.node_key,
    )
}

/// A client config trusting `ca` for servers and presenting `cert`.
pub(crate) fn client_config_from(
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<quinn::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(rustls_error)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert], key)
        .map_err(rustls_error)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // Every connection verifies the full chain, so `peer_node_id` always
    // reflects a certificate checked on this connection.
    tls.resumption = rustls::client::Resumption::disabled();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(rustls_error)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// After a handshake: the verified peer's [`NodeId`], from the Ed25519
/// public key in its certificate. `None` before the handshake completes, or
/// if the certificate does not hold an Ed25519 key (which the cluster CA
/// never signs for a ringkv node, but a secret holder could).
pub fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let chain = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    let public_key = ed25519_public_key(chain.first()?)?;
    Some(node_id_of_public_key(&public_key))
}

/// How often a client (CLI, bench, testbed) sends a keep-alive on an
/// otherwise quiet connection: well inside the 30 s idle timeout and the
/// usual NAT mapping lifetimes. Peer links send none
/// ([`link_transport_config`]).
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Concurrent request streams a peer may open on one connection: replica
/// requests, one stream each (the RESP server lets 128 keys per peer into
/// the coordinator at once, docs/BENCHMARKS.md).
pub const BIDI_STREAMS_MAX: u32 = 256;

/// Concurrent one-way streams a peer may open on one connection: gossip
/// messages too large for a datagram (push-pull, joins) and leave notices,
/// a few at a time. More wait for a slot; they are not refused. quinn
/// allocates the state of every stream the peer may open when the
/// connection starts, so this limit costs memory on every connection: at
/// 256 (the bidirectional limit's value, used for both before) an idle
/// peer of a 30-peer cluster held about 2 MB more than at 16
/// (docs/BENCHMARKS.md).
pub const UNI_STREAMS_MAX: u32 = 16;

/// Transport parameters for the connections a client dials (CLI, bench,
/// testbed): [`server_transport_config`]'s, and a keep-alive every 10 s of
/// silence so a quiet client's connection survives NAT and the 30 s idle
/// timeout.
///
/// Peers dial each other with [`link_transport_config`] instead.
pub fn transport_config() -> quinn::TransportConfig {
    let mut config = server_transport_config();
    config.keep_alive_interval(Some(KEEP_ALIVE));
    config
}

/// Transport parameters for the links between peers, either way: no
/// keep-alive. A peer holds one connection to each other peer, shared by
/// gossip and replica requests ([`crate::links::Links`]); one that neither
/// side uses any more (superseded by a newer one, or to a member that went
/// away) must end by itself at the 30 s idle timeout. With the dialer's
/// keep-alives (every 10 s, as before) such connections lived for ever: an
/// idle peer of 30 held 148 on average, for 29 others, and their pings and
/// timers woke it dozens of times a second (docs/BENCHMARKS.md). A link
/// quiet for 30 s is dialled again when next used (one round trip).
pub fn link_transport_config() -> quinn::TransportConfig {
    server_transport_config()
}

/// Transport parameters for the connections a peer accepts: datagrams on
/// (1 MiB receive buffer) for gossip, a 30 s idle timeout, at most
/// [`BIDI_STREAMS_MAX`] concurrent bidirectional and [`UNI_STREAMS_MAX`]
/// unidirectional streams per connection from the other side, and no
/// keep-alive of its own (a client dialer sends them).
pub fn server_transport_config() -> quinn::TransportConfig {
    let mut config = quinn::TransportConfig::default();
    config
        .datagram_receive_buffer_size(Some(1 << 20))
        .keep_alive_interval(None)
        .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            30_000,
        ))))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(BIDI_STREAMS_MAX))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(UNI_STREAMS_MAX));
    config
}

/// What one node needs for a TLS config: the cluster CA certificate (the
/// only trust anchor) and its own certificate, signed by that CA, with key.
struct Credentials {
    ca_cert: CertificateDer<'static>,
    node_cert: CertificateDer<'static>,
    node_key: PrivateKeyDer<'static>,
}

impl Credentials {
    fn new(key: &ClusterKey, me: &NodeIdentity) -> Result<Self, TlsError> {
        let ca_key = ed25519_key_pair(&key.ca_pkcs8()).map_err(certificate_error)?;
        let ca_params = ca_params();
        let ca_cert = ca_params.self_signed(&ca_key).map_err(certificate_error)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let node_cert = node_params(me)?
            .signed_by(&me.key_pair()?, &issuer)
            .map_err(certificate_error)?;
        Ok(Self {
            ca_cert: ca_cert.der().clone(),
            node_cert: node_cert.der().clone(),
            node_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(me.to_pkcs8_der())),
        })
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_cert.clone()).map_err(rustls_error)?;
        Ok(roots)
    }
}

/// The cluster CA's self-signed certificate.
pub(crate) fn cluster_ca_cert(key: &ClusterKey) -> Result<CertificateDer<'static>, TlsError> {
    let ca_key = ed25519_key_pair(&key.ca_pkcs8()).map_err(certificate_error)?;
    let cert = ca_params()
        .self_signed(&ca_key)
        .map_err(certificate_error)?;
    Ok(cert.der().clone())
}

/// `me`'s peer certificate, signed by the cluster CA (tests).
#[cfg(test)]
pub(crate) fn node_cert(
    key: &ClusterKey,
    me: &NodeIdentity,
) -> Result<CertificateDer<'static>, TlsError> {
    Ok(Credentials::new(key, me)?.node_cert)
}

/// The cluster CA's certificate parameters: all fixed, so every peer builds
/// a byte-identical CA certificate from the same secret.
pub(crate) fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from_slice(&[1]));
    params
}

/// A node certificate's parameters: DNS name [`SERVER_NAME`], usable as
/// both TLS server and client, common name naming the node id.
pub(crate) fn node_params(me: &NodeIdentity) -> Result<CertificateParams, TlsError> {
    let mut params =
        CertificateParams::new(vec![SERVER_NAME.to_owned()]).map_err(certificate_error)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("ringkv node {}", me.node_id()));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

pub(crate) fn ed25519_key_pair(pkcs8: &[u8]) -> Result<KeyPair, rcgen::Error> {
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), &PKCS_ED25519)
}

/// The raw Ed25519 public key of a certificate, or `None` if it does not
/// parse or holds another kind of key.
fn ed25519_public_key(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let parsed = ParsedCertificate::try_from(cert).ok()?;
    let spki = parsed.subject_public_key_info();
    let key = spki.as_ref().strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    (key.len() == 32).then(|| key.to_vec())
}

fn first_16(hash: &[u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash[..16]);
    out
}

pub(crate) fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

#[cfg(test)]
mod alpn_tests {
    use super::*;
    use crate::proto::codec::{TEST_VERSION, VERSION};

    #[test]
    fn alpn_tokens_are_newest_first_and_keep_the_old_token_for_version_3() {
        assert_eq!(alpn_protocols(VERSION), vec![ALPN.to_vec()]);
        assert_eq!(
            alpn_protocols(TEST_VERSION),
            vec![b"ringkv/1+w4".to_vec(), ALPN.to_vec()]
        );
        for token in alpn_protocols(TEST_VERSION) {
            assert!(alpn_version(&token).is_some());
        }
        assert_eq!(alpn_version(ALPN), Some(VERSION));
        assert_eq!(alpn_version(b"ringkv/1+w4"), Some(TEST_VERSION));
        for unknown in [&b"ringkv/1+w5"[..], b"ringkv/1+w3", b"ringkv/2", b"h3"] {
            assert_eq!(alpn_version(unknown), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::net::SocketAddr;

    use quinn::{Connection, ConnectionError, Endpoint};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use tokio::time::timeout;

    use super::*;

    /// Bound on every network step; loopback steps take milliseconds.
    const STEP: Duration = Duration::from_secs(5);

    type TestResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

    fn key(seed: u64) -> ClusterKey {
        ClusterKey::generate(&mut ChaCha8Rng::seed_from_u64(seed))
    }

    fn identity() -> NodeIdentity {
        NodeIdentity::generate().expect("os random source works")
    }

    #[test]
    fn a_patterned_key_looks_weak_and_a_random_one_never_does() {
        assert!(ClusterKey::from_bytes([0; 32]).looks_weak());
        assert!(ClusterKey::from_bytes(std::array::from_fn(|i| (i % 15) as u8)).looks_weak());
        assert!(!ClusterKey::from_bytes(std::array::from_fn(|i| (i % 16) as u8)).looks_weak());
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        for _ in 0..100_000 {
            assert!(!ClusterKey::generate(&mut rng).looks_weak());
        }
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn server(key: &ClusterKey, me: &NodeIdentity) -> Endpoint {
        let config = server_config(key, me).expect("server config");
        Endpoint::server(config, loopback()).expect("bind server")
    }

    fn client(key: &ClusterKey, me: &NodeIdentity) -> Endpoint {
        let mut endpoint = Endpoint::client(loopback()).expect("bind client");
        endpoint.set_default_client_config(client_config(key, me).expect("client config"));
        endpoint
    }

    async fn close(endpoint: &Endpoint) {
        endpoint.close(0u32.into(), b"done");
        timeout(STEP, endpoint.wait_idle())
            .await
            .expect("endpoint goes idle");
    }

    /// Accepts one connection and echoes its streams and datagrams until the
    /// peer closes it. Returns the peer's id, or the handshake error.
    async fn serve_one(endpoint: Endpoint) -> Result<Option<NodeId>, ConnectionError> {
        let incoming = endpoint.accept().await.expect("endpoint is open");
        let conn = incoming.await?;
        let peer = peer_node_id(&conn);
        loop {
            tokio::select! {
                stream = conn.accept_bi() => {
                    let Ok((mut send, mut recv)) = stream else { break };
                    let Ok(data) = recv.read_to_end(1 << 16).await else { break };
                    if send.write_all(&data).await.is_err() || send.finish().is_err() {
                        break;
                    }
                }
                datagram = conn.read_datagram() => {
                    let Ok(datagram) = datagram else { break };
                    let _ = conn.send_datagram(datagram);
                }
            }
        }
        Ok(peer)
    }

    async fn connect(endpoint: &Endpoint, addr: SocketAddr) -> TestResult<Connection> {
        Ok(endpoint.connect(addr, SERVER_NAME)?.await?)
    }

    async fn echo_stream(conn: &Connection, message: &[u8]) -> TestResult<Vec<u8>> {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(message).await?;
        send.finish()?;
        Ok(recv.read_to_end(1 << 16).await?)
    }

    /// Sends `message` as a datagram until it comes back; datagrams may be
    /// lost even on loopback, so it retries a bounded number of times.
    async fn echo_datagram(conn: &Connection, message: &[u8]) -> TestResult<Vec<u8>> {
        for _ in 0..10 {
            conn.send_datagram(message.to_vec().into())?;
            if let Ok(reply) = timeout(Duration::from_millis(500), conn.read_datagram()).await {
                return Ok(reply?.to_vec());
            }
        }
        Err("no datagram came back after 10 tries".into())
    }

    #[test]
    fn cluster_key_text_round_trips() {
        let key = key(1);
        let text = key.to_string();
        assert!(text.starts_with("rkv1-"), "{text}");
        assert_eq!(text.len(), 5 + 64);
        assert!(text[5..]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(ClusterKey::parse(&text), Ok(key.clone()));
        assert_eq!(ClusterKey::parse(&format!("  {text}\n")), Ok(key.clone()));
        assert_eq!(
            ClusterKey::parse(&text.to_uppercase().replace("RKV1-", "rkv1-")),
            Ok(key.clone())
        );
        assert_eq!(text.parse::<ClusterKey>(), Ok(key));
    }

    #[test]
    fn cluster_key_parse_rejects_malformed_text() {
        let text = key(2).to_string();
        let hex = &text[5..];
        let reason = |s: &str| match ClusterKey::parse(s) {
            Err(TlsError::BadKey { reason }) => reason,
            other => panic!("expected BadKey for {s:?}, got {other:?}"),
        };
        assert!(reason(&format!("rkv2-{hex}")).contains("start with"));
        assert!(reason(hex).contains("start with"));
        assert!(reason(&text[..text.len() - 2]).contains("found 62 characters"));
        assert!(reason(&format!("{text}00")).contains("found 66 characters"));
        assert!(reason(&format!("rkv1-{}g", &hex[..63])).contains("character 64"));
        assert!(reason(&format!("rkv1-{}é", &hex[..62])).contains("63 characters"));
        assert!(reason("").contains("start with"));
        let message = ClusterKey::parse(&format!("rkv1-{}", &hex[..10]))
            .expect_err("too short")
            .to_string();
        assert!(message.starts_with("invalid cluster key: "), "{message}");
        assert!(
            !message.contains(&hex[..10]),
            "error echoes the secret: {message}"
        );
    }

    #[test]
    fn cluster_key_debug_hides_the_secret() {
        let key = key(3);
        let debug = format!("{key:?}");
        let id = key.cluster_id();
        let id_hex: String = id.0[..4].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(debug, format!("ClusterKey({id_hex})"));
        let secret_hex = &key.to_string()[5..];
        for window in 0..=(64 - 8) {
            assert!(!debug.contains(&secret_hex[window..window + 8]), "{debug}");
        }
    }

    #[test]
    fn cluster_id_depends_on_the_secret_only() {
        assert_eq!(key(4).cluster_id(), key(4).cluster_id());
        assert_ne!(key(4).cluster_id(), key(5).cluster_id());
        assert_eq!(
            ClusterKey::from_bytes([7; 32]).cluster_id().0[..],
            blake3::derive_key("ringkv 2026 cluster id", &[7; 32])[..16]
        );
    }

    #[test]
    fn cluster_ca_is_the_same_on_every_peer() {
        let (a, b) = (identity(), identity());
        let ca = |k: &ClusterKey, me: &NodeIdentity| Credentials::new(k, me).expect("ca").ca_cert;
        assert_eq!(ca(&key(6), &a), ca(&key(6), &b));
        assert_ne!(ca(&key(6), &a), ca(&key(7), &a));
    }

    #[test]
    fn node_identity_pkcs8_round_trip_keeps_node_id() {
        let me = identity();
        let again = NodeIdentity::from_pkcs8_der(&me.to_pkcs8_der()).expect("reload");
        assert_eq!(again.node_id(), me.node_id());
        assert_ne!(identity().node_id(), me.node_id());
        assert_eq!(
            format!("{me:?}"),
            format!("NodeIdentity({})", me.node_id().short())
        );
    }

    #[test]
    fn node_identity_accepts_pkcs8_v1_and_rejects_other_keys() {
        let seed = [9u8; 32];
        let mut v1 = ED25519_PKCS8_V1_PREFIX.to_vec();
        v1.extend_from_slice(&seed);
        let me = NodeIdentity::from_pkcs8_der(&v1).expect("pkcs8 v1 ed25519");
        assert_eq!(me.to_pkcs8_der(), v1);
        assert!(matches!(
            NodeIdentity::from_pkcs8_der(b"not a key"),
            Err(TlsError::BadIdentity(_))
        ));
        let ecdsa = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ecdsa key");
        assert!(matches!(
            NodeIdentity::from_pkcs8_der(&ecdsa.serialize_der()),
            Err(TlsError::BadIdentity(_))
        ));
    }

    #[test]
    fn transport_config_builds() {
        // The setters panic on out-of-range values; building is the test.
        let _ = transport_config();
    }

    #[tokio::test]
    async fn peers_with_the_same_key_exchange_streams_and_datagrams() {
        let key = key(10);
        let (server_id, client_id) = (identity(), identity());
        let server_endpoint = server(&key, &server_id);
        let addr = server_endpoint.local_addr().expect("bound");
        let served = tokio::spawn(serve_one(server_endpoint.clone()));
        let client_endpoint = client(&key, &client_id);

        let conn = timeout(STEP, connect(&client_endpoint, addr))
            .await
            .expect("connect in time")
            .expect("handshake succeeds");
        assert_eq!(peer_node_id(&conn), Some(server_id.node_id()));
        let reply = timeout(STEP, echo_stream(&conn, b"hello ringkv"))
            .await
            .expect("stream echo in time")
            .expect("stream echo works");
        assert_eq!(reply, b"hello ringkv");
        let reply = timeout(STEP, echo_datagram(&conn, b"ping"))
            .await
            .expect("datagram echo in time")
            .expect("datagram echo works");
        assert_eq!(reply, b"ping");
        conn.close(0u32.into(), b"bye");

        let seen = timeout(STEP, served)
            .await
            .expect("server finishes")
            .expect("server task")
            .expect("server handshake");
        assert_eq!(seen, Some(client_id.node_id()));
        close(&client_endpoint).await;
        close(&server_endpoint).await;
    }

    /// More one-way messages at once than a connection has stream slots
    /// for ([`UNI_STREAMS_MAX`]): the ones past the limit wait for a slot
    /// and all arrive; none fails.
    #[tokio::test]
    async fn one_way_messages_past_the_stream_limit_wait_and_all_arrive() {
        let key = key(13);
        let server_endpoint = server(&key, &identity());
        let addr = server_endpoint.local_addr().expect("bound");
        let client_endpoint = client(&key, &identity());
        let count = 3 * UNI_STREAMS_MAX as usize;
        let received = tokio::spawn({
            let endpoint = server_endpoint.clone();
            async move {
                let conn = endpoint
                    .accept()
                    .await
                    .expect("open")
                    .await
                    .expect("handshake");
                let mut readers = tokio::task::JoinSet::new();
                for _ in 0..count {
                    let mut recv = conn.accept_uni().await.expect("a stream");
                    readers.spawn(async move { recv.read_to_end(1 << 16).await.expect("read") });
                }
                let mut got = Vec::new();
                while let Some(bytes) = readers.join_next().await {
                    got.push(bytes.expect("reader"));
                }
                got.sort();
                got
            }
        });
        let conn = timeout(STEP, connect(&client_endpoint, addr))
            .await
            .expect("connect in time")
            .expect("handshake succeeds");
        let mut senders = tokio::task::JoinSet::new();
        for i in 0..count {
            let conn = conn.clone();
            senders.spawn(async move {
                let mut send = conn.open_uni().await.expect("a slot, in time");
                // Held open a moment, so the streams overlap.
                send.write_all(&[0u8; 2048]).await.expect("write");
                tokio::time::sleep(Duration::from_millis(20)).await;
                send.write_all(format!("{i:04}").as_bytes())
                    .await
                    .expect("write");
                send.finish().expect("finish");
                send.stopped().await.expect("acknowledged");
            });
        }
        timeout(STEP, async {
            while let Some(sent) = senders.join_next().await {
                sent.expect("sender");
            }
        })
        .await
        .expect("every message sent in time");
        let got = timeout(STEP, received)
            .await
            .expect("every message arrives in time")
            .expect("receiver");
        assert_eq!(got.len(), count);
        for (i, bytes) in got.iter().enumerate() {
            assert!(bytes.ends_with(format!("{i:04}").as_bytes()), "message {i}");
        }
        conn.close(0u32.into(), b"bye");
        close(&client_endpoint).await;
        close(&server_endpoint).await;
    }

    #[tokio::test]
    async fn server_rejects_a_client_with_another_key() {
        let server_endpoint = server(&key(11), &identity());
        let addr = server_endpoint.local_addr().expect("bound");
        let served = tokio::spawn(serve_one(server_endpoint.clone()));
        // The client trusts the server's CA, so only the server's check of
        // the client certificate (signed by another cluster's CA) can fail.
        let mut credentials = Credentials::new(&key(12), &identity()).expect("credentials");
        credentials.ca_cert = Credentials::new(&key(11), &identity())
            .expect("credentials")
            .ca_cert;
        let mut client_endpoint = Endpoint::client(loopback()).expect("bind client");
        client_endpoint.set_default_client_config(client_config_for(credentials).expect("config"));

        // The client may think the handshake finished before the server has
        // checked its certificate; the failure must show by the first reply.
        let exchange = timeout(STEP, async {
            let conn = connect(&client_endpoint, addr).await?;
            echo_stream(&conn, b"let me in").await
        })
        .await
        .expect("the exchange fails rather than hangs");
        assert!(exchange.is_err(), "exchange succeeded: {exchange:?}");
        let seen = timeout(STEP, served)
            .await
            .expect("server finishes")
            .expect("server task");
        assert!(seen.is_err(), "server accepted: {seen:?}");
        close(&client_endpoint).await;
        close(&server_endpoint).await;
    }

    #[tokio::test]
    async fn client_rejects_a_server_with_another_key() {
        let server_endpoint = server(&key(13), &identity());
        let addr = server_endpoint.local_addr().expect("bound");
        let served = tokio::spawn(serve_one(server_endpoint.clone()));
        let client_endpoint = client(&key(14), &identity());

        let connected = timeout(STEP, connect(&client_endpoint, addr))
            .await
            .expect("the handshake fails rather than hangs");
        assert!(connected.is_err(), "client accepted the server");
        let seen = timeout(STEP, served)
            .await
            .expect("server finishes")
            .expect("server task");
        assert!(seen.is_err(), "server completed a handshake: {seen:?}");
        close(&client_endpoint).await;
        close(&server_endpoint).await;
    }
}
