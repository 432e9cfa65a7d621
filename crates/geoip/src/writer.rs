//! A small MaxMind DB writer, so tests build the databases they read.
//!
//! It writes format version 2.0 as the MaxMind DB specification lays it out:
//! a binary search tree of 24-, 28- or 32-bit records, sixteen zero bytes, a
//! data section of MaxMind-typed values, then the metadata marker and the
//! metadata map. The tree is an IPv6 tree (`ip_version` 6) unless asked for
//! an IPv4 one; in an IPv6 tree IPv4 networks go under `::/96`, where the
//! format's readers look IPv4 addresses up, and `::ffff:0:0/96` can be made
//! an alias of that subtree as MaxMind's own databases do.
//!
//! Networks may nest: the most specific network containing an address wins,
//! whatever order the entries come in. The same network twice is an error.
//! The writer keeps everything in memory and is meant for test databases of
//! up to some thousands of networks; it is compiled always (it has no
//! dependencies and no unsafe code) so other crates' tests can use it too.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use crate::country::Country;

/// Bytes of zeros between the search tree and the data section.
pub const DATA_SECTION_SEPARATOR_BYTES: usize = 16;

/// What separates the data section from the metadata map.
pub const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

/// Bits in an IPv6 tree's keys.
const IPV6_BITS: u8 = 128;
/// Bits in an IPv4 tree's keys, and in an IPv4 network's part of an IPv6 key.
const IPV4_BITS: u8 = 32;
/// Depth of the IPv4 subtree (`::/96`) in an IPv6 tree, in bits.
const IPV4_SUBTREE_DEPTH: u8 = IPV6_BITS - IPV4_BITS;
/// `::ffff:0:0`, the IPv4-mapped range aliased to the IPv4 subtree.
const IPV4_MAPPED_PREFIX: u128 = 0xffff_0000_0000;

/// Build time written when none is given, in seconds since the Unix epoch
/// (2023-11-14), so test databases are byte-for-byte reproducible.
pub const DEFAULT_BUILD_EPOCH: u64 = 1_700_000_000;

// Data-section type numbers from the specification.
const TYPE_STRING: u8 = 2;
const TYPE_UINT16: u8 = 5;
const TYPE_UINT32: u8 = 6;
const TYPE_MAP: u8 = 7;
const TYPE_UINT64: u8 = 9;
const TYPE_ARRAY: u8 = 11;
/// Types above this are "extended": their number minus this is in the byte
/// after the control byte.
const LAST_BASIC_TYPE: u8 = 7;

// Payload sizes (bytes, or entries for maps and arrays) and how the control
// byte encodes them.
/// Sizes below this fit in the control byte's low five bits.
const SIZE_INLINE_LIMIT: usize = 29;
/// With one extra byte: 29 + 0..=255.
const SIZE_ONE_BYTE_LIMIT: usize = SIZE_INLINE_LIMIT + 0x100;
/// With two extra bytes: 285 + 0..=65535.
const SIZE_TWO_BYTE_LIMIT: usize = SIZE_ONE_BYTE_LIMIT + 0x1_0000;
/// With three extra bytes: 65821 + 0..=2^24-1; the largest payload the
/// format can hold.
const SIZE_THREE_BYTE_LIMIT: usize = SIZE_TWO_BYTE_LIMIT + 0x100_0000;

/// One network's data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    /// A GeoIP2-style record: `{"country": {"iso_code": ..}}` and/or
    /// `{"registered_country": {"iso_code": ..}}`; with neither, the empty
    /// map `{}`.
    Country {
        /// The `country` field, if any.
        country: Option<Country>,
        /// The `registered_country` field, if any.
        registered_country: Option<Country>,
    },
    /// An ASN-database record: `{"autonomous_system_number": ..,
    /// "autonomous_system_organization": ..}`, with no country at all.
    Asn {
        /// `autonomous_system_number`.
        number: u32,
        /// `autonomous_system_organization`.
        organization: String,
    },
}

