//! TLS that follows a peer's [`Keyring`] as its keys rotate, without
//! rebuilding the endpoint: the rustls hooks (certificate resolvers and
//! verifiers) read the current [`TlsKeys`] material on every handshake,
//! and [`TlsKeys::set`] swaps it. Connections already open keep working:
//! their handshake is done.
//!
//! What a peer presents, as server and as client: its certificate signed
//! by the primary key's cluster CA, followed by one cross certificate per
//! retired key (one that was the primary before and is still installed:
//! the primary's CA certificate, signed by that key's CA). A CLI or a
//! client credential's holder that trusts only the older key finds a
//! chain to it through the cross certificate, so switching the primary
//! cuts no client off; removing a key removes its cross certificate, and
//! then its holders are refused. A key that was only installed signs no
//! cross certificate: the new key never vouches for the old one, or the
//! old (leaked) key's holder could chain a certificate of their own
//! through it to the new key after the old one is removed.
//!
//! What a peer trusts: the cluster CA of every installed key (peers) and
//! the client CA of every installed key (client credentials), and only
//! certificates those sign directly: a peer ignores the intermediates
//! the other side presents (its own cross certificates are for
//! single-key clients), so no cross certificate, however collected, lets
//! anyone in.
//!
//! This module does no IO; it builds quinn configs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rcgen::{Issuer, SerialNumber};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::transport::credentials::client_ca_cert;
use crate::transport::keyring::{Fingerprint, Keyring};
use crate::transport::tls::{
    alpn_protocols, ca_params, certificate_error, cluster_ca_cert, ed25519_key_pair, node_params,
    rustls_error, server_transport_config, transport_config, NodeIdentity, TlsError,
};

/// Serial number of cross certificates (the CAs' own are 1 and 2).
const CROSS_SERIAL: u8 = 3;

/// What every handshake reads, built whole from one keyring.
struct Material {
    fingerprints: Vec<Fingerprint>,
    /// This peer's certificate under the primary, then the cross
    /// certificates, with its key.
    certified: Arc<CertifiedKey>,
    /// Servers: a chain to any installed key's cluster CA.
    servers: Arc<WebPkiServerVerifier>,
    /// Clients at the handshake: any installed cluster CA or client CA.
    handshake: Arc<dyn ClientCertVerifier>,
    /// After the handshake: peers (any installed cluster CA).
    peers: Arc<dyn ClientCertVerifier>,
    /// After the handshake: clients (any installed client CA).
    clients: Arc<dyn ClientCertVerifier>,
}

/// The TLS material of one peer for its current keyring, shared by its
/// server config, its client config and its role checks.
/// `Debug` shows fingerprints only.
pub struct TlsKeys {
    me: NodeIdentity,
    current: RwLock<Arc<Material>>,
    /// How many times [`TlsKeys::set`] changed the material: connections
    /// check their role again when it moves.
    generation: AtomicU64,
}

/// TLS material built from a keyring by [`TlsKeys::prepare`], not yet in
/// use.
pub struct PreparedKeys(Arc<Material>);

impl fmt::Debug for PreparedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PreparedKeys")
            .field(&self.0.fingerprints)
            .finish()
    }
}

impl fmt::Debug for TlsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsKeys")
            .field("me", &self.me)
            .field("keys", &self.now().fingerprints)
            .finish()
    }
}

