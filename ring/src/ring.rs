//! The ring itself: built from a membership view, looked up by key.
//!
//! Invariants:
//! - The ring is a pure function of `(view as a set, vnodes)`: nodes are
//!   sorted by id before anything else happens, so every peer with the same
//!   view builds the same ring, byte for byte, and the same [`RingDigest`].
//! - `tokens` is sorted ascending; equal tokens are ordered by node id, and
//!   the first of them owns the range, so the later ones own nothing.
//! - The lookup table has a slot per bucket (the top `bits` bits of a
//!   position, about four buckets per token). A bucket that holds no token
//!   lies inside one range, so its slot names the owner directly and most
//!   lookups touch one slot and nothing else; a bucket that holds tokens
//!   names its first token, and the lookup scans the few that follow.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::RingError;
use crate::node::{NodeId, NodeSpec};
use crate::token::{key_position, Token, TokenRange};

/// Default tokens per unit of weight. 150 keeps the coefficient of
/// variation of node shares near 1/sqrt(150) = 8%, at 2.4 KB of tokens per
/// node; Cassandra ships 16 to 256.
pub const DEFAULT_VNODES: u32 = 150;

/// Most tokens one ring may hold (about 200 MB of tables): a guard against
/// a mistyped weight or vnode count, far above any real cluster.
pub const MAX_TOKENS: u64 = 16 * 1024 * 1024;

/// Most bits of position the lookup table uses (4 MB of table).
const INDEX_BITS_MAX: u32 = 20;
/// Set in a lookup slot whose bucket holds no token: the rest is the owner's
/// node index. Clear: the rest is the bucket's first token index.
const SLOT_DIRECT: u32 = 1 << 31;

/// A digest of everything that decides placement: two rings with the same
/// digest place every key on the same replicas.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RingDigest(pub [u8; 32]);

impl RingDigest {
    /// The first 16 hex digits, enough to tell rings apart by eye.
    pub fn short(&self) -> String {
        self.to_string()[..16].to_owned()
    }
}

impl fmt::Display for RingDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RingDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RingDigest({})", self.short())
    }
}

/// The token of `node`'s `i`-th virtual node: the first 8 bytes, big-endian,
/// of `blake3(node id || i as u32 big-endian)`.
pub fn vnode_token(node: &NodeId, i: u32) -> Token {
    let mut hasher = blake3::Hasher::new();
    hasher.update(node.as_bytes());
    hasher.update(&i.to_be_bytes());
    let hash = hasher.finalize();
    let head: [u8; 8] = hash.as_bytes()[..8]
        .try_into()
        .expect("a blake3 hash is 32 bytes");
    Token(u64::from_be_bytes(head))
}

/// A consistent-hash ring with virtual nodes.
///
/// Build it with [`Ring::build`] from the membership view; look keys up with
/// [`Ring::owner`] and [`Ring::replicas`]; compare two rings with
/// [`crate::moves`]. All lookups are read-only and the ring is `Sync`, so it
/// can be shared behind an `Arc` and swapped whole when the view changes.
#[derive(Clone)]
pub struct Ring {
    vnodes: u32,
    /// The view, sorted by id.
    nodes: Vec<NodeSpec>,
    /// Zone class of each node (index into `nodes`). When no node has a
    /// zone, every node is its own class, so "distinct zones first" is
    /// simply "distinct nodes".
    zone_of: Vec<u32>,
    zone_count: u32,
    tokens: Vec<u64>,
    /// Node index of each token's owner.
    owners: Vec<u32>,
    /// Node ids by node index, compact for the lookup path.
    ids: Vec<NodeId>,
    /// One slot per bucket; see the module doc and [`SLOT_DIRECT`].
    slots: Vec<u32>,
    /// `64 - index bits`: a position's bucket is `pos >> shift`.
    shift: u32,
    digest: RingDigest,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("nodes", &self.nodes.len())
            .field("tokens", &self.tokens.len())
            .field("vnodes", &self.vnodes)
            .field("digest", &self.digest)
            .finish()
    }
}

