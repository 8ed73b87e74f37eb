//! The key-cache stage's store: a concurrent map with per-entry expiry and a size bound.
//!
//! Reads take one shard's read lock (dashmap) and never write shared state except a relaxed
//! "last used" stamp, so concurrent warm lookups do not serialise. When the map grows past its
//! capacity, the least recently used tenth is evicted in one pass (amortised O(1) per insert).

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;

struct Entry<V> {
    value: V,
    expires: Instant,
    last_used: AtomicU64,
}

/// A bounded map from keys to values that expire.
pub struct ExpiringCache<K, V> {
    map: DashMap<K, Entry<V>>,
    capacity: usize,
    clock: AtomicU64,
}

impl<K: Eq + Hash + Clone, V: Clone> ExpiringCache<K, V> {
    /// A cache holding at most `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            map: DashMap::new(),
            capacity: capacity.max(1),
            clock: AtomicU64::new(0),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The value of `key` if present and not expired at `now`.
    pub fn get<Q>(&self, key: &Q, now: Instant) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let e = self.map.get(key)?;
        if e.expires <= now {
            return None;
        }
        // A relaxed load of the clock: a stale stamp only makes eviction slightly less exact.
        let t = self.clock.load(Ordering::Relaxed);
        if e.last_used.load(Ordering::Relaxed) != t {
            e.last_used.store(t, Ordering::Relaxed);
        }
        Some(e.value.clone())
    }

    /// Insert or replace `key`, valid until `expires`.
    pub fn insert(&self, key: K, value: V, expires: Instant) {
        let t = self.tick();
        self.map.insert(
            key,
            Entry {
                value,
                expires,
                last_used: AtomicU64::new(t),
            },
        );
        if self.map.len() > self.capacity {
            self.evict(Instant::now());
        }
    }

    /// Remove `key`; true if it was there.
    pub fn remove<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(key).is_some()
    }

    /// Remove every entry for which `f` is true.
    pub fn remove_if(&self, f: impl Fn(&K) -> bool) {
        self.map.retain(|k, _| !f(k));
    }

    /// Remove everything.
    pub fn clear(&self) {
        self.map.clear();
    }

    /// Entries held (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    // Drop expired entries, then the least recently used until 90 % of capacity is left.
    fn evict(&self, now: Instant) {
        self.map.retain(|_, e| e.expires > now);
        let target = self.capacity - self.capacity / 10;
        if self.map.len() <= target {
            return;
        }
        let mut stamps: Vec<u64> = self
            .map
            .iter()
            .map(|e| e.last_used.load(Ordering::Relaxed))
            .collect();
        let drop = stamps.len() - target;
        let (_, cut, _) = stamps.select_nth_unstable(drop - 1);
        let cut = *cut;
        let mut left = drop;
        self.map.retain(|_, e| {
            if left > 0 && e.last_used.load(Ordering::Relaxed) <= cut {
                left -= 1;
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn expiry_and_replacement() {
        let c = ExpiringCache::new(10);
        let now = Instant::now();
        c.insert("a".to_string(), 1, now + Duration::from_secs(5));
        assert_eq!(c.get("a", now), Some(1));
        assert_eq!(c.get("a", now + Duration::from_secs(6)), None);
        c.insert("a".to_string(), 2, now + Duration::from_secs(5));
        assert_eq!(c.get("a", now), Some(2));
        assert!(c.remove("a"));
        assert_eq!(c.get("a", now), None);
    }

    #[test]
    fn least_recently_used_go_first() {
        let c = ExpiringCache::new(100);
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..100 {
            c.insert(i, i, later);
        }
        // Touch the first half: the second half is now least recently used.
        for i in 0..50 {
            assert_eq!(c.get(&i, Instant::now()), Some(i));
        }
        c.insert(1000, 1000, later);
        assert!(c.len() <= 100);
        for i in 0..50 {
            assert_eq!(
                c.get(&i, Instant::now()),
                Some(i),
                "recently used {i} evicted"
            );
        }
        assert_eq!(c.get(&1000, Instant::now()), Some(1000));
        let survivors = (50..100)
            .filter(|i| c.get(i, Instant::now()).is_some())
            .count();
        assert!(survivors < 50, "nothing old was evicted");
    }

    #[test]
    fn never_grows_past_capacity() {
        let c = ExpiringCache::new(64);
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..10_000 {
            c.insert(i, i, later);
            assert!(c.len() <= 64);
        }
    }
}
