//! A set of node ids with O(1) insert, remove and random pick, and an
//! iteration order that depends only on the history of calls (never on a
//! hasher's random seed), so simulations replay exactly.

use std::collections::BTreeMap;

use rand::{Rng, RngCore};
use ringkv_ring::NodeId;

#[derive(Clone, Debug, Default)]
pub(crate) struct IdSet {
    ids: Vec<NodeId>,
    pos: BTreeMap<NodeId, usize>,
}

impl IdSet {
    pub(crate) fn insert(&mut self, id: NodeId) -> bool {
        if self.pos.contains_key(&id) {
            return false;
        }
        self.pos.insert(id, self.ids.len());
        self.ids.push(id);
        true
    }

    pub(crate) fn remove(&mut self, id: &NodeId) -> bool {
        let Some(at) = self.pos.remove(id) else {
            return false;
        };
        self.ids.swap_remove(at);
        if let Some(moved) = self.ids.get(at) {
            self.pos.insert(*moved, at);
        }
        true
    }

    pub(crate) fn contains(&self, id: &NodeId) -> bool {
        self.pos.contains_key(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub(crate) fn as_slice(&self) -> &[NodeId] {
        &self.ids
    }

    /// Up to `k` distinct random ids other than those in `skip`.
    pub(crate) fn pick<R: RngCore>(&self, rng: &mut R, k: usize, skip: &[NodeId]) -> Vec<NodeId> {
        let avail = self.ids.iter().filter(|id| !skip.contains(id)).count();
        let want = k.min(avail);
        let mut out = Vec::with_capacity(want);
        if want == 0 {
            return out;
        }
        // Few picks from many: rejection sampling. Bounded: each draw has at
        // least a 1/len chance, and we stop after 64 * len tries then scan.
        let mut tries = 0usize;
        while out.len() < want && tries < 64 * self.ids.len() {
            tries += 1;
            let id = self.ids[rng.random_range(0..self.ids.len())];
            if !skip.contains(&id) && !out.contains(&id) {
                out.push(id);
            }
        }
        for id in &self.ids {
            if out.len() == want {
                break;
            }
            if !skip.contains(id) && !out.contains(id) {
                out.push(*id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn insert_remove_and_pick() {
        let ids: Vec<NodeId> = (0..10).map(|i| NodeId::from_name(&i.to_string())).collect();
        let mut set = IdSet::default();
        for id in &ids {
            assert!(set.insert(*id));
        }
        assert!(!set.insert(ids[0]));
        assert!(set.remove(&ids[3]));
        assert!(!set.remove(&ids[3]));
        assert_eq!(set.len(), 9);
        assert!(!set.contains(&ids[3]));
        for id in set.as_slice() {
            assert_eq!(set.as_slice()[set.pos[id]], *id);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let picked = set.pick(&mut rng, 4, &ids[..2]);
        assert_eq!(picked.len(), 4);
        assert!(picked.iter().all(|p| !ids[..2].contains(p) && *p != ids[3]));
        assert_eq!(set.pick(&mut rng, 20, &[]).len(), 9);
    }
}
