//! The commands a RESP connection understands: the table (arity, flags,
//! key positions, as `COMMAND` reports them), and [`dispatch`], which
//! checks arity and authentication with Redis's error texts and hands each
//! request to [`session`](super::session) (answered at once from
//! the [`Session`]) or [`store`](super::store) (run through the
//! coordinator). No IO.

use super::args::wrong_arity;
use super::info;
use super::parse::{Args, Reply};
use super::session::{auth, client, config, hello, select};
use super::store::{store_op, StoreOp};
use super::{Server, Session};

/// One command as `COMMAND INFO` and `COMMAND DOCS` describe it.
#[derive(Debug)]
pub(crate) struct Spec {
    /// Lowercase, as Redis names it in errors.
    pub(crate) name: &'static str,
    /// Exact argument count (the name included) when positive, minimum
    /// when negative: Redis's convention.
    pub(crate) arity: i64,
    pub(crate) flags: &'static [&'static str],
    /// Key positions: first, last (-1: the last argument), step.
    pub(crate) keys: (i64, i64, i64),
    pub(crate) group: &'static str,
    pub(crate) summary: &'static str,
}

const CONN: &[&str] = &["noscript", "loading", "stale", "fast"];
const NO_AUTH: &[&str] = &["noscript", "loading", "stale", "fast", "no_auth"];

/// Every command served.
pub(crate) const COMMANDS: &[Spec] = &[
    spec(
        "ping",
        -1,
        CONN,
        (0, 0, 0),
        "connection",
        "Returns PONG, or the argument.",
    ),
    spec(
        "echo",
        2,
        CONN,
        (0, 0, 0),
        "connection",
        "Returns the argument.",
    ),
    spec(
        "hello",
        -1,
        NO_AUTH,
        (0, 0, 0),
        "connection",
        "Handshake: protocol version 2 or 3, AUTH, SETNAME.",
    ),
    spec(
        "auth",
        -2,
        NO_AUTH,
        (0, 0, 0),
        "connection",
        "Authenticates the connection (--resp-password).",
    ),
    spec(
        "select",
        2,
        CONN,
        (0, 0, 0),
        "connection",
        "Selects database 0, the only one.",
    ),
    spec(
        "quit",
        -1,
        NO_AUTH,
        (0, 0, 0),
        "connection",
        "Closes the connection.",
    ),
    spec(
        "client",
        -2,
        CONN,
        (0, 0, 0),
        "connection",
        "SETNAME, GETNAME, ID, INFO, SETINFO, CONSISTENCY one|quorum|all.",
    ),
    spec(
        "command",
        -1,
        &["loading", "stale"],
        (0, 0, 0),
        "server",
        "COUNT, DOCS, INFO, LIST.",
    ),
    spec(
        "info",
        -1,
        &["loading", "stale"],
        (0, 0, 0),
        "server",
        "Server, clients, stats, keyspace and cluster membership.",
    ),
    spec(
        "config",
        -2,
        &["loading", "stale"],
        (0, 0, 0),
        "server",
        "GET of a few read-only parameters.",
    ),
    spec(
        "dbsize",
        1,
        &["readonly", "fast"],
        (0, 0, 0),
        "server",
        "Approximate number of keys in the cluster.",
    ),
    spec(
        "get",
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        "string",
        "Reads a value (quorum by default).",
    ),
    spec(
        "set",
        -3,
        &["write", "denyoom"],
        (1, 1, 1),
        "string",
        "Writes a value: NX, XX, GET, EX, PX, EXAT, PXAT.",
    ),
    spec(
        "del",
        -2,
        &["write"],
        (1, -1, 1),
        "generic",
        "Deletes keys; returns how many existed.",
    ),
    spec(
        "exists",
        -2,
        &["readonly", "fast"],
        (1, -1, 1),
        "generic",
        "Counts the keys that exist.",
    ),
    spec(
        "mget",
        -2,
        &["readonly", "fast"],
        (1, -1, 1),
        "string",
        "Reads several values.",
    ),
    spec(
        "mset",
        -3,
        &["write", "denyoom"],
        (1, -1, 2),
        "string",
        "Writes several values (not atomically).",
    ),
    spec(
        "getdel",
        2,
        &["write", "fast"],
        (1, 1, 1),
        "string",
        "Reads a value and deletes the key.",
    ),
    spec(
        "strlen",
        2,
        &["readonly", "fast"],
        (1, 1, 1),
        "string",
        "Length of a value.",
    ),
];

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    group: &'static str,
    summary: &'static str,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        keys,
        group,
        summary,
    }
}

