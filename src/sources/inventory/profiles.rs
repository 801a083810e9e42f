//! The (OS type, NodeMan status) pairs of an inventory, each held once.
//!
//! A million hosts carry a handful of distinct pairs, so a watched host keeps a 4-byte
//! index into the inventory's table of them instead of two shared pointers (16 bytes).

use std::{collections::hash_map::Entry, sync::Arc};

/// The strings a host shares with most others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Profile {
    pub os_type: Arc<str>,
    /// NodeMan's status string; empty for other inventory sources.
    pub nodeman_status: Arc<str>,
}

/// Builds the table while the inventory is built; the map is dropped with it, the
/// table (a `Vec` of a few entries) stays in the [`Inventory`](super::Inventory).
#[derive(Default)]
pub(super) struct Interner {
    table: Vec<Profile>,
    index: ahash::HashMap<Profile, u32>,
}

impl Interner {
    /// The profile's index in the table, or the profile back when the table already
    /// holds `u32::MAX` entries (it would take more than four billion hosts; the caller
    /// then keeps the profile with the host instead of failing).
    pub(super) fn intern(&mut self, p: Profile) -> Result<u32, Profile> {
        match self.index.entry(p) {
            // The caller's copies of the strings are dropped here: every host with this
            // pair points at the first one's.
            Entry::Occupied(e) => Ok(*e.get()),
            Entry::Vacant(e) => match u32::try_from(self.table.len()) {
                Ok(i) if i < u32::MAX => {
                    self.table.push(e.key().clone());
                    Ok(*e.insert(i))
                }
                _ => Err(e.into_key()),
            },
        }
    }

    pub(super) fn finish(self) -> Vec<Profile> {
        self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(os: &str, status: &str) -> Profile {
        Profile {
            os_type: os.into(),
            nodeman_status: status.into(),
        }
    }

    #[test]
    fn equal_pairs_get_one_entry() {
        let mut i = Interner::default();
        assert_eq!(i.intern(profile("LINUX", "RUNNING")), Ok(0));
        assert_eq!(i.intern(profile("WINDOWS", "RUNNING")), Ok(1));
        assert_eq!(i.intern(profile("LINUX", "RUNNING")), Ok(0));
        assert_eq!(i.intern(profile("LINUX", "")), Ok(2));
        let table = i.finish();
        assert_eq!(table.len(), 3);
        assert_eq!(&*table[1].os_type, "WINDOWS");
    }
}
