//! Client credentials and roles.
//!
//! Two certificate authorities derive from one [`ClusterKey`]: the cluster
//! CA signs peers' certificates ([`crate::transport::tls`]), the client CA
//! signs client credentials, which an operator issues with
//! [`ClientCredentials::issue`] and hands to a CLI user. A peer's server
//! config trusts both; after a handshake [`Roles::role_of`] tells which CA
//! signed the certificate (by verifying it against each CA alone), so the
//! peer serves client requests to a client and everything to a peer. A
//! client never gets a peer certificate and cannot mint one: it holds no
//! CA key.
//!
//! A client certificate's serial number is `0x52`, the first 8 bytes of
//! `blake3::derive_key("ringkv 2026 client name", name)`, and its
//! not-before time in Unix seconds (big-endian u64): revocation by name
//! ([`Revocation`]) needs only the serial, no certificate parser.
//!
//! A credentials file is text: a header line, `name`, `expires` (Unix
//! seconds), and the client certificate, its private key and the cluster
//! CA certificate (which the client checks peers against) as hex DER. It is
//! at most [`CREDENTIALS_FILE_MAX`] bytes; [`ClientCredentials::parse`]
//! checks every field and names what is wrong.
//!
//! No IO here; rustls verifies, rcgen signs.

use std::fmt::Write as _;
use std::sync::Arc;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::transport::tls::{self, ClusterKey, TlsError};

/// Largest credentials file read, in bytes (checked before reading it).
pub const CREDENTIALS_FILE_MAX: usize = 16 * 1024;
/// Longest client name, in bytes.
pub const NAME_MAX: usize = 64;
/// First line of a credentials file; the `1` is the format version.
const HEADER: &str = "ringkv-client-credentials-v1";
/// First byte of every client certificate's serial number.
const SERIAL_TAG: u8 = 0x52;
const NAME_HASH_CONTEXT: &str = "ringkv 2026 client name";

/// What a verified certificate lets its holder do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Signed by the cluster CA: a peer (or an operator holding the key).
    Peer,
    /// Signed by the client CA: client requests only.
    Client(ClientTag),
    /// Neither verifies now (expired since the handshake, or no
    /// certificate): nothing is served.
    Nobody,
}

impl Role {
    /// Whether this is [`Role::Peer`].
    pub fn is_peer(&self) -> bool {
        matches!(self, Self::Peer)
    }
}

/// Who a client certificate was issued to, from its serial number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTag {
    /// [`name_hash`] of the name it was issued to.
    pub name_hash: [u8; 8],
    /// When it was issued (its not-before time), Unix seconds.
    pub issued: u64,
}

/// A revocation: every credential issued to the name (by [`name_hash`])
/// up to and including `before` (Unix seconds) is refused. One issued
/// later under the same name is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revocation {
    /// [`name_hash`] of the revoked name.
    pub name_hash: [u8; 8],
    /// Credentials issued at or before this time are revoked.
    pub before: u64,
}

impl Revocation {
    /// Whether this revocation covers `tag`.
    pub fn covers(&self, tag: &ClientTag) -> bool {
        self.name_hash == tag.name_hash && tag.issued <= self.before
    }
}

/// The first 8 bytes of `blake3::derive_key("ringkv 2026 client name", name)`.
pub fn name_hash(name: &str) -> [u8; 8] {
    let hash = blake3::derive_key(NAME_HASH_CONTEXT, name.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&hash[..8]);
    out
}

