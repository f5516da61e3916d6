//! Connection and server commands, answered at once from the [`Session`]
//! and the [`Server`]: SELECT, AUTH, HELLO, CLIENT, COMMAND, CONFIG GET.
//! No IO.

use crate::rpc::api::Consistency;

use super::args::{not_integer, parse_int, syntax_error, wrong_arity};
use super::guard::Reason;
use super::parse::{Args, Proto, Reply};
use super::{glob, info};
use super::{Server, Session};

pub(super) fn select(db: &[u8]) -> Reply {
    match parse_int(db) {
        Some(0) => Reply::ok(),
        Some(_) => Reply::err("DB index is out of range (ringkv has only database 0)"),
        None => not_integer(),
    }
}

/// `AUTH [username] password`; `username` can only be `default`.
pub(super) fn auth(args: &[Vec<u8>], session: &mut Session, server: &Server) -> Reply {
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
pub(super) fn hello(args: &Args, session: &mut Session, server: &Server) -> Reply {
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

pub(super) fn client(args: &Args, session: &mut Session, server: &Server) -> Reply {
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

/// `CONFIG GET parameter...`: the few parameters tools ask for
/// (redis-benchmark reads `save` and `appendonly`), with ringkv's answer.
/// Patterns are Redis globs, case-insensitive, at most
/// [`glob::PATTERN_MAX`] bytes each.
pub(super) fn config(args: &Args, server: &Server) -> Reply {
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
    if let Some(long) = args[2..].iter().find(|p| p.len() > glob::PATTERN_MAX) {
        server.reject(
            Reason::PatternTooLong,
            format_args!("a CONFIG GET pattern of {} bytes", long.len()),
        );
        return Reply::err(format!(
            "CONFIG GET pattern too long ({} bytes; at most {})",
            long.len(),
            glob::PATTERN_MAX
        ));
    }
    let limits = &server.limits;
    let timeout = limits.idle_timeout.map_or(0, |d| d.as_secs()).to_string();
    let output = format!("normal {} 0 0", limits.output_max);
    // Every write is on disk on a quorum of replicas before it is
    // acknowledged, which is closest to AOF with fsync always.
    let params: [(&str, &str); 9] = [
        ("save", ""),
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("databases", "1"),
        ("maxmemory", "0"),
        ("timeout", &timeout),
        ("maxclients", &limits.max_clients.to_string()),
        ("client-output-buffer-limit", &output),
        ("cluster-enabled", "no"),
    ];
    let mut out = Vec::new();
    for (k, v) in params {
        if args[2..]
            .iter()
            .any(|pattern| glob::matches(pattern, k.as_bytes(), true))
        {
            out.push((Reply::text(k), Reply::text(v)));
        }
    }
    Reply::Map(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
    }
}
