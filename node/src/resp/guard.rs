//! The RESP server's defences against hostile or broken clients, as
//! Redis has them: the client limit derived from the file-descriptor
//! limit, the limits on unauthenticated clients (since CVE-2021-32675),
//! the idle timeout, the output buffer limit, and a counter per reason a
//! client was refused (`ringkv_resp_rejected_total{reason}`), logged at
//! most once per [`LOG_INTERVAL`] per reason. Pure but for
//! [`raise_fd_limit`] (a system call) and the metrics and log.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::warn;

/// Longest an unauthenticated connection (when a password is set) may
/// take to authenticate, from its accept; the idle timeout when shorter.
pub(crate) const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle timeout (`--resp-timeout`): a connection that sent
/// nothing for this long is closed. Redis's default is never; five
/// minutes outlasts any client pool's idle connection that is still
/// wanted, and frees the descriptors of clients that vanished.
pub(crate) const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(300);
/// Default output buffer limit (`--resp-output-limit`): replies a client
/// has not read, beyond the one being written, in bytes.
pub(crate) const OUTPUT_MAX_DEFAULT: usize = 64 * 1024 * 1024;
/// Default client limit (`--resp-max-clients`, Redis's `maxclients`).
pub(crate) const CLIENTS_MAX_DEFAULT: usize = 10_000;
/// File descriptors kept for everything but RESP clients: the QUIC
/// socket, sled's files, the admin HTTP connections, the listeners, the
/// data dir (Redis keeps 32 for itself).
pub(crate) const FD_RESERVE: u64 = 128;
/// Most arguments in a request from a client that has not authenticated
/// (Redis: 10).
pub(crate) const UNAUTH_ARGS_MAX: usize = 10;
/// Longest bulk string from a client that has not authenticated
/// (Redis: 16 KiB).
pub(crate) const UNAUTH_BULK_MAX: usize = 16 * 1024;
/// A reason is logged at most this often; the count in between is in
/// the next line (and every one is in the counter).
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a client was refused, disconnected or a request rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Over the client limit.
    MaxClients,
    /// A request too big for a client that has not authenticated.
    Unauthenticated,
    /// Not authenticated within [`AUTH_TIMEOUT`].
    AuthTimeout,
    /// Sent nothing for the idle timeout.
    IdleTimeout,
    /// Did not read its replies: over the output buffer limit.
    OutputBuffer,
    /// A CONFIG GET pattern over the length limit.
    PatternTooLong,
    /// Broke the protocol or a request limit (also counted in
    /// `ringkv_resp_protocol_errors_total`).
    ProtocolError,
}

const REASONS: usize = 7;

impl Reason {
    /// The `reason` label of the counter.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::MaxClients => "max_clients",
            Self::Unauthenticated => "unauthenticated_request",
            Self::AuthTimeout => "auth_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::OutputBuffer => "output_buffer",
            Self::PatternTooLong => "pattern_too_long",
            Self::ProtocolError => "protocol_error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counts rejections and throttles their log lines.
#[derive(Debug)]
pub(crate) struct Rejections {
    started: Instant,
    interval: Duration,
    /// Per reason: when last logged, in ms since `started` plus one (0:
    /// never).
    logged_at: [AtomicU64; REASONS],
    /// Per reason: how many went unlogged since.
    unlogged: [AtomicU64; REASONS],
}

impl Rejections {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            started: Instant::now(),
            interval,
            logged_at: Default::default(),
            unlogged: Default::default(),
        }
    }

    /// Counts one rejection; logs it unless this reason was logged within
    /// the interval. Whether it logged.
    pub(crate) fn record(&self, reason: Reason, detail: fmt::Arguments<'_>) -> bool {
        metrics::counter!("ringkv_resp_rejected_total", "reason" => reason.label()).increment(1);
        let i = reason.index();
        let now = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.logged_at[i].load(Ordering::Relaxed);
        let due = last == 0
            || now.saturating_sub(last) >= u64::try_from(self.interval.as_millis()).unwrap_or(0);
        if !due
            || self.logged_at[i]
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.unlogged[i].fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let unlogged = self.unlogged[i].swap(0, Ordering::Relaxed);
        warn!(
            reason = reason.label(),
            unlogged_since_last = unlogged,
            "RESP client refused: {detail}"
        );
        true
    }
}

/// The limits the server applies, as configured and derived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientLimits {
    /// Connections served at once.
    pub(crate) max_clients: usize,
    /// Closes a connection that sent nothing for this long; `None`: never.
    pub(crate) idle_timeout: Option<Duration>,
    /// The output buffer limit, bytes.
    pub(crate) output_max: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_clients: CLIENTS_MAX_DEFAULT,
            idle_timeout: Some(IDLE_TIMEOUT_DEFAULT),
            output_max: OUTPUT_MAX_DEFAULT,
        }
    }
}

impl ClientLimits {
    /// How long an unauthenticated connection may wait to authenticate.
    pub(crate) fn auth_timeout(&self) -> Duration {
        self.idle_timeout
            .map_or(AUTH_TIMEOUT, |d| d.min(AUTH_TIMEOUT))
    }
}

