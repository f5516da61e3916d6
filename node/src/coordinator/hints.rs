//! Hinted handoff, the coordinator's side: a replica that missed a write
//! gets a durable hint, replayed once it is alive again. IO: store, network.

use super::*;

impl Kv {
    /// Keeps a hint for a replica that missed a write.
    pub(super) async fn hint(&self, r: &Replica, key: Vec<u8>, record: Record) {
        let hint = Hint {
            target: r.id,
            key,
            record,
            created_ms: self.wall_ms(),
        };
        match self.store.add_hint(hint, self.hint_limits).await {
            Ok(true) => debug!(replica = %r.name, "hint stored"),
            Ok(false) => {
                self.hints_dropped.fetch_add(1, Ordering::Relaxed);
                warn!(replica = %r.name, "hint dropped: the hint store is full");
            }
            Err(e) => {
                self.hints_dropped.fetch_add(1, Ordering::Relaxed);
                warn!(replica = %r.name, err = %e, "cannot store a hint");
            }
        }
    }

    /// Delivers the hints of every member that is alive again, and expires
    /// those past the age limit. Called periodically.
    pub(crate) async fn replay_hints(&self) {
        if let Err(e) = self.store.expire_hints(self.wall_ms(), self.hint_limits) {
            warn!(err = %e, "cannot expire hints");
        }
        let Ok(targets) = self.store.hint_targets() else {
            return;
        };
        let view = self.view.borrow().clone();
        for target in targets {
            let Some(m) = view
                .members
                .iter()
                .find(|m| m.id == target && m.state == State::Alive)
            else {
                continue;
            };
            let r = Replica {
                id: m.id,
                name: Arc::from(m.meta.name.as_str()),
                addr: m.meta.addr,
            };
            let Ok(hints) = self.store.hints_for(&target, 256) else {
                continue;
            };
            for hint in hints {
                match self
                    .apply_at(&r, hint.key.clone(), hint.record.clone())
                    .await
                {
                    // Held, or superseded there by a newer version: either
                    // way the hint has nothing left to deliver.
                    Answer::Ok(()) | Answer::Newer(_) => {
                        let _ = self.store.remove_hint(&hint);
                        self.hints_replayed.fetch_add(1, Ordering::Relaxed);
                    }
                    Answer::Unreachable => break,
                    // Refused or lost: try the others, this one next round.
                    Answer::Unknown | Answer::Refused(_) => {}
                }
            }
        }
    }
}
