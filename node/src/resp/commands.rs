//! The commands a RESP connection understands: the table (arity, flags,
//! key positions, as `COMMAND` reports them), the arity and unknown-command
//! checks with Redis's error texts, connection commands answered at once
//! from the [`Session`], and store commands turned into a [`StoreOp`] that
//! the server runs through the coordinator ([`Kv`]). No socket IO here.

use std::sync::Arc;

use crate::api::Consistency;
use crate::coordinator::{wall_ms, Kv};

use super::info;
use super::parse::{Args, Proto, Reply};
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

#[allow(clippy::too_many_arguments)]
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

/// A store command, with everything parsed.
#[derive(Debug)]
pub(crate) enum StoreOp {
    Get(Vec<u8>),
    StrLen(Vec<u8>),
    GetDel(Vec<u8>),
    Set(SetOp),
    Del(Vec<Vec<u8>>),
    Exists(Vec<Vec<u8>>),
    MGet(Vec<Vec<u8>>),
    MSet(Vec<(Vec<u8>, Vec<u8>)>),
}

/// `SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT t]`.
#[derive(Debug)]
pub(crate) struct SetOp {
    key: Vec<u8>,
    value: Vec<u8>,
    /// `Some(true)`: only if the key exists (XX); `Some(false)`: only if it
    /// does not (NX).
    exists: Option<bool>,
    get: bool,
    expires_ms: Option<u64>,
}

impl StoreOp {
    /// Keys this command reads.
    pub(crate) fn reads(&self) -> Vec<&[u8]> {
        match self {
            Self::Get(k) | Self::StrLen(k) | Self::GetDel(k) => vec![k],
            Self::Set(s) if s.get || s.exists.is_some() => vec![&s.key],
            Self::Del(ks) | Self::Exists(ks) | Self::MGet(ks) => {
                ks.iter().map(Vec::as_slice).collect()
            }
            Self::Set(_) | Self::MSet(_) => Vec::new(),
        }
    }

    /// Keys this command writes.
    pub(crate) fn writes(&self) -> Vec<&[u8]> {
        match self {
            Self::GetDel(k) => vec![k],
            Self::Set(s) => vec![&s.key],
            Self::Del(ks) => ks.iter().map(Vec::as_slice).collect(),
            Self::MSet(pairs) => pairs.iter().map(|(k, _)| k.as_slice()).collect(),
            Self::Get(_) | Self::StrLen(_) | Self::Exists(_) | Self::MGet(_) => Vec::new(),
        }
    }

    /// Runs the command through the coordinator at `consistency`.
    pub(crate) async fn run(self, kv: Arc<Kv>, consistency: Consistency) -> Reply {
        match self.execute(&kv, consistency).await {
            Ok(reply) => reply,
            Err(e) => store_error(&e),
        }
    }

    async fn execute(self, kv: &Arc<Kv>, c: Consistency) -> anyhow::Result<Reply> {
        Ok(match self {
            Self::Get(key) => bulk_or_null(kv.get(key, c).await?.value),
            Self::StrLen(key) => {
                let len = kv.get(key, c).await?.value.map_or(0, |v| v.len());
                Reply::Int(i64::try_from(len).unwrap_or(i64::MAX))
            }
            Self::GetDel(key) => match kv.get(key.clone(), c).await?.value {
                Some(value) => {
                    kv.put(key, None, c).await?;
                    Reply::Bulk(value)
                }
                None => Reply::Null,
            },
            Self::Set(set) => set.execute(kv, c).await?,
            Self::Del(keys) => {
                let existed = each(kv, keys, c, |kv, key, c| async move {
                    let held = kv.get(key.clone(), c).await?.value.is_some();
                    // Written whatever the read said: at `one` the replica
                    // read may be stale.
                    kv.put(key, None, c).await?;
                    Ok(held)
                })
                .await?;
                count(&existed)
            }
            Self::Exists(keys) => {
                let found = each(kv, keys, c, |kv, key, c| async move {
                    Ok(kv.get(key, c).await?.value.is_some())
                })
                .await?;
                count(&found)
            }
            Self::MGet(keys) => {
                let values = each(kv, keys, c, |kv, key, c| async move {
                    Ok(kv.get(key, c).await?.value)
                })
                .await?;
                Reply::Array(values.into_iter().map(bulk_or_null).collect())
            }
            Self::MSet(pairs) => {
                let keys = pairs.into_iter().map(|(k, v)| (k, Some(v))).collect();
                each(kv, keys, c, |kv, (key, value), c| async move {
                    kv.put(key, value, c).await.map(|_| ())
                })
                .await?;
                Reply::ok()
            }
        })
    }
}

