//! The client side of the peers' fault switch. A peer started with
//! `--testbed-faults` serves `PUT /v1/faults` on its admin HTTP with a JSON
//! body `{"drop": ["127.0.0.1:4001", ...], "loss": 0.1, "delay_ms": 50}`
//! (every field optional; the body replaces the previous settings, `{}`
//! heals) and `GET /v1/faults`; a peer without the flag answers 403.
//! `drop` lists peer QUIC addresses whose datagrams the peer drops both
//! ways, `loss` the fraction of all datagrams dropped, `delay_ms` a delay
//! on every outgoing datagram.
//!
//! This module plans the settings (pure) and sends them (IO: HTTP).

use std::collections::BTreeSet;
use std::net::SocketAddr;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

/// One peer's fault settings: the body of `PUT /v1/faults`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultSettings {
    /// Peers (QUIC addresses) whose datagrams are dropped both ways.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<SocketAddr>,
    /// Fraction of all datagrams dropped, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Delay on every outgoing datagram, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Offset added to the peer's wall clock, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// Whether the peer's data dir reads as full.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_disk: bool,
}

impl FaultSettings {
    /// Whether nothing is injected.
    pub fn is_healed(&self) -> bool {
        self.drop.is_empty()
            && self.loss.unwrap_or(0.0) == 0.0
            && self.delay_ms.unwrap_or(0) == 0
            && self.clock_offset_ms.unwrap_or(0) == 0
            && !self.full_disk
    }

    /// The JSON body sent to the peer.
    pub fn body(&self) -> String {
        serde_json::to_string(self).expect("fault settings serialize")
    }

    /// A short description for tables: `drop 2, loss 10%, delay 50ms`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.drop.is_empty() {
            parts.push(format!("drop {}", self.drop.len()));
        }
        if let Some(l) = self.loss.filter(|l| *l > 0.0) {
            parts.push(format!("loss {:.0}%", l * 100.0));
        }
        if let Some(d) = self.delay_ms.filter(|d| *d > 0) {
            parts.push(format!("delay {d}ms"));
        }
        if let Some(o) = self.clock_offset_ms.filter(|o| *o != 0) {
            parts.push(format!("clock {o:+}ms"));
        }
        if self.full_disk {
            parts.push("disk full".into());
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Parses a clock offset as people type it: `2s`, `+500ms`, `-1d`, `0`.
///
/// # Errors
/// Not a duration, or beyond 400 days either way.
pub fn parse_clock_offset_ms(text: &str) -> Result<i64> {
    let t = text.trim();
    let (sign, rest) = match t.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, t.strip_prefix('+').unwrap_or(t)),
    };
    let d = crate::cli::parse_duration(rest).map_err(|e| anyhow::anyhow!("clock offset {e}"))?;
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if ms > 400 * 86_400_000 {
        bail!("clock offset {text:?} is out of range: at most 400 days either way");
    }
    Ok(sign * ms)
}