impl TlsKeys {
    /// The material of `keyring` for the peer `me`.
    ///
    /// # Errors
    /// A certificate or verifier cannot be built.
    pub fn new(keyring: &Keyring, me: &NodeIdentity) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            me: me.clone(),
            current: RwLock::new(Arc::new(build(keyring, me)?)),
            generation: AtomicU64::new(0),
        }))
    }

    /// From now on, handshakes present and trust what `keyring` says.
    ///
    /// # Errors
    /// A certificate or verifier cannot be built; nothing changed.
    pub fn set(&self, keyring: &Keyring) -> Result<(), TlsError> {
        let prepared = self.prepare(keyring)?;
        self.commit(prepared);
        Ok(())
    }

    /// Builds what [`TlsKeys::set`] would switch to, without switching:
    /// the only step that can fail. A caller that must also store the
    /// keyring prepares first, stores, then [`commits`](Self::commit), so
    /// the file and the handshakes never disagree.
    ///
    /// # Errors
    /// A certificate or verifier cannot be built.
    pub fn prepare(&self, keyring: &Keyring) -> Result<PreparedKeys, TlsError> {
        Ok(PreparedKeys(Arc::new(build(keyring, &self.me)?)))
    }

    /// From now on, handshakes present and trust the prepared keys.
    /// Cannot fail.
    pub fn commit(&self, prepared: PreparedKeys) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = prepared.0;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Moves on every [`TlsKeys::set`]: a role found before may no
    /// longer hold.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The fingerprints of the keys in use, the primary first.
    pub fn fingerprints(&self) -> Vec<Fingerprint> {
        self.now().fingerprints.clone()
    }

    fn now(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The verifiers that tell peers (first) from clients after a
    /// handshake, as the keys are now.
    pub(crate) fn role_verifiers(
        &self,
    ) -> (Arc<dyn ClientCertVerifier>, Arc<dyn ClientCertVerifier>) {
        let m = self.now();
        (m.peers.clone(), m.clients.clone())
    }

    /// A quinn server config that follows these keys (as
    /// [`crate::transport::tls::server_config`] otherwise).
    ///
    /// # Errors
    /// rustls or quinn reject the config.
    pub fn server_config(self: &Arc<Self>) -> Result<quinn::ServerConfig, TlsError> {
        self.server_config_up_to(crate::proto::codec::VERSION)
    }

    /// [`Self::server_config`] offering wire versions up to `protocol_max`
    /// ([`crate::transport::tls::alpn_protocols`]).
    ///
    /// # Errors
    /// rustls or quinn reject the config.
    pub fn server_config_up_to(
        self: &Arc<Self>,
        protocol_max: u8,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rustls_error)?
            .with_client_cert_verifier(Arc::new(Live(self.clone())))
            .with_cert_resolver(Arc::new(Live(self.clone())));
        tls.alpn_protocols = alpn_protocols(protocol_max);
        tls.send_tls13_tickets = 0;
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(rustls_error)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(server_transport_config()));
        Ok(config)
    }

    /// A quinn client config that follows these keys (as
    /// [`crate::transport::tls::client_config`] otherwise).
    ///
    /// # Errors
    /// rustls or quinn reject the config.
    pub fn client_config(self: &Arc<Self>) -> Result<quinn::ClientConfig, TlsError> {
        self.client_config_up_to(crate::proto::codec::VERSION)
    }

    /// [`Self::client_config`] offering wire versions up to `protocol_max`.
    ///
    /// # Errors
    /// rustls or quinn reject the config.
    pub fn client_config_up_to(
        self: &Arc<Self>,
        protocol_max: u8,
    ) -> Result<quinn::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(rustls_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Live(self.clone())))
            .with_client_cert_resolver(Arc::new(Live(self.clone())));
        tls.alpn_protocols = alpn_protocols(protocol_max);
        tls.resumption = rustls::client::Resumption::disabled();
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(rustls_error)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport_config()));
        Ok(config)
    }
}

fn build(keyring: &Keyring, me: &NodeIdentity) -> Result<Material, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let primary = keyring.primary();
    let ca_key = || ed25519_key_pair(&primary.ca_pkcs8()).map_err(certificate_error);
    let issuer = Issuer::new(ca_params(), ca_key()?);
    let leaf = node_params(me)?
        .signed_by(&me.key_pair()?, &issuer)
        .map_err(certificate_error)?;
    let mut chain = vec![leaf.der().clone()];
    for other in keyring.retired() {
        let other_key = ed25519_key_pair(&other.ca_pkcs8()).map_err(certificate_error)?;
        let other_issuer = Issuer::new(ca_params(), other_key);
        let mut params = ca_params();
        params.serial_number = Some(SerialNumber::from_slice(&[CROSS_SERIAL]));
        let cross = params
            .signed_by(&ca_key()?, &other_issuer)
            .map_err(certificate_error)?;
        chain.push(cross.der().clone());
    }
    let signing =
        rustls::crypto::ring::sign::any_eddsa_type(&PrivatePkcs8KeyDer::from(me.to_pkcs8_der()))
            .map_err(rustls_error)?;
    let mut cluster_roots = RootCertStore::empty();
    let mut client_roots = RootCertStore::empty();
    for key in keyring.keys() {
        cluster_roots
            .add(cluster_ca_cert(key)?)
            .map_err(rustls_error)?;
        client_roots
            .add(client_ca_cert(key)?)
            .map_err(rustls_error)?;
    }
    let mut all_roots = cluster_roots.clone();
    for anchor in client_roots.roots.iter().cloned() {
        all_roots.roots.push(anchor);
    }
    let client_verifier = |roots: RootCertStore| {
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(rustls_error)
    };
    Ok(Material {
        fingerprints: keyring.fingerprints(),
        certified: Arc::new(CertifiedKey::new(chain, signing)),
        servers: WebPkiServerVerifier::builder_with_provider(
            Arc::new(cluster_roots.clone()),
            provider.clone(),
        )
        .build()
        .map_err(rustls_error)?,
        handshake: client_verifier(all_roots)?,
        peers: client_verifier(cluster_roots)?,
        clients: client_verifier(client_roots)?,
    })
}

