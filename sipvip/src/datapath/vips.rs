//! The VIP and member records as the datapath finds them by address: [`AddrTable`], a
//! record array and its index (see `sipvip_common::AddrSlot` for the layout and why a
//! change is atomic), or, in an older build's object that the bench drives beside this
//! one, a hash map.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::{Array, HashMap, MapData, MapError};
use sipvip_common::{
    fold6, index_slot, map_names, AddrSlot, Ipv6Be, MemberRecord, VipRecord, MEMBER_INDEX_SLOTS,
    VIP_INDEX_SLOTS, VIP_PROBES,
};

use super::{DatapathError, Result};

/// An address of either family, as the maps hold it.
pub trait Addr: Copy + PartialEq + Default + aya::Pod {
    /// The VIP and member maps' names (records, index), for errors.
    const VIP_MAPS: (&'static str, &'static str);
    const MEMBER_MAPS: (&'static str, &'static str);
    /// The word an index hashes.
    fn fold(&self) -> u32;
    /// The address as an operator writes it.
    fn show(&self) -> String;
}

impl Addr for u32 {
    const VIP_MAPS: (&'static str, &'static str) = (map_names::VIPS, map_names::VIP_INDEX);
    const MEMBER_MAPS: (&'static str, &'static str) = (map_names::MEMBERS, map_names::MEMBER_INDEX);
    fn fold(&self) -> u32 {
        *self
    }
    fn show(&self) -> String {
        Ipv4Addr::from(self.to_ne_bytes()).to_string()
    }
}