/// Checks a client name: 1 to [`NAME_MAX`] bytes of ASCII letters, digits,
/// `.`, `_`, `-` and `@`.
///
/// # Errors
/// [`TlsError::BadCredentials`] naming what is wrong.
pub fn check_name(name: &str) -> Result<(), TlsError> {
    let bad = |why: &str| Err(TlsError::BadCredentials(format!("client name: {why}")));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > NAME_MAX {
        return bad(&format!("{} bytes; the limit is {NAME_MAX}", name.len()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
    {
        return bad("use only letters, digits, '.', '_', '-' and '@'");
    }
    Ok(())
}

/// A client's credentials: a certificate signed by the client CA, its
/// private key, and the cluster CA certificate to check peers against.
/// `Debug` never prints the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    name: String,
    expires: u64,
    cert: Vec<u8>,
    key: Vec<u8>,
    cluster_ca: Vec<u8>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("name", &self.name)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// Issues credentials for `name`, valid from `not_before` to
    /// `not_after` (Unix seconds), with a fresh key pair.
    ///
    /// # Errors
    /// [`TlsError::BadCredentials`] for a bad name or an empty validity;
    /// [`TlsError::KeyGeneration`] or [`TlsError::Certificate`] otherwise.
    pub fn issue(
        key: &ClusterKey,
        name: &str,
        not_before: u64,
        not_after: u64,
    ) -> Result<Self, TlsError> {
        check_name(name)?;
        if not_after <= not_before {
            return Err(TlsError::BadCredentials(
                "the credentials would expire before they start".to_owned(),
            ));
        }
        let pair = KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| TlsError::KeyGeneration(e.to_string()))?;
        let ca_key = tls::ed25519_key_pair(&key.client_ca_pkcs8()).map_err(cert_error)?;
        let issuer = Issuer::new(client_ca_params(), ca_key);
        let mut params =
            CertificateParams::new(vec![format!("{name}.client.ringkv")]).map_err(cert_error)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("ringkv client {name}"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + std::time::Duration::from_secs(not_before);
        params.not_after = epoch + std::time::Duration::from_secs(not_after);
        let mut serial = vec![SERIAL_TAG];
        serial.extend_from_slice(&name_hash(name));
        serial.extend_from_slice(&not_before.to_be_bytes());
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&pair, &issuer).map_err(cert_error)?;
        Ok(Self {
            name: name.to_owned(),
            expires: not_after,
            cert: cert.der().to_vec(),
            key: pair.serialize_der(),
            cluster_ca: tls::cluster_ca_cert(key)?.to_vec(),
        })
    }

    /// The certificate chain these credentials present (tests).
    #[cfg(test)]
    pub(crate) fn chain_for_tests(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.cert.clone())]
    }

    /// The name it was issued to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it expires, Unix seconds.
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// The file text (holds the private key: write it with mode 0600).
    pub fn to_text(&self) -> String {
        let mut out = format!("{HEADER}\nname {}\nexpires {}\n", self.name, self.expires);
        for (label, der) in [
            ("cert", &self.cert),
            ("key", &self.key),
            ("ca", &self.cluster_ca),
        ] {
            out.push_str(label);
            out.push(' ');
            for b in der {
                let _ = write!(out, "{b:02x}");
            }
            out.push('\n');
        }
        out
    }

    /// Parses what [`Self::to_text`] wrote. The text must be at most
    /// [`CREDENTIALS_FILE_MAX`] bytes (checked first); the key must be an
    /// Ed25519 key.
    ///
    /// # Errors
    /// [`TlsError::BadCredentials`] naming the first thing wrong; it
    /// never echoes the key.
    pub fn parse(text: &str) -> Result<Self, TlsError> {
        let bad = |why: String| TlsError::BadCredentials(why);
        if text.len() > CREDENTIALS_FILE_MAX {
            return Err(bad(format!(
                "{} bytes; a credentials file is at most {CREDENTIALS_FILE_MAX}",
                text.len()
            )));
        }
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(HEADER) {
            return Err(bad(format!(
                "not a ringkv credentials file (the first line must be {HEADER:?})"
            )));
        }
        let mut field = |label: &str| -> Result<&str, TlsError> {
            let line = lines
                .next()
                .ok_or_else(|| bad(format!("the {label:?} line is missing")))?;
            line.trim()
                .strip_prefix(label)
                .and_then(|rest| rest.strip_prefix(' '))
                .ok_or_else(|| bad(format!("expected a {label:?} line")))
        };
        let name = field("name")?.to_owned();
        check_name(&name)?;
        let expires = field("expires")?
            .parse::<u64>()
            .map_err(|_| bad("\"expires\" is not a number of seconds".to_owned()))?;
        let cert = unhex(field("cert")?).ok_or_else(|| bad("\"cert\" is not hex".to_owned()))?;
        let key = unhex(field("key")?).ok_or_else(|| bad("\"key\" is not hex".to_owned()))?;
        let cluster_ca = unhex(field("ca")?).ok_or_else(|| bad("\"ca\" is not hex".to_owned()))?;
        tls::ed25519_key_pair(&key)
            .map_err(|_| bad("\"key\" is not an Ed25519 private key".to_owned()))?;
        Ok(Self {
            name,
            expires,
            cert,
            key,
            cluster_ca,
        })
    }

    /// The quinn client config these credentials connect with: presents
    /// the client certificate, trusts only the cluster CA for peers.
    ///
    /// # Errors
    /// [`TlsError::Rustls`] if rustls rejects the certificate or key.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        tls::client_config_from(
            CertificateDer::from(self.cluster_ca.clone()),
            CertificateDer::from(self.cert.clone()),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone())),
        )
    }
}