/// The rustls hooks: each reads the material current at the handshake.
#[derive(Debug)]
struct Live(Arc<TlsKeys>);

impl ResolvesServerCert for Live {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.now().certified.clone())
    }
}

impl ResolvesClientCert for Live {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.now().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ClientCertVerifier for Live {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Every CA has the same subject; hints would tell a client nothing.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Intermediates are ignored: see the module's doc.
        let _ = intermediates;
        self.0
            .now()
            .handshake
            .verify_client_cert(end_entity, &[], now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .now()
            .handshake
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .now()
            .handshake
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.now().handshake.supported_verify_schemes()
    }
}

impl ServerCertVerifier for Live {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Intermediates are ignored: see the module's doc.
        let _ = intermediates;
        self.0
            .now()
            .servers
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .now()
            .servers
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .now()
            .servers
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.now().servers.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use quinn::{Connection, Endpoint};
    use tokio::time::timeout;

    use super::*;
    use crate::transport::credentials::{ClientCredentials, Role, Roles};
    use crate::transport::tls::{client_config, ClusterKey, SERVER_NAME};

    /// Bound on every network step; loopback steps take milliseconds.
    const STEP: Duration = Duration::from_secs(5);

    fn key(n: u8) -> ClusterKey {
        ClusterKey::from_bytes([n; 32])
    }

