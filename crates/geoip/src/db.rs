//! The opened country database the gateway's geofencing asks.
//!
//! [`GeoDb`] holds a whole MaxMind DB file in memory (no mmap) and answers
//! "which country is this address in" without allocating. Opening checks the
//! file before the gateway relies on it: its size against [`MAX_DB_BYTES`],
//! its metadata and tree layout, and a probe of its first records for a
//! country, so a missing, damaged or wrong-kind file fails at startup rather
//! than at the first request.

use std::fs::File;
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::Path;

use maxminddb::{MaxMindDbError, Reader, WithinOptions};
use serde::Deserialize;

use crate::country::Country;
use crate::error::{GeoError, IN_MEMORY_ORIGIN};

/// Largest database file accepted, in bytes (256 MiB). GeoLite2-Country is
/// under 10 MiB and GeoIP2-City under 150 MiB.
pub const MAX_DB_BYTES: u64 = 256 * 1024 * 1024;

/// Records with data decoded by the open-time probe, at most. One of them
/// must carry a country for the database to be accepted.
pub const PROBE_MAX_RECORDS: usize = 64;

/// Networks (with or without data) the open-time probe walks, at most, so a
/// tree of mostly empty networks cannot make opening slow.
pub const PROBE_MAX_NETWORKS: usize = 4096;

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb").field("origin", &self.origin).field("size_bytes", &self.size_bytes).finish()
    }
}

/// A MaxMind-format country (or city) database held in memory.
///
/// Lookups take `&self` and do not allocate; share one behind an `Arc`.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
    /// The path it was read from, or [`IN_MEMORY_ORIGIN`]; names the
    /// database in errors.
    origin: String,
    /// The file's length, in bytes.
    size_bytes: usize,
}

/// What a database is, for the gateway's startup log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbInfo {
    /// Where it was read from: its path, or [`IN_MEMORY_ORIGIN`].
    pub origin: String,
    /// The metadata's `database_type`, e.g. `GeoLite2-Country`.
    pub database_type: String,
    /// When it was built, in seconds since the Unix epoch.
    pub build_epoch: u64,
    /// 4 for an IPv4-only tree, 6 for an IPv6 tree (which also holds IPv4).
    pub ip_version: u16,
    /// Nodes in the search tree.
    pub node_count: u32,
    /// Bits per search-tree record: 24, 28 or 32.
    pub record_size_bits: u16,
    /// The file's size, in bytes.
    pub size_bytes: usize,
}

impl std::fmt::Display for DbInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} from {} (IPv{} tree, {} nodes of {}-bit records, {} bytes, built at Unix time {})",
            self.database_type,
            self.origin,
            self.ip_version,
            self.node_count,
            self.record_size_bits,
            self.size_bytes,
            self.build_epoch
        )
    }
}

/// The part of a GeoIP2/GeoLite2 record a country lookup reads; every other
/// field is skipped without being decoded.
#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    registered_country: Option<IsoCode<'a>>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

impl CountryRecord<'_> {
    /// `country` (where the address is used), or else `registered_country`
    /// (where its block is registered). A code that is not two letters counts
    /// as absent.
    fn best(&self) -> Option<Country> {
        fn code(field: &Option<IsoCode<'_>>) -> Option<Country> {
            field.as_ref()?.iso_code?.parse().ok()
        }
        code(&self.country).or_else(|| code(&self.registered_country))
    }
}

impl GeoDb {
    /// Reads the database at `path` into memory and checks it.
    ///
    /// Files above [`MAX_DB_BYTES`] are refused without being read.
    pub fn open(path: &Path) -> Result<GeoDb, GeoError> {
        let io_error = |source: io::Error| {
            if source.kind() == io::ErrorKind::NotFound {
                GeoError::Missing { path: path.to_path_buf() }
            } else {
                GeoError::Io { path: path.to_path_buf(), source }
            }
        };
        let origin = path.display().to_string();
        let file = File::open(path).map_err(io_error)?;
        let size = file.metadata().map_err(io_error)?.len();
        if size > MAX_DB_BYTES {
            return Err(too_large(origin, size));
        }
        // The size is re-checked on the bytes read: the file may grow
        // between the metadata call and the read.
        let capacity = usize::try_from(size).unwrap_or(0);
        let mut bytes = Vec::with_capacity(capacity);
        file.take(MAX_DB_BYTES + 1).read_to_end(&mut bytes).map_err(io_error)?;
        GeoDb::load(bytes, origin)
    }