/// Tells peers from clients by which CA verifies a connection's
/// certificate.
pub struct Roles {
    source: RoleSource,
}

/// Where [`Roles`] gets its verifiers.
enum RoleSource {
    /// One key's, fixed.
    Fixed {
        peer: Arc<dyn ClientCertVerifier>,
        client: Arc<dyn ClientCertVerifier>,
    },
    /// A keyring's, as it is at each check.
    Live(Arc<crate::transport::live::TlsKeys>),
}

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Roles")
    }
}

impl Roles {
    /// The two verifiers of the cluster `key`.
    ///
    /// # Errors
    /// [`TlsError::Certificate`] or [`TlsError::Rustls`] if a CA cannot be
    /// built.
    pub fn new(key: &ClusterKey) -> Result<Self, TlsError> {
        Ok(Self {
            source: RoleSource::Fixed {
                peer: verifier(tls::cluster_ca_cert(key)?)?,
                client: verifier(client_ca_cert(key)?)?,
            },
        })
    }

    /// The verifiers of every key installed in `keys` at the time of each
    /// check: once a key is removed, certificates under it have no role.
    pub fn live(keys: Arc<crate::transport::live::TlsKeys>) -> Self {
        Self {
            source: RoleSource::Live(keys),
        }
    }

    /// Moves whenever the keys roles are checked against change (a
    /// keyring's `set`); fixed keys never move. A role found at an older
    /// generation must be checked again.
    pub fn generation(&self) -> u64 {
        match &self.source {
            RoleSource::Fixed { .. } => 0,
            RoleSource::Live(keys) => keys.generation(),
        }
    }

    /// The role of the verified certificate `chain` (end entity first) at
    /// `now`.
    pub fn role_of_chain(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Role {
        let Some((end, rest)) = chain.split_first() else {
            return Role::Nobody;
        };
        let (peer, client, rest) = match &self.source {
            RoleSource::Fixed { peer, client } => (peer.clone(), client.clone(), rest),
            // A peer whose keys rotate trusts only certificates an
            // installed key signs directly (`live.rs`): a collected cross
            // certificate must not lend a removed key a path.
            RoleSource::Live(keys) => {
                let (peer, client) = keys.role_verifiers();
                (peer, client, &[][..])
            }
        };
        if peer.verify_client_cert(end, rest, now).is_ok() {
            return Role::Peer;
        }
        if client.verify_client_cert(end, rest, now).is_ok() {
            if let Some(tag) = client_tag(end) {
                return Role::Client(tag);
            }
        }
        Role::Nobody
    }

    /// The role of the other side of an accepted connection, now.
    pub fn role_of(&self, conn: &quinn::Connection) -> Role {
        let Some(chain) = conn
            .peer_identity()
            .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
        else {
            return Role::Nobody;
        };
        self.role_of_chain(&chain, UnixTime::now())
    }
}

fn verifier(ca: CertificateDer<'static>) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(|e| TlsError::Rustls(e.to_string()))?;
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map_err(|e| TlsError::Rustls(e.to_string()))
}

fn cert_error(e: rcgen::Error) -> TlsError {
    TlsError::Certificate(e.to_string())
}

/// The client CA: fixed parameters, so every peer builds the same one.
fn client_ca_params() -> CertificateParams {
    let mut params = tls::ca_params();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "ringkv client ca");
    params.serial_number = Some(SerialNumber::from_slice(&[2]));
    params
}