    fn identity() -> NodeIdentity {
        NodeIdentity::generate().expect("os random source works")
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn ring(keys: &[u8]) -> Keyring {
        let mut ring = Keyring::new(key(keys[0]));
        for n in &keys[1..] {
            ring.install(key(*n)).expect("room");
        }
        ring
    }

    /// A server on `keys` that echoes every stream of every connection.
    fn server(keys: &Arc<TlsKeys>) -> (Endpoint, SocketAddr) {
        server_up_to(keys, crate::proto::codec::VERSION)
    }

    /// [`server`] offering wire versions up to `max`.
    fn server_up_to(keys: &Arc<TlsKeys>, max: u8) -> (Endpoint, SocketAddr) {
        let config = keys.server_config_up_to(max).expect("server config");
        let endpoint = Endpoint::server(config, loopback()).expect("bind");
        let addr = endpoint.local_addr().expect("bound");
        let accept = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accept.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let Ok(data) = recv.read_to_end(1 << 16).await else {
                            return;
                        };
                        let _ = send.write_all(&data).await;
                        let _ = send.finish();
                    }
                });
            }
        });
        (endpoint, addr)
    }

    fn client(config: quinn::ClientConfig) -> Endpoint {
        let mut endpoint = Endpoint::client(loopback()).expect("bind client");
        endpoint.set_default_client_config(config);
        endpoint
    }

    /// A client holding only `key` (as the CLI does).
    fn key_holder(n: u8) -> Endpoint {
        client(client_config(&key(n), &identity()).expect("client config"))
    }

    async fn echo(conn: &Connection) -> Result<Vec<u8>, String> {
        let exchange = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(b"ping").await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            recv.read_to_end(1 << 16).await.map_err(|e| e.to_string())
        };
        timeout(STEP, exchange)
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    /// Connects and exchanges one stream: authenticated both ways.
    async fn exchange(endpoint: &Endpoint, addr: SocketAddr) -> Result<Connection, String> {
        let connecting = endpoint
            .connect(addr, SERVER_NAME)
            .map_err(|e| e.to_string())?;
        let conn = timeout(STEP, connecting)
            .await
            .map_err(|_| "handshake timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let reply = echo(&conn).await?;
        assert_eq!(reply, b"ping");
        Ok(conn)
    }

    #[tokio::test]
    async fn install_use_remove_keeps_every_installed_key_holder_in_and_then_shuts_the_old_out() {
        let keys = TlsKeys::new(&ring(&[1]), &identity()).expect("keys");
        let (endpoint, addr) = server(&keys);
        let (old, new) = (key_holder(1), key_holder(2));
        let before = exchange(&old, addr).await.expect("the old key works");
        assert!(exchange(&new, addr).await.is_err(), "not installed yet");

        keys.set(&ring(&[1, 2])).expect("install");
        exchange(&old, addr).await.expect("old key, after install");
        assert!(
            exchange(&new, addr).await.is_err(),
            "an installed key vouches for nothing: new-key clients wait for use"
        );

        keys.set(&used(&[1, 2])).expect("use");
        exchange(&old, addr)
            .await
            .expect("old key, after use: the cross certificate");
        exchange(&new, addr).await.expect("new key, after use");
        assert_eq!(
            echo(&before).await.as_deref(),
            Ok(&b"ping"[..]),
            "an open connection stays"
        );

        keys.set(&ring(&[2])).expect("remove");
        assert!(
            exchange(&old, addr).await.is_err(),
            "the old key is refused once removed"
        );
        exchange(&new, addr).await.expect("new key, after remove");
        assert_eq!(keys.fingerprints(), vec![Fingerprint::of(&key(2))]);
        endpoint.close(0u32.into(), b"done");
    }

    /// `keys` installed in that order, then the last made the primary
    /// (`use`): the others are retired.
    fn used(keys: &[u8]) -> Keyring {
        let mut ring = ring(keys);
        let last = key(*keys.last().expect("a key"));
        ring.use_key(&Fingerprint::of(&last)).expect("installed");
        ring
    }

    #[tokio::test]
    async fn a_connection_speaks_the_highest_wire_version_both_ends_offer() {
        use crate::proto::codec::{TEST_VERSION, VERSION};
        use crate::transport::tls::connection_version;
        let keys = TlsKeys::new(&ring(&[1]), &identity()).expect("keys");
        for (server_max, client_max, want) in [
            (TEST_VERSION, TEST_VERSION, TEST_VERSION),
            (TEST_VERSION, VERSION, VERSION),
            (VERSION, TEST_VERSION, VERSION),
            (VERSION, VERSION, VERSION),
        ] {
            let (endpoint, addr) = server_up_to(&keys, server_max);
            let dialer = client(keys.client_config_up_to(client_max).expect("config"));
            let conn = exchange(&dialer, addr)
                .await
                .unwrap_or_else(|e| panic!("{server_max} <- {client_max}: {e}"));
            assert_eq!(
                connection_version(&conn),
                want,
                "server up to {server_max}, client up to {client_max}"
            );
            conn.close(0u32.into(), b"done");
            dialer.wait_idle().await;
            endpoint.close(0u32.into(), b"done");
        }
        // A build from before negotiation offers the bare token only.
        let (endpoint, addr) = server_up_to(&keys, TEST_VERSION);
        let old = client(client_config(&key(1), &identity()).expect("config"));
        let conn = exchange(&old, addr).await.expect("an old build connects");
        assert_eq!(connection_version(&conn), VERSION);
        endpoint.close(0u32.into(), b"done");
    }

    #[tokio::test]
    async fn peers_on_different_primaries_talk_while_both_keys_are_installed() {
        let switched = TlsKeys::new(&used(&[1, 2]), &identity()).expect("keys");
        let behind = TlsKeys::new(&ring(&[1, 2]), &identity()).expect("keys");
        let (e1, a1) = server(&switched);
        let (e2, a2) = server(&behind);
        exchange(&client(behind.client_config().expect("config")), a1)
            .await
            .expect("behind dials switched");
        exchange(&client(switched.client_config().expect("config")), a2)
            .await
            .expect("switched dials behind");
        // Once the old key is gone from one side, a peer still presenting
        // a certificate under it is refused (whatever it holds), and gets
        // in again once it switched too; one that holds only the old key
        // does not.
        switched.set(&ring(&[2])).expect("remove");
        assert!(
            exchange(&client(behind.client_config().expect("config")), a1)
                .await
                .is_err(),
            "a certificate under a removed key"
        );
        behind.set(&used(&[1, 2])).expect("use");
        exchange(&client(behind.client_config().expect("config")), a1)
            .await
            .expect("behind, switched now, dials switched");
        let old_only = TlsKeys::new(&ring(&[1]), &identity()).expect("keys");
        assert!(
            exchange(&client(old_only.client_config().expect("config")), a1)
                .await
                .is_err()
        );
        e1.close(0u32.into(), b"done");
        e2.close(0u32.into(), b"done");
    }

    #[test]
    fn client_credentials_of_a_key_keep_their_role_until_the_key_is_removed() {
        let keys = TlsKeys::new(&ring(&[1]), &identity()).expect("keys");
        let roles = Roles::live(keys.clone());
        let creds =
            ClientCredentials::issue(&key(1), "app", 0, u64::from(u32::MAX)).expect("issued");
        let chain = creds.chain_for_tests();
        let peer = TlsKeys::new(&ring(&[1]), &identity()).expect("keys");
        let peer_chain = peer.now().certified.cert.clone();
        // 2033: after the certificates' 1975 start.
        let now = UnixTime::since_unix_epoch(Duration::from_secs(2_000_000_000));
        assert!(matches!(roles.role_of_chain(&chain, now), Role::Client(_)));
        assert_eq!(roles.role_of_chain(&peer_chain, now), Role::Peer);
        keys.set(&ring(&[2, 1])).expect("use");
        assert!(matches!(roles.role_of_chain(&chain, now), Role::Client(_)));
        assert_eq!(roles.role_of_chain(&peer_chain, now), Role::Peer);
        keys.set(&ring(&[2])).expect("remove");
        assert_eq!(roles.role_of_chain(&chain, now), Role::Nobody);
        assert_eq!(roles.role_of_chain(&peer_chain, now), Role::Nobody);
    }

    /// A certificate for a fresh identity signed by `n`'s cluster CA, as
    /// anyone holding key `n` can make.
    fn forged_leaf(n: u8) -> CertificateDer<'static> {
        let ca = ed25519_key_pair(&key(n).ca_pkcs8()).expect("ca key");
        let issuer = Issuer::new(ca_params(), ca);
        let me = identity();
        node_params(&me)
            .expect("params")
            .signed_by(&me.key_pair().expect("key pair"), &issuer)
            .expect("signed")
            .der()
            .clone()
    }

    /// The cross certificate "`subject`'s CA, vouched for by `signer`".
    fn cross(subject: u8, signer: u8) -> CertificateDer<'static> {
        let signer = Issuer::new(
            ca_params(),
            ed25519_key_pair(&key(signer).ca_pkcs8()).expect("ca key"),
        );
        let mut params = ca_params();
        params.serial_number = Some(SerialNumber::from_slice(&[CROSS_SERIAL]));
        params
            .signed_by(
                &ed25519_key_pair(&key(subject).ca_pkcs8()).expect("ca key"),
                &signer,
            )
            .expect("signed")
            .der()
            .clone()
    }

    #[test]
    fn only_a_retired_key_vouches_for_the_primary() {
        let installed = TlsKeys::new(&ring(&[1, 2]), &identity()).expect("keys");
        assert_eq!(
            installed.now().certified.cert.len(),
            1,
            "an installed key signs no cross certificate"
        );
        let switched = TlsKeys::new(&used(&[1, 2]), &identity()).expect("keys");
        assert_eq!(
            switched.now().certified.cert.len(),
            2,
            "the old primary vouches for the new one"
        );
    }

    #[test]
    fn a_removed_key_gets_no_path_through_any_cross_certificate() {
        // The leaked key 1 was rotated out: the peer holds key 2 alone.
        // Its holder signs a leaf of their own under key 1 and presents it
        // with a cross certificate chaining key 1's CA to key 2 (as an
        // installed key 2 used to sign, collected from any handshake).
        let keys = TlsKeys::new(&ring(&[2]), &identity()).expect("keys");
        let roles = Roles::live(keys.clone());
        let now = UnixTime::since_unix_epoch(Duration::from_secs(2_000_000_000));
        let chain = [forged_leaf(1), cross(1, 2)];
        assert_eq!(roles.role_of_chain(&chain, now), Role::Nobody);
        let live = Live(keys.clone());
        assert!(
            ClientCertVerifier::verify_client_cert(&live, &chain[0], &chain[1..], now).is_err(),
            "refused at the handshake"
        );
        let name = ServerName::try_from(SERVER_NAME).expect("name");
        assert!(
            ServerCertVerifier::verify_server_cert(&live, &chain[0], &chain[1..], &name, &[], now)
                .is_err(),
            "and as a server a peer dials"
        );
        // The same leaf with key 2's own signature would be in: the
        // refusal is the path, not the leaf.
        assert_eq!(roles.role_of_chain(&[forged_leaf(2)], now), Role::Peer);
    }

    #[test]
    fn debug_shows_fingerprints_not_keys() {
        let keys = TlsKeys::new(&ring(&[1, 2]), &identity()).expect("keys");
        let debug = format!("{keys:?}");
        assert!(debug.contains(Fingerprint::of(&key(2)).short()), "{debug}");
        assert!(!debug.contains(&key(1).to_string()[5..21]), "{debug}");
    }
}
