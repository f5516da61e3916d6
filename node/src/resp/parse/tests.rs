use proptest::prelude::*;

use super::*;

fn limits() -> Limits {
    Limits {
        bulk_max: 1024,
        args_max: 64,
        inline_max: 256,
        request_max: 4096,
        unauthenticated: false,
    }
}

fn multibulk(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Feeds `chunks` one after the other, decoding after each, as a server
/// does after each read.
fn decode_chunks(chunks: &[&[u8]]) -> Result<Vec<Args>, ProtocolError> {
    let mut decoder = Decoder::new(limits());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(args) = decoder.decode(&mut buf)? {
            out.push(args);
        }
    }
    assert!(buf.is_empty(), "every byte consumed");
    Ok(out)
}

fn decode_all(bytes: &[u8]) -> Result<Vec<Args>, ProtocolError> {
    decode_chunks(&[bytes])
}

fn arg() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..40)
}

/// An inline-safe word: no spaces, quotes or line breaks.
fn word() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![b'a'..=b'z', b'A'..=b'Z', b'0'..=b'9', Just(b':')],
        1..12,
    )
}

/// A request and how it goes on the wire: multibulk, or inline.
fn request() -> impl Strategy<Value = (Args, Vec<u8>)> {
    prop_oneof![
        3 => proptest::collection::vec(arg(), 1..6).prop_map(|args| {
            let wire = multibulk(&args);
            (args, wire)
        }),
        1 => proptest::collection::vec(word(), 1..5).prop_map(|args| {
            let mut wire = args.join(&b' ');
            wire.extend_from_slice(b"\r\n");
            (args, wire)
        }),
    ]
}

proptest! {
    #[test]
    fn a_split_at_every_byte_boundary_gives_the_same_requests(
        requests in proptest::collection::vec(request(), 1..6)
    ) {
        let want: Vec<Args> = requests.iter().map(|(a, _)| a.clone()).collect();
        let wire: Vec<u8> = requests.iter().flat_map(|(_, w)| w.clone()).collect();
        prop_assert_eq!(&decode_all(&wire).unwrap(), &want);
        for cut in 0..=wire.len() {
            let (a, b) = wire.split_at(cut);
            prop_assert_eq!(&decode_chunks(&[a, b]).unwrap(), &want, "cut at {}", cut);
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(&decode_chunks(&bytes).unwrap(), &want, "one byte at a time");
    }

    #[test]
    fn junk_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        // Whatever comes in, the decoder answers (requests or an error)
        // and never holds more arguments than the limits allow.
        let mut decoder = Decoder::new(limits());
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(args)) = decoder.decode(&mut buf) {
            prop_assert!(args.len() <= limits().args_max);
        }
    }
}

#[test]
fn empty_requests_are_skipped() {
    let got = decode_all(b"*0\r\n\r\n*-1\r\n   \r\n*1\r\n$4\r\nPING\r\n").unwrap();
    assert_eq!(got, vec![vec![b"PING".to_vec()]]);
}

#[test]
fn inline_commands_follow_redis_quoting() {
    let got = decode_all(b"SET \"a b\" 'c\\'d' \"\\x41\\n\"\nGET  x\r\n").unwrap();
    assert_eq!(
        got,
        vec![
            vec![
                b"SET".to_vec(),
                b"a b".to_vec(),
                b"c'd".to_vec(),
                b"A\n".to_vec()
            ],
            vec![b"GET".to_vec(), b"x".to_vec()],
        ]
    );
    assert_eq!(
        decode_all(b"SET \"abc\n"),
        Err(ProtocolError("unbalanced quotes in request".into()))
    );
    assert_eq!(
        decode_all(b"SET \"a\"b\n"),
        Err(ProtocolError("unbalanced quotes in request".into()))
    );
}