/// The client CA's self-signed certificate.
pub(crate) fn client_ca_cert(key: &ClusterKey) -> Result<CertificateDer<'static>, TlsError> {
    let ca_key = tls::ed25519_key_pair(&key.client_ca_pkcs8()).map_err(cert_error)?;
    let cert = client_ca_params()
        .self_signed(&ca_key)
        .map_err(cert_error)?;
    Ok(cert.der().clone())
}

/// The [`ClientTag`] in a client certificate's serial number, if it has
/// the client form.
fn client_tag(cert: &CertificateDer<'_>) -> Option<ClientTag> {
    let serial = serial_number(cert)?;
    let serial = serial.strip_prefix(&[0]).unwrap_or(serial);
    let rest = serial.strip_prefix(&[SERIAL_TAG])?;
    if rest.len() != 16 {
        return None;
    }
    let mut name_hash = [0u8; 8];
    name_hash.copy_from_slice(&rest[..8]);
    let mut issued = [0u8; 8];
    issued.copy_from_slice(&rest[8..]);
    Some(ClientTag {
        name_hash,
        issued: u64::from_be_bytes(issued),
    })
}

/// The content octets of a certificate's serial number: Certificate
/// SEQUENCE, tbsCertificate SEQUENCE, optional `[0]` version, INTEGER.
fn serial_number<'a>(cert: &'a CertificateDer<'_>) -> Option<&'a [u8]> {
    let (tag, cert, _) = der_tlv(cert.as_ref())?;
    (tag == 0x30).then_some(())?;
    let (tag, tbs, _) = der_tlv(cert)?;
    (tag == 0x30).then_some(())?;
    let (mut tag, mut content, rest) = der_tlv(tbs)?;
    if tag == 0xa0 {
        (tag, content, _) = der_tlv(rest)?;
    }
    (tag == 0x02).then_some(content)
}

