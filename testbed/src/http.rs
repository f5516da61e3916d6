//! The one minimal HTTP/1.1 client for the peers' admin endpoints on
//! loopback (/health, /metrics, /v1/*), used by the testbed and by node's
//! integration tests: one request per connection, bounded connect and
//! read times. IO: TCP.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, Result};

/// Longest an admin request may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Largest answer read (a members view of many peers fits easily).
const BODY_MAX: u64 = 16 * 1024 * 1024;

/// The bearer token sent with every request, when set: the multi-host
/// mode's peers serve their admin HTTP on a bridge address, where a token
/// is required. One testbed cluster per process sets it (when its state
/// is opened); a peer without a token ignores the header.
static TOKEN: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Sets (or clears) the token every later request carries.
pub fn set_token(token: Option<String>) {
    *TOKEN
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = token;
}

fn auth_header() -> String {
    TOKEN
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"))
}

/// Sends `method path` with an optional JSON body; returns the status code
/// and the body.
///
/// # Errors
/// The peer does not accept the connection or does not answer in time.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String)> {
    request_within(addr, method, path, body, TIMEOUT)
}

/// [`request`], waiting up to `timeout` for the answer (a blocking member
/// query answers only when the view changes or its wait is over).
///
/// # Errors
/// The peer does not accept the connection or does not answer in time.
pub fn request_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("admin HTTP {addr} does not answer"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: ringkv\r\nConnection: close\r\n{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        auth_header(),
        body.len()
    )?;
    let mut text = String::new();
    stream
        .take(BODY_MAX)
        .read_to_string(&mut text)
        .with_context(|| format!("admin HTTP {addr} did not answer {method} {path}"))?;
    parse_response(&text).with_context(|| format!("admin HTTP {addr} answered garbage"))
}

fn parse_response(text: &str) -> Option<(u16, String)> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// `GET path`, requiring a 2xx status; the body.
///
/// # Errors
/// No answer, or a status that is not 2xx.
pub fn get(addr: SocketAddr, path: &str) -> Result<String> {
    let (status, body) = request(addr, "GET", path, None)?;
    if !(200..300).contains(&status) {
        anyhow::bail!("GET {path} on {addr}: status {status}: {}", body.trim());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_split_into_status_and_body() {
        let r = parse_response("HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno");
        assert_eq!(r, Some((403, "no".into())));
        assert_eq!(parse_response("garbage"), None);
    }
}
