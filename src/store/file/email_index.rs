//! Lower-cased email → user id, in 24 bytes per user instead of ~70.
//!
//! A `HashMap<String, UserId>` keeps a second copy of every email (the user record has
//! one) plus a 24-byte key in a table that is up to half empty: about 100 MB at a
//! million users. Here the table holds only a 64-bit keyed hash of the email and the id;
//! a hit is confirmed against the user record itself. The hash is SipHash under this
//! process's random key, so nobody can aim emails at one slot; two emails that do share a
//! slot (about one chance in 10^7 at a million users) keep working through a small map
//! of full emails on the side.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;

use crate::domain::{User, UserId};

/// The table's own hasher: its keys are already uniform 64-bit hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug, Default)]
pub struct EmailIndex<S = RandomState> {
    hash: S,
    slots: HashMap<u64, UserId, BuildHasherDefault<PassThrough>>,
    /// Emails whose slot holds another email.
    collided: HashMap<Box<str>, UserId>,
}

impl<S: BuildHasher> EmailIndex<S> {
    fn slot(&self, key: &str) -> u64 {
        self.hash.hash_one(key)
    }

    /// The user whose email key (`Email::key`) is `key`.
    pub fn get(&self, key: &str, users: &HashMap<UserId, Arc<User>>) -> Option<UserId> {
        let holder = self.slots.get(&self.slot(key));
        match holder {
            Some(id) if users.get(id).is_some_and(|u| u.email.key() == key) => Some(*id),
            _ => self.collided.get(key).copied(),
        }
    }

    /// Indexes `id` under `key`; `users` must already hold the user (to settle collisions).
    pub fn insert(&mut self, key: &str, id: UserId, users: &HashMap<UserId, Arc<User>>) {
        let slot = self.slot(key);
        match self.slots.get(&slot) {
            Some(holder)
                if *holder != id && users.get(holder).is_some_and(|u| u.email.key() != key) =>
            {
                self.collided.insert(key.into(), id);
            }
            _ => {
                self.slots.insert(slot, id);
            }
        }
    }

    pub fn remove(&mut self, key: &str, id: UserId) {
        let slot = self.slot(key);
        if self.slots.get(&slot) == Some(&id) {
            self.slots.remove(&slot);
        }
        // Both: once its slot was freed, an email may have been indexed again there.
        if self.collided.get(key) == Some(&id) {
            self.collided.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Email, Role};

    /// Every email in one slot: the worst case must still be exact.
    #[derive(Default)]
    struct Constant;

    impl Hasher for Constant {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _: &[u8]) {}
    }

    fn user(email: &str) -> Arc<User> {
        Arc::new(User::new(
            Email::parse(email).unwrap(),
            "hash".into(),
            Role::User,
            None,
            None,
        ))
    }

    fn exercise<S: BuildHasher + Default>() {
        let mut index = EmailIndex::<S>::default();
        let mut users = HashMap::new();
        let all: Vec<_> = ["a@example.com", "B@example.com", "c@example.com"]
            .into_iter()
            .map(user)
            .collect();
        for u in &all {
            users.insert(u.id, Arc::clone(u));
            index.insert(&u.email.key(), u.id, &users);
        }
        for u in &all {
            assert_eq!(index.get(&u.email.key(), &users), Some(u.id));
        }
        assert_eq!(index.get("b@example.com", &users), Some(all[1].id));
        assert_eq!(index.get("d@example.com", &users), None);
        // Removing the slot's holder leaves the others findable, and the reverse.
        index.remove("a@example.com", all[0].id);
        users.remove(&all[0].id);
        assert_eq!(index.get("a@example.com", &users), None);
        assert_eq!(index.get("c@example.com", &users), Some(all[2].id));
        index.remove("c@example.com", all[2].id);
        users.remove(&all[2].id);
        assert_eq!(index.get("b@example.com", &users), Some(all[1].id));
        // Removing with the wrong id changes nothing.
        index.remove("b@example.com", all[0].id);
        assert_eq!(index.get("b@example.com", &users), Some(all[1].id));
        // Re-indexing the same user under the same email is idempotent.
        index.insert("b@example.com", all[1].id, &users);
        assert_eq!(index.get("b@example.com", &users), Some(all[1].id));
        index.remove("b@example.com", all[1].id);
        assert_eq!(index.get("b@example.com", &users), None);
    }

    #[test]
    fn finds_every_email_with_real_hashes() {
        exercise::<RandomState>();
    }

    #[test]
    fn finds_every_email_when_all_collide() {
        exercise::<BuildHasherDefault<Constant>>();
    }
}
