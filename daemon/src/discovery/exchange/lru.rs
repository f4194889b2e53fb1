//! A map with a fixed capacity that forgets its least recently used entry when full: every table
//! the exchange keeps about addresses or keys it hears from (rate-limiter buckets, control
//! endpoints, recent contacts) is one of these, so no sender can make it grow. Pure.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A least-recently-used map holding at most `cap` entries. `get_mut` and `insert` count as
/// uses; `peek` does not.
#[derive(Debug, Clone)]
pub struct LruMap<K, V> {
    cap: usize,
    /// Key → (value, its last use).
    entries: HashMap<K, (V, u64)>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, K>,
    /// The next use's number.
    clock: u64,
}

impl<K: Hash + Eq + Clone, V> LruMap<K, V> {
    /// An empty map for at most `cap` entries (at least one).
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The value of `key`, without counting a use.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// The value of `key`, counting a use.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let now = self.tick();
        let (value, used) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = now;
        self.order.insert(now, key.clone());
        Some(value)
    }

    /// Sets `key` to `value` (a use); when a new key finds the map full, the least recently used
    /// entry goes first and is returned.
    pub fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        let now = self.tick();
        if let Some((old, used)) = self.entries.get_mut(&key) {
            *old = value;
            self.order.remove(used);
            *used = now;
            self.order.insert(now, key);
            return None;
        }
        let evicted = if self.entries.len() >= self.cap {
            self.pop_oldest()
        } else {
            None
        };
        self.order.insert(now, key.clone());
        self.entries.insert(key, (value, now));
        evicted
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let (value, used) = self.entries.remove(key)?;
        self.order.remove(&used);
        Some(value)
    }

    /// Removes and returns the least recently used entry.
    pub fn pop_oldest(&mut self) -> Option<(K, V)> {
        let (_, key) = self.order.pop_first()?;
        let (value, _) = self.entries.remove(&key)?;
        Some((key, value))
    }

    /// Keeps only the entries for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        let order = &mut self.order;
        self.entries.retain(|k, (v, used)| {
            let kept = keep(k, v);
            if !kept {
                order.remove(used);
            }
            kept
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let mut m = LruMap::new(3);
        assert_eq!(m.insert("a", 1), None);
        assert_eq!(m.insert("b", 2), None);
        assert_eq!(m.insert("c", 3), None);
        // A read is a use: "a" is now the newest, "b" the oldest.
        assert_eq!(m.get_mut(&"a"), Some(&mut 1));
        assert_eq!(m.insert("d", 4), Some(("b", 2)));
        // A peek is not a use: "c" stays the oldest.
        assert_eq!(m.peek(&"c"), Some(&3));
        assert_eq!(m.insert("e", 5), Some(("c", 3)));
        // Updating a key that exists never evicts.
        assert_eq!(m.insert("a", 10), None);
        assert_eq!(m.len(), 3);
        assert_eq!(m.remove(&"d"), Some(4));
        assert_eq!(m.pop_oldest(), Some(("e", 5)));
        m.retain(|_, v| *v != 10);
        assert!(m.is_empty());
        assert_eq!(m.pop_oldest(), None);
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        let mut m = LruMap::new(100);
        for i in 0..10_000u32 {
            m.insert(i, i);
            assert!(m.len() <= 100);
        }
        assert_eq!(m.peek(&9_999), Some(&9_999));
        assert_eq!(m.peek(&9_899), None);
        assert_eq!(m.order.len(), m.entries.len());
    }
}
