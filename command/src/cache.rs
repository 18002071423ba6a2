//! [`AggregateCache`]: recently used aggregates, kept after the writes that made them so
//! the next command on a stream needs no read. An entry is only ever a committed state: it
//! is put after its write committed, and a write decided on a stale entry fails its version
//! check in the store and reloads.

use std::any::Any;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use orderflow_store::Loaded;
use uuid::Uuid;

/// Locks are per shard so concurrent commands on different streams rarely wait.
const SHARDS: usize = 16;

#[derive(Clone)]
struct Entry {
    stream_type: &'static str,
    version: i32,
    loaded: Arc<dyn Any + Send + Sync>,
}

/// A bounded, least-recently-used map from stream id to its folded aggregate.
pub struct AggregateCache {
    shards: Vec<Mutex<LruCache<Uuid, Entry>>>,
}

impl std::fmt::Debug for AggregateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateCache")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// What the cache holds for a stream.
pub enum Cached<A> {
    Hit(Arc<Loaded<A>>),
    /// The stream holds another type of aggregate.
    OtherType(&'static str),
    Miss,
}

impl AggregateCache {
    /// Room for about `capacity` aggregates; 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS);
        let shards = match NonZeroUsize::new(per_shard) {
            Some(per_shard) => (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            None => Vec::new(),
        };
        Self { shards }
    }

    fn shard(&self, id: Uuid) -> Option<&Mutex<LruCache<Uuid, Entry>>> {
        if self.shards.is_empty() {
            return None;
        }
        let low = id.as_u64_pair().1;
        self.shards.get(low as usize % self.shards.len())
    }

    pub fn get<A>(&self, stream_type: &'static str, id: Uuid) -> Cached<A>
    where
        A: Send + Sync + 'static,
    {
        let Some(shard) = self.shard(id) else {
            return Cached::Miss;
        };
        let entry = shard.lock().expect("cache lock").get(&id).cloned();
        match entry {
            None => Cached::Miss,
            Some(entry) if entry.stream_type != stream_type => Cached::OtherType(entry.stream_type),
            Some(entry) => entry
                .loaded
                .downcast::<Loaded<A>>()
                .map_or(Cached::Miss, Cached::Hit),
        }
    }

    /// Keep `loaded` unless the cache already holds a later version of the stream.
    pub fn put<A>(&self, stream_type: &'static str, id: Uuid, loaded: Arc<Loaded<A>>)
    where
        A: Send + Sync + 'static,
    {
        if loaded.version == 0 {
            return;
        }
        let Some(shard) = self.shard(id) else {
            return;
        };
        let mut shard = shard.lock().expect("cache lock");
        if shard
            .peek(&id)
            .is_some_and(|held| held.version > loaded.version)
        {
            return;
        }
        let version = loaded.version;
        shard.put(
            id,
            Entry {
                stream_type,
                version,
                loaded,
            },
        );
    }

    /// Forget a stream (a write found it had moved on).
    pub fn forget(&self, id: Uuid) {
        if let Some(shard) = self.shard(id) {
            shard.lock().expect("cache lock").pop(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(version: i32) -> Arc<Loaded<String>> {
        Arc::new(Loaded {
            state: format!("v{version}"),
            version,
            last_position: Some(i64::from(version)),
            folded: 0,
        })
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let cache = AggregateCache::new(100);
        let id = Uuid::now_v7();
        cache.put("order", id, loaded(3));
        cache.put("order", id, loaded(2));
        let Cached::Hit(hit) = cache.get::<String>("order", id) else {
            panic!("cached")
        };
        assert_eq!(hit.version, 3);
        cache.forget(id);
        assert!(matches!(cache.get::<String>("order", id), Cached::Miss));
    }

    #[test]
    fn a_stream_of_another_type_is_reported_as_such() {
        let cache = AggregateCache::new(100);
        let id = Uuid::now_v7();
        cache.put("user", id, loaded(1));
        assert!(matches!(
            cache.get::<String>("order", id),
            Cached::OtherType("user")
        ));
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let cache = AggregateCache::new(0);
        let id = Uuid::now_v7();
        cache.put("order", id, loaded(1));
        assert!(matches!(cache.get::<String>("order", id), Cached::Miss));
    }

    #[test]
    fn the_least_recently_used_stream_goes_first() {
        let cache = AggregateCache::new(SHARDS);
        // Two ids in the same shard (one entry per shard).
        let first = Uuid::from_u64_pair(1, SHARDS as u64);
        let second = Uuid::from_u64_pair(2, 2 * SHARDS as u64);
        cache.put("order", first, loaded(1));
        cache.put("order", second, loaded(1));
        assert!(matches!(cache.get::<String>("order", first), Cached::Miss));
        assert!(matches!(
            cache.get::<String>("order", second),
            Cached::Hit(_)
        ));
    }
}