impl SetOp {
    async fn execute(self, kv: &Arc<Kv>, c: Consistency) -> anyhow::Result<Reply> {
        // NX, XX and GET read first. The read and the write are two
        // requests: another client's write in between is not seen.
        let prior = if self.get || self.exists.is_some() {
            Some(kv.get(self.key.clone(), c).await?.value)
        } else {
            None
        };
        let allowed = match (self.exists, &prior) {
            (Some(want), Some(held)) => held.is_some() == want,
            _ => true,
        };
        if allowed {
            kv.put_expiring(self.key, Some(self.value), self.expires_ms, c)
                .await?;
        }
        Ok(match (self.get, prior) {
            (true, Some(held)) => bulk_or_null(held),
            _ if allowed => Reply::ok(),
            _ => Reply::Null,
        })
    }
}

/// Runs `f` for every item concurrently; the results in the items' order,
/// or the first error.
async fn each<T, R, F, Fut>(
    kv: &Arc<Kv>,
    items: Vec<T>,
    c: Consistency,
    f: F,
) -> anyhow::Result<Vec<R>>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Arc<Kv>, T, Consistency) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R>> + Send + 'static,
{
    if items.len() == 1 {
        let item = items.into_iter().next().expect("one item");
        return Ok(vec![f(kv.clone(), item, c).await?]);
    }
    let mut tasks = tokio::task::JoinSet::new();
    let n = items.len();
    for (i, item) in items.into_iter().enumerate() {
        let fut = f(kv.clone(), item, c);
        tasks.spawn(async move { (i, fut.await) });
    }
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.map_err(|e| anyhow::anyhow!("request task failed: {e}"))?;
        out[i] = Some(result?);
    }
    Ok(out
        .into_iter()
        .map(|r| r.expect("every task answered"))
        .collect())
}

fn count(flags: &[bool]) -> Reply {
    Reply::Int(i64::try_from(flags.iter().filter(|&&f| f).count()).unwrap_or(i64::MAX))
}

fn bulk_or_null(value: Option<Vec<u8>>) -> Reply {
    value.map_or(Reply::Null, Reply::Bulk)
}

