//! The most requested keys, in bounded memory: the Space-Saving algorithm
//! (Metwally et al.). `capacity` counters; a key not tracked takes over the
//! smallest counter and inherits its count as its error bound, so every key
//! requested more than `total / capacity` times is guaranteed to be listed.
//! Counts are halved every decay period, so the list shows what is hot now.
//! Pure: no clock (the caller decays).

use std::collections::HashMap;

/// One tracked key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HotKey {
    pub(crate) key: Vec<u8>,
    /// Requests counted (an overestimate by at most `error`).
    pub(crate) count: u64,
    /// How much of `count` may belong to keys it replaced.
    pub(crate) error: u64,
}

/// The sketch.
#[derive(Debug)]
pub(crate) struct HotKeys {
    entries: Vec<HotKey>,
    index: HashMap<Vec<u8>, usize>,
    capacity: usize,
}

impl HotKeys {
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a sketch needs at least one counter");
        Self {
            entries: Vec::with_capacity(capacity),
            index: HashMap::with_capacity(capacity),
            capacity,
        }
    }

    /// Counts one request for `key`.
    pub(crate) fn record(&mut self, key: &[u8]) {
        if let Some(&i) = self.index.get(key) {
            self.entries[i].count += 1;
            return;
        }
        if self.entries.len() < self.capacity {
            self.index.insert(key.to_vec(), self.entries.len());
            self.entries.push(HotKey {
                key: key.to_vec(),
                count: 1,
                error: 0,
            });
            return;
        }
        let (i, min) = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.count)
            .map(|(i, e)| (i, e.count))
            .expect("capacity > 0");
        let old = std::mem::replace(
            &mut self.entries[i],
            HotKey {
                key: key.to_vec(),
                count: min + 1,
                error: min,
            },
        );
        self.index.remove(&old.key);
        self.index.insert(key.to_vec(), i);
    }

    /// Halves every count (and error), dropping keys that reach zero.
    pub(crate) fn decay(&mut self) {
        for e in &mut self.entries {
            e.count /= 2;
            e.error /= 2;
        }
        self.entries.retain(|e| e.count > 0);
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.clone(), i))
            .collect();
    }

    /// The `n` most requested keys, most first.
    pub(crate) fn top(&self, n: usize) -> Vec<HotKey> {
        let mut all = self.entries.clone();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_hitters_are_found_in_bounded_memory() {
        // 2,300 requests over 32 counters: every key above 2300/32 = 72
        // requests is guaranteed to be listed.
        let mut h = HotKeys::new(32);
        // 2000 distinct cold keys, and two keys with 200 and 100 requests.
        for i in 0..2000u32 {
            h.record(format!("cold:{i}").as_bytes());
            if i % 10 == 0 {
                h.record(b"hot");
            }
            if i % 20 == 0 {
                h.record(b"warm");
            }
        }
        assert!(h.entries.len() <= 32);
        let top = h.top(2);
        assert_eq!(top[0].key, b"hot");
        assert_eq!(top[1].key, b"warm");
        // The count never underestimates.
        assert!(top[0].count >= 200);
    }

    #[test]
    fn decay_forgets_what_cooled_down() {
        let mut h = HotKeys::new(4);
        h.record(b"once");
        for _ in 0..8 {
            h.record(b"often");
        }
        h.decay();
        assert_eq!(h.top(4).len(), 1, "a count of 1 halves to 0 and is dropped");
        assert_eq!(h.top(1)[0].count, 4);
        h.record(b"new");
        assert_eq!(h.top(4).len(), 2);
    }
}
