//! The VIP records as the datapath finds them by address: [`VipTable`], the record array
//! and its index (see `sipvip_common::VipSlot` for the layout and why a change is atomic),
//! or, in an older build's object that the bench drives beside this one, a hash map.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::{Array, HashMap, MapData, MapError};
use sipvip_common::{
    map_names, vip_index_slot, vip_index_slot6, Ipv6Be, VipRecord, VipSlot, VIP_INDEX_SLOTS,
    VIP_PROBES,
};

use super::{DatapathError, Result};

/// A VIP address of either family, as the maps hold it.
pub trait VipAddr: Copy + PartialEq + Default + aya::Pod {
    /// The record map's name, for errors.
    const RECORDS: &'static str;
    const INDEX: &'static str;
    /// Its home slot in the index.
    fn home(&self) -> u32;
    /// The address as an operator writes it.
    fn show(&self) -> String;
}

impl VipAddr for u32 {
    const RECORDS: &'static str = map_names::VIPS;
    const INDEX: &'static str = map_names::VIP_INDEX;
    fn home(&self) -> u32 {
        vip_index_slot(*self)
    }
    fn show(&self) -> String {
        Ipv4Addr::from(self.to_ne_bytes()).to_string()
    }
}

impl VipAddr for Ipv6Be {
    const RECORDS: &'static str = map_names::VIPS6;
    const INDEX: &'static str = map_names::VIP_INDEX6;
    fn home(&self) -> u32 {
        vip_index_slot6(self)
    }
    fn show(&self) -> String {
        let mut o = [0u8; 16];
        for (i, w) in self.iter().enumerate() {
            o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
        }
        Ipv6Addr::from(o).to_string()
    }
}

/// The VIP records of one family.
pub enum Vips<A: VipAddr>
where
    VipSlot<A>: aya::Pod,
    VipRecord<A>: aya::Pod,
{
    Table(VipTable<A>),
    /// An older build's object (`SV_VIPS_V2`, `SV_VIPS6_V1`).
    Hash(HashMap<MapData, A, VipRecord<A>>),
}

impl<A: VipAddr> Vips<A>
where
    VipSlot<A>: aya::Pod,
    VipRecord<A>: aya::Pod,
{
    /// The VIP's record, if the datapath has one.
    pub fn get(&self, addr: &A) -> Result<Option<VipRecord<A>>> {
        match self {
            Vips::Table(t) => t.get(addr),
            Vips::Hash(h) => match h.get(addr, 0) {
                Ok(r) => Ok(Some(r)),
                Err(MapError::KeyNotFound) => Ok(None),
                Err(source) => Err(DatapathError::Map {
                    name: A::RECORDS,
                    source,
                }),
            },
        }
    }

    /// Installs or replaces the VIP's record.
    pub fn insert(&mut self, addr: A, rec: VipRecord<A>) -> Result<()> {
        match self {
            Vips::Table(t) => t.insert(addr, rec),
            Vips::Hash(h) => h.insert(addr, rec, 0).map_err(|source| DatapathError::Map {
                name: A::RECORDS,
                source,
            }),
        }
    }

    /// Removes the VIP's record; false when it had none.
    pub fn remove(&mut self, addr: &A) -> Result<bool> {
        match self {
            Vips::Table(t) => t.remove(addr),
            Vips::Hash(h) => match h.remove(addr) {
                Ok(()) => Ok(true),
                Err(MapError::KeyNotFound) => Ok(false),
                Err(source) => Err(DatapathError::Map {
                    name: A::RECORDS,
                    source,
                }),
            },
        }
    }
}

/// The record array and its index, with the index mirrored here (user space is its only
/// writer), so that a change costs two map writes and no reads.
pub struct VipTable<A: VipAddr>
where
    VipSlot<A>: aya::Pod,
{
    index: Array<MapData, u32>,
    records: Array<MapData, VipSlot<A>>,
    /// Per index slot: the record slot + 1 it names (0: empty) and that record's address.
    held: Vec<(u32, A)>,
    /// Where the search for a free record slot starts: slots are taken round-robin, so a
    /// record freed by a change is rewritten only after every other free slot was taken.
    next: u32,
}