impl PartialEq for Ring {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl Eq for Ring {}

impl Ring {
    /// Builds the ring for a membership view. The order of `view` does not
    /// matter.
    ///
    /// # Errors
    /// [`RingError::Empty`], [`RingError::ZeroVnodes`],
    /// [`RingError::ZeroWeight`], [`RingError::DuplicateNode`] or
    /// [`RingError::TooManyTokens`]; nothing is built.
    pub fn build(view: &[NodeSpec], vnodes: u32) -> Result<Self, RingError> {
        let nodes = validate(view, vnodes)?;
        let (zone_of, zone_count) = zone_classes(&nodes);

        let total: usize = nodes.iter().map(|n| (vnodes * n.weight) as usize).sum();
        let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(total);
        for (idx, node) in nodes.iter().enumerate() {
            let idx = u32::try_from(idx).expect("node count is bounded by MAX_TOKENS");
            for i in 0..vnodes * node.weight {
                pairs.push((vnode_token(&node.id, i).0, idx));
            }
        }
        // Nodes are sorted by id, so ordering ties by index orders them by id.
        pairs.sort_unstable();
        let tokens: Vec<u64> = pairs.iter().map(|p| p.0).collect();
        let owners: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let (slots, shift) = build_slots(&tokens, &owners);
        let digest = compute_digest(vnodes, &nodes, &tokens, &owners);
        let ids = nodes.iter().map(|n| n.id).collect();
        Ok(Self {
            vnodes,
            nodes,
            zone_of,
            zone_count,
            tokens,
            owners,
            ids,
            slots,
            shift,
            digest,
        })
    }

    /// Tokens per unit of weight.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// The view the ring was built from, sorted by node id.
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    /// The node with this id, if it is in the ring.
    pub fn node(&self, id: &NodeId) -> Option<&NodeSpec> {
        self.node_index(id).map(|i| &self.nodes[i])
    }

    /// Whether the node is in the ring.
    pub fn contains(&self, id: &NodeId) -> bool {
        self.node_index(id).is_some()
    }

    /// Total number of tokens.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Bytes held by the lookup tables (tokens, owners, slots).
    pub fn table_bytes(&self) -> usize {
        self.tokens.len() * 12 + self.slots.len() * 4
    }

    /// The digest that proves two rings are identical.
    pub fn digest(&self) -> RingDigest {
        self.digest
    }

    /// The node that owns `key` (the first replica).
    #[inline]
    pub fn owner(&self, key: &[u8]) -> NodeId {
        self.owner_of(key_position(key))
    }

    /// The node that owns position `pos`.
    #[inline]
    pub fn owner_of(&self, pos: Token) -> NodeId {
        let slot = self.slots[(pos.0 >> self.shift) as usize];
        let node = if slot & SLOT_DIRECT != 0 {
            slot & !SLOT_DIRECT
        } else {
            self.owners[self.scan_from(slot as usize, pos.0)]
        };
        self.ids[node as usize]
    }

    /// The replicas of `key`: `n` distinct nodes walking clockwise from its
    /// position, nodes in zones not yet used first; fewer when the ring has
    /// fewer nodes. The first is the owner.
    pub fn replicas(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        self.replicas_of(key_position(key), n)
    }

    /// The replicas of position `pos`; see [`Ring::replicas`].
    pub fn replicas_of(&self, pos: Token, n: usize) -> Vec<NodeId> {
        let mut picked = Vec::with_capacity(n.min(self.nodes.len()));
        self.replica_indices(self.token_index(pos.0), n, &mut picked);
        self.ids(&picked)
    }

    /// Every token's range and owner, in ring order. Tokens that collide
    /// with an earlier token own nothing and are skipped; with a single
    /// distinct token the one range is the whole ring.
    pub fn ranges(&self) -> impl Iterator<Item = (TokenRange, NodeId)> + '_ {
        self.arcs()
            .map(|(range, t)| (range, self.nodes[self.owners[t] as usize].id))
    }