/// Read-modify-write commands: refused, since each replica applies the
/// newest version and nothing makes a read and the write after it atomic
/// across replicas; two concurrent INCRs would lose one.
const READ_MODIFY_WRITE: &[&str] = &[
    "incr",
    "incrby",
    "incrbyfloat",
    "decr",
    "decrby",
    "append",
    "setrange",
    "getset",
    "getex",
    "setnx",
    "msetnx",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "persist",
    "rename",
    "renamenx",
    "copy",
];

/// Transactions and scripts: refused for the same reason.
const TRANSACTIONS: &[&str] = &[
    "multi", "exec", "discard", "watch", "unwatch", "eval", "evalsha", "fcall",
];

/// What the server does with one request.
#[derive(Debug)]
pub(crate) enum Step {
    /// Answer this at once (connection commands and errors).
    Now(Reply),
    /// Run this through the coordinator.
    Store(StoreOp),
    /// Answer `+OK`, send every reply before it, and close.
    Quit,
}

/// Decides what to do with one request. Connection commands change
/// `session` here, in request order, so the commands after them see the
/// change even while earlier store commands are still running.
pub(crate) fn dispatch(args: Args, session: &mut Session, server: &Server) -> Step {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let Some(spec) = COMMANDS.iter().find(|s| s.name == name) else {
        return Step::Now(refuse_unknown(&name, &args));
    };
    if !arity_ok(spec.arity, args.len()) || (name == "mset" && args.len() % 2 == 0) {
        return Step::Now(wrong_arity(spec.name));
    }
    if server.needs_auth(session) && !spec.flags.contains(&"no_auth") {
        return Step::Now(Reply::Error("NOAUTH Authentication required.".to_owned()));
    }
    match name.as_str() {
        "ping" => Step::Now(match args.get(1) {
            Some(msg) => Reply::Bulk(msg.clone()),
            None => Reply::Simple("PONG".to_owned()),
        }),
        "echo" => Step::Now(Reply::Bulk(args[1].clone())),
        "hello" => Step::Now(hello(&args, session, server)),
        "auth" => Step::Now(auth(&args[1..], session, server)),
        "select" => Step::Now(select(&args[1])),
        "quit" => Step::Quit,
        "client" => Step::Now(client(&args, session, server)),
        "command" => Step::Now(command(&args)),
        "info" => Step::Now(Reply::Verbatim(info::info(&args[1..], session, server))),
        "config" => Step::Now(config(&args, server)),
        "dbsize" => Step::Now(Reply::Int(info::approximate_keys(server))),
        _ => match store_op(&name, args, server.wall_ms()) {
            Ok(op) => Step::Store(op),
            Err(reply) => Step::Now(reply),
        },
    }
}