impl Record {
    /// `{"country": {"iso_code": country}}`.
    pub fn country(country: Country) -> Record {
        Record::Country { country: Some(country), registered_country: None }
    }
}

/// Which tree the database has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    /// An IPv4-only tree of depth 32; IPv6 networks are refused.
    V4,
    /// An IPv6 tree of depth 128, with IPv4 networks under `::/96`.
    V6,
}

/// Bits per search-tree record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordSize {
    /// 24-bit records, 6-byte nodes.
    Bits24,
    /// 28-bit records, 7-byte nodes (the middle byte holds both records'
    /// top four bits).
    Bits28,
    /// 32-bit records, 8-byte nodes.
    Bits32,
}

impl RecordSize {
    const ALL: [RecordSize; 3] = [RecordSize::Bits24, RecordSize::Bits28, RecordSize::Bits32];

    /// The size in bits, as the metadata's `record_size`.
    pub const fn bits(self) -> u16 {
        match self {
            RecordSize::Bits24 => 24,
            RecordSize::Bits28 => 28,
            RecordSize::Bits32 => 32,
        }
    }

    /// The largest value a record of this size holds.
    const fn max_value(self) -> u64 {
        (1u64 << self.bits()) - 1
    }
}

/// A database the writer cannot produce from the entries given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The prefix length is longer than the address.
    #[error("network {network}: prefix length is longer than the {max_bits}-bit address")]
    PrefixTooLong {
        /// The network as given.
        network: String,
        /// The address's length in bits.
        max_bits: u8,
    },
    /// The address has bits set beyond the prefix (e.g. `10.0.0.1/8`).
    #[error("network {network}: address has bits set beyond the prefix length")]
    HostBitsSet {
        /// The network as given.
        network: String,
    },
    /// The same network is listed twice (an IPv4 network and its `::/96`
    /// IPv6 spelling are the same network).
    #[error("network {network} is listed more than once")]
    Duplicate {
        /// The network as given the second time.
        network: String,
    },
    /// An IPv6 network in an IPv4-only tree.
    #[error("network {network}: an IPv4 tree cannot hold an IPv6 network")]
    Ipv6InIpv4Tree {
        /// The network as given.
        network: String,
    },
    /// A network inside `::ffff:0:0/96` while that range is an alias of the
    /// IPv4 subtree.
    #[error(
        "network {network} is inside ::ffff:0:0/96, which is an alias of the IPv4 subtree; \
         give it as an IPv4 network"
    )]
    InsideIpv4Alias {
        /// The network as given.
        network: String,
    },
    /// A string longer than the format can encode.
    #[error("a string of {len_bytes} bytes is longer than the format's limit")]
    StringTooLong {
        /// Its length, in bytes.
        len_bytes: usize,
    },
    /// The tree and data are too large for the record size.
    #[error("the tree and data need record values up to {needed}, more than {bits}-bit records hold")]
    RecordSizeTooSmall {
        /// The largest record value needed.
        needed: u64,
        /// The record size, in bits.
        bits: u16,
    },
}

/// Builds a database from `(network address, prefix length, country)`
/// entries: an IPv6 tree with records `{"country": {"iso_code": ..}}`, the
/// smallest record size that fits, and [`DEFAULT_BUILD_EPOCH`].
pub fn build(entries: &[(IpAddr, u8, Country)], database_type: &str) -> Result<Vec<u8>, WriteError> {
    entries
        .iter()
        .fold(Builder::new(database_type), |builder, &(addr, len, country)| {
            builder.network(addr, len, Record::country(country))
        })
        .build()
}

/// A database under construction; [`Builder::build`] writes it.
#[derive(Debug, Clone)]
pub struct Builder {
    database_type: String,
    description: String,
    build_epoch: u64,
    ip_version: IpVersion,
    record_size: Option<RecordSize>,
    alias_ipv4_mapped: bool,
    entries: Vec<(IpAddr, u8, Record)>,
}