    /// The ranges `node` replicates at replication factor `n`, each with its
    /// replica list, coalesced where neighbours share a replica list.
    pub fn ranges_replicated_by(&self, node: &NodeId, n: usize) -> Vec<(TokenRange, Vec<NodeId>)> {
        let Some(idx) = self.node_index(node) else {
            return Vec::new();
        };
        let idx = u32::try_from(idx).expect("node count fits u32");
        let mut out: Vec<(TokenRange, Vec<NodeId>)> = Vec::new();
        let mut picked = Vec::new();
        for (range, t) in self.arcs() {
            picked.clear();
            self.replica_indices(t, n, &mut picked);
            if !picked.contains(&idx) {
                continue;
            }
            let ids: Vec<NodeId> = picked.iter().map(|&i| self.nodes[i as usize].id).collect();
            match out.last_mut() {
                Some((prev, prev_ids)) if prev.end == range.start && *prev_ids == ids => {
                    prev.end = range.end;
                }
                _ => out.push((range, ids)),
            }
        }
        crate::moves::merge_wrap(&mut out);
        out
    }

    pub(crate) fn node_index(&self, id: &NodeId) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.id.cmp(id)).ok()
    }

    /// Index of the first token at or after `pos`, wrapping to 0.
    #[inline]
    pub(crate) fn token_index(&self, pos: u64) -> usize {
        let slot = self.slots[(pos >> self.shift) as usize];
        if slot & SLOT_DIRECT == 0 {
            return self.scan_from(slot as usize, pos);
        }
        // The bucket holds no token: the answer is the first token after
        // it, found by binary search (ownership alone needs no search).
        let t = self.tokens.partition_point(|&tok| tok < pos);
        if t == self.tokens.len() {
            0
        } else {
            t
        }
    }

    /// The first token index at or after `pos`, scanning from `t`, the
    /// first token of `pos`'s bucket; wraps to 0 past the last token.
    #[inline]
    fn scan_from(&self, mut t: usize, pos: u64) -> usize {
        while t < self.tokens.len() && self.tokens[t] < pos {
            t += 1;
        }
        if t == self.tokens.len() {
            0
        } else {
            t
        }
    }

    /// Every range with the token index that owns it, in ring order.
    pub(crate) fn arcs(&self) -> impl Iterator<Item = (TokenRange, usize)> + '_ {
        let last = *self.tokens.last().expect("a ring has tokens");
        let single = self.tokens.first() == Some(&last);
        (0..self.tokens.len()).filter_map(move |t| {
            let here = self.tokens[t];
            if single {
                return (t == 0).then_some((TokenRange::new(Token(here), Token(here)), 0));
            }
            let prev = if t == 0 { last } else { self.tokens[t - 1] };
            (t == 0 || prev != here).then_some((TokenRange::new(Token(prev), Token(here)), t))
        })
    }

    /// The node ids for a list of node indices.
    pub(crate) fn ids(&self, picked: &[u32]) -> Vec<NodeId> {
        picked.iter().map(|&i| self.ids[i as usize]).collect()
    }

    pub(crate) fn owner_index(&self, t: usize) -> u32 {
        self.owners[t]
    }

    /// Fills `picked` with up to `n` distinct node indices for the range
    /// owned by token `start`: first walking clockwise taking nodes whose
    /// zone is not yet used, then, if zones ran out, walking again taking
    /// any node not yet picked.
    pub(crate) fn replica_indices(&self, start: usize, n: usize, picked: &mut Vec<u32>) {
        let want = n.min(self.nodes.len());
        let len = self.tokens.len();
        // In the first walk every pick is in a zone of its own, so the
        // picks' zones are the zones used.
        let mut t = start;
        for _ in 0..len {
            if picked.len() == want || picked.len() == self.zone_count as usize {
                break;
            }
            let node = self.owners[t];
            let zone = self.zone_of[node as usize];
            if !picked.iter().any(|&p| self.zone_of[p as usize] == zone) {
                picked.push(node);
            }
            t = if t + 1 == len { 0 } else { t + 1 };
        }
        t = start;
        for _ in 0..len {
            if picked.len() == want {
                break;
            }
            let node = self.owners[t];
            if !picked.contains(&node) {
                picked.push(node);
            }
            t = if t + 1 == len { 0 } else { t + 1 };
        }
    }
}

