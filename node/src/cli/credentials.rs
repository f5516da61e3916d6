//! `ringkv credentials issue` and `ringkv credentials revoke`: client
//! credentials for the CLI, issued from the cluster key (offline, IO: the
//! file), and revoked through any peer (IO: network).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use ringkv_gossip::transport::credentials::{check_name, ClientCredentials};

use crate::keyargs::{self, KeyArgs};
use crate::rpc::api::{Request, RevokeReply};
use crate::rpc::client;

/// `ringkv credentials ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum CredentialsCommand {
    /// Issue client credentials (a certificate and key signed by the
    /// cluster's client CA): client requests only, until they expire.
    Issue(IssueArgs),
    /// Revoke every credential issued to a name so far, through any peer
    /// (needs the cluster key); every peer refuses them within a few
    /// gossip rounds. Credentials issued to the name afterwards work.
    Revoke(RevokeArgs),
}

/// Arguments of `ringkv credentials revoke`.
#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The name the credentials were issued to.
    #[arg(long)]
    pub(crate) name: String,
    /// Any peer's --listen (or --advertise) address.
    #[arg(long, env = "RINGKV_PEER")]
    pub(crate) peer: std::net::SocketAddr,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
}

/// `ringkv credentials revoke`: asks one peer, which gossips it on.
pub(crate) async fn revoke(args: &RevokeArgs) -> Result<String> {
    check_name(&args.name)?;
    let key = args.key.require()?;
    let req = Request::Revoke {
        name: args.name.clone(),
    };
    let reply: RevokeReply =
        client::request(args.peer, &key, &req, Duration::from_secs(10)).await?;
    Ok(format!(
        "revoked the credentials issued to {:?} up to {} (peer {} now lists {} revoked names); every peer refuses them within a few gossip rounds\n",
        args.name,
        keyargs::format_secs(reply.before),
        args.peer,
        reply.revoked
    ))
}

/// Arguments of `ringkv credentials issue`.
#[derive(Debug, Args)]
pub(crate) struct IssueArgs {
    /// Who the credentials are for (letters, digits, '.', '_', '-', '@';
    /// at most 64 bytes); written into the certificate.
    #[arg(long)]
    pub(crate) name: String,
    /// How long they are valid: 90d, 12h, 30m... (at most a year).
    #[arg(long, value_parser = keyargs::parse_duration)]
    pub(crate) expires: Duration,
    /// Where to write them (mode 0600; never overwritten). Default:
    /// NAME.credentials in the current directory.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
}

/// Runs `ringkv credentials issue`, which needs no network.
pub(crate) fn run_blocking(args: &IssueArgs) -> Result<String> {
    issue(args, keyargs::wall_secs())
}

/// `ringkv credentials issue`: checks everything, then writes the file.
fn issue(args: &IssueArgs, now: u64) -> Result<String> {
    check_name(&args.name)?;
    if args.expires < Duration::from_secs(60) {
        bail!("--expires {:?} is too short: at least 60s", args.expires);
    }
    let key = args.key.require()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.credentials", args.name)));
    // A minute of slack for clocks slightly behind ours.
    let not_before = now.saturating_sub(60);
    let creds =
        ClientCredentials::issue(&key, &args.name, not_before, now + args.expires.as_secs())?;
    write_new_0600(&out, creds.to_text().as_bytes())?;
    Ok(format!(
        "wrote client credentials for {:?} to {} (expires {}); use them with --credentials {} or RINGKV_CREDENTIALS\n",
        creds.name(),
        out.display(),
        keyargs::format_secs(creds.expires()),
        out.display()
    ))
}

/// Creates `path` with mode 0600 and writes `bytes`; refuses to replace
/// an existing file.
fn write_new_0600(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "cannot create {} (it is never overwritten: remove it or pass another --out)",
            path.display()
        )
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use ringkv_gossip::ClusterKey;

    use super::*;
    use crate::rpc::api::{ErrorKind, RequestError};

    const NOW: u64 = 1_800_000_000;

    fn args(dir: &Path, name: &str, expires: Duration) -> (IssueArgs, ClusterKey) {
        let key = ClusterKey::from_bytes([3; 32]);
        let key_file = dir.join("cluster.key");
        std::fs::write(&key_file, key.to_string()).unwrap();
        let args = IssueArgs {
            name: name.to_owned(),
            expires,
            out: Some(dir.join(format!("{name}.credentials"))),
            key: KeyArgs {
                cluster_key: None,
                cluster_key_file: Some(key_file),
            },
        };
        (args, key)
    }

    #[test]
    fn issue_writes_a_0600_file_the_cli_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let (args, _) = args(dir.path(), "ada", Duration::from_secs(90 * 86_400));
        let said = issue(&args, NOW).expect("issued");
        assert!(said.contains("ada"), "{said}");
        let out = args.out.clone().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let creds = keyargs::read_credentials(&out, NOW).expect("reads");
        assert_eq!(creds.name(), "ada");
        assert_eq!(creds.expires(), NOW + 90 * 86_400);
        // Never overwritten.
        let again = issue(&args, NOW).expect_err("exists");
        assert!(
            format!("{again:#}").contains("never overwritten"),
            "{again:#}"
        );
    }

    #[test]
    fn bad_input_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (bad_name, _) = args(dir.path(), "a b", Duration::from_secs(86_400));
        assert!(format!("{:#}", issue(&bad_name, NOW).unwrap_err()).contains("client name"));
        let (short, _) = args(dir.path(), "ok", Duration::from_secs(5));
        assert!(format!("{:#}", issue(&short, NOW).unwrap_err()).contains("too short"));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the key file: {names:?}");
    }

    #[test]
    fn expired_or_malformed_files_are_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let (args, _) = args(dir.path(), "bob", Duration::from_secs(3600));
        issue(&args, NOW).expect("issued");
        let out = args.out.unwrap();
        let err = keyargs::read_credentials(&out, NOW + 3600).expect_err("expired");
        assert!(
            format!("{err:#}").contains("credentials expired"),
            "{err:#}"
        );
        let kind = err.chain().find_map(|c| c.downcast_ref::<RequestError>());
        assert_eq!(kind.map(|e| e.kind), Some(ErrorKind::Refused));

        let junk = dir.path().join("junk");
        std::fs::write(&junk, "hello").unwrap();
        let err = keyargs::read_credentials(&junk, NOW).expect_err("junk");
        assert!(
            format!("{err:#}").contains("not a ringkv credentials file"),
            "{err:#}"
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 1 << 20]).unwrap();
        let err = keyargs::read_credentials(&big, NOW).expect_err("big");
        assert!(format!("{err:#}").contains("at most"), "{err:#}");
        let err = keyargs::read_credentials(&dir.path().join("none"), NOW).expect_err("none");
        assert!(format!("{err:#}").contains("cannot read"), "{err:#}");
    }
}
