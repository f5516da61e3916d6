//! Store commands: GET, SET, DEL, EXISTS, MGET, MSET, GETDEL, STRLEN
//! parsed into a [`StoreOp`], the keys each reads and writes (for
//! pipelining), and their execution through the coordinator ([`Kv`]).
//! IO only through `Kv`.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::rpc::api::{Consistency, ErrorKind, RequestError};
use crate::shared::Kv;

use super::args::{not_integer, parse_int, syntax_error};
use super::parse::{Args, Reply};

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

    /// Runs the command through the coordinator at `consistency`, each
    /// key holding one of `slots` while it is in the coordinator: a
    /// command of many keys has at most as many keys in flight as there
    /// are slots, and the rest wait for slots.
    pub(crate) async fn run(
        self,
        kv: Arc<Kv>,
        consistency: Consistency,
        slots: &Arc<Semaphore>,
    ) -> Reply {
        match self.execute(&kv, consistency, slots).await {
            Ok(reply) => reply,
            Err(e) => store_error(&e),
        }
    }

    async fn execute(
        self,
        kv: &Arc<Kv>,
        c: Consistency,
        slots: &Arc<Semaphore>,
    ) -> anyhow::Result<Reply> {
        Ok(match self {
            Self::Del(keys) => {
                let existed = each(kv, slots, keys, c, |kv, key, c| async move {
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
                let found = each(kv, slots, keys, c, |kv, key, c| async move {
                    Ok(kv.get(key, c).await?.value.is_some())
                })
                .await?;
                count(&found)
            }
            Self::MGet(keys) => {
                let values = each(kv, slots, keys, c, |kv, key, c| async move {
                    Ok(kv.get(key, c).await?.value)
                })
                .await?;
                Reply::Array(values.into_iter().map(bulk_or_null).collect())
            }
            Self::MSet(pairs) => {
                let keys = pairs.into_iter().map(|(k, v)| (k, Some(v))).collect();
                each(kv, slots, keys, c, |kv, (key, value), c| async move {
                    kv.put(key, value, c).await.map(|_| ())
                })
                .await?;
                Reply::ok()
            }
            one => {
                let _slot = slots.acquire().await.map_err(|_| shutting_down())?;
                one.execute_one(kv, c).await?
            }
        })
    }

    /// GET, STRLEN, GETDEL and SET: one key.
    async fn execute_one(self, kv: &Arc<Kv>, c: Consistency) -> anyhow::Result<Reply> {
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
            Self::Del(_) | Self::Exists(_) | Self::MGet(_) | Self::MSet(_) => {
                unreachable!("multi-key commands run through each")
            }
        })
    }
}