/// One DER tag-length-value: `(tag, content, rest)`; `None` if truncated.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let (bytes, rest) = input.split_at(n);
        input = rest;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    (input.len() >= len).then(|| (tag, &input[..len], &input[len..]))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 || s.is_empty() {
        return None;
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| Some((tls::hex_value(p[0])? << 4) | tls::hex_value(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::NodeIdentity;

    const NOW: u64 = 1_800_000_000;

    fn key(seed: u64) -> ClusterKey {
        ClusterKey::generate(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }

    fn chain(creds: &ClientCredentials) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(creds.cert.clone())]
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
    }

    #[test]
    fn credentials_text_round_trips_and_names_the_client() {
        let creds = ClientCredentials::issue(&key(1), "ada", NOW, NOW + 86_400).expect("issued");
        let text = creds.to_text();
        assert!(text.starts_with(HEADER), "{text}");
        assert!(text.len() < CREDENTIALS_FILE_MAX);
        let again = ClientCredentials::parse(&text).expect("parses");
        assert_eq!(again, creds);
        assert_eq!(again.name(), "ada");
        assert_eq!(again.expires(), NOW + 86_400);
        assert!(!format!("{creds:?}").contains(&text[text.find("key ").unwrap() + 4..][..16]));
        again.client_config().expect("a client config");
    }

    #[test]
    fn bad_credentials_files_get_a_clear_error() {
        let text = ClientCredentials::issue(&key(2), "bob", NOW, NOW + 60)
            .expect("issued")
            .to_text();
        let err = |s: &str| match ClientCredentials::parse(s) {
            Err(TlsError::BadCredentials(m)) => m,
            other => panic!("expected BadCredentials for {s:.40?}, got {other:?}"),
        };
        assert!(err("").contains("not a ringkv credentials file"));
        assert!(err("rkv1-00").contains("not a ringkv credentials file"));
        assert!(err(&format!("{HEADER}\n")).contains("\"name\" line is missing"));
        assert!(err(&text.replace("name bob", "name b b")).contains("client name"));
        assert!(err(&text.replace("expires ", "expires x")).contains("expires"));
        let key_line = text.lines().find(|l| l.starts_with("key ")).unwrap();
        assert!(err(&text.replace(key_line, "key zz")).contains("\"key\" is not hex"));
        assert!(err(&text.replace(key_line, "key 0102")).contains("not an Ed25519"));
        let huge = format!("{HEADER}\n{}", "a".repeat(CREDENTIALS_FILE_MAX));
        assert!(err(&huge).contains("at most"));
    }

    #[test]
    fn issue_checks_the_name_and_the_validity() {
        for name in ["", "a b", "ümlaut", &"x".repeat(NAME_MAX + 1)] {
            assert!(matches!(
                ClientCredentials::issue(&key(3), name, NOW, NOW + 1),
                Err(TlsError::BadCredentials(_))
            ));
        }
        assert!(matches!(
            ClientCredentials::issue(&key(3), "ok", NOW, NOW),
            Err(TlsError::BadCredentials(_))
        ));
    }

    #[test]
    fn roles_come_from_the_ca_that_signed_the_certificate() {
        let key = key(4);
        let roles = Roles::new(&key).expect("roles");
        let creds = ClientCredentials::issue(&key, "carol", NOW, NOW + 3600).expect("issued");
        let want = ClientTag {
            name_hash: name_hash("carol"),
            issued: NOW,
        };
        assert_eq!(
            roles.role_of_chain(&chain(&creds), at(NOW + 10)),
            Role::Client(want)
        );
        // Expired, or not yet valid: nobody.
        assert_eq!(
            roles.role_of_chain(&chain(&creds), at(NOW + 3601)),
            Role::Nobody
        );
        // Another cluster's client CA: nobody.
        let other = ClientCredentials::issue(&self::key(5), "carol", NOW, NOW + 3600).unwrap();
        assert_eq!(
            roles.role_of_chain(&chain(&other), at(NOW + 10)),
            Role::Nobody
        );
        // A peer certificate: a peer.
        let me = NodeIdentity::generate().expect("identity");
        let peer_cert = tls::node_cert(&key, &me).expect("node cert");
        assert_eq!(roles.role_of_chain(&[peer_cert], at(NOW)), Role::Peer);
        assert_eq!(roles.role_of_chain(&[], at(NOW)), Role::Nobody);
    }

    #[test]
    fn revocation_covers_earlier_credentials_of_the_name_only() {
        let tag = |name: &str, issued| ClientTag {
            name_hash: name_hash(name),
            issued,
        };
        let r = Revocation {
            name_hash: name_hash("dave"),
            before: NOW,
        };
        assert!(r.covers(&tag("dave", NOW)));
        assert!(r.covers(&tag("dave", NOW - 100)));
        assert!(!r.covers(&tag("dave", NOW + 1)));
        assert!(!r.covers(&tag("erin", NOW - 100)));
    }

    #[test]
    fn der_walker_rejects_truncated_input() {
        assert_eq!(der_tlv(&[]), None);
        assert_eq!(der_tlv(&[0x30]), None);
        assert_eq!(der_tlv(&[0x30, 0x05, 1, 2]), None);
        assert_eq!(der_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(
            der_tlv(&[0x02, 0x01, 7, 9]),
            Some((0x02, &[7u8][..], &[9u8][..]))
        );
        assert_eq!(client_tag(&CertificateDer::from(vec![0x30, 0x00])), None);
    }
}