impl Builder {
    /// An empty IPv6 database with this `database_type` (e.g.
    /// `GeoLite2-Country`, or `GeoLite2-ASN` for one without countries).
    pub fn new(database_type: &str) -> Builder {
        Builder {
            database_type: database_type.to_string(),
            description: format!("{database_type} test database"),
            build_epoch: DEFAULT_BUILD_EPOCH,
            ip_version: IpVersion::V6,
            record_size: None,
            alias_ipv4_mapped: false,
            entries: Vec::new(),
        }
    }

    /// The metadata's English description.
    pub fn description(mut self, description: &str) -> Builder {
        self.description = description.to_string();
        self
    }

    /// The metadata's `build_epoch`, in seconds since the Unix epoch.
    pub fn build_epoch(mut self, seconds: u64) -> Builder {
        self.build_epoch = seconds;
        self
    }

    /// An IPv4-only or an IPv6 tree (the default).
    pub fn ip_version(mut self, ip_version: IpVersion) -> Builder {
        self.ip_version = ip_version;
        self
    }

    /// A fixed record size instead of the smallest that fits.
    pub fn record_size(mut self, record_size: RecordSize) -> Builder {
        self.record_size = Some(record_size);
        self
    }

    /// Whether `::ffff:0:0/96` points at the IPv4 subtree (IPv6 trees only;
    /// off by default), as in MaxMind's databases.
    pub fn alias_ipv4_mapped(mut self, alias: bool) -> Builder {
        self.alias_ipv4_mapped = alias;
        self
    }

    /// Adds a network: `addr` with its host bits clear, and `prefix_len`.
    pub fn network(mut self, addr: IpAddr, prefix_len: u8, record: Record) -> Builder {
        self.entries.push((addr, prefix_len, record));
        self
    }

    /// Writes the database file.
    pub fn build(&self) -> Result<Vec<u8>, WriteError> {
        let key_bits = match self.ip_version {
            IpVersion::V4 => IPV4_BITS,
            IpVersion::V6 => IPV6_BITS,
        };

        // Records, each written once however many networks share it.
        let mut data = Vec::new();
        let mut data_offsets: HashMap<&Record, usize> = HashMap::new();
        let mut keyed = Vec::with_capacity(self.entries.len());
        let mut seen = HashSet::new();
        for (addr, prefix_len, record) in &self.entries {
            let (key, depth) = self.tree_key(*addr, *prefix_len)?;
            if !seen.insert((key, depth)) {
                return Err(WriteError::Duplicate { network: network_name(*addr, *prefix_len) });
            }
            let offset = match data_offsets.get(record) {
                Some(&offset) => offset,
                None => {
                    let offset = data.len();
                    encode_record(&mut data, record)?;
                    data_offsets.insert(record, offset);
                    offset
                }
            };
            keyed.push((key, depth, offset));
        }
        // Shortest prefixes first: a longer one then splits the shorter one's
        // leaf and overrides its part, so the most specific network wins.
        keyed.sort_by_key(|&(_, depth, _)| depth);

        let mut tree = Tree::new(key_bits);
        for (key, depth, offset) in keyed {
            tree.insert(key, depth, Slot::Data(offset));
        }
        if self.alias_ipv4_mapped && self.ip_version == IpVersion::V6 {
            let ipv4_subtree = tree.slot_at(0, IPV4_SUBTREE_DEPTH);
            tree.insert(IPV4_MAPPED_PREFIX, IPV4_SUBTREE_DEPTH, ipv4_subtree);
        }

        let node_count = tree.nodes.len();
        let data_base = node_count + DATA_SECTION_SEPARATOR_BYTES;
        let needed = u64::try_from(data_base + data.len()).unwrap_or(u64::MAX);
        let record_size = match self.record_size {
            Some(size) => size,
            None => RecordSize::ALL.into_iter().find(|size| needed <= size.max_value()).unwrap_or(RecordSize::Bits32),
        };
        if needed > record_size.max_value() {
            return Err(WriteError::RecordSizeTooSmall { needed, bits: record_size.bits() });
        }

        let mut out = Vec::new();
        for node in &tree.nodes {
            let [left, right] = node.map(|slot| match slot {
                Slot::Empty => node_count as u64,
                Slot::Node(index) => index as u64,
                Slot::Data(offset) => (data_base + offset) as u64,
            });
            write_node(&mut out, record_size, left, right);
        }
        out.extend_from_slice(&[0u8; DATA_SECTION_SEPARATOR_BYTES]);
        out.extend_from_slice(&data);
        out.extend_from_slice(METADATA_MARKER);
        self.encode_metadata(&mut out, node_count as u64, record_size)?;
        Ok(out)
    }

