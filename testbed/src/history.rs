//! A workload's history: one JSON object per line. The first line is a
//! `meta` record; every other line is one operation with its invocation
//! and completion times (microseconds since the workload started, on one
//! monotonic clock), key, value written or read, version, and outcome.
//! IO: the history file only.

use std::cmp::Ordering;
use std::fmt;
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

/// What the client learnt about an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged: a put reached W replicas, a get R answers.
    Ok,
    /// Definitely not applied (nothing was sent, or the coordinator said
    /// nothing was written).
    Fail,
    /// May or may not have been applied (a timeout after sending, fewer
    /// acknowledgements than needed).
    Unknown,
}

/// Put or get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// A write of a unique value.
    Put,
    /// A read.
    Get,
}

/// One operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Unique within the history.
    pub id: u64,
    /// Put or get.
    pub op: OpKind,
    /// The key.
    pub key: String,
    /// A put's value (always); a get's value read (`None`: absent).
    pub value: Option<String>,
    /// The version written (put) or read (get), when known.
    pub version: Option<String>,
    /// What the client learnt.
    pub outcome: Outcome,
    /// Invocation time, µs since the workload's start.
    pub start_us: u64,
    /// Completion time, µs since the workload's start.
    pub end_us: u64,
    /// The peer the request went to.
    #[serde(default)]
    pub peer: Option<String>,
    /// Replicas that acknowledged (put) or answered (get), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
    /// Whether this is a read of the final pass (after every write ended).
    #[serde(default)]
    pub final_read: bool,
    /// The error, for fail and unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A line of the history file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Line {
    /// The first line: when the workload started.
    Meta {
        /// Wall-clock start, ms since the Unix epoch (for reports).
        started_unix_ms: u64,
    },
    /// An operation.
    Op(Op),
}

/// A version as peers print it: `physical.logical@node/generation`,
/// ordered like the store orders them: by (physical, logical), then
/// generation, then node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    /// HLC physical milliseconds.
    pub physical_ms: u64,
    /// HLC logical counter.
    pub logical: u32,
    /// The writer's store generation.
    pub generation: u32,
    /// The writer's node id (its short hex prefix).
    pub node: String,
}

impl Version {
    /// Parses `physical.logical@node/generation`.
    ///
    /// # Errors
    /// Any other shape.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || format!("{s:?} is not a version like 1795382000000.0@c407a875/1");
        let (hlc, rest) = s.split_once('@').with_context(bad)?;
        let (phys, logical) = hlc.split_once('.').with_context(bad)?;
        let (node, generation) = rest.rsplit_once('/').with_context(bad)?;
        if node.is_empty() {
            bail!(bad());
        }
        Ok(Self {
            physical_ms: phys.parse().with_context(bad)?,
            logical: logical.parse().with_context(bad)?,
            generation: generation.parse().with_context(bad)?,
            node: node.to_owned(),
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.physical_ms, self.logical, self.generation, &self.node).cmp(&(
            other.physical_ms,
            other.logical,
            other.generation,
            &other.node,
        ))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}@{}/{}",
            self.physical_ms, self.logical, self.node, self.generation
        )
    }
}

/// Appends history lines to a file.
#[derive(Debug)]
pub struct Writer {
    out: BufWriter<std::fs::File>,
}

impl Writer {
    /// Creates (truncates) `path` and writes the meta line.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn create(path: &Path, started_unix_ms: u64) -> Result<Self> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = Self {
            out: BufWriter::new(file),
        };
        w.line(&Line::Meta { started_unix_ms })?;
        Ok(w)
    }

    fn line(&mut self, line: &Line) -> Result<()> {
        serde_json::to_writer(&mut self.out, line)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    /// Appends one operation.
    ///
    /// # Errors
    /// The write fails.
    pub fn op(&mut self, op: Op) -> Result<()> {
        self.line(&Line::Op(op))
    }

    /// Flushes to disk.
    ///
    /// # Errors
    /// The write fails.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// A history read back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// The meta line's start, if present.
    pub started_unix_ms: Option<u64>,
    /// Every operation, in file order.
    pub ops: Vec<Op>,
}

impl History {
    /// Reads a history file.
    ///
    /// # Errors
    /// It cannot be read, or a line is not a history record (the message
    /// names the line).
    pub fn read(path: &Path) -> Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut h = Self::default();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line = serde_json::from_str(&line).with_context(|| {
                format!("{} line {}: not a history record", path.display(), n + 1)
            })?;
            match parsed {
                Line::Meta { started_unix_ms } => h.started_unix_ms = Some(started_unix_ms),
                Line::Op(op) => h.ops.push(op),
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_clock_then_generation_then_node() {
        let v = |s: &str| Version::parse(s).unwrap();
        assert!(v("100.0@aa/1") < v("100.1@aa/1"));
        assert!(v("100.9@aa/1") < v("101.0@aa/1"));
        assert!(v("100.0@ff/1") < v("100.0@aa/2"), "generation before node");
        assert!(v("100.0@aa/1") < v("100.0@bb/1"));
        assert_eq!(v("100.2@c407a875/3").to_string(), "100.2@c407a875/3");
        for bad in ["", "100", "100.0@", "100.0@aa", "x.0@aa/1", "100.0@/1"] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn histories_round_trip_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let op = Op {
            id: 1,
            op: OpKind::Put,
            key: "k".into(),
            value: Some("k#1".into()),
            version: Some("1.0@aa/1".into()),
            outcome: Outcome::Ok,
            start_us: 5,
            end_us: 9,
            peer: Some("127.0.0.1:1".into()),
            replicas: vec!["p1".into(), "p2".into()],
            final_read: false,
            error: None,
        };
        let mut w = Writer::create(&path, 77).unwrap();
        w.op(op.clone()).unwrap();
        w.flush().unwrap();
        let h = History::read(&path).unwrap();
        assert_eq!(h.started_unix_ms, Some(77));
        assert_eq!(h.ops, vec![op]);
        std::fs::write(&path, "{\"type\":\"meta\",\"started_unix_ms\":1}\nnope\n").unwrap();
        let err = format!("{:#}", History::read(&path).unwrap_err());
        assert!(err.contains("line 2"), "{err}");
    }
}
