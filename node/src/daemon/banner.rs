//! The startup banner: what a peer prints on stdout once it is bound. It
//! never prints the cluster key itself, only where the key file is and a
//! short fingerprint (the first 4 bytes of the public cluster id), so the
//! key does not end up in terminal scrollback, CI logs or `ps` output of a
//! copied command. Pure: the caller prints the lines.

use std::net::SocketAddr;
use std::path::Path;

use ringkv_gossip::ClusterKey;

use super::PeerAddrs;

/// The key's fingerprint: the first 8 hex digits of its public cluster id.
pub(crate) fn fingerprint(key: &ClusterKey) -> String {
    key.cluster_id().0[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The banner's lines; `created`: this peer started a new cluster, whose
/// key it keeps in `key_file`.
pub(crate) fn lines(
    addrs: &PeerAddrs,
    incarnation: u64,
    created: Option<(&ClusterKey, &Path)>,
    advertise: SocketAddr,
) -> Vec<String> {
    let PeerAddrs { name, id, quic, .. } = addrs;
    let mut out = vec![format!(
        "ringkv: node {name} (id {id}) listening on {quic}, incarnation {incarnation}"
    )];
    if let Some((key, key_file)) = created {
        let file = key_file.display();
        out.push(format!(
            "ringkv: started a new cluster (key fingerprint {}); its secret key is in {file} (mode 0600).",
            fingerprint(key)
        ));
        out.push(
            "ringkv: copy that file to the next peer's host (keep it private) and join it with:"
                .to_owned(),
        );
        out.push(format!(
            "  ringkv node --data <DIR> --listen <ADDR> --join {advertise} --cluster-key-file {file}"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> PeerAddrs {
        let identity = ringkv_gossip::NodeIdentity::generate().expect("identity");
        PeerAddrs {
            id: identity.node_id(),
            name: "p1".to_owned(),
            quic: "127.0.0.1:7001".parse().expect("addr"),
            admin: None,
            resp: None,
        }
    }

    #[test]
    fn the_banner_of_a_new_cluster_names_the_key_file_and_never_prints_the_key() {
        let key = ClusterKey::generate(&mut rand::rng());
        let secret = key.to_string();
        let hex = secret.trim_start_matches("rkv1-");
        let file = Path::new("/data/p1/cluster.key");
        let advertise = "127.0.0.1:7001".parse().expect("addr");
        let text = lines(&addrs(), 1, Some((&key, file)), advertise).join("\n");
        assert!(!text.contains(hex), "the banner prints the key: {text}");
        assert!(
            !text.contains(&hex[..16]),
            "the banner prints part of the key: {text}"
        );
        assert!(
            text.contains("--cluster-key-file /data/p1/cluster.key"),
            "{text}"
        );
        assert!(text.contains(&fingerprint(&key)), "{text}");
        assert!(!text.contains("--cluster-key "), "{text}");
    }

    #[test]
    fn a_peer_of_an_existing_cluster_prints_one_line_and_no_key() {
        let text = lines(&addrs(), 3, None, "127.0.0.1:7001".parse().expect("addr"));
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(!text[0].contains("rkv1-"), "{text:?}");
    }
}