    /// The network as a key of the tree's width and its depth in the tree.
    fn tree_key(&self, addr: IpAddr, prefix_len: u8) -> Result<(u128, u8), WriteError> {
        let network = || network_name(addr, prefix_len);
        let (key, addr_bits, depth) = match (addr, self.ip_version) {
            (IpAddr::V4(v4), IpVersion::V4) => (u128::from(u32::from(v4)), IPV4_BITS, prefix_len),
            (IpAddr::V4(v4), IpVersion::V6) => {
                (u128::from(u32::from(v4)), IPV4_BITS, prefix_len.saturating_add(IPV4_SUBTREE_DEPTH))
            }
            (IpAddr::V6(_), IpVersion::V4) => return Err(WriteError::Ipv6InIpv4Tree { network: network() }),
            (IpAddr::V6(v6), IpVersion::V6) => (u128::from(v6), IPV6_BITS, prefix_len),
        };
        if prefix_len > addr_bits {
            return Err(WriteError::PrefixTooLong { network: network(), max_bits: addr_bits });
        }
        let host_bits = u32::from(addr_bits - prefix_len);
        let host_mask = 1u128.checked_shl(host_bits).map_or(u128::MAX, |bit| bit - 1);
        if key & host_mask != 0 {
            return Err(WriteError::HostBitsSet { network: network() });
        }
        if self.alias_ipv4_mapped
            && addr.is_ipv6()
            && depth >= IPV4_SUBTREE_DEPTH
            && key >> IPV4_BITS == IPV4_MAPPED_PREFIX >> IPV4_BITS
        {
            return Err(WriteError::InsideIpv4Alias { network: network() });
        }
        Ok((key, depth))
    }

    fn encode_metadata(&self, out: &mut Vec<u8>, node_count: u64, record_size: RecordSize) -> Result<(), WriteError> {
        let ip_version: u64 = match self.ip_version {
            IpVersion::V4 => 4,
            IpVersion::V6 => 6,
        };
        const METADATA_FIELDS: usize = 9;
        control(out, TYPE_MAP, METADATA_FIELDS)?;
        string(out, "binary_format_major_version")?;
        uint(out, TYPE_UINT16, 2)?;
        string(out, "binary_format_minor_version")?;
        uint(out, TYPE_UINT16, 0)?;
        string(out, "build_epoch")?;
        uint(out, TYPE_UINT64, self.build_epoch)?;
        string(out, "database_type")?;
        string(out, &self.database_type)?;
        string(out, "description")?;
        control(out, TYPE_MAP, 1)?;
        string(out, "en")?;
        string(out, &self.description)?;
        string(out, "ip_version")?;
        uint(out, TYPE_UINT16, ip_version)?;
        string(out, "languages")?;
        control(out, TYPE_ARRAY, 1)?;
        string(out, "en")?;
        string(out, "node_count")?;
        uint(out, TYPE_UINT32, node_count)?;
        string(out, "record_size")?;
        uint(out, TYPE_UINT16, u64::from(record_size.bits()))?;
        Ok(())
    }
}

fn network_name(addr: IpAddr, prefix_len: u8) -> String {
    format!("{addr}/{prefix_len}")
}

