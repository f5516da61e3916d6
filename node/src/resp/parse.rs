//! The RESP wire format: the request [`Decoder`] (arrays of bulk strings,
//! as every client sends them, and inline commands, as people type them
//! into telnet) with its [`Limits`], and the [`Reply`] encoder for RESP2
//! and RESP3. Pure: no IO.
//!
//! Every length is checked against its limit before anything is allocated
//! for it, and a request's arguments together are bounded too, so a client
//! that lies about a length gets a protocol error (and the server closes
//! that connection) instead of making the peer reserve gigabytes.

use std::fmt;

use bytes::{Buf as _, BytesMut};

use super::guard::{UNAUTH_ARGS_MAX, UNAUTH_BULK_MAX};

/// Bounds on one request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest bulk string (one argument): the value limit plus room for
    /// nothing else, since a key is shorter than a value.
    pub(crate) bulk_max: usize,
    /// Most arguments in one request, the command name included (Redis
    /// allows 1,048,576 too; MSET of many keys needs many).
    pub(crate) args_max: usize,
    /// Longest inline command line (Redis: 64 KiB).
    pub(crate) inline_max: usize,
    /// Most bytes of arguments in one request, all together: a pipeline
    /// of huge MSETs cannot hold more than this per command in memory.
    pub(crate) request_max: usize,
    /// For a client that has not authenticated: its errors say so.
    pub(crate) unauthenticated: bool,
}

impl Limits {
    /// Limits for a server whose values may be up to `value_max` bytes.
    pub(crate) fn for_values(value_max: usize) -> Self {
        Self {
            bulk_max: value_max,
            args_max: 1024 * 1024,
            inline_max: 64 * 1024,
            request_max: 4 * value_max.max(1024 * 1024),
            unauthenticated: false,
        }
    }

    /// Limits for a client that has not authenticated yet, when a
    /// password is set: Redis's since CVE-2021-32675 (at most
    /// [`UNAUTH_ARGS_MAX`] arguments of [`UNAUTH_BULK_MAX`] bytes), so
    /// a client without the password cannot make the peer buffer more
    /// than a few KiB.
    pub(crate) fn unauthenticated() -> Self {
        Self {
            bulk_max: UNAUTH_BULK_MAX,
            args_max: UNAUTH_ARGS_MAX,
            inline_max: UNAUTH_BULK_MAX,
            request_max: UNAUTH_ARGS_MAX * UNAUTH_BULK_MAX,
            unauthenticated: true,
        }
    }
}

/// Longest header line (`*<count>` or `$<len>`): 20 digits, a sign and
/// the type byte fit well within it.
const HEADER_MAX: usize = 32;

/// The client broke the protocol; the connection cannot be resynchronised
/// and is closed after this error is sent. Nothing was executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl ProtocolError {
    /// Whether it is the refusal of a request too big for a client that
    /// has not authenticated.
    pub(crate) fn is_unauthenticated(&self) -> bool {
        self.0.starts_with("unauthenticated")
    }
}

fn protocol<T>(what: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(what.into()))
}

/// One request: the command name and its arguments, as bytes.
pub(crate) type Args = Vec<Vec<u8>>;

/// A multibulk request whose header has been read but not all of its
/// arguments (they arrive in pieces).
#[derive(Debug)]
struct Partial {
    /// Arguments still to come.
    remaining: usize,
    args: Args,
    /// Bytes of the arguments read so far.
    bytes: usize,
    /// The length of the next argument, once its `$` header is read.
    bulk: Option<usize>,
}

/// Decodes requests from a connection's read buffer, incrementally: what
/// it has consumed is gone from the buffer, and a request split across
/// reads continues where it stopped (no rescans of what was read).
#[derive(Debug)]
pub(crate) struct Decoder {
    limits: Limits,
    partial: Option<Partial>,
}