#[test]
fn lying_and_oversized_lengths_are_refused_before_allocation() {
    let cases: [(&[u8], &str); 8] = [
        (b"*99999999999\r\n", "invalid multibulk length"),
        (b"*65\r\n", "invalid multibulk length"),
        (b"*1\r\n$1025\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$9223372036854775807\r\n", "invalid bulk length"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n:1\r\n", "expected '$', got ':'"),
        (b"*1\r\n$2\r\nabc\r\n", "bulk string not terminated by CRLF"),
    ];
    for (wire, want) in cases {
        assert_eq!(
            decode_all(wire),
            Err(ProtocolError(want.into())),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
    // All arguments together are bounded too: 5 x 1000 > 4096.
    let big = vec![vec![b'x'; 1000]; 5];
    assert_eq!(
        decode_all(&multibulk(&big)),
        Err(ProtocolError("invalid bulk length".into()))
    );
    // A header with no end in sight.
    let mut header = b"*".to_vec();
    header.extend(std::iter::repeat_n(b'1', 40));
    assert_eq!(
        decode_all(&header),
        Err(ProtocolError("too big mbulk count string".into()))
    );
    let long_line = vec![b'a'; 300];
    assert_eq!(
        decode_all(&long_line),
        Err(ProtocolError("too big inline request".into()))
    );
}

#[test]
fn a_claimed_length_reserves_nothing_until_bytes_arrive() {
    let mut decoder = Decoder::new(limits());
    let mut buf = BytesMut::from(&b"*64\r\n$1024\r\nab"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert!(buf.capacity() < 256, "capacity {}", buf.capacity());
}

#[test]
fn replies_take_the_shape_of_each_protocol() {
    let enc = |r: &Reply, p| {
        let mut out = Vec::new();
        r.encode(p, &mut out);
        String::from_utf8(out).unwrap()
    };
    use Proto::{Resp2, Resp3};
    assert_eq!(enc(&Reply::ok(), Resp2), "+OK\r\n");
    assert_eq!(enc(&Reply::err("a\r\nb"), Resp2), "-ERR a  b\r\n");
    assert_eq!(enc(&Reply::Int(-3), Resp3), ":-3\r\n");
    assert_eq!(enc(&Reply::text("hi"), Resp2), "$2\r\nhi\r\n");
    assert_eq!(enc(&Reply::Null, Resp2), "$-1\r\n");
    assert_eq!(enc(&Reply::Null, Resp3), "_\r\n");
    let map = Reply::Map(vec![(Reply::text("a"), Reply::Int(1))]);
    assert_eq!(enc(&map, Resp2), "*2\r\n$1\r\na\r\n:1\r\n");
    assert_eq!(enc(&map, Resp3), "%1\r\n$1\r\na\r\n:1\r\n");
    let set = Reply::Set(vec![Reply::text("x")]);
    assert_eq!(enc(&set, Resp2), "*1\r\n$1\r\nx\r\n");
    assert_eq!(enc(&set, Resp3), "~1\r\n$1\r\nx\r\n");
    let arr = Reply::Array(vec![Reply::Null, Reply::text("v")]);
    assert_eq!(enc(&arr, Resp2), "*2\r\n$-1\r\n$1\r\nv\r\n");
    assert_eq!(enc(&Reply::Verbatim("k:v".into()), Resp2), "$3\r\nk:v\r\n");
    assert_eq!(
        enc(&Reply::Verbatim("k:v".into()), Resp3),
        "=7\r\ntxt:k:v\r\n"
    );
}

/// Before AUTH a client cannot announce more than a few KiB: the header
/// of a 16 MiB bulk string is refused at once, before its bytes arrive.
#[test]
fn an_unauthenticated_client_is_held_to_small_requests() {
    let mut decoder = Decoder::new(Limits::unauthenticated());
    let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16777216\r\n"[..]);
    let err = decoder.decode(&mut buf).unwrap_err();
    assert_eq!(err, ProtocolError("unauthenticated bulk length".into()));
    assert!(err.is_unauthenticated());
    let mut decoder = Decoder::new(Limits::unauthenticated());
    let mut buf = BytesMut::from(&b"*11\r\n"[..]);
    let err = decoder.decode(&mut buf).unwrap_err();
    assert_eq!(
        err,
        ProtocolError("unauthenticated multibulk length".into())
    );
    // Small requests pass, and after AUTH the full limits apply.
    let mut decoder = Decoder::new(Limits::unauthenticated());
    let mut buf = BytesMut::from(&multibulk(&[b"AUTH".to_vec(), b"pw".to_vec()])[..]);
    assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().len(), 2);
    decoder.set_limits(Limits::for_values(16 << 20));
    let mut buf = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16777216\r\n"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None), "waits for the value");
}
