//! [`Cache`]: the rows of one table a batch works on, loaded once, changed in memory and
//! written back in one statement per table.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

/// Rows keyed by id: loaded and present, loaded and absent, or changed since the last
/// write. A `complete` cache holds every row there is (a replay's tables start empty), so
/// an unknown key is absent without asking the database, until it is cleared.
#[derive(Debug)]
pub(crate) struct Cache<V> {
    slots: HashMap<Uuid, Slot<V>>,
    complete: bool,
}

#[derive(Debug)]
struct Slot<V> {
    value: Option<V>,
    dirty: bool,
}

impl<V> Cache<V> {
    pub(crate) fn new(complete: bool) -> Self {
        Self {
            slots: HashMap::new(),
            complete,
        }
    }

    /// The keys to load before `keys` can be read, each once.
    pub(crate) fn missing(&self, keys: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
        if self.complete {
            return Vec::new();
        }
        let mut seen = HashSet::new();
        keys.into_iter()
            .filter(|key| !self.slots.contains_key(key) && seen.insert(*key))
            .collect()
    }

    /// Records what loading `keys` found: `rows`, and absence for every other key.
    pub(crate) fn fill(&mut self, keys: &[Uuid], rows: impl IntoIterator<Item = (Uuid, V)>) {
        for (key, value) in rows {
            let value = Some(value);
            self.slots.insert(
                key,
                Slot {
                    value,
                    dirty: false,
                },
            );
        }
        for key in keys {
            self.slots.entry(*key).or_insert(Slot {
                value: None,
                dirty: false,
            });
        }
    }

    pub(crate) fn get(&self, key: &Uuid) -> Option<&V> {
        self.slots.get(key).and_then(|slot| slot.value.as_ref())
    }

    pub(crate) fn put(&mut self, key: Uuid, value: V) {
        self.slots.insert(
            key,
            Slot {
                value: Some(value),
                dirty: true,
            },
        );
    }

    pub(crate) fn remove(&mut self, key: Uuid) {
        self.slots.insert(
            key,
            Slot {
                value: None,
                dirty: true,
            },
        );
    }

    /// Rows changed since [`Cache::mark_clean`], and keys deleted since then, each sorted
    /// by key so that writes lock rows in one order.
    pub(crate) fn changes(&self) -> (Vec<(Uuid, &V)>, Vec<Uuid>) {
        let mut written = Vec::new();
        let mut deleted = Vec::new();
        for (key, slot) in &self.slots {
            match (&slot.value, slot.dirty) {
                (Some(value), true) => written.push((*key, value)),
                (None, true) => deleted.push(*key),
                (_, false) => {}
            }
        }
        written.sort_unstable_by_key(|(key, _)| *key);
        deleted.sort_unstable();
        (written, deleted)
    }

    pub(crate) fn mark_clean(&mut self) {
        for slot in self.slots.values_mut() {
            slot.dirty = false;
        }
    }

    /// Forgets every row (write them first); they are loaded again when needed.
    pub(crate) fn clear(&mut self) {
        self.slots.clear();
        self.complete = false;
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn loaded_keys_are_not_missing_whether_found_or_not() {
        let mut cache = Cache::new(false);
        assert_eq!(cache.missing([id(1), id(2), id(1)]), [id(1), id(2)]);
        cache.fill(&[id(1), id(2)], [(id(1), "one")]);
        assert_eq!(cache.missing([id(1), id(2), id(3)]), [id(3)]);
        assert_eq!(cache.get(&id(1)), Some(&"one"));
        assert_eq!(cache.get(&id(2)), None);
    }

    #[test]
    fn only_changed_rows_are_written_and_deletions_are_reported() {
        let mut cache = Cache::new(false);
        cache.fill(&[id(1), id(2)], [(id(1), 1), (id(2), 2)]);
        cache.put(id(3), 3);
        cache.put(id(1), 10);
        cache.remove(id(2));
        let (written, deleted) = cache.changes();
        assert_eq!(written, [(id(1), &10), (id(3), &3)]);
        assert_eq!(deleted, [id(2)]);
        cache.mark_clean();
        assert_eq!(cache.changes(), (vec![], vec![]));
    }

    #[test]
    fn a_complete_cache_asks_for_no_rows_until_it_is_cleared() {
        let mut cache = Cache::new(true);
        assert!(cache.missing([id(1)]).is_empty());
        cache.put(id(1), 1);
        cache.clear();
        assert_eq!(cache.get(&id(1)), None);
        assert_eq!(cache.missing([id(1)]), [id(1)]);
    }
}