fn shutting_down() -> anyhow::Error {
    anyhow::anyhow!("the RESP server is shutting down")
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

/// Runs `f` for every item concurrently, each holding one of `slots`
/// (taken before it starts, released when it ends): at most as many at
/// once as there are slots. The results in the items' order, or the
/// first error.
async fn each<C, T, R, F, Fut>(
    ctx: &C,
    slots: &Arc<Semaphore>,
    items: Vec<T>,
    c: Consistency,
    f: F,
) -> anyhow::Result<Vec<R>>
where
    C: Clone,
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(C, T, Consistency) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R>> + Send + 'static,
{
    type Joined<R> = Result<(usize, anyhow::Result<R>), tokio::task::JoinError>;
    fn put<R>(out: &mut [Option<R>], joined: Joined<R>) -> anyhow::Result<()> {
        let (i, result) = joined.map_err(|e| anyhow::anyhow!("request task failed: {e}"))?;
        out[i] = Some(result?);
        Ok(())
    }
    let mut tasks = tokio::task::JoinSet::new();
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    for (i, item) in items.into_iter().enumerate() {
        // Collects the keys that finish while waiting for a slot, so the
        // first error ends the command without waiting for the rest.
        let slot = loop {
            tokio::select! {
                slot = slots.clone().acquire_owned() => break slot.map_err(|_| shutting_down())?,
                Some(joined) = tasks.join_next() => put(&mut out, joined)?,
            }
        };
        let fut = f(ctx.clone(), item, c);
        tasks.spawn(async move {
            let _slot = slot;
            (i, fut.await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        put(&mut out, joined)?;
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

/// A coordinator error as a RESP error, by its kind: `NOREPLICAS`
/// (Redis's code for too few replicas) when the request failed for want of
/// replicas, definitely or with an unknown outcome; `TRYAGAIN` when the
/// peer is overloaded; `ERR` otherwise (refused, and errors of no kind).
pub(crate) fn store_error(e: &anyhow::Error) -> Reply {
    let text = format!("{e:#}");
    let kind = e
        .chain()
        .find_map(|c| c.downcast_ref::<RequestError>())
        .map(|r| r.kind);
    match kind {
        Some(ErrorKind::Definite | ErrorKind::Unknown | ErrorKind::NotHeld) => {
            Reply::Error(format!("NOREPLICAS {text}"))
        }
        Some(ErrorKind::Overloaded) => Reply::Error(format!("TRYAGAIN {text}")),
        Some(ErrorKind::Refused) | None => Reply::err(text),
    }
}

/// Parses a store command (arity already checked).
/// `now_ms` (this peer's wall clock) turns relative expiries absolute.
pub(super) fn store_op(name: &str, mut args: Args, now_ms: u64) -> Result<StoreOp, Reply> {
    let mut rest = args.split_off(1).into_iter();
    let mut next = || rest.next().expect("arity checked");
    Ok(match name {
        "get" => StoreOp::Get(next()),
        "strlen" => StoreOp::StrLen(next()),
        "getdel" => StoreOp::GetDel(next()),
        "set" => {
            let (key, value) = (next(), next());
            let options: Vec<Vec<u8>> = rest.collect();
            StoreOp::Set(set_options(key, value, &options, now_ms)?)
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

fn set_options(
    key: Vec<u8>,
    value: Vec<u8>,
    options: &[Vec<u8>],
    now_ms: u64,
) -> Result<SetOp, Reply> {
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
                op.expires_ms = Some(expiry(&option, arg, now_ms)?);
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
    fn set_options_parse_like_redis() {
        let set = |words: &[&str]| set_options(b"k".to_vec(), b"v".to_vec(), &args(words), 1_000);
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
        let op = store_op("mset", args(&["MSET", "a", "1", "b", "2"]), 1_000).unwrap();
        assert_eq!(op.writes(), vec![&b"a"[..], b"b"]);
        assert!(op.reads().is_empty());
        let op = store_op("set", args(&["SET", "a", "1", "GET"]), 1_000).unwrap();
        assert_eq!(op.reads(), vec![&b"a"[..]]);
        assert_eq!(op.writes(), vec![&b"a"[..]]);
        let op = store_op("del", args(&["DEL", "x", "y"]), 1_000).unwrap();
        assert_eq!(op.reads().len(), 2);
        assert_eq!(op.writes().len(), 2);
    }

    /// A command of many keys has at most as many in flight as there are
    /// slots (before, MGET started every key at once).
    #[tokio::test]
    async fn many_keys_are_bounded_by_the_slots() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        #[derive(Clone, Default)]
        struct Gauge(Arc<(AtomicUsize, AtomicUsize)>);
        let gauge = Gauge::default();
        let slots = Arc::new(Semaphore::new(4));
        let items: Vec<usize> = (0..200).collect();
        let out = each(
            &gauge,
            &slots,
            items,
            Consistency::One,
            |g, i, _| async move {
                let now = g.0 .0.fetch_add(1, Ordering::SeqCst) + 1;
                g.0 .1.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                g.0 .0.fetch_sub(1, Ordering::SeqCst);
                Ok(i * 2)
            },
        )
        .await
        .unwrap();
        assert_eq!(out, (0..200).map(|i| i * 2).collect::<Vec<_>>());
        let high = gauge.0 .1.load(Ordering::SeqCst);
        assert!(high <= 4, "{high} keys in flight at once with 4 slots");
        assert!(high >= 2, "keys still overlap: {high}");
        assert_eq!(slots.available_permits(), 4, "every slot released");
    }
}
