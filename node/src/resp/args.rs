//! Small helpers the commands share to parse arguments and word their
//! errors as Redis does. Pure.

use super::parse::Reply;

pub(super) fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

pub(super) fn not_integer() -> Reply {
    Reply::err("value is not an integer or out of range")
}

pub(super) fn syntax_error() -> Reply {
    Reply::err("syntax error")
}

pub(super) fn parse_int(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}