impl Decoder {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            partial: None,
        }
    }

    /// The limits for the requests whose headers are not read yet (a
    /// client that authenticated gets the full ones).
    pub(crate) fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The next complete request in `buf`, consuming it; `Ok(None)` when
    /// more bytes are needed. Empty requests (`*0`, a blank line) are
    /// skipped, as Redis does.
    ///
    /// # Errors
    /// [`ProtocolError`] when the bytes are not RESP or break a limit;
    /// the decoder is then unusable, like the connection.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Args>, ProtocolError> {
        loop {
            if self.partial.is_none() {
                let Some(&first) = buf.first() else {
                    return Ok(None);
                };
                if first != b'*' {
                    match self.inline(buf)? {
                        Some(args) if args.is_empty() => continue,
                        other => return Ok(other),
                    }
                }
                let Some(count) = header(buf, b'*')? else {
                    return Ok(None);
                };
                if count <= 0 {
                    // `*0` and `*-1`: nothing to do.
                    continue;
                }
                let count = usize::try_from(count).unwrap_or(usize::MAX);
                if count > self.limits.args_max {
                    return protocol(if self.limits.unauthenticated {
                        "unauthenticated multibulk length"
                    } else {
                        "invalid multibulk length"
                    });
                }
                self.partial = Some(Partial {
                    remaining: count,
                    // Grows with what actually arrives, not what the
                    // header claims.
                    args: Vec::with_capacity(count.min(16)),
                    bytes: 0,
                    bulk: None,
                });
            }
            return self.multibulk(buf);
        }
    }

    fn multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Args>, ProtocolError> {
        let limits = self.limits;
        let partial = self
            .partial
            .as_mut()
            .expect("called with a partial request");
        while partial.remaining > 0 {
            let len = match partial.bulk {
                Some(len) => len,
                None => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    if first != b'$' {
                        return protocol(format!("expected '$', got '{}'", first as char));
                    }
                    let Some(len) = header(buf, b'$')? else {
                        return Ok(None);
                    };
                    let len = usize::try_from(len).map_err(|_| invalid_bulk())?;
                    if len > limits.bulk_max
                        || partial.bytes.saturating_add(len) > limits.request_max
                    {
                        return Err(if limits.unauthenticated {
                            ProtocolError("unauthenticated bulk length".to_owned())
                        } else {
                            invalid_bulk()
                        });
                    }
                    partial.bulk = Some(len);
                    len
                }
            };
            if buf.len() < len + 2 {
                // Nothing is reserved for what the header claims: the
                // buffer grows only with bytes that actually arrive.
                return Ok(None);
            }
            if &buf[len..len + 2] != b"\r\n" {
                return protocol("bulk string not terminated by CRLF");
            }
            partial.args.push(buf[..len].to_vec());
            buf.advance(len + 2);
            partial.bytes += len;
            partial.bulk = None;
            partial.remaining -= 1;
        }
        Ok(self.partial.take().map(|p| p.args))
    }

    /// An inline command: one line, arguments separated by spaces, with
    /// Redis's quoting rules.
    fn inline(&self, buf: &mut BytesMut) -> Result<Option<Args>, ProtocolError> {
        let Some(end) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > self.limits.inline_max {
                return protocol("too big inline request");
            }
            return Ok(None);
        };
        if end > self.limits.inline_max {
            return protocol("too big inline request");
        }
        let line = buf.split_to(end + 1);
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        split_inline(line).map(Some)
    }
}

fn invalid_bulk() -> ProtocolError {
    ProtocolError("invalid bulk length".to_owned())
}

/// A `<kind><integer>\r\n` header at the front of `buf`, consumed;
/// `Ok(None)` when incomplete.
fn header(buf: &mut BytesMut, kind: u8) -> Result<Option<i64>, ProtocolError> {
    let window = &buf[..buf.len().min(HEADER_MAX)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= HEADER_MAX {
            return protocol(if kind == b'*' {
                "too big mbulk count string"
            } else {
                "too big bulk count string"
            });
        }
        return Ok(None);
    };
    let n = std::str::from_utf8(&buf[1..cr])
        .ok()
        .and_then(|s| s.parse::<i64>().ok());
    let Some(n) = n else {
        return protocol(if kind == b'*' {
            "invalid multibulk length"
        } else {
            "invalid bulk length"
        });
    };
    buf.advance(cr + 2);
    Ok(Some(n))
}

