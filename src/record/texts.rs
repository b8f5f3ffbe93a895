//! The holders' command lines a load or a replay reads ([`Texts`]): one
//! shared copy of each, and the stored texts that version-5 references
//! name, with the references counted.

use std::sync::Arc;

/// The holders' command lines read so far, one copy of each: what a load
/// or a replay passes to every row it decodes.
///
/// The tasks of one agent carry the same two command lines, and live they
/// share one copy. Decoded each into its own, the copies that
/// `Tasks::load` then folded into one were freed between rows that
/// stayed: 100k tasks restarted at 63.8 MiB of RSS against 56 MiB live
/// (`cargo bench --bench latency -- --scale 100000`), the holes never
/// handed back. Shared as they are read, no copy is made.
///
/// A load also puts here the texts that version-5 references name
/// ([`Texts::store`]): the `texts` table's, and each chunk's under a
/// namespace of its own ([`Texts::set_namespace`]); and it counts the
/// references to the `texts` table's ([`Texts::count_resolved`],
/// [`Texts::count_reference`]), so that its counts can be checked.
#[derive(Debug, Default)]
pub struct Texts {
    read: std::collections::HashSet<Arc<str>>,
    stored: std::collections::HashMap<(u32, u64), Stored>,
    /// See [`Texts::set_namespace`].
    namespace: u32,
    /// Keys resolved since [`Texts::count_resolved`] last counted them:
    /// the references of the row being decoded.
    resolved: Vec<u64>,
    /// Keys of the rows that decoded whose text is not stored.
    missing: Vec<u64>,
    /// Keys resolved since the last count that were not stored.
    unresolved: Vec<u64>,
}

/// A row of the `texts` table as loaded, and the references to it read.
#[derive(Debug)]
struct Stored {
    text: Arc<str>,
    count: u64,
    used: u64,
}

impl Texts {
    /// The copy of `text` already read, or a new one, kept.
    pub fn share(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.read.get(text) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(text);
        self.read.insert(Arc::clone(&shared));
        shared
    }

    /// Makes `text`, stored under `key` with `count` references, one that
    /// references resolve to.
    pub fn store(&mut self, key: u64, text: &str, count: u64) {
        let text = self.share(text);
        self.stored.insert(
            (self.namespace, key),
            Stored {
                text,
                count,
                used: 0,
            },
        );
    }

    /// Where the next texts stored and references resolved belong: 0 (the
    /// default) for the `texts` table, another number for the texts of one
    /// chunk of the task tables, whose rows resolve against their own.
    pub fn set_namespace(&mut self, namespace: u32) {
        self.namespace = namespace;
    }

    /// Starts the references of the next row to decode.
    pub(super) fn begin_row(&mut self) {
        self.resolved.clear();
        self.unresolved.clear();
    }

    /// The stored text under `key`; the key is remembered for
    /// [`count_resolved`](Self::count_resolved), stored or not.
    pub(super) fn stored(&mut self, key: u64) -> Option<Arc<str>> {
        match self.stored.get(&(self.namespace, key)) {
            Some(stored) => {
                self.resolved.push(key);
                Some(Arc::clone(&stored.text))
            }
            None => {
                self.unresolved.push(key);
                None
            }
        }
    }

    /// The references of the rows counted so far whose text is not stored
    /// (or did not pass its checks): their tasks were decoded without it.
    pub fn missing(&self) -> &[u64] {
        &self.missing
    }

    /// Counts the references resolved since the last call: those of a row
    /// that decoded. A row that did not has its references counted from
    /// its bytes instead ([`references`](super::references), [`count_reference`](Self::count_reference)).
    pub fn count_resolved(&mut self) {
        for key in std::mem::take(&mut self.resolved) {
            self.count_reference(key);
        }
        self.missing.append(&mut self.unresolved);
    }

    /// Counts one reference to `key` (a stored text or not).
    pub fn count_reference(&mut self, key: u64) {
        if let Some(stored) = self.stored.get_mut(&(self.namespace, key)) {
            stored.used += 1;
        }
    }

    /// The `texts` table's texts whose count is not the number of
    /// references read: each key, its text and the references read (zero:
    /// none refers to it any more).
    pub fn miscounted(&self) -> impl Iterator<Item = (u64, &str, u64)> {
        self.stored
            .iter()
            .filter(|((namespace, _), stored)| *namespace == 0 && stored.count != stored.used)
            .map(|(&(_, key), stored)| (key, &*stored.text, stored.used))
    }
}
