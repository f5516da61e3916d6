//! The admin HTTP's own settings: the bearer token, the header-read
//! timeout, the connection cap and whether metrics name hot keys, and the
//! rule that an address other machines can reach needs a token. Reads the
//! token file, no other IO.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// Default time a client has to send a request's headers.
pub(crate) const HEADER_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Default number of admin HTTP connections served at once.
pub(crate) const MAX_CONNECTIONS_DEFAULT: usize = 64;
/// The shortest token accepted, in bytes.
const TOKEN_MIN: usize = 16;

/// The bearer token every endpoint but `/health` needs when it is set. Only
/// its blake3 hash is kept: comparing two hashes with blake3's `==` takes
/// the same time whatever they hold, and the length of the token given does
/// not show either.
#[derive(Clone)]
pub(crate) struct AdminToken(blake3::Hash);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// The token in `text` (surrounding whitespace, such as the file's
    /// final newline, is not part of it).
    ///
    /// # Errors
    /// Shorter than 16 bytes, or containing whitespace or control
    /// characters (it must fit an `Authorization` header as is).
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let token = text.trim();
        if token.len() < TOKEN_MIN {
            bail!("the admin token is {} bytes long, at least {TOKEN_MIN} are needed (e.g. `openssl rand -hex 32`)", token.len());
        }
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            bail!("the admin token may only hold printable ASCII without spaces");
        }
        Ok(Self(blake3::hash(token.as_bytes())))
    }

    /// The token in the file at `path`.
    ///
    /// # Errors
    /// The file cannot be read or holds no acceptable token.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--admin-token-file: cannot read {}", path.display()))?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    "the admin token file is readable by other users: chmod 600 it"
                );
            }
        }
        Self::parse(&text).with_context(|| format!("--admin-token-file {}", path.display()))
    }

    /// Whether `given` is the token, in constant time.
    pub(crate) fn matches(&self, given: &str) -> bool {
        blake3::hash(given.as_bytes()) == self.0
    }
}

/// How the admin HTTP serves (whatever address it is on).
#[derive(Debug, Clone)]
pub(crate) struct AdminHttp {
    /// Required on every endpoint but `/health` when set.
    pub(crate) token: Option<AdminToken>,
    /// Time a client has to send a request's headers (slowloris).
    pub(crate) header_timeout: Duration,
    /// Connections served at once; more are closed at once.
    pub(crate) max_connections: usize,
    /// Whether `/metrics` names the hot keys (they are user data).
    pub(crate) key_names: bool,
}

impl Default for AdminHttp {
    fn default() -> Self {
        Self {
            token: None,
            header_timeout: HEADER_TIMEOUT_DEFAULT,
            max_connections: MAX_CONNECTIONS_DEFAULT,
            key_names: false,
        }
    }
}

impl AdminHttp {
    /// Refuses a setting the admin HTTP must not start with.
    ///
    /// # Errors
    /// `addr` is reachable from other machines and there is no token; a
    /// timeout or cap out of range.
    pub(crate) fn check(&self, addr: SocketAddr) -> Result<()> {
        if !addr.ip().is_loopback() && self.token.is_none() {
            bail!(
                "--admin {addr} is reachable from other machines but has no token: pass --admin-token-file FILE (admin_token_file in the config file), or bind --admin to 127.0.0.1"
            );
        }
        if self.header_timeout < Duration::from_millis(100)
            || self.header_timeout > Duration::from_secs(300)
        {
            bail!(
                "--admin-header-timeout {:?} is out of range: 100ms to 5m",
                self.header_timeout
            );
        }
        if !(1..=10_000).contains(&self.max_connections) {
            bail!(
                "--admin-max-connections {} is out of range: 1 to 10000",
                self.max_connections
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("addr")
    }

    #[test]
    fn a_non_loopback_admin_address_needs_a_token() {
        let open = AdminHttp::default();
        for a in [
            "0.0.0.0:8001",
            "10.0.0.5:8001",
            "[::]:8001",
            "192.168.1.2:0",
        ] {
            let err = open.check(addr(a)).expect_err(a).to_string();
            assert!(err.contains("--admin-token-file"), "{a}: {err}");
        }
        for a in ["127.0.0.1:8001", "127.0.0.2:0", "[::1]:8001"] {
            open.check(addr(a)).expect(a);
        }
        let guarded = AdminHttp {
            token: Some(AdminToken::parse("0123456789abcdef0123").expect("token")),
            ..AdminHttp::default()
        };
        guarded
            .check(addr("0.0.0.0:8001"))
            .expect("a token allows it");
    }

    #[test]
    fn weak_or_malformed_tokens_are_refused_and_the_match_is_exact() {
        for bad in [
            "",
            "   \n",
            "short",
            "0123456789abcde",
            "0123456789 abcdef0123",
        ] {
            assert!(AdminToken::parse(bad).is_err(), "{bad:?}");
        }
        let t = AdminToken::parse("0123456789abcdef0123\n").expect("token");
        assert!(t.matches("0123456789abcdef0123"));
        for wrong in [
            "",
            "0123456789abcdef012",
            "0123456789abcdef01234",
            "x123456789abcdef0123",
        ] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{t:?}"), "AdminToken(..)");
    }

    #[test]
    fn timeouts_and_caps_out_of_range_are_refused() {
        let here = addr("127.0.0.1:0");
        for s in [
            AdminHttp {
                header_timeout: Duration::from_millis(10),
                ..AdminHttp::default()
            },
            AdminHttp {
                header_timeout: Duration::from_secs(3600),
                ..AdminHttp::default()
            },
            AdminHttp {
                max_connections: 0,
                ..AdminHttp::default()
            },
        ] {
            assert!(s.check(here).is_err(), "{s:?}");
        }
    }
}
