//! The replica side of the store (`ReplicaRead`, `ReplicaApply`) and this
//! peer's own checks before it coordinates a write or takes one: the clock
//! offset bound and the ranges held. IO: store.

use super::*;

impl Kv {
    /// Replica side of `ReplicaRead`: the record, if this peer holds the
    /// key's range fully.
    pub(crate) fn replica_read(&self, key: &[u8]) -> Result<ReadAnswer> {
        let record = self.store.get(key)?;
        if !self.held.read().expect("held lock").holds(&self.me, key) {
            return Ok(ReadAnswer::NotHeld(record));
        }
        Ok(ReadAnswer::Held(record))
    }

    /// Whether this peer holds any ring's ranges fully (a new peer still
    /// pulling its first ranges does not, and serves no range requests).
    pub(crate) fn holds_any(&self) -> bool {
        self.held.read().expect("held lock").ready.is_some()
    }

    /// A peer whose clock is beyond the maximum offset from most of the
    /// peers it measured coordinates no writes: its versions would win or
    /// lose against others' by the error of its clock.
    pub(super) fn check_clock(&self) -> Result<()> {
        let verdict = self.clock_verdict();
        if verdict.is_beyond() {
            return Err(RequestError::new(
                ErrorKind::Definite,
                format!(
                    "{verdict} (--max-clock-offset {:?}): this peer coordinates no writes until its clock is fixed; nothing was written",
                    self.max_clock_offset
                ),
            )
            .into());
        }
        Ok(())
    }

    /// Whether `v` is stamped further ahead of this peer's clock than the
    /// maximum offset.
    pub(super) fn too_far_ahead(&self, v: &Version) -> bool {
        let limit = self
            .wall_ms()
            .saturating_add(u64::try_from(self.max_clock_offset.as_millis()).unwrap_or(u64::MAX));
        v.hlc.physical_ms > limit
    }

    /// Replica side of `ReplicaApply`. A version stamped further ahead of
    /// this replica's clock than the maximum offset is refused: a clock
    /// that far ahead would win every later write for as long.
    pub(crate) async fn replica_apply(&self, key: &[u8], record: Record) -> Result<ApplyReply> {
        self.check(key, record.value.as_deref())?;
        if let Some(why) = self.disk_refusal() {
            return Err(RequestError::new(
                ErrorKind::Refused,
                format!("{why}; nothing was written"),
            )
            .into());
        }
        // Only a replica whose own clock agrees with the others' judges:
        // one whose clock runs behind would refuse every correct write.
        if !self.clock_verdict().is_beyond() && self.too_far_ahead(&record.version) {
            return Err(RequestError::new(
                ErrorKind::Refused,
                format!(
                    "the version is stamped {} ms ahead of this replica's clock, beyond --max-clock-offset {:?}; nothing was written",
                    record.version.hlc.physical_ms - self.wall_ms().min(record.version.hlc.physical_ms),
                    self.max_clock_offset
                ),
            )
            .into());
        }
        self.clock
            .lock()
            .expect("clock lock")
            .observe(&record.version);
        self.apply_local(key, record).await
    }

    /// Applies `record` to this peer's store if it is newer; otherwise says
    /// which newer version is held (an equal one is the same write, held).
    pub(super) async fn apply_local(&self, key: &[u8], record: Record) -> Result<ApplyReply> {
        let version = record.version;
        let applied = if mutation::on_process(Mutation::AckBeforeFlush) {
            self.store.apply_nosync(key, record)?
        } else {
            self.store.apply(key, record).await?
        };
        if applied {
            return Ok(ApplyReply::Applied);
        }
        Ok(match self.store.get(key)? {
            Some(held) if held.version > version => ApplyReply::Newer(held.version),
            _ => ApplyReply::Applied,
        })
    }
}
