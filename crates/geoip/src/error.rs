//! Why a GeoIP database could not be opened or read.
//!
//! Every variant names the database it is about (its path, or
//! [`IN_MEMORY_ORIGIN`] for one handed over as bytes) and says what is wrong
//! in words an operator can act on: the file is missing, too large, damaged,
//! or a valid MaxMind database of a kind that carries no countries.

use std::io;
use std::path::PathBuf;

/// How an error names a database given to [`crate::GeoDb::from_bytes`],
/// which has no path.
pub const IN_MEMORY_ORIGIN: &str = "<in-memory GeoIP database>";

/// A GeoIP database that cannot be used for country lookups.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    /// No file at the configured path.
    #[error("GeoIP database {} does not exist", path.display())]
    Missing {
        /// The path that was opened.
        path: PathBuf,
    },

    /// The file is larger than [`crate::MAX_DB_BYTES`]; it is refused before
    /// being read, so a wrong path (a disk image, a log) cannot exhaust memory.
    #[error(
        "GeoIP database {origin} is {size_bytes} bytes, above the limit of {limit_bytes} bytes; \
         a country or city database is far smaller, so this is probably the wrong file"
    )]
    TooLarge {
        /// The path, or [`IN_MEMORY_ORIGIN`].
        origin: String,
        /// The size found, in bytes.
        size_bytes: u64,
        /// The limit, in bytes ([`crate::MAX_DB_BYTES`]).
        limit_bytes: u64,
    },

    /// Not a readable MaxMind DB: empty, truncated, random bytes, or damaged
    /// structure or records.
    #[error("GeoIP database {origin} is not a valid MaxMind DB file: {reason}")]
    Corrupt {
        /// The path, or [`IN_MEMORY_ORIGIN`].
        origin: String,
        /// What is wrong, as found by the reader.
        reason: String,
    },

    /// A valid MaxMind DB whose records carry no country, such as an ASN or
    /// connection-type database.
    #[error("GeoIP database {origin} cannot be used for country lookups: {reason}")]
    WrongKind {
        /// The path, or [`IN_MEMORY_ORIGIN`].
        origin: String,
        /// What kind of database it seems to be and what is missing.
        reason: String,
    },

    /// The file exists but could not be read (permissions, a directory, an
    /// IO error).
    #[error("cannot read GeoIP database {}: {source}", path.display())]
    Io {
        /// The path that was read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}
