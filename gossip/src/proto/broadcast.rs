//! The piggyback queue: updates waiting to be gossiped, each sent a bounded
//! number of times (about `mult * log10(N + 1)`), least-sent and freshest
//! first. A newer update about a member replaces the older one.

use ringkv_ring::NodeId;

use crate::proto::codec;
use crate::proto::message::Update;

#[derive(Clone, Debug)]
struct Item {
    update: Update,
    len: usize,
    sent: u32,
    /// Insertion order; higher is fresher.
    order: u64,
}

/// Updates waiting to be sent.
#[derive(Debug)]
pub(crate) struct Broadcasts {
    items: Vec<Item>,
    next_order: u64,
    max: usize,
}

impl Broadcasts {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            items: Vec::new(),
            next_order: 0,
            max,
        }
    }

    /// Queues `update`, replacing any queued update about the same member.
    pub(crate) fn push(&mut self, update: Update) {
        let id = update.id();
        self.items.retain(|i| i.update.id() != id);
        let len = codec::encoded_len(&update);
        self.next_order += 1;
        self.items.push(Item {
            update,
            len,
            sent: 0,
            order: self.next_order,
        });
        if self.items.len() > self.max {
            // Drop the most-sent, oldest first: it has had its chances.
            let worst = self
                .items
                .iter()
                .enumerate()
                .max_by_key(|(_, i)| (i.sent, std::cmp::Reverse(i.order)))
                .map(|(pos, _)| pos)
                .expect("queue is not empty");
            self.items.swap_remove(worst);
        }
    }

    /// Takes updates fitting `budget` bytes, least-sent then freshest
    /// first, counting a send for each and retiring those sent `limit`
    /// times. `exclude` names a member whose update the caller already
    /// placed.
    pub(crate) fn take(
        &mut self,
        budget: usize,
        limit: u32,
        exclude: Option<NodeId>,
    ) -> Vec<Update> {
        if self.items.is_empty() {
            return Vec::new();
        }
        self.items
            .sort_unstable_by_key(|i| (i.sent, std::cmp::Reverse(i.order)));
        let mut left = budget;
        let mut out = Vec::new();
        for item in &mut self.items {
            if Some(item.update.id()) == exclude || item.len > left {
                continue;
            }
            left -= item.len;
            item.sent += 1;
            out.push(item.update.clone());
            if left < 16 {
                break;
            }
        }
        self.items.retain(|i| i.sent < limit);
        out
    }

    /// How many times the queued update about `id` has been sent; `None`
    /// when none is queued (never queued, or retired after its last send).
    pub(crate) fn sent(&self, id: &NodeId) -> Option<u32> {
        self.items
            .iter()
            .find(|i| i.update.id() == *id)
            .map(|i| i.sent)
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(n: &str, inc: u64) -> Update {
        Update::Left {
            id: NodeId::from_name(n),
            incarnation: inc,
            sig: crate::proto::auth::Sig::NONE,
        }
    }

    #[test]
    fn newer_update_replaces_older_about_the_same_member() {
        let mut b = Broadcasts::new(10);
        b.push(left("a", 1));
        b.push(left("a", 2));
        assert_eq!(b.len(), 1);
        assert_eq!(b.take(1000, 5, None), vec![left("a", 2)]);
    }

    #[test]
    fn each_update_is_sent_at_most_limit_times() {
        let mut b = Broadcasts::new(10);
        b.push(left("a", 1));
        for _ in 0..3 {
            assert_eq!(b.take(1000, 3, None).len(), 1);
        }
        assert!(b.take(1000, 3, None).is_empty());
        assert!(b.is_empty());
    }

    #[test]
    fn least_sent_then_freshest_first_within_budget() {
        let mut b = Broadcasts::new(10);
        b.push(left("a", 1));
        b.take(1000, 9, None);
        b.push(left("b", 1));
        b.push(left("c", 1));
        let one = codec::encoded_len(&left("a", 1));
        // Room for two: the two never sent, freshest (c) first.
        let got = b.take(2 * one, 9, None);
        assert_eq!(got, vec![left("c", 1), left("b", 1)]);
        // Now a has been sent once and b, c once too; a is oldest.
        assert_eq!(b.take(one, 9, None), vec![left("c", 1)]);
    }

    #[test]
    fn excluded_member_is_skipped_and_queue_is_bounded() {
        let mut b = Broadcasts::new(2);
        b.push(left("a", 1));
        b.push(left("b", 1));
        b.push(left("c", 1));
        assert_eq!(b.len(), 2);
        let got = b.take(1000, 9, Some(NodeId::from_name("c")));
        assert!(!got.contains(&left("c", 1)));
    }
}
