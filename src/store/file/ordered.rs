//! A sorted set that can also be read by position, for `GET /users?offset=&limit=`.
//!
//! A `BTreeSet` finds the n-th entry only by walking n entries, so the last page of a
//! million users cost a million steps. Here the entries sit in sorted blocks of at most
//! `2 * BLOCK`: finding position n walks the block lengths (one counter per ~1,000
//! entries: about a thousand additions at a million users), then the page is read in
//! place. A page that starts after a key (`GET /users?after=`) is a seek instead: a binary
//! search over the blocks' last entries, then one within the block, O(log n + page).
//! Inserts and removals move at most one block's entries.

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

    /// Up to `limit` entries above `key`, in order, whether or not `key` is here: a binary
    /// search over the blocks, then within one, O(log n + limit) comparisons.
    pub fn after(&self, key: &K, limit: usize) -> impl Iterator<Item = &K> {
        // Blocks are never empty, and sorted: the first block with an entry above `key`.
        let b = self
            .blocks
            .partition_point(|block| block.last().is_some_and(|last| last <= key));
        let (head, rest): (&[K], &[Vec<K>]) = match self.blocks.get(b) {
            Some(block) => (
                &block[block.partition_point(|k| k <= key)..],
                &self.blocks[b + 1..],
            ),
            None => (&[], &[]),
        };
        head.iter().chain(rest.iter().flatten()).take(limit)
    }

    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.blocks.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A cheap deterministic shuffle (seeded): `n` keys `2 * i`, mostly increasing (ids
    /// and times grow), but about one in `one_in` is `out_of_order(random)` instead, like
    /// imported users.
    fn shuffled(
        seed: u64,
        n: u64,
        one_in: u64,
        out_of_order: impl Fn(u64) -> u64,
    ) -> impl Iterator<Item = u64> {
        let mut x = seed;
        (0..n).map(move |i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if x.is_multiple_of(one_in) {
                out_of_order(x)
            } else {
                i * 2
            }
        })
    }

    /// Against a BTreeSet, through enough inserts and removals to split and empty blocks.
    #[test]
    fn behaves_like_a_sorted_set_read_by_position() {
        let mut ordered = Ordered::default();
        let mut model = BTreeSet::new();
        for key in shuffled(7, 20_000, 5, |x| x % 30_000) {
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

    /// A key that counts how often it is compared.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    struct Counted(u64);

    thread_local! {
        static COMPARISONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    impl Ord for Counted {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            COMPARISONS.with(|c| c.set(c.get() + 1));
            self.0.cmp(&other.0)
        }
    }

    impl PartialOrd for Counted {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }

    /// The seek of `after` finds the same entries as a sorted set's range above the key,
    /// for keys present, removed, between entries, at block edges and beyond either end,
    /// and does so by binary search: the comparisons grow with log n, not with the
    /// position (a walk to the 190,000th of 200,000 entries would compare 190,000 times).
    #[test]
    fn after_seeks_to_the_first_entry_above_a_key() {
        use std::ops::Bound::{Excluded, Unbounded};
        let mut ordered = Ordered::default();
        let mut model = BTreeSet::new();
        // Even keys, so odd ones fall between entries; a shuffled share, so blocks split.
        for key in shuffled(11, 200_000, 7, |x| (x % 200_000) * 2) {
            ordered.insert(key);
            model.insert(key);
        }
        // Deleted keys, as a user on a page boundary may be by the next request.
        for key in (0..400_000u64).step_by(34) {
            assert_eq!(ordered.remove(&key), model.remove(&key));
        }
        let edges: Vec<u64> = ordered.blocks.iter().map(|b| *b.last().unwrap()).collect();
        let mut keys = vec![
            0,
            1,
            2,
            34,
            35,
            2047,
            2048,
            199_999,
            380_000,
            399_998,
            u64::MAX,
        ];
        keys.extend(edges.iter().take(50).flat_map(|&e| [e - 1, e, e + 1]));
        for key in keys {
            for limit in [0, 1, 3, 100, 5000] {
                let got: Vec<_> = ordered.after(&key, limit).collect();
                let range = model.range((Excluded(key), Unbounded));
                let want: Vec<_> = range.take(limit).collect();
                assert_eq!(got, want, "after {key} limit {limit}");
            }
        }
        assert_eq!(Ordered::<u64>::default().after(&5, 10).count(), 0);

        let mut counted = Ordered::default();
        for key in 0..200_000u64 {
            counted.insert(Counted(key));
        }
        COMPARISONS.with(|c| c.set(0));
        let page: Vec<_> = counted.after(&Counted(190_000), 10).collect();
        assert_eq!(page.first(), Some(&&Counted(190_001)));
        assert_eq!(page.len(), 10);
        let comparisons = COMPARISONS.with(|c| c.get());
        // log2(200 blocks) + log2(1024 entries) is about 18.
        assert!(comparisons <= 40, "{comparisons} comparisons");
    }
}