impl Addr for Ipv6Be {
    const VIP_MAPS: (&'static str, &'static str) = (map_names::VIPS6, map_names::VIP_INDEX6);
    const MEMBER_MAPS: (&'static str, &'static str) =
        (map_names::MEMBERS6, map_names::MEMBER_INDEX6);
    fn fold(&self) -> u32 {
        fold6(self)
    }
    fn show(&self) -> String {
        let mut o = [0u8; 16];
        for (i, w) in self.iter().enumerate() {
            o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
        Ipv6Addr::from(o).to_string()
    }
}

/// What a table holds: the record type, its maps and its index size.
pub trait Kind<A: Addr> {
    type Rec: Copy + aya::Pod;
    /// (records, index) map names.
    const MAPS: (&'static str, &'static str);
    const SLOTS: u32;
    /// What the records are, for errors ("VIP", "member").
    const WHAT: &'static str;
}

pub struct VipKind;
pub struct MemberKind;

impl<A: Addr> Kind<A> for VipKind
where
    VipRecord<A>: aya::Pod,
{
    type Rec = VipRecord<A>;
    const MAPS: (&'static str, &'static str) = A::VIP_MAPS;
    const SLOTS: u32 = VIP_INDEX_SLOTS;
    const WHAT: &'static str = "VIP";
}

impl<A: Addr> Kind<A> for MemberKind
where
    MemberRecord<A>: aya::Pod,
{
    type Rec = MemberRecord<A>;
    const MAPS: (&'static str, &'static str) = A::MEMBER_MAPS;
    const SLOTS: u32 = MEMBER_INDEX_SLOTS;
    const WHAT: &'static str = "member";
}

/// The records of one kind and family.
pub enum Records<A: Addr, K: Kind<A>>
where
    AddrSlot<A, K::Rec>: aya::Pod,
{
    Table(AddrTable<A, K>),
    /// An older build's object (`SV_VIPS_V2`, `SV_MEMBERS_V1`, and their IPv6 twins).
    Hash(HashMap<MapData, A, K::Rec>),
}

pub type Vips<A> = Records<A, VipKind>;
pub type Members<A> = Records<A, MemberKind>;

impl<A: Addr, K: Kind<A>> Records<A, K>
where
    AddrSlot<A, K::Rec>: aya::Pod,
{
    fn hash_err(source: MapError) -> DatapathError {
        DatapathError::Map {
            name: K::MAPS.0,
            source,
        }
    }

    /// The record of `addr`, if the datapath has one.
    pub fn get(&self, addr: &A) -> Result<Option<K::Rec>> {
        match self {
            Records::Table(t) => t.get(addr),
            Records::Hash(h) => match h.get(addr, 0) {
                Ok(r) => Ok(Some(r)),
                Err(MapError::KeyNotFound) => Ok(None),
                Err(e) => Err(Self::hash_err(e)),
            },
        }
    }

    /// Installs or replaces the record of `addr`.
    pub fn insert(&mut self, addr: A, rec: K::Rec) -> Result<()> {
        match self {
            Records::Table(t) => t.insert(addr, rec),
            Records::Hash(h) => h.insert(addr, rec, 0).map_err(Self::hash_err),
        }
    }

    /// Removes the record of `addr`; false when it had none.
    pub fn remove(&mut self, addr: &A) -> Result<bool> {
        match self {
            Records::Table(t) => t.remove(addr),
            Records::Hash(h) => match h.remove(addr) {
                Ok(()) => Ok(true),
                Err(MapError::KeyNotFound) => Ok(false),
                Err(e) => Err(Self::hash_err(e)),
            },
        }
    }
}

/// The record array and its index, with the index mirrored here (user space is its only
/// writer), so that a change costs two map writes and no reads.
pub struct AddrTable<A: Addr, K: Kind<A>>
where
    AddrSlot<A, K::Rec>: aya::Pod,
{
    index: Array<MapData, u32>,
    records: Array<MapData, AddrSlot<A, K::Rec>>,
    /// Per index slot: the record slot + 1 it names (0: empty) and that record's address.
    held: Vec<(u32, A)>,
    /// Where the search for a free record slot starts: slots are taken round-robin, so a
    /// record freed by a change is rewritten only after every other free slot was taken.
    next: u32,
}

impl<A: Addr, K: Kind<A>> AddrTable<A, K>
where
    AddrSlot<A, K::Rec>: aya::Pod,
{
    fn err(name: &'static str) -> impl Fn(MapError) -> DatapathError {
        move |source| DatapathError::Map { name, source }
    }

    /// The table over the two maps, reading what an earlier run left in them (adopted
    /// pins).
    pub fn open(
        index: Array<MapData, u32>,
        records: Array<MapData, AddrSlot<A, K::Rec>>,
    ) -> Result<Self> {
        let mut held = vec![(0, A::default()); K::SLOTS as usize];
        for (i, h) in held.iter_mut().enumerate() {
            let r = index.get(&(i as u32), 0).map_err(Self::err(K::MAPS.1))?;
            if r != 0 && r <= records.len() {
                let slot = records.get(&(r - 1), 0).map_err(Self::err(K::MAPS.0))?;
                *h = (r, slot.addr_be);
            }
        }
        Ok(AddrTable {
            index,
            records,
            held,
            next: 0,
        })
    }

    fn home(addr: &A) -> u32 {
        index_slot(addr.fold(), K::SLOTS)
    }

    /// The index slots `addr` may lie in.
    fn probes(addr: &A) -> impl Iterator<Item = usize> {
        let home = Self::home(addr);
        (0..VIP_PROBES).map(move |i| ((home + i) & (K::SLOTS - 1)) as usize)
    }

    /// The index slot that names `addr`'s record.
    fn find(&self, addr: &A) -> Option<usize> {
        Self::probes(addr).find(|&s| self.held[s].0 != 0 && self.held[s].1 == *addr)
    }

    pub fn get(&self, addr: &A) -> Result<Option<K::Rec>> {
        let Some(s) = self.find(addr) else {
            return Ok(None);
        };
        let slot = self
            .records
            .get(&(self.held[s].0 - 1), 0)
            .map_err(Self::err(K::MAPS.0))?;
        Ok(Some(slot.rec))
    }

    /// Writes the record into a free slot, then points the address's index entry at it.
    pub fn insert(&mut self, addr: A, rec: K::Rec) -> Result<()> {
        let invalid = |why: String| DatapathError::NoRoom {
            what: K::WHAT,
            addr: addr.show(),
            why,
        };
        let s = match self.find(&addr) {
            Some(s) => s,
            None => Self::probes(&addr)
                .find(|&s| self.held[s].0 == 0)
                .ok_or_else(|| {
                    invalid(format!(
                        "no room in the datapath's {} index: the {VIP_PROBES} slots from its \
                         home slot {} hold other {}s' addresses; choose another address",
                        K::WHAT,
                        Self::home(&addr),
                        K::WHAT
                    ))
                })?,
        };
        let n = self.records.len();
        let taken: std::collections::BTreeSet<u32> = self
            .held
            .iter()
            .filter(|h| h.0 != 0)
            .map(|h| h.0 - 1)
            .collect();
        let r = (0..n)
            .map(|i| (self.next + i) % n)
            .find(|r| !taken.contains(r))
            .ok_or_else(|| {
                invalid(format!(
                    "the datapath's {n} {} record slots are all in use",
                    K::WHAT
                ))
            })?;
        self.records
            .set(r, AddrSlot { addr_be: addr, rec }, 0)
            .map_err(Self::err(K::MAPS.0))?;
        self.index
            .set(s as u32, r + 1, 0)
            .map_err(Self::err(K::MAPS.1))?;
        self.held[s] = (r + 1, addr);
        self.next = (r + 1) % n;
        Ok(())
    }

    /// Empties the address's index entry (its record slot is then free); false when it had
    /// none.
    pub fn remove(&mut self, addr: &A) -> Result<bool> {
        let Some(s) = self.find(addr) else {
            return Ok(false);
        };
        self.index
            .set(s as u32, 0, 0)
            .map_err(Self::err(K::MAPS.1))?;
        self.held[s] = (0, A::default());
        Ok(true)
    }
}
