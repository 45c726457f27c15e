//! A sorted set that can also be read by position, for `GET /users?offset=&limit=`.
//!
//! A `BTreeSet` finds the n-th entry only by walking n entries, so the last page of a
//! million users cost a million steps. Here the entries sit in sorted blocks of at most
//! `2 * BLOCK`: finding position n walks the block lengths (one counter per ~1,000
//! entries: about a thousand additions at a million users), then the page is read in
//! place. Inserts and removals move at most one block's entries.

/// Entries per block after a split; blocks hold between 1 and `2 * BLOCK` entries.
const BLOCK: usize = 1024;

#[derive(Debug)]
pub struct Ordered<K> {
    blocks: Vec<Vec<K>>,
}

impl<K> Default for Ordered<K> {
    fn default() -> Self {
        Self { blocks: Vec::new() }
    }
}

impl<K: Ord + Copy> Ordered<K> {
    /// The block that holds `key`, or would: the first whose last entry is not below it
    /// (the last block for keys above everything).
    fn block_of(&self, key: &K) -> usize {
        let i = self
            .blocks
            .partition_point(|b| b.last().is_some_and(|last| last < key));
        i.min(self.blocks.len().saturating_sub(1))
    }

    /// Adds `key`; false if it was already there.
    pub fn insert(&mut self, key: K) -> bool {
        if self.blocks.is_empty() {
            self.blocks.push(Vec::with_capacity(BLOCK));
        }
        // The common case (new users are the newest; a log is replayed in order): append,
        // filling blocks to exactly BLOCK so a million entries waste no capacity.
        let last = self.blocks.len() - 1;
        if self.blocks[last].last().is_some_and(|l| *l < key) {
            if self.blocks[last].len() >= BLOCK {
                self.blocks.push(Vec::with_capacity(BLOCK));
            }
            self.blocks.last_mut().expect("just ensured").push(key);
            return true;
        }
        let b = self.block_of(&key);
        let block = &mut self.blocks[b];
        let Err(at) = block.binary_search(&key) else {
            return false;
        };
        block.insert(at, key);
        if block.len() > 2 * BLOCK {
            let tail = block.split_off(BLOCK);
            block.shrink_to_fit();
            self.blocks.insert(b + 1, tail);
        }
        true
    }

    /// Removes `key`; false if it was not there.
    pub fn remove(&mut self, key: &K) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let b = self.block_of(key);
        let block = &mut self.blocks[b];
        let Ok(at) = block.binary_search(key) else {
            return false;
        };
        block.remove(at);
        if block.is_empty() {
            self.blocks.remove(b);
        }
        true
    }

    /// Up to `limit` entries from position `offset`, in order.
    pub fn page(&self, mut offset: usize, limit: usize) -> impl Iterator<Item = &K> {
        let mut first = self.blocks.len();
        for (i, block) in self.blocks.iter().enumerate() {
            if offset < block.len() {
                first = i;
                break;
            }
            offset -= block.len();
        }
        self.blocks[first..]
            .iter()
            .flatten()
            .skip(offset)
            .take(limit)
    }

    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.blocks.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Against a BTreeSet, through enough inserts and removals to split and empty blocks.
    #[test]
    fn behaves_like_a_sorted_set_read_by_position() {
        let mut ordered = Ordered::default();
        let mut model = BTreeSet::new();
        // A cheap deterministic shuffle: mostly increasing keys (ids and times grow),
        // with some out of order, like imported users.
        let mut x: u64 = 7;
        for i in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = if x.is_multiple_of(5) {
                x % 30_000
            } else {
                i * 2
            };
            assert_eq!(ordered.insert(key), model.insert(key));
        }
        for i in 0..20_000u64 {
            if i.is_multiple_of(3) {
                assert_eq!(ordered.remove(&(i * 2)), model.remove(&(i * 2)));
            }
        }
        assert!(!ordered.remove(&u64::MAX));
        assert_eq!(ordered.iter().count(), model.len());
        assert!(ordered.iter().eq(model.iter()));
        for (offset, limit) in [
            (0, 10),
            (1, 1000),
            (2047, 3),
            (5000, 100),
            (model.len() - 1, 5),
        ] {
            let got: Vec<_> = ordered.page(offset, limit).collect();
            let want: Vec<_> = model.iter().skip(offset).take(limit).collect();
            assert_eq!(got, want, "offset {offset} limit {limit}");
        }
        assert_eq!(ordered.page(model.len(), 10).count(), 0);
        assert_eq!(ordered.page(usize::MAX, 10).count(), 0);
        for key in model.clone() {
            assert!(ordered.remove(&key));
        }
        assert_eq!(ordered.iter().count(), 0);
        assert_eq!(ordered.page(0, 10).count(), 0);
        assert!(ordered.insert(3));
        assert_eq!(ordered.page(0, 10).copied().collect::<Vec<_>>(), vec![3]);
    }
}
