//! `ringkv health --admin ADDR`: one GET of a peer's `/health` on its
//! admin HTTP, for container health checks and scripts (a runtime image
//! needs no curl). Prints the peer's answer; succeeds only on 200. IO:
//! one TCP connection, bounded by `--timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Most bytes of an answer read (a /health answer is a few hundred).
const ANSWER_MAX: u64 = 64 * 1024;

/// Arguments of `ringkv health`.
#[derive(Debug, clap::Args)]
pub(crate) struct HealthArgs {
    /// The peer's admin HTTP address (its --admin; a wildcard address
    /// such as 0.0.0.0:8001 means this host).
    #[arg(long, env = "RINGKV_ADMIN")]
    admin: SocketAddr,
    /// Longest the whole check may take (connect, ask, read), e.g. 3s.
    #[arg(long, default_value = "3s", value_parser = crate::keyargs::parse_duration)]
    timeout: Duration,
}

/// Asks the peer at `args.admin` for `/health`: its answer when it is
/// healthy (200).
///
/// # Errors
/// No answer in time, an answer that is not HTTP, or any status but 200
/// (the peer's reason included): the exit status is then 1.
pub(crate) async fn health(args: &HealthArgs) -> Result<String> {
    let addr = connectable(args.admin);
    let (status, body) = tokio::time::timeout(args.timeout, get(addr, "/health"))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer from http://{addr}/health within {:?}",
                args.timeout
            )
        })??;
    if status != 200 {
        bail!("http://{addr}/health answered {status}: {}", body.trim());
    }
    Ok(format!("{}\n", body.trim()))
}

/// A wildcard address means this host: ask it on loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// One HTTP/1.1 GET with `Connection: close`: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to the admin HTTP at {addr}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(ANSWER_MAX)
        .read_to_end(&mut answer)
        .await
        .with_context(|| format!("reading the answer of {addr}"))?;
    parse(&answer).with_context(|| format!("{addr} did not answer HTTP"))
}

/// The status code and body of an HTTP/1.x answer (chunked bodies are
/// returned as they are: only the status decides).
fn parse(answer: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        bail!("no status line");
    };
    if !version.starts_with("HTTP/1.") {
        bail!("status line {status_line:?}");
    }
    let code = code
        .parse()
        .with_context(|| format!("status line {status_line:?}"))?;
    Ok((code, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_decides() {
        let ok =
            parse(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"status\":\"ok\"}")
                .expect("parses");
        assert_eq!(ok, (200, "{\"status\":\"ok\"}".to_owned()));
        let down = parse(b"HTTP/1.1 503 Service Unavailable\r\n\r\n{}").expect("parses");
        assert_eq!(down.0, 503);
        assert!(parse(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse(b"").is_err());
    }

    #[test]
    fn a_wildcard_admin_address_is_asked_on_loopback() {
        let a: SocketAddr = "0.0.0.0:8001".parse().expect("addr");
        assert_eq!(connectable(a), "127.0.0.1:8001".parse().expect("addr"));
        let b: SocketAddr = "10.1.2.3:8001".parse().expect("addr");
        assert_eq!(connectable(b), b);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_failure_not_a_hang() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let args = HealthArgs {
            admin: port,
            timeout: Duration::from_secs(3),
        };
        let err = health(&args).await.expect_err("nobody listens");
        assert!(format!("{err:#}").contains("cannot connect"), "{err:#}");
    }
}