/// Parses `A,B / C,D,E` into the two sides of a partition.
///
/// # Errors
/// Not two sides, an empty side, or a name on both sides.
pub fn parse_partition(text: &str) -> Result<(Vec<String>, Vec<String>)> {
    let Some((a, b)) = text.split_once('/') else {
        bail!("{text:?}: a partition is two sides separated by '/', like \"p1,p2 / p3,p4,p5\"");
    };
    let side = |s: &str| -> Vec<String> {
        s.split([',', ' '])
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let (a, b) = (side(a), side(b));
    if a.is_empty() || b.is_empty() {
        bail!("{text:?}: both sides of a partition need at least one peer");
    }
    let left: BTreeSet<&String> = a.iter().collect();
    if let Some(both) = b.iter().find(|n| left.contains(n)) {
        bail!("{text:?}: {both} is on both sides");
    }
    Ok((a, b))
}

/// Parses `A,B -> C` into a one-way partition: what the peers on the
/// left send to those on the right is dropped, the other way is not.
///
/// # Errors
/// Not two sides, an empty side, or a name on both sides.
pub fn parse_one_way(text: &str) -> Result<(Vec<String>, Vec<String>)> {
    let Some((a, b)) = text.split_once("->") else {
        bail!("{text:?}: a one-way partition is two sides separated by '->', like \"p1 -> p2,p3\"");
    };
    parse_partition(&format!("{a} / {b}")).map_err(|_| {
        anyhow::anyhow!("{text:?}: both sides need a peer, and no peer may be on both")
    })
}

/// Parses a loss like `10%` or `0.1` into a fraction.
///
/// # Errors
/// Not a number, or outside 0..=100%.
pub fn parse_loss(text: &str) -> Result<f64> {
    let t = text.trim();
    let (num, scale) = match t.strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (t, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .with_context(|| format!("{text:?} is not a loss like 10% or 0.1"))?;
    let v = v * scale;
    if !(0.0..=1.0).contains(&v) {
        bail!("{text:?}: loss must be between 0% and 100%");
    }
    Ok(v)
}

/// Parses a delay like `50ms` or `0.2s` into whole milliseconds.
///
/// # Errors
/// Not a duration, or over 10 s.
pub fn parse_delay_ms(text: &str) -> Result<u64> {
    let d = crate::cli::parse_duration(text).map_err(anyhow::Error::msg)?;
    if d > std::time::Duration::from_secs(10) {
        bail!("{text:?}: a delay of at most 10s");
    }
    Ok(u64::try_from(d.as_millis()).expect("at most 10 s"))
}

/// Sends `settings` to the peer whose admin HTTP is `admin`.
///
/// # Errors
/// The peer does not answer, or refuses (403: started without the switch).
pub fn send(name: &str, admin: SocketAddr, settings: &FaultSettings) -> Result<()> {
    let (status, body) = crate::http::request(admin, "PUT", "/v1/faults", Some(&settings.body()))
        .with_context(|| format!("cannot set faults on {name}"))?;
    match status {
        200..=299 => Ok(()),
        403 => bail!("{name} refuses fault injection (403): it was not started with --testbed-faults"),
        404 | 405 => bail!(
            "{name} has no fault switch (status {status}): this ringkv build does not serve /v1/faults yet"
        ),
        _ => bail!("{name} refused the fault settings: status {status}: {}", body.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healing_sends_an_empty_object() {
        assert_eq!(FaultSettings::default().body(), "{}");
        assert!(FaultSettings::default().is_healed());
    }

    #[test]
    fn settings_send_exactly_the_contract_fields() {
        let s = FaultSettings {
            drop: vec![
                "127.0.0.1:4001".parse().unwrap(),
                "127.0.0.1:4002".parse().unwrap(),
            ],
            loss: Some(0.1),
            delay_ms: Some(50),
            ..FaultSettings::default()
        };
        let v: serde_json::Value = serde_json::from_str(&s.body()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"drop": ["127.0.0.1:4001", "127.0.0.1:4002"], "loss": 0.1, "delay_ms": 50})
        );
        assert_eq!(s.describe(), "drop 2, loss 10%, delay 50ms");
        assert!(!s.is_healed());
    }

    #[test]
    fn partitions_parse_into_two_disjoint_sides() {
        let (a, b) = parse_partition("p1,p2 / p3,p4,p5").unwrap();
        assert_eq!(a, ["p1", "p2"]);
        assert_eq!(b, ["p3", "p4", "p5"]);
        assert!(parse_partition("p1,p2").is_err());
        assert!(parse_partition("p1 / ").is_err());
        assert!(parse_partition("p1,p2 / p2,p3")
            .unwrap_err()
            .to_string()
            .contains("both sides"));
    }

    #[test]
    fn clock_offsets_parse_with_a_sign() {
        assert_eq!(parse_clock_offset_ms("+2s").unwrap(), 2000);
        assert_eq!(parse_clock_offset_ms("2s").unwrap(), 2000);
        assert_eq!(parse_clock_offset_ms("-500ms").unwrap(), -500);
        assert_eq!(parse_clock_offset_ms("0").unwrap(), 0);
        assert_eq!(parse_clock_offset_ms("-1d").unwrap(), -86_400_000);
        assert!(parse_clock_offset_ms("soon").is_err());
        let s = FaultSettings {
            clock_offset_ms: Some(-500),
            full_disk: true,
            ..FaultSettings::default()
        };
        assert!(!s.is_healed());
        assert_eq!(s.body(), r#"{"clock_offset_ms":-500,"full_disk":true}"#);
        assert_eq!(s.describe(), "clock -500ms, disk full");
    }

    #[test]
    fn loss_and_delay_parse_as_people_type_them() {
        assert!((parse_loss("10%").unwrap() - 0.1).abs() < 1e-12);
        assert!((parse_loss("0.25").unwrap() - 0.25).abs() < 1e-12);
        assert!(parse_loss("150%").is_err());
        assert!(parse_loss("lots").is_err());
        assert_eq!(parse_delay_ms("50ms").unwrap(), 50);
        assert_eq!(parse_delay_ms("0.2s").unwrap(), 200);
        assert!(parse_delay_ms("1h").is_err());
        assert!(parse_delay_ms("soon").is_err());
    }
}