fn arity_ok(arity: i64, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

/// Redis's text for an unknown command, or why a known Redis command is
/// refused here.
fn refuse_unknown(name: &str, args: &Args) -> Reply {
    if READ_MODIFY_WRITE.contains(&name) {
        return Reply::err(format!(
            "{} is not supported by ringkv: read-modify-write commands are not atomic across replicas (each replica keeps the newest write, so two concurrent updates would lose one); read with GET, compute, and write with SET",
            name.to_ascii_uppercase()
        ));
    }
    if TRANSACTIONS.contains(&name) {
        return Reply::err(format!(
            "{} is not supported by ringkv: there are no transactions or scripts across replicas",
            name.to_ascii_uppercase()
        ));
    }
    // Like Redis: the name as sent, then the arguments quoted, until the
    // list passes 128 characters.
    let mut listed = String::new();
    for a in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        let text = String::from_utf8_lossy(a);
        let shown: String = text.chars().take(room).collect();
        listed.push_str(&format!("'{shown}' "));
    }
    let sent = String::from_utf8_lossy(&args[0]);
    let sent: String = sent.chars().take(128).collect();
    Reply::err(format!(
        "unknown command '{sent}', with args beginning with: {listed}"
    ))
}

/// COMMAND: the table above, as Redis 7 describes its commands.
pub(super) fn command(args: &Args) -> Reply {
    let Some(sub) = args.get(1) else {
        return Reply::Array(COMMANDS.iter().map(command_info).collect());
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
    let named = |args: &Args| -> Vec<Option<&'static Spec>> {
        args[2..]
            .iter()
            .map(|a| {
                let n = String::from_utf8_lossy(a).to_ascii_lowercase();
                COMMANDS.iter().find(|s| s.name == n)
            })
            .collect()
    };
    match sub.as_str() {
        "count" => Reply::Int(i64::try_from(COMMANDS.len()).unwrap_or(i64::MAX)),
        "list" => Reply::Array(COMMANDS.iter().map(|s| Reply::text(s.name)).collect()),
        "info" if args.len() == 2 => Reply::Array(COMMANDS.iter().map(command_info).collect()),
        "info" => Reply::Array(
            named(args)
                .into_iter()
                .map(|s| s.map_or(Reply::Null, command_info))
                .collect(),
        ),
        "docs" => {
            let specs: Vec<&Spec> = if args.len() == 2 {
                COMMANDS.iter().collect()
            } else {
                named(args).into_iter().flatten().collect()
            };
            Reply::Map(
                specs
                    .into_iter()
                    .map(|s| (Reply::text(s.name), command_docs(s)))
                    .collect(),
            )
        }
        _ => Reply::err(format!(
            "unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

/// Redis 7's ten-field command description.
fn command_info(s: &Spec) -> Reply {
    Reply::Array(vec![
        Reply::text(s.name),
        Reply::Int(s.arity),
        Reply::Set(
            s.flags
                .iter()
                .map(|f| Reply::Simple((*f).to_owned()))
                .collect(),
        ),
        Reply::Int(s.keys.0),
        Reply::Int(s.keys.1),
        Reply::Int(s.keys.2),
        Reply::Set(Vec::new()),
        Reply::Set(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

fn command_docs(s: &Spec) -> Reply {
    Reply::Map(vec![
        (Reply::text("summary"), Reply::text(s.summary)),
        (Reply::text("since"), Reply::text("1.0.0")),
        (Reply::text("group"), Reply::text(s.group)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Args {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn unknown_commands_get_redis_text() {
        let r = refuse_unknown("foo", &args(&["FOO", "a", "b"]));
        assert_eq!(
            r,
            Reply::err("unknown command 'FOO', with args beginning with: 'a' 'b' ")
        );
        let r = refuse_unknown("nope", &args(&["nope"]));
        assert_eq!(
            r,
            Reply::err("unknown command 'nope', with args beginning with: ")
        );
        let Reply::Error(text) = refuse_unknown("incr", &args(&["INCR", "k"])) else {
            panic!("an error");
        };
        assert!(text.starts_with("ERR INCR is not supported by ringkv: read-modify-write"));
    }

    #[test]
    fn arity_follows_redis_convention() {
        assert!(arity_ok(2, 2));
        assert!(!arity_ok(2, 3));
        assert!(arity_ok(-3, 5));
        assert!(!arity_ok(-3, 2));
        assert_eq!(
            wrong_arity("get"),
            Reply::err("wrong number of arguments for 'get' command")
        );
    }
}
