//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer):
//! each feeds arbitrary bytes to one decoder exactly as the daemon does
//! with what arrives from the network, and reports only whether it was
//! accepted. Not an API: hidden from the docs, and each function calls
//! the daemon's own decoder and checks, nothing of its own.
//!
//! The targets and the channels they stand for are listed in
//! `docs/security.md` ("Fuzzing").

use bytes::BytesMut;
use ringkv_ring::{Token, TokenRange};

use crate::handoff::check::accept_page;
use crate::handoff::PAGE_MAX;
use crate::resp::glob;
use crate::resp::parse::{Decoder, Limits};
use crate::rpc::api::{
    ApplyReply, PutReply, RangePageReply, ReadAnswer, Reply, Request, TimeReply, REPLY_MAX,
    REQUEST_MAX, VALUE_MAX,
};
use crate::rpc::codec;

/// A request on a peer's QUIC request stream (`server.rs`).
pub fn rpc_request(bytes: &[u8]) -> bool {
    codec::decode::<Request>(bytes, REQUEST_MAX).is_ok()
}

/// The replies a coordinator, a client and a pull decode (the first
/// byte picks which, the rest is the reply).
pub fn rpc_reply(bytes: &[u8]) -> bool {
    let Some((&which, body)) = bytes.split_first() else {
        return false;
    };
    match which % 4 {
        0 => codec::decode::<Reply<ApplyReply>>(body, 1 << 20).is_ok(),
        1 => codec::decode::<Reply<ReadAnswer>>(body, REPLY_MAX).is_ok(),
        2 => codec::decode::<Reply<PutReply>>(body, REPLY_MAX).is_ok(),
        _ => codec::decode::<Reply<TimeReply>>(body, 1024).is_ok(),
    }
}

/// A handoff page as a pull receives it: the first 16 bytes are the range
/// asked for, the next 4 the record count the page states, the rest the
/// batch (its blake3 check is computed here, so the fuzzer reaches the
/// decoding and the range, order and size checks behind it).
pub fn handoff_page(bytes: &[u8]) -> bool {
    if bytes.len() < 20 {
        return false;
    }
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let range = TokenRange::new(Token(word(0)), Token(word(8)));
    let mut said = [0u8; 4];
    said.copy_from_slice(&bytes[16..20]);
    let batch = bytes[20..].to_vec();
    let page = RangePageReply {
        check: *blake3::hash(&batch).as_bytes(),
        batch,
        records: u32::from_le_bytes(said),
        estimate: 0,
        next: None,
    };
    accept_page(&range, None, &page, PAGE_MAX).is_ok()
}

/// RESP requests on a client connection, as `resp::conn` reads them: the
/// first byte picks the limits (authenticated or not) and how the rest is
/// split into reads; every complete request is decoded until an error or
/// the need for more bytes.
pub fn resp(bytes: &[u8]) -> usize {
    let Some((&mode, rest)) = bytes.split_first() else {
        return 0;
    };
    let limits = if mode & 1 == 0 {
        Limits::for_values(VALUE_MAX)
    } else {
        Limits::unauthenticated()
    };
    let chunk = usize::from(mode >> 1).max(1);
    let mut decoder = Decoder::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = 0;
    for part in rest.chunks(chunk) {
        buf.extend_from_slice(part);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => requests += 1,
                Ok(None) => break,
                Err(_) => return requests,
            }
        }
    }
    requests
}

/// CONFIG GET's glob: the first byte says where the pattern ends, the
/// rest is pattern then text. Patterns over the limit are refused before
/// matching, as CONFIG GET does.
pub fn glob(bytes: &[u8]) -> bool {
    let Some((&split, rest)) = bytes.split_first() else {
        return false;
    };
    let at = usize::from(split).min(rest.len());
    let (pattern, text) = rest.split_at(at);
    if pattern.len() > glob::PATTERN_MAX {
        return false;
    }
    glob::matches(pattern, text, split & 1 == 1)
}

/// The revocation list in a member's gossip metadata.
pub fn revocations(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(crate::revocation::parse)
        .is_some()
}
