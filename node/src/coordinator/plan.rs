//! Pure quorum decisions: how many answers a consistency level needs, which
//! answer is newest, which replicas need repair, and the error people see
//! when too few answer. No IO.

use ringkv_storage::Record;

use crate::rpc::api::Consistency;

/// Answers needed from `replicas` replicas.
pub(crate) fn required(consistency: Consistency, replicas: usize) -> usize {
    match consistency {
        Consistency::One => 1.min(replicas),
        Consistency::Quorum => replicas / 2 + 1,
        Consistency::All => replicas,
    }
}

/// The newest record among the answers (a tombstone counts: it is newer
/// than the value it deleted).
pub(crate) fn newest<'a>(
    answers: impl IntoIterator<Item = &'a Option<Record>>,
) -> Option<&'a Record> {
    answers.into_iter().flatten().max_by_key(|r| r.version)
}

/// Whether a replica that answered `held` needs `newest` written to it.
pub(crate) fn needs_repair(held: &Option<Record>, newest: &Record) -> bool {
    held.as_ref().is_none_or(|h| h.version < newest.version)
}

/// Where one key's requests go. While some of its replicas are still
/// receiving their ranges (pending), reads go to the ready replicas plus as
/// many substitutes (the next nodes of the preference list: the holders
/// before the change, or a leaving node) as there are pending replicas, and
/// writes go to all of them: the pending replica gets every write it will
/// need once it is ready, and the nodes that serve reads meanwhile have
/// them too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route<T> {
    /// The replicas of the current ring, primary first.
    pub(crate) natural: Vec<T>,
    /// Where reads go.
    pub(crate) read: Vec<T>,
    /// Where writes go (natural replicas and substitutes).
    pub(crate) write: Vec<T>,
    /// Natural replicas still receiving their ranges.
    pub(crate) pending: Vec<T>,
    /// Too few replicas hold the key's range to answer otherwise: pending
    /// ones are read too, and their "not held" counts as "absent".
    pub(crate) degraded: bool,
}

impl<T: Clone + PartialEq> Route<T> {
    /// The route of a key whose `natural` replicas are those of the current
    /// ring, `preference` the longer preference list of the ring that still
    /// counts leaving nodes, and `ready` whether a node announced that it
    /// holds every range it replicates in the current ring.
    ///
    /// When the ready replicas and substitutes are too few to answer
    /// `needed` (a cluster of one or two peers, a new peer still pulling
    /// its first ranges), pending replicas are read as well: answering from
    /// a replica that may miss old writes beats not answering at all.
    pub(crate) fn plan(
        natural: &[T],
        preference: &[T],
        ready: impl Fn(&T) -> bool,
        needed: usize,
    ) -> Self {
        let pending: Vec<T> = natural.iter().filter(|n| !ready(n)).cloned().collect();
        if pending.is_empty() {
            return Self {
                natural: natural.to_vec(),
                read: natural.to_vec(),
                write: natural.to_vec(),
                pending,
                degraded: false,
            };
        }
        let substitutes: Vec<T> = preference
            .iter()
            .filter(|p| !natural.contains(p))
            .take(pending.len())
            .cloned()
            .collect();
        let mut read: Vec<T> = natural.iter().filter(|n| ready(n)).cloned().collect();
        read.extend(substitutes.iter().cloned());
        let degraded = read.len() < needed;
        if degraded {
            read = natural.to_vec();
            read.extend(substitutes.iter().cloned());
        }
        let mut write = natural.to_vec();
        write.extend(substitutes);
        Self {
            natural: natural.to_vec(),
            read,
            write,
            pending,
            degraded,
        }
    }

    /// Whether `acked` satisfies a write that needs `needed`
    /// acknowledgements: that many among the nodes that serve reads now,
    /// and that many among the natural replicas that will serve them once
    /// every replica is ready.
    pub(crate) fn write_done(&self, acked: &[T], needed: usize) -> bool {
        let among = |set: &[T]| acked.iter().filter(|a| set.contains(a)).count();
        among(&self.read) >= needed && among(&self.natural) >= needed.min(self.natural.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_ring::NodeId;
    use ringkv_storage::{Hlc, Version};

    fn rec(ms: u64, v: &str) -> Record {
        let version = Version {
            hlc: Hlc {
                physical_ms: ms,
                logical: 0,
            },
            generation: 1,
            node: NodeId::from_name("w"),
        };
        Record::put(v.as_bytes().to_vec(), version)
    }

    #[test]
    fn required_answers_per_consistency() {
        assert_eq!(required(Consistency::One, 3), 1);
        assert_eq!(required(Consistency::Quorum, 3), 2);
        assert_eq!(required(Consistency::Quorum, 4), 3);
        assert_eq!(required(Consistency::Quorum, 1), 1);
        assert_eq!(required(Consistency::All, 3), 3);
        assert_eq!(required(Consistency::One, 0), 0);
    }

    #[test]
    fn newest_wins_and_stale_replicas_are_repaired() {
        let answers = vec![Some(rec(5, "old")), None, Some(rec(9, "new"))];
        let n = newest(&answers).unwrap().clone();
        assert_eq!(n.value.as_deref(), Some(&b"new"[..]));
        assert!(needs_repair(&answers[0], &n));
        assert!(needs_repair(&answers[1], &n));
        assert!(!needs_repair(&answers[2], &n));
        assert!(newest(&[None, None]).is_none());
    }

    #[test]
    fn a_route_without_pending_replicas_is_the_natural_one() {
        let r = Route::plan(&[1, 2, 3], &[1, 2, 3, 4, 5], |_| true, 2);
        assert_eq!(r.read, vec![1, 2, 3]);
        assert_eq!(r.write, vec![1, 2, 3]);
        assert!(r.write_done(&[1, 3], 2));
        assert!(!r.write_done(&[3], 2));
    }

    #[test]
    fn a_pending_replica_is_read_around_and_written_to() {
        // 4 joined: natural [1, 4, 2], 4 still pulling; 3 held the key.
        let r = Route::plan(&[1, 4, 2], &[1, 4, 2, 3, 5], |n| *n != 4, 2);
        assert_eq!(r.read, vec![1, 2, 3]);
        assert_eq!(r.write, vec![1, 4, 2, 3]);
        assert_eq!(r.pending, vec![4]);
        assert!(!r.degraded);
        // Two acknowledgements among readers and among natural replicas.
        assert!(r.write_done(&[1, 2], 2));
        assert!(!r.write_done(&[1, 4], 2), "only one node that serves reads");
        assert!(!r.write_done(&[2, 3], 2), "only one natural replica");
        assert!(r.write_done(&[4, 2, 3], 2));
    }

    #[test]
    fn a_leaving_node_substitutes_for_the_replica_taking_over() {
        // 9 is leaving: not in the current ring, first in the old list.
        let r = Route::plan(&[1, 2, 5], &[9, 1, 2, 5], |n| *n != 5, 2);
        assert_eq!(r.read, vec![1, 2, 9]);
        assert_eq!(r.write, vec![1, 2, 5, 9]);
    }

    #[test]
    fn too_few_ready_nodes_fall_back_to_reading_pending_ones() {
        // Two peers, the second still pulling its first ranges.
        let r = Route::plan(&[1, 2], &[1, 2], |n| *n == 1, 2);
        assert_eq!(r.read, vec![1, 2]);
        assert!(r.degraded);
        assert!(r.write_done(&[1, 2], 2));
    }
}