    /// Checks a database already in memory; errors name it
    /// [`IN_MEMORY_ORIGIN`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GeoDb, GeoError> {
        GeoDb::load(bytes, IN_MEMORY_ORIGIN.to_string())
    }

    fn load(bytes: Vec<u8>, origin: String) -> Result<GeoDb, GeoError> {
        let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if size > MAX_DB_BYTES {
            return Err(too_large(origin, size));
        }
        if bytes.is_empty() {
            return Err(GeoError::Corrupt { origin, reason: "the file is empty".to_string() });
        }
        let size_bytes = bytes.len();
        let reader = match Reader::from_source(bytes) {
            Ok(reader) => reader,
            Err(err) => return Err(GeoError::Corrupt { origin, reason: err.to_string() }),
        };
        let db = GeoDb { reader, origin, size_bytes };
        db.probe()?;
        Ok(db)
    }

    /// Walks the first networks of the tree and decodes their records: a
    /// damaged tree or record fails here, and so does a database none of
    /// whose first [`PROBE_MAX_RECORDS`] records has a country.
    fn probe(&self) -> Result<(), GeoError> {
        let options = WithinOptions::default().include_networks_without_data();
        let networks = self.reader.networks(options).map_err(|err| self.corrupt(err))?;
        let mut records = 0usize;
        for network in networks.take(PROBE_MAX_NETWORKS) {
            let network = network.map_err(|err| self.corrupt(err))?;
            if !network.has_data() {
                continue;
            }
            let record: Option<CountryRecord<'_>> = network.decode().map_err(|err| self.corrupt(err))?;
            if record.as_ref().and_then(CountryRecord::best).is_some() {
                return Ok(());
            }
            records += 1;
            if records >= PROBE_MAX_RECORDS {
                break;
            }
        }
        let database_type = &self.reader.metadata().database_type;
        let reason = if records == 0 {
            format!(
                "it maps no network to a record (looked at up to {PROBE_MAX_NETWORKS} networks); \
                 database_type is {database_type:?}"
            )
        } else {
            format!(
                "none of its first {records} records has a \"country\" or \"registered_country\" \
                 iso_code; database_type is {database_type:?}, use a GeoIP2/GeoLite2 Country \
                 or City database"
            )
        };
        Err(GeoError::WrongKind { origin: self.origin.clone(), reason })
    }

    /// The country of `ip`: the record's `country`, or, when the record has
    /// none, its `registered_country` (the country where the address block is
    /// registered, which MaxMind gives alone for e.g. some anycast and
    /// satellite networks). `None` when the address is not in the database,
    /// its record has neither, or the record cannot be read.
    ///
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is looked up as its
    /// IPv4 address; an IPv6 address in an IPv4-only database is `None`.
    /// Use [`GeoDb::try_country`] to tell an unreadable record from an
    /// absent one.
    pub fn country(&self, ip: IpAddr) -> Option<Country> {
        self.try_country(ip).ok().flatten()
    }

    /// Like [`GeoDb::country`], but a record that cannot be read is a
    /// [`GeoError::Corrupt`] instead of `None`, so a caller can choose to
    /// fail closed.
    pub fn try_country(&self, ip: IpAddr) -> Result<Option<Country>, GeoError> {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None if self.reader.metadata().ip_version == 4 => return Ok(None),
                None => IpAddr::V6(v6),
            },
            IpAddr::V4(v4) => IpAddr::V4(v4),
        };
        let found = self.reader.lookup(ip).map_err(|err| self.corrupt(err))?;
        let record: Option<CountryRecord<'_>> = found.decode().map_err(|err| self.corrupt(err))?;
        Ok(record.as_ref().and_then(CountryRecord::best))
    }

    /// Checks every node of the tree and every record it points to, with
    /// maxminddb's verifier (stricter than the format spec). It checks the
    /// format's structure, not the records' schema: a record whose
    /// `iso_code` is a number passes here and fails in
    /// [`GeoDb::try_country`]. Opening checks only the layout and a sample;
    /// this walks the whole file, so it takes
    /// time in proportion to the file (use it in a `validate` command or off
    /// the request path after a reload).
    pub fn verify(&self) -> Result<(), GeoError> {
        self.reader.verify().map_err(|err| self.corrupt(err))
    }

    /// What this database is, for a startup log line.
    pub fn describe(&self) -> DbInfo {
        let metadata = self.reader.metadata();
        DbInfo {
            origin: self.origin.clone(),
            database_type: metadata.database_type.clone(),
            build_epoch: metadata.build_epoch,
            ip_version: metadata.ip_version,
            node_count: metadata.node_count,
            record_size_bits: metadata.record_size,
            size_bytes: self.size_bytes,
        }
    }

    fn corrupt(&self, err: MaxMindDbError) -> GeoError {
        GeoError::Corrupt { origin: self.origin.clone(), reason: err.to_string() }
    }
}

fn too_large(origin: String, size_bytes: u64) -> GeoError {
    GeoError::TooLarge { origin, size_bytes, limit_bytes: MAX_DB_BYTES }
}