/// What one side of a tree node points at while the tree is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// No data: written as `node_count`.
    Empty,
    /// Another node, by index (the root is 0).
    Node(usize),
    /// A record, by offset in the data section.
    Data(usize),
}

/// The search tree: node 0 is the root; each node's two slots are the 0-bit
/// and 1-bit halves of its network.
struct Tree {
    key_bits: u8,
    nodes: Vec<[Slot; 2]>,
}

impl Tree {
    fn new(key_bits: u8) -> Tree {
        Tree { key_bits, nodes: vec![[Slot::Empty; 2]] }
    }

    /// Bit `index` of `key`, counting from the most significant of the
    /// tree's `key_bits`.
    fn bit(&self, key: u128, index: u8) -> usize {
        ((key >> (self.key_bits - 1 - index)) & 1) as usize
    }

    /// Sets the network of `depth` bits at `key` to `value`, splitting any
    /// shorter network's leaf on the way so its other halves keep its data.
    /// Depth 0 (the whole address space) sets both halves of the root.
    fn insert(&mut self, key: u128, depth: u8, value: Slot) {
        if depth == 0 {
            self.nodes[0] = [value; 2];
            return;
        }
        let mut node = 0usize;
        for index in 0..depth - 1 {
            let side = self.bit(key, index);
            node = match self.nodes[node][side] {
                Slot::Node(child) => child,
                leaf => {
                    let child = self.nodes.len();
                    self.nodes.push([leaf; 2]);
                    self.nodes[node][side] = Slot::Node(child);
                    child
                }
            };
        }
        let side = self.bit(key, depth - 1);
        // Entries are inserted shortest prefix first, so no longer network
        // has made a node here yet (the IPv4-mapped alias refuses networks
        // inside its range).
        debug_assert!(!matches!(self.nodes[node][side], Slot::Node(_)));
        self.nodes[node][side] = value;
    }

    /// What the network of `depth` bits at `key` resolves to: a node, or the
    /// leaf of a shorter network containing it.
    fn slot_at(&self, key: u128, depth: u8) -> Slot {
        let mut slot = Slot::Node(0);
        for index in 0..depth {
            match slot {
                Slot::Node(node) => slot = self.nodes[node][self.bit(key, index)],
                leaf => return leaf,
            }
        }
        slot
    }
}

fn write_node(out: &mut Vec<u8>, record_size: RecordSize, left: u64, right: u64) {
    let [_, _, _, _, l3, l2, l1, l0] = left.to_be_bytes();
    let [_, _, _, _, r3, r2, r1, r0] = right.to_be_bytes();
    match record_size {
        RecordSize::Bits24 => out.extend_from_slice(&[l2, l1, l0, r2, r1, r0]),
        RecordSize::Bits28 => {
            let middle = ((l3 & 0x0F) << 4) | (r3 & 0x0F);
            out.extend_from_slice(&[l2, l1, l0, middle, r2, r1, r0]);
        }
        RecordSize::Bits32 => out.extend_from_slice(&[l3, l2, l1, l0, r3, r2, r1, r0]),
    }
}

fn encode_record(out: &mut Vec<u8>, record: &Record) -> Result<(), WriteError> {
    match record {
        Record::Country { country, registered_country } => {
            let fields = [("country", country), ("registered_country", registered_country)];
            let present = fields.iter().filter(|(_, code)| code.is_some()).count();
            control(out, TYPE_MAP, present)?;
            for (name, code) in fields {
                if let Some(code) = code {
                    string(out, name)?;
                    control(out, TYPE_MAP, 1)?;
                    string(out, "iso_code")?;
                    string(out, code.as_str())?;
                }
            }
        }
        Record::Asn { number, organization } => {
            control(out, TYPE_MAP, 2)?;
            string(out, "autonomous_system_number")?;
            uint(out, TYPE_UINT32, u64::from(*number))?;
            string(out, "autonomous_system_organization")?;
            string(out, organization)?;
        }
    }
    Ok(())
}