impl<A: VipAddr> VipTable<A>
where
    VipSlot<A>: aya::Pod,
{
    /// The table over the two maps, reading what an earlier run left in them (adopted
    /// pins).
    pub fn open(index: Array<MapData, u32>, records: Array<MapData, VipSlot<A>>) -> Result<Self> {
        let ierr = |source| DatapathError::Map {
            name: A::INDEX,
            source,
        };
        let rerr = |source| DatapathError::Map {
            name: A::RECORDS,
            source,
        };
        let mut held = vec![(0, A::default()); VIP_INDEX_SLOTS as usize];
        for (i, h) in held.iter_mut().enumerate() {
            let r = index.get(&(i as u32), 0).map_err(ierr)?;
            if r != 0 && r <= records.len() {
                *h = (r, records.get(&(r - 1), 0).map_err(rerr)?.addr_be);
            }
        }
        Ok(VipTable {
            index,
            records,
            held,
            next: 0,
        })
    }

    /// The index slot that names `addr`'s record.
    fn find(&self, addr: &A) -> Option<usize> {
        probes(addr.home()).find(|&s| self.held[s].0 != 0 && self.held[s].1 == *addr)
    }

    pub fn get(&self, addr: &A) -> Result<Option<VipRecord<A>>> {
        let Some(s) = self.find(addr) else {
            return Ok(None);
        };
        let slot = self
            .records
            .get(&(self.held[s].0 - 1), 0)
            .map_err(|source| DatapathError::Map {
                name: A::RECORDS,
                source,
            })?;
        Ok(Some(slot.rec))
    }

    /// Writes the record into a free slot, then points the VIP's index entry at it.
    pub fn insert(&mut self, addr: A, rec: VipRecord<A>) -> Result<()> {
        let s = match self.find(&addr) {
            Some(s) => s,
            None => probes(addr.home())
                .find(|&s| self.held[s].0 == 0)
                .ok_or_else(|| DatapathError::Invalid {
                    vip: addr.show(),
                    what: format!(
                        "no room in the datapath's VIP index: the {VIP_PROBES} slots from its \
                         home slot {} hold other VIPs; choose another address",
                        addr.home()
                    ),
                })?,
        };
        let r = self.free_record(&addr)?;
        self.records
            .set(r, VipSlot { addr_be: addr, rec }, 0)
            .map_err(|source| DatapathError::Map {
                name: A::RECORDS,
                source,
            })?;
        self.index
            .set(s as u32, r + 1, 0)
            .map_err(|source| DatapathError::Map {
                name: A::INDEX,
                source,
            })?;
        self.held[s] = (r + 1, addr);
        self.next = (r + 1) % self.records.len();
        Ok(())
    }

    /// A record slot no index entry names, round-robin from `next`.
    fn free_record(&self, addr: &A) -> Result<u32> {
        let n = self.records.len();
        let taken: std::collections::BTreeSet<u32> = self
            .held
            .iter()
            .filter(|h| h.0 != 0)
            .map(|h| h.0 - 1)
            .collect();
        (0..n)
            .map(|i| (self.next + i) % n)
            .find(|r| !taken.contains(r))
            .ok_or_else(|| DatapathError::Invalid {
                vip: addr.show(),
                what: format!(
                    "the datapath's {n} VIP record slots are all in use (sizes.vips is half \
                     of them)"
                ),
            })
    }

    /// Empties the VIP's index entry (its record slot is then free); false when it had none.
    pub fn remove(&mut self, addr: &A) -> Result<bool> {
        let Some(s) = self.find(addr) else {
            return Ok(false);
        };
        self.index
            .set(s as u32, 0, 0)
            .map_err(|source| DatapathError::Map {
                name: A::INDEX,
                source,
            })?;
        self.held[s] = (0, A::default());
        Ok(true)
    }
}

/// The index slots a VIP with this home slot may lie in.
fn probes(home: u32) -> impl Iterator<Item = usize> {
    (0..VIP_PROBES).map(move |i| ((home + i) & (VIP_INDEX_SLOTS - 1)) as usize)
}