/// Raises this process's soft file-descriptor limit to its hard limit,
/// as Redis does at start: the soft limit before and after (`None`:
/// unlimited).
///
/// # Errors
/// The system refused (the old limit stays).
pub(crate) fn raise_fd_limit() -> std::io::Result<(Option<u64>, Option<u64>)> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    let Some(current) = before else {
        return Ok((None, None));
    };
    // An unlimited hard limit still caps NOFILE at the kernel's nr_open;
    // 2^20 is its default.
    let target = limit.maximum.unwrap_or(1 << 20);
    if target <= current {
        return Ok((before, before));
    }
    setrlimit(
        Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        },
    )?;
    Ok((before, getrlimit(Resource::Nofile).current))
}

/// This process's soft file-descriptor limit (`None`: unlimited).
pub(crate) fn fd_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The client limit: `configured`, lowered to leave [`FD_RESERVE`]
/// descriptors of `fd_limit` for the rest of the peer.
///
/// # Errors
/// A limit that leaves no descriptor for a client, naming `ulimit -n`.
pub(crate) fn max_clients(configured: usize, fd_limit: Option<u64>) -> Result<usize, String> {
    let Some(limit) = fd_limit else {
        return Ok(configured);
    };
    let room = usize::try_from(limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    if room == 0 {
        return Err(format!(
            "the file-descriptor limit ({limit}, ulimit -n) leaves none for RESP clients after the {FD_RESERVE} the peer keeps for itself: raise it"
        ));
    }
    Ok(configured.min(room))
}

/// One connection's replies that are ready but not yet taken by its
/// writer, against the output buffer limit; and the signal that closes
/// the connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    pending: AtomicUsize,
    limit: usize,
    closed: watch::Sender<bool>,
}

impl Outbox {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            pending: AtomicUsize::new(0),
            limit,
            closed: watch::Sender::new(false),
        }
    }

    /// Counts a reply of `len` bytes that is ready. When it goes over
    /// the limit behind other unread replies (one reply larger than the
    /// limit alone is still sent), the connection is told to close; true
    /// when this call is the one that closed it.
    pub(crate) fn overflowed_by(&self, len: usize) -> bool {
        let before = self.pending.fetch_add(len, Ordering::Relaxed);
        before > 0 && before.saturating_add(len) > self.limit && !self.close()
    }

    /// The writer took a reply of `len` bytes.
    pub(crate) fn taken(&self, len: usize) {
        self.pending.fetch_sub(len, Ordering::Relaxed);
    }

    /// Bytes ready and not taken.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Tells the reader and writer to stop; whether it was already told.
    pub(crate) fn close(&self) -> bool {
        self.closed.send_replace(true)
    }

    /// Resolves once [`Self::close`] was called.
    pub(crate) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closed.subscribe();
        async move {
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_clients_leaves_a_reserve_of_descriptors() {
        assert_eq!(max_clients(10_000, None), Ok(10_000));
        assert_eq!(max_clients(10_000, Some(1_048_576)), Ok(10_000));
        assert_eq!(max_clients(10_000, Some(1024)), Ok(1024 - 128));
        assert_eq!(max_clients(100, Some(1024)), Ok(100));
        assert_eq!(max_clients(10_000, Some(129)), Ok(1));
        let err = max_clients(10_000, Some(128)).unwrap_err();
        assert!(err.contains("ulimit -n"), "{err}");
        assert!(max_clients(10_000, Some(0)).is_err());
    }

    #[test]
    fn raising_the_fd_limit_reaches_the_hard_limit() {
        let (_, after) = raise_fd_limit().expect("raising to the hard limit is allowed");
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(after, limit.current);
        if let Some(hard) = limit.maximum {
            assert_eq!(limit.current, Some(hard));
        }
    }

    #[tokio::test]
    async fn unread_replies_over_the_limit_close_the_connection() {
        let outbox = Outbox::new(100);
        // One reply bigger than the limit alone is sent.
        assert!(!outbox.overflowed_by(1_000));
        outbox.taken(1_000);
        assert!(!outbox.overflowed_by(60));
        assert!(!outbox.overflowed_by(40));
        assert!(!outbox.is_closed());
        assert!(outbox.overflowed_by(1), "101 bytes unread");
        assert!(outbox.is_closed());
        assert!(!outbox.overflowed_by(1), "counted once");
        tokio::time::timeout(Duration::from_secs(5), outbox.closed())
            .await
            .expect("closed resolves");
    }

    #[test]
    fn rejections_are_logged_once_per_interval() {
        let r = Rejections::new(Duration::from_secs(3600));
        assert!(r.record(Reason::IdleTimeout, format_args!("a")));
        assert!(!r.record(Reason::IdleTimeout, format_args!("b")));
        assert!(r.record(Reason::OutputBuffer, format_args!("c")));
        let r = Rejections::new(Duration::ZERO);
        assert!(r.record(Reason::IdleTimeout, format_args!("a")));
        assert!(r.record(Reason::IdleTimeout, format_args!("b")));
    }
}