/// Splits an inline line like Redis's `sdssplitargs`: spaces separate
/// arguments; `"..."` allows `\n`, `\r`, `\t`, `\b`, `\a`, `\\`, `\"` and
/// `\xHH` escapes; `'...'` allows `\'`. A closing quote must be followed by
/// a space or the end.
fn split_inline(line: &[u8]) -> Result<Args, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let mut arg = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return protocol("unbalanced quotes in request"),
                        Some(b'"') => break,
                        Some(b'\\') if i + 3 < line.len() && line[i + 1] == b'x' => {
                            match (hex(line[i + 2]), hex(line[i + 3])) {
                                (Some(h), Some(l)) => {
                                    arg.push(h << 4 | l);
                                    i += 3;
                                }
                                _ => arg.push(b'\\'),
                            }
                        }
                        Some(b'\\') if i + 1 < line.len() => {
                            i += 1;
                            arg.push(match line[i] {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                        }
                        Some(&b) => arg.push(b),
                    }
                    i += 1;
                }
                i += 1;
                closing_quote(line, i)?;
            }
            b'\'' => {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return protocol("unbalanced quotes in request"),
                        Some(b'\'') => break,
                        Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 1;
                        }
                        Some(&b) => arg.push(b),
                    }
                    i += 1;
                }
                i += 1;
                closing_quote(line, i)?;
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
    Ok(args)
}

fn closing_quote(line: &[u8], after: usize) -> Result<(), ProtocolError> {
    match line.get(after) {
        Some(b) if !b.is_ascii_whitespace() => protocol("unbalanced quotes in request"),
        _ => Ok(()),
    }
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .map(|d| u8::try_from(d).expect("a hex digit fits"))
}

/// The protocol a connection speaks: RESP2 until `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Resp2,
    Resp3,
}

/// A reply, encoded for the connection's protocol. RESP3 types fall back
/// to their RESP2 shapes the way Redis does it: maps and sets become flat
/// arrays, null becomes the null bulk string, verbatim text a bulk string.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`: the text starts with the error code (`ERR`, `NOAUTH`,
    /// ...). Line breaks in it are replaced by spaces.
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Self>),
    Map(Vec<(Self, Self)>),
    Set(Vec<Self>),
    /// Text meant for people (INFO, CLIENT INFO): RESP3 verbatim `txt`.
    Verbatim(String),
}

impl Reply {
    /// `+OK`.
    pub(crate) fn ok() -> Self {
        Self::Simple("OK".to_owned())
    }

    /// An error with the code `ERR`.
    pub(crate) fn err(text: impl fmt::Display) -> Self {
        Self::Error(format!("ERR {text}"))
    }

    /// A bulk string from text.
    pub(crate) fn text(text: impl Into<String>) -> Self {
        Self::Bulk(text.into().into_bytes())
    }

    /// Appends the encoding of this reply to `out`.
    pub(crate) fn encode(&self, proto: Proto, out: &mut Vec<u8>) {
        match self {
            Self::Simple(s) => line(out, b'+', s.as_bytes()),
            Self::Error(s) => {
                let clean: Vec<u8> = s
                    .bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b })
                    .collect();
                line(out, b'-', &clean);
            }
            Self::Int(n) => line(out, b':', n.to_string().as_bytes()),
            Self::Bulk(b) => bulk(out, b'$', b),
            Self::Null => match proto {
                Proto::Resp2 => out.extend_from_slice(b"$-1\r\n"),
                Proto::Resp3 => out.extend_from_slice(b"_\r\n"),
            },
            Self::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(proto, out);
                }
            }
            Self::Set(items) => {
                let kind = if proto == Proto::Resp3 { b'~' } else { b'*' };
                line(out, kind, items.len().to_string().as_bytes());
                for item in items {
                    item.encode(proto, out);
                }
            }
            Self::Map(pairs) => {
                match proto {
                    Proto::Resp3 => line(out, b'%', pairs.len().to_string().as_bytes()),
                    Proto::Resp2 => line(out, b'*', (pairs.len() * 2).to_string().as_bytes()),
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Self::Verbatim(text) => match proto {
                Proto::Resp3 => {
                    let mut body = b"txt:".to_vec();
                    body.extend_from_slice(text.as_bytes());
                    bulk(out, b'=', &body);
                }
                Proto::Resp2 => bulk(out, b'$', text.as_bytes()),
            },
        }
    }
}

fn line(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.push(kind);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    line(out, kind, body.len().to_string().as_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
