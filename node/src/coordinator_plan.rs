//! Pure quorum decisions: how many answers a consistency level needs, which
//! answer is newest, which replicas need repair, and the error people see
//! when too few answer. No IO.

use ringkv_storage::Record;

use crate::api::Consistency;

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
}