/// A control byte (and extended-type and size bytes) for a value of
/// `type_number` whose payload is `size` bytes or entries.
fn control(out: &mut Vec<u8>, type_number: u8, size: usize) -> Result<(), WriteError> {
    let (type_bits, extended) = if type_number <= LAST_BASIC_TYPE {
        (type_number << 5, None)
    } else {
        (0, Some(type_number - LAST_BASIC_TYPE))
    };
    let (size_bits, extra_len, rest) = if size < SIZE_INLINE_LIMIT {
        (size as u8, 0, 0)
    } else if size < SIZE_ONE_BYTE_LIMIT {
        (29, 1, size - SIZE_INLINE_LIMIT)
    } else if size < SIZE_TWO_BYTE_LIMIT {
        (30, 2, size - SIZE_ONE_BYTE_LIMIT)
    } else if size < SIZE_THREE_BYTE_LIMIT {
        (31, 3, size - SIZE_TWO_BYTE_LIMIT)
    } else {
        return Err(WriteError::StringTooLong { len_bytes: size });
    };
    out.push(type_bits | size_bits);
    out.extend(extended);
    // `rest` is below 2^24 here, so its low three bytes hold it.
    let rest = (rest as u32).to_be_bytes();
    out.extend_from_slice(&rest[rest.len() - extra_len..]);
    Ok(())
}