/// A coordinator error as a RESP error: `NOREPLICAS` (Redis's code for
/// too few replicas) when the quorum was not met, naming the replicas that
/// answered; `ERR` otherwise.
pub(crate) fn store_error(e: &anyhow::Error) -> Reply {
    let text = format!("{e:#}");
    if text.starts_with("needed ") {
        Reply::Error(format!("NOREPLICAS {text}"))
    } else {
        Reply::err(text)
    }
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
        "config" => Step::Now(config(&args)),
        "dbsize" => Step::Now(Reply::Int(info::approximate_keys(server))),
        _ => match store_op(&name, args) {
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

fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
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

fn not_integer() -> Reply {
    Reply::err("value is not an integer or out of range")
}

fn syntax_error() -> Reply {
    Reply::err("syntax error")
}

fn parse_int(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

fn select(db: &[u8]) -> Reply {
    match parse_int(db) {
        Some(0) => Reply::ok(),
        Some(_) => Reply::err("DB index is out of range (ringkv has only database 0)"),
        None => not_integer(),
    }
}

/// `AUTH [username] password`; `username` can only be `default`.
fn auth(args: &[Vec<u8>], session: &mut Session, server: &Server) -> Reply {
    let (user, password) = match args {
        [password] => (&b"default"[..], password),
        [user, password] => (user.as_slice(), password),
        _ => return syntax_error(),
    };
    let Some(expected) = &server.config.password else {
        return Reply::err("AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    };
    if user == b"default" && constant_time_eq(password, expected.as_bytes()) {
        session.authenticated = true;
        Reply::ok()
    } else {
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".to_owned())
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `HELLO [protover [AUTH username password] [SETNAME name]]`.
fn hello(args: &Args, session: &mut Session, server: &Server) -> Reply {
    let mut proto = session.proto;
    if let Some(v) = args.get(1) {
        proto = match parse_int(v) {
            Some(2) => Proto::Resp2,
            Some(3) => Proto::Resp3,
            Some(_) => return Reply::Error("NOPROTO unsupported protocol version".to_owned()),
            None => return Reply::err("Protocol version is not an integer or out of range"),
        };
    }
    let mut i = 2;
    let mut name = None;
    let mut credentials = None;
    while i < args.len() {
        let option = String::from_utf8_lossy(&args[i]).to_ascii_lowercase();
        match option.as_str() {
            "auth" if i + 2 < args.len() => {
                credentials = Some([args[i + 1].clone(), args[i + 2].clone()]);
                i += 3;
            }
            "setname" if i + 1 < args.len() => {
                name = Some(args[i + 1].clone());
                i += 2;
            }
            _ => {
                return Reply::err(format!(
                    "Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(&args[i])
                ))
            }
        }
    }
    if let Some(credentials) = credentials {
        let reply = auth(&credentials, session, server);
        if reply != Reply::ok() {
            return reply;
        }
    }
    if server.needs_auth(session) {
        return Reply::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".to_owned());
    }
    if let Some(name) = name {
        if let Err(reply) = session.set_name(&name) {
            return reply;
        }
    }
    session.proto = proto;
    let text = |s: &str| Reply::text(s);
    Reply::Map(vec![
        (text("server"), text("ringkv")),
        (text("version"), text(info::REDIS_VERSION)),
        (text("ringkv_version"), text(env!("CARGO_PKG_VERSION"))),
        (
            text("proto"),
            Reply::Int(if proto == Proto::Resp3 { 3 } else { 2 }),
        ),
        (
            text("id"),
            Reply::Int(i64::try_from(session.id).unwrap_or(i64::MAX)),
        ),
        (text("mode"), text("standalone")),
        (text("role"), text("master")),
        (text("modules"), Reply::Array(Vec::new())),
    ])
}

fn client(args: &Args, session: &mut Session, server: &Server) -> Reply {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    let argc = args.len();
    match (sub.as_str(), argc) {
        ("setname", 3) => match session.set_name(&args[2]) {
            Ok(()) => Reply::ok(),
            Err(reply) => reply,
        },
        ("getname", 2) => session
            .name
            .as_ref()
            .map_or(Reply::Null, |n| Reply::text(n.clone())),
        ("id", 2) => Reply::Int(i64::try_from(session.id).unwrap_or(i64::MAX)),
        ("info", 2) => Reply::Verbatim(format!("{}\n", session.describe())),
        ("setinfo", 4) => {
            let value = String::from_utf8_lossy(&args[3]).into_owned();
            match String::from_utf8_lossy(&args[2])
                .to_ascii_lowercase()
                .as_str()
            {
                "lib-name" => session.lib_name = Some(value),
                "lib-ver" => session.lib_ver = Some(value),
                other => {
                    return Reply::err(format!("Unrecognized option '{other}'"));
                }
            }
            Reply::ok()
        }
        ("consistency", 2) => Reply::text(consistency_name(session.consistency)),
        ("consistency", 3) => match parse_consistency(&args[2]) {
            Some(c) => {
                session.consistency = c;
                Reply::ok()
            }
            None => Reply::err("CLIENT CONSISTENCY takes one, quorum or all"),
        },
        ("no-evict" | "no-touch", 3) => Reply::ok(),
        ("help", 2) => Reply::Array(
            [
                "CLIENT <subcommand> [<arg> ...]. Subcommands are:",
                "SETNAME <name>, GETNAME, ID, INFO, SETINFO LIB-NAME|LIB-VER <value>",
                "CONSISTENCY [one|quorum|all]: show or set this connection's consistency",
                &format!(
                    "  (default {})",
                    consistency_name(server.config.consistency)
                ),
            ]
            .iter()
            .map(|s| Reply::Simple((*s).to_owned()))
            .collect(),
        ),
        ("setname" | "getname" | "id" | "info" | "setinfo" | "consistency" | "help", _) => {
            wrong_arity(&format!("client|{sub}"))
        }
        _ => Reply::err(format!(
            "unknown subcommand '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

/// The name of a consistency level as CLIENT CONSISTENCY shows it.
pub(crate) fn consistency_name(c: Consistency) -> &'static str {
    match c {
        Consistency::One => "one",
        Consistency::Quorum => "quorum",
        Consistency::All => "all",
    }
}

fn parse_consistency(arg: &[u8]) -> Option<Consistency> {
    match String::from_utf8_lossy(arg).to_ascii_lowercase().as_str() {
        "one" => Some(Consistency::One),
        "quorum" => Some(Consistency::Quorum),
        "all" => Some(Consistency::All),
        _ => None,
    }
}

fn command(args: &Args) -> Reply {
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

/// `CONFIG GET parameter...`: the few parameters tools ask for
/// (redis-benchmark reads `save` and `appendonly`), with ringkv's answer.
fn config(args: &Args) -> Reply {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    if sub != "get" {
        return Reply::err(format!(
            "CONFIG {} is not supported by ringkv: configure peers with flags or their --config file",
            sub.to_ascii_uppercase()
        ));
    }
    if args.len() < 3 {
        return wrong_arity("config|get");
    }
    // Every write is on disk on a quorum of replicas before it is
    // acknowledged, which is closest to AOF with fsync always.
    const PARAMS: &[(&str, &str)] = &[
        ("save", ""),
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("databases", "1"),
        ("maxmemory", "0"),
        ("timeout", "0"),
        ("cluster-enabled", "no"),
    ];
    let mut out = Vec::new();
    for pattern in &args[2..] {
        let pattern = String::from_utf8_lossy(pattern).to_ascii_lowercase();
        for (k, v) in PARAMS {
            if glob(&pattern, k)
                && !out
                    .iter()
                    .any(|(name, _): &(Reply, Reply)| *name == Reply::text(*k))
            {
                out.push((Reply::text(*k), Reply::text(*v)));
            }
        }
    }
    Reply::Map(out)
}

/// Glob matching with `*` and `?` (enough for CONFIG GET patterns).
fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// Parses a store command (arity already checked).
fn store_op(name: &str, mut args: Args) -> Result<StoreOp, Reply> {
    let mut rest = args.split_off(1).into_iter();
    let mut next = || rest.next().expect("arity checked");
    Ok(match name {
        "get" => StoreOp::Get(next()),
        "strlen" => StoreOp::StrLen(next()),
        "getdel" => StoreOp::GetDel(next()),
        "set" => {
            let (key, value) = (next(), next());
            let options: Vec<Vec<u8>> = rest.collect();
            StoreOp::Set(set_options(key, value, &options)?)
        }
        "del" => StoreOp::Del(rest.collect()),
        "exists" => StoreOp::Exists(rest.collect()),
        "mget" => StoreOp::MGet(rest.collect()),
        "mset" => {
            let flat: Vec<Vec<u8>> = rest.collect();
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            StoreOp::MSet(pairs)
        }
        other => unreachable!("{other} is in the table but not a store command"),
    })
}

fn set_options(key: Vec<u8>, value: Vec<u8>, options: &[Vec<u8>]) -> Result<SetOp, Reply> {
    let mut op = SetOp {
        key,
        value,
        exists: None,
        get: false,
        expires_ms: None,
    };
    let mut i = 0;
    while i < options.len() {
        let option = String::from_utf8_lossy(&options[i]).to_ascii_uppercase();
        match option.as_str() {
            "NX" | "XX" if op.exists.is_none() => op.exists = Some(option == "XX"),
            "GET" => op.get = true,
            "EX" | "PX" | "EXAT" | "PXAT" if op.expires_ms.is_none() => {
                let Some(arg) = options.get(i + 1) else {
                    return Err(syntax_error());
                };
                op.expires_ms = Some(expiry(&option, arg, wall_ms())?);
                i += 1;
            }
            "KEEPTTL" => {
                return Err(Reply::err(
                    "KEEPTTL is not supported by ringkv: keeping the old expiry is a read-modify-write, not atomic across replicas; pass EX or PX again",
                ))
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    Ok(op)
}

/// The absolute expiry (ms) that `EX|PX|EXAT|PXAT arg` asks for at `now_ms`.
fn expiry(option: &str, arg: &[u8], now_ms: u64) -> Result<u64, Reply> {
    let n = parse_int(arg).ok_or_else(not_integer)?;
    let invalid = || Reply::err("invalid expire time in 'set' command");
    let n = u64::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(invalid)?;
    let at = match option {
        "EX" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now_ms)),
        "PX" => n.checked_add(now_ms),
        "EXAT" => n.checked_mul(1000),
        _ => Some(n),
    };
    // Redis refuses expiries that overflow a signed 64-bit millisecond.
    at.filter(|&at| i64::try_from(at).is_ok())
        .ok_or_else(invalid)
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

    #[test]
    fn set_options_parse_like_redis() {
        let set = |words: &[&str]| set_options(b"k".to_vec(), b"v".to_vec(), &args(words));
        let op = set(&["nx", "GET", "px", "1500"]).unwrap();
        assert_eq!(op.exists, Some(false));
        assert!(op.get);
        assert!(op.expires_ms.is_some());
        assert_eq!(set(&["XX"]).unwrap().exists, Some(true));
        assert_eq!(set(&["NX", "XX"]).unwrap_err(), syntax_error());
        assert_eq!(set(&["EX"]).unwrap_err(), syntax_error());
        assert_eq!(set(&["EX", "1", "PX", "2"]).unwrap_err(), syntax_error());
        assert_eq!(set(&["EX", "x"]).unwrap_err(), not_integer());
        assert_eq!(
            set(&["EX", "0"]).unwrap_err(),
            Reply::err("invalid expire time in 'set' command")
        );
        assert!(set(&["KEEPTTL"]).is_err());
        assert_eq!(expiry("EX", b"2", 1_000).unwrap(), 3_000);
        assert_eq!(expiry("PX", b"2", 1_000).unwrap(), 1_002);
        assert_eq!(expiry("EXAT", b"7", 1_000).unwrap(), 7_000);
        assert_eq!(expiry("PXAT", b"7", 1_000).unwrap(), 7);
        assert!(expiry("EX", b"9223372036854775807", 0).is_err());
    }

    #[test]
    fn conflicting_keys_are_reported() {
        let op = store_op("mset", args(&["MSET", "a", "1", "b", "2"])).unwrap();
        assert_eq!(op.writes(), vec![&b"a"[..], b"b"]);
        assert!(op.reads().is_empty());
        let op = store_op("set", args(&["SET", "a", "1", "GET"])).unwrap();
        assert_eq!(op.reads(), vec![&b"a"[..]]);
        assert_eq!(op.writes(), vec![&b"a"[..]]);
        let op = store_op("del", args(&["DEL", "x", "y"])).unwrap();
        assert_eq!(op.reads().len(), 2);
        assert_eq!(op.writes().len(), 2);
    }

    #[test]
    fn config_get_matches_globs() {
        assert!(glob("*", "save"));
        assert!(glob("append*", "appendonly"));
        assert!(glob("sav?", "save"));
        assert!(!glob("save", "appendonly"));
        let Reply::Map(pairs) = config(&args(&["CONFIG", "GET", "save", "s*"])) else {
            panic!("a map");
        };
        assert_eq!(pairs, vec![(Reply::text("save"), Reply::text(""))]);
        assert!(matches!(
            config(&args(&["CONFIG", "SET", "a", "b"])),
            Reply::Error(_)
        ));
    }

    #[test]
    fn passwords_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
    }
}