/// Checks the view and returns it sorted by id.
fn validate(view: &[NodeSpec], vnodes: u32) -> Result<Vec<NodeSpec>, RingError> {
    if view.is_empty() {
        return Err(RingError::Empty);
    }
    if vnodes == 0 {
        return Err(RingError::ZeroVnodes);
    }
    let mut nodes = view.to_vec();
    nodes.sort_unstable_by_key(|n| n.id);
    if let Some(pair) = nodes.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(RingError::DuplicateNode { node: pair[0].id });
    }
    if let Some(node) = nodes.iter().find(|n| n.weight == 0) {
        return Err(RingError::ZeroWeight { node: node.id });
    }
    // u64 products of two u32 cannot overflow; their sum can, so saturate.
    let tokens = nodes
        .iter()
        .map(|n| u64::from(vnodes) * u64::from(n.weight))
        .fold(0u64, u64::saturating_add);
    if tokens > MAX_TOKENS {
        return Err(RingError::TooManyTokens {
            tokens,
            limit: MAX_TOKENS,
        });
    }
    Ok(nodes)
}

/// Zone class per node. With no zones at all, each node is its own class;
/// otherwise equal zone names share a class and a node without a zone is a
/// class of its own.
fn zone_classes(nodes: &[NodeSpec]) -> (Vec<u32>, u32) {
    let count = u32::try_from(nodes.len()).expect("node count fits u32");
    if nodes.iter().all(|n| n.zone.is_none()) {
        return ((0..count).collect(), count);
    }
    let mut named: BTreeMap<&str, u32> = BTreeMap::new();
    let mut next = 0u32;
    let mut classes = Vec::with_capacity(nodes.len());
    for node in nodes {
        let class = match node.zone.as_deref() {
            Some(zone) => *named.entry(zone).or_insert_with(|| {
                next += 1;
                next - 1
            }),
            None => {
                next += 1;
                next - 1
            }
        };
        classes.push(class);
    }
    (classes, next)
}

/// The lookup table over the sorted tokens: about four buckets per token,
/// each slot either the owner of the whole bucket or its first token.
fn build_slots(tokens: &[u64], owners: &[u32]) -> (Vec<u32>, u32) {
    let bits = (usize::BITS - tokens.len().leading_zeros() + 2).clamp(1, INDEX_BITS_MAX);
    let shift = 64 - bits;
    let buckets = 1usize << bits;
    let mut slots = Vec::with_capacity(buckets);
    let mut t = 0usize;
    for b in 0..buckets {
        let start = (b as u64) << shift;
        while t < tokens.len() && tokens[t] < start {
            t += 1;
        }
        // The bucket's last position; the last bucket ends at u64::MAX.
        let end = start | (u64::MAX >> bits);
        let slot = if t < tokens.len() && tokens[t] <= end {
            u32::try_from(t).expect("token count is bounded by MAX_TOKENS")
        } else {
            // No token inside: every position here belongs to the next
            // token, wrapping to the first.
            let next = if t == tokens.len() { 0 } else { t };
            owners[next] | SLOT_DIRECT
        };
        slots.push(slot);
    }
    (slots, shift)
}