fn string(out: &mut Vec<u8>, value: &str) -> Result<(), WriteError> {
    control(out, TYPE_STRING, value.len())?;
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

/// An unsigned integer in as few big-endian bytes as it needs (zero in none).
fn uint(out: &mut Vec<u8>, type_number: u8, value: u64) -> Result<(), WriteError> {
    let bytes = value.to_be_bytes();
    let skip = (value.leading_zeros() / 8) as usize;
    control(out, type_number, bytes.len() - skip)?;
    out.extend_from_slice(&bytes[skip..]);
    Ok(())
}

impl fmt::Display for RecordSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-bit", self.bits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control_bytes(type_number: u8, size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        control(&mut out, type_number, size).expect("encodable size");
        out
    }

    #[test]
    fn control_byte_holds_small_sizes_and_extends_larger_ones_as_the_spec_says() {
        assert_eq!(control_bytes(TYPE_STRING, 0), [0x40]);
        assert_eq!(control_bytes(TYPE_STRING, 28), [0x40 | 28]);
        assert_eq!(control_bytes(TYPE_STRING, 29), [0x40 | 29, 0]);
        assert_eq!(control_bytes(TYPE_STRING, 284), [0x40 | 29, 255]);
        assert_eq!(control_bytes(TYPE_STRING, 285), [0x40 | 30, 0, 0]);
        assert_eq!(control_bytes(TYPE_STRING, 65_820), [0x40 | 30, 0xFF, 0xFF]);
        assert_eq!(control_bytes(TYPE_STRING, 65_821), [0x40 | 31, 0, 0, 0]);
        assert_eq!(control_bytes(TYPE_STRING, SIZE_THREE_BYTE_LIMIT - 1), [0x40 | 31, 0xFF, 0xFF, 0xFF]);
        let mut out = Vec::new();
        assert_eq!(
            control(&mut out, TYPE_STRING, SIZE_THREE_BYTE_LIMIT),
            Err(WriteError::StringTooLong { len_bytes: SIZE_THREE_BYTE_LIMIT })
        );
    }

    #[test]
    fn extended_types_put_their_type_byte_before_the_size_bytes() {
        // uint64 is type 9: control type bits 0, then 9 - 7 = 2.
        assert_eq!(control_bytes(TYPE_UINT64, 8), [8, 2]);
        assert_eq!(control_bytes(TYPE_ARRAY, 300), [30, 4, 0, 15]);
    }

    #[test]
    fn uints_take_as_few_bytes_as_their_value_needs() {
        let encoded = |value| {
            let mut out = Vec::new();
            uint(&mut out, TYPE_UINT32, value).expect("small");
            out
        };
        assert_eq!(encoded(0), [0xC0]);
        assert_eq!(encoded(0xFF), [0xC1, 0xFF]);
        assert_eq!(encoded(0x0100), [0xC2, 0x01, 0x00]);
        assert_eq!(encoded(0xDEAD_BEEF), [0xC4, 0xDE, 0xAD, 0xBE, 0xEF]);
    }

    #[test]
    fn nodes_pack_both_records_for_each_record_size() {
        let packed = |size| {
            let mut out = Vec::new();
            write_node(&mut out, size, 0x0123_4567, 0x089A_BCDE);
            out
        };
        assert_eq!(packed(RecordSize::Bits28), [0x23, 0x45, 0x67, 0x18, 0x9A, 0xBC, 0xDE]);
        assert_eq!(packed(RecordSize::Bits32), [0x01, 0x23, 0x45, 0x67, 0x08, 0x9A, 0xBC, 0xDE]);
        let mut out = Vec::new();
        write_node(&mut out, RecordSize::Bits24, 0x12_3456, 0xAB_CDEF);
        assert_eq!(out, [0x12, 0x34, 0x56, 0xAB, 0xCD, 0xEF]);
    }

    fn de() -> Country {
        "DE".parse().expect("valid code")
    }

    #[test]
    fn networks_with_host_bits_set_are_refused() {
        let err = build(&[("10.0.0.1".parse().expect("ip"), 8, de())], "T").expect_err("host bits");
        assert_eq!(err, WriteError::HostBitsSet { network: "10.0.0.1/8".into() });
    }

    #[test]
    fn prefixes_longer_than_the_address_are_refused() {
        let err = build(&[("10.0.0.0".parse().expect("ip"), 33, de())], "T").expect_err("too long");
        assert!(matches!(err, WriteError::PrefixTooLong { max_bits: 32, .. }));
        let err = build(&[("2001:db8::".parse().expect("ip"), 129, de())], "T").expect_err("long");
        assert!(matches!(err, WriteError::PrefixTooLong { max_bits: 128, .. }));
    }

    #[test]
    fn a_network_listed_twice_is_refused_even_when_spelled_as_ipv6() {
        let twice = [("192.0.2.0".parse().expect("ip"), 24, de()), ("::192.0.2.0".parse().expect("ip"), 120, de())];
        assert!(matches!(build(&twice, "T"), Err(WriteError::Duplicate { .. })));
    }

    #[test]
    fn an_ipv4_tree_refuses_ipv6_networks() {
        let err = Builder::new("T")
            .ip_version(IpVersion::V4)
            .network("2001:db8::".parse().expect("ip"), 32, Record::country(de()))
            .build()
            .expect_err("v6 in v4 tree");
        assert!(matches!(err, WriteError::Ipv6InIpv4Tree { .. }));
    }

    #[test]
    fn with_the_alias_networks_inside_the_ipv4_mapped_range_are_refused() {
        let builder = Builder::new("T").network("::ffff:192.0.2.0".parse().expect("ip"), 120, Record::country(de()));
        assert!(builder.clone().build().is_ok());
        assert!(matches!(builder.alias_ipv4_mapped(true).build(), Err(WriteError::InsideIpv4Alias { .. })));
    }

    #[test]
    fn a_shared_record_is_written_once() {
        let one = build(&[("10.0.0.0".parse().expect("ip"), 8, de())], "T").expect("ok");
        let two = build(&[("10.0.0.0".parse().expect("ip"), 8, de()), ("11.0.0.0".parse().expect("ip"), 8, de())], "T")
            .expect("ok");
        let records = |bytes: &[u8]| bytes.windows(b"iso_code".len()).filter(|w| w == b"iso_code").count();
        assert_eq!(records(&one), 1);
        assert_eq!(records(&two), 1);
    }
}