fn compute_digest(vnodes: u32, nodes: &[NodeSpec], tokens: &[u64], owners: &[u32]) -> RingDigest {
    let mut h = blake3::Hasher::new_derive_key("ringkv 2026 ring digest v1");
    h.update(&vnodes.to_be_bytes());
    h.update(&(nodes.len() as u64).to_be_bytes());
    for node in nodes {
        h.update(node.id.as_bytes());
        h.update(&node.weight.to_be_bytes());
        match &node.zone {
            Some(zone) => {
                h.update(&[1]);
                h.update(&(zone.len() as u64).to_be_bytes());
                h.update(zone.as_bytes());
            }
            None => {
                h.update(&[0]);
            }
        }
    }
    for (token, owner) in tokens.iter().zip(owners) {
        h.update(&token.to_be_bytes());
        h.update(&owner.to_be_bytes());
    }
    RingDigest(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(names: &[&str]) -> Vec<NodeSpec> {
        names
            .iter()
            .map(|n| NodeSpec::new(NodeId::from_name(n)))
            .collect()
    }

    #[test]
    fn build_rejects_bad_views() {
        assert_eq!(Ring::build(&[], 150).unwrap_err(), RingError::Empty);
        assert_eq!(
            Ring::build(&view(&["a"]), 0).unwrap_err(),
            RingError::ZeroVnodes
        );
        let a = NodeId::from_name("a");
        let dup = vec![NodeSpec::new(a), NodeSpec::new(a).with_weight(2)];
        assert_eq!(
            Ring::build(&dup, 1).unwrap_err(),
            RingError::DuplicateNode { node: a }
        );
        let zero = vec![NodeSpec::new(a).with_weight(0)];
        assert_eq!(
            Ring::build(&zero, 1).unwrap_err(),
            RingError::ZeroWeight { node: a }
        );
        let huge = vec![NodeSpec::new(a).with_weight(u32::MAX)];
        assert!(matches!(
            Ring::build(&huge, 150),
            Err(RingError::TooManyTokens { .. })
        ));
    }

    #[test]
    fn huge_vnodes_and_weights_are_refused_not_wrapped() {
        // 4 * 2^31 * 2^31 wraps a u64 sum to 0; 2 * (2^32-1)^2 overflows it.
        let big = |n: usize, w: u32| -> Vec<NodeSpec> {
            (0..n)
                .map(|i| NodeSpec::new(NodeId::from_name(&i.to_string())).with_weight(w))
                .collect()
        };
        assert!(matches!(
            Ring::build(&big(4, 1 << 31), 1 << 31),
            Err(RingError::TooManyTokens { .. })
        ));
        let err = Ring::build(&big(2, u32::MAX), u32::MAX).unwrap_err();
        assert_eq!(
            err,
            RingError::TooManyTokens {
                tokens: u64::MAX,
                limit: MAX_TOKENS
            }
        );
    }

    /// A ring with hand-placed tokens (node index per token), for collisions
    /// and extreme positions that real token hashes never produce.
    fn handmade(nodes: usize, tokens: &[(u64, u32)]) -> Ring {
        let names: Vec<String> = (0..nodes).map(|i| format!("x{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut ring = Ring::build(&view(&names), 1).unwrap();
        let mut pairs = tokens.to_vec();
        pairs.sort_unstable();
        ring.tokens = pairs.iter().map(|p| p.0).collect();
        ring.owners = pairs.iter().map(|p| p.1).collect();
        let (slots, shift) = build_slots(&ring.tokens, &ring.owners);
        ring.slots = slots;
        ring.shift = shift;
        ring
    }

    /// Brute force over thousands of small hand-made rings whose tokens
    /// collide and sit at 0 and u64::MAX: `moves` lists exactly the changed
    /// positions, fully merged, and `ranges_replicated_by` matches lookups.
    #[test]
    fn moves_are_exact_with_collisions_and_extreme_tokens() {
        let mut x = 12345u64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let vals = [0u64, 1, 2, 1 << 62, 1 << 63, u64::MAX - 1, u64::MAX];
        let mut probes: Vec<u64> = Vec::new();
        for v in vals {
            probes.extend([v, v.wrapping_add(1), v.wrapping_sub(1), v / 2 + 7]);
        }
        for _ in 0..3000 {
            let nodes = 1 + (rnd() % 4) as usize;
            let mut make = || {
                let mut t: Vec<(u64, u32)> = (0..1 + rnd() % 5)
                    .map(|_| (vals[(rnd() % 7) as usize], (rnd() % nodes as u64) as u32))
                    .collect();
                for i in 0..nodes as u32 {
                    if !t.iter().any(|p| p.1 == i) {
                        t.push((vals[(rnd() % 7) as usize], i));
                    }
                }
                t
            };
            let (a, b) = (handmade(nodes, &make()), handmade(nodes, &make()));
            for n in 1..=3 {
                let ms = crate::moves::moves(&a, &b, n);
                for &p in &probes {
                    let (x, y) = (a.replicas_of(Token(p), n), b.replicas_of(Token(p), n));
                    assert_eq!(a.owner_of(Token(p)), x[0]);
                    let hits: Vec<_> = ms.iter().filter(|m| m.range.contains(Token(p))).collect();
                    assert!(hits.len() <= 1, "overlapping moves {ms:?}");
                    let same = x.len() == y.len() && x.iter().all(|i| y.contains(i));
                    match hits.first() {
                        Some(m) => assert!(m.old == x && m.new == y && !same, "{m:?} at {p}"),
                        None => assert!(same, "change at {p} not listed: {ms:?}"),
                    }
                }
                for (w, m1) in ms.iter().enumerate() {
                    let m2 = &ms[(w + 1) % ms.len()];
                    if ms.len() > 1 && m1.range.end == m2.range.start {
                        assert!(m1.old != m2.old || m1.new != m2.new, "unmerged {ms:?}");
                    }
                }
            }
            for node in a.nodes.clone() {
                let ranges = a.ranges_replicated_by(&node.id, 2);
                for &p in &probes {
                    let holds = a.replicas_of(Token(p), 2).contains(&node.id);
                    let count = ranges.iter().filter(|(r, _)| r.contains(Token(p))).count();
                    assert_eq!(usize::from(holds), count, "{ranges:?} at {p}");
                }
            }
        }
    }

    #[test]
    fn weight_multiplies_tokens() {
        let mut v = view(&["a", "b"]);
        v[1].weight = 3;
        let ring = Ring::build(&v, 10).unwrap();
        assert_eq!(ring.token_count(), 40);
    }

    #[test]
    fn lookup_matches_linear_scan() {
        let ring = Ring::build(&view(&["a", "b", "c", "d"]), 7).unwrap();
        for i in 0..2000u64 {
            let pos = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let want = ring.tokens.iter().position(|&t| t >= pos).unwrap_or(0);
            assert_eq!(ring.token_index(pos), want, "position {pos:x}");
            assert_eq!(
                ring.owner_of(Token(pos)),
                ring.ids[ring.owners[want] as usize]
            );
        }
        // Either side of every token, where bucket edges and ranges meet.
        for &tok in &ring.tokens.clone() {
            for pos in [tok.wrapping_sub(1), tok, tok.wrapping_add(1)] {
                let want = ring.tokens.iter().position(|&t| t >= pos).unwrap_or(0);
                assert_eq!(ring.token_index(pos), want, "position {pos:x}");
                assert_eq!(
                    ring.owner_of(Token(pos)),
                    ring.ids[ring.owners[want] as usize]
                );
            }
        }
        // The extremes of the ring.
        assert_eq!(ring.token_index(0), 0);
        let last = *ring.tokens.last().unwrap();
        assert_eq!(ring.token_index(last), ring.tokens.len() - 1);
        if last < u64::MAX {
            assert_eq!(ring.token_index(last + 1), 0);
        }
    }

    #[test]
    fn single_node_owns_everything() {
        let ring = Ring::build(&view(&["only"]), 1).unwrap();
        let only = NodeId::from_name("only");
        assert_eq!(ring.owner(b"x"), only);
        assert_eq!(ring.replicas(b"x", 3), vec![only]);
        let ranges: Vec<_> = ring.ranges().collect();
        assert_eq!(ranges.len(), 1);
        assert!(ranges[0].0.is_full());
    }

    #[test]
    fn replicas_prefer_distinct_zones() {
        let v = vec![
            NodeSpec::new(NodeId::from_name("a1")).with_zone("a"),
            NodeSpec::new(NodeId::from_name("a2")).with_zone("a"),
            NodeSpec::new(NodeId::from_name("a3")).with_zone("a"),
            NodeSpec::new(NodeId::from_name("b1")).with_zone("b"),
            NodeSpec::new(NodeId::from_name("c1")).with_zone("c"),
        ];
        let ring = Ring::build(&v, 50).unwrap();
        let zone = |id: &NodeId| ring.node(id).unwrap().zone.clone().unwrap();
        for i in 0..500u32 {
            let key = i.to_be_bytes();
            let reps = ring.replicas(&key, 3);
            let mut zones: Vec<_> = reps.iter().map(zone).collect();
            zones.sort();
            assert_eq!(zones, ["a", "b", "c"], "key {i}");
            assert_eq!(reps[0], ring.owner(&key));
            // With 4 replicas the fourth must repeat a zone but not a node.
            let four = ring.replicas(&key, 4);
            assert_eq!(&four[..3], &reps[..]);
            assert!(!reps.contains(&four[3]));
        }
    }

    #[test]
    fn replicas_never_exceed_node_count() {
        let ring = Ring::build(&view(&["a", "b"]), 20).unwrap();
        let reps = ring.replicas(b"k", 5);
        assert_eq!(reps.len(), 2);
        assert_ne!(reps[0], reps[1]);
    }

    #[test]
    fn colliding_tokens_go_to_the_smaller_id() {
        // Two nodes, hand-made with equal tokens: build the tables directly.
        let mut ring = Ring::build(&view(&["a", "b"]), 1).unwrap();
        ring.tokens = vec![100, 100];
        ring.owners = vec![0, 1];
        let (slots, shift) = build_slots(&ring.tokens, &ring.owners);
        ring.slots = slots;
        ring.shift = shift;
        let first = ring.nodes[0].id;
        assert_eq!(ring.owner_of(Token(50)), first);
        assert_eq!(ring.owner_of(Token(100)), first);
        assert_eq!(ring.owner_of(Token(101)), first);
        let ranges: Vec<_> = ring.ranges().collect();
        assert_eq!(ranges.len(), 1, "the colliding token owns nothing");
        assert!(ranges[0].0.is_full());
    }

    #[test]
    fn digest_depends_on_weight_and_zone() {
        let a = Ring::build(&view(&["a", "b"]), 10).unwrap();
        let mut v = view(&["a", "b"]);
        v[0].weight = 2;
        let b = Ring::build(&v, 10).unwrap();
        let mut v = view(&["a", "b"]);
        v[0].zone = Some("z".into());
        let c = Ring::build(&v, 10).unwrap();
        assert_ne!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
        assert_eq!(
            a.digest(),
            Ring::build(&view(&["b", "a"]), 10).unwrap().digest()
        );
    }

    #[test]
    fn ranges_replicated_by_cover_the_nodes_share() {
        let ring = Ring::build(&view(&["a", "b", "c", "d", "e"]), 20).unwrap();
        let a = NodeId::from_name("a");
        let ranges = ring.ranges_replicated_by(&a, 3);
        for i in 0..3000u32 {
            let key = i.to_le_bytes();
            let pos = key_position(&key);
            let holds = ring.replicas(&key, 3).contains(&a);
            let covered = ranges.iter().any(|(r, _)| r.contains(pos));
            assert_eq!(holds, covered, "key {i}");
        }
    }
}
