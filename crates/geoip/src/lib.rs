//! Country lookup for the gateway's geofencing.
//!
//! Routes allow or deny clients by ISO country; this crate answers which
//! country an address is in, from a MaxMind-format database (GeoLite2-Country,
//! GeoIP2-Country or -City) read into memory with the `maxminddb` crate.
//! [`GeoDb::open`] checks the file up front so a missing, damaged or
//! wrong-kind database fails at startup; [`GeoDb::country`] is the lookup the
//! request path makes. [`writer`] builds small databases for tests.
//!
//! ```
//! use std::net::IpAddr;
//! use raftgate_geoip::{writer, Country, GeoDb};
//!
//! let de: Country = "DE".parse()?;
//! let net: IpAddr = "192.0.2.0".parse()?;
//! let bytes = writer::build(&[(net, 24, de)], "GeoLite2-Country")?;
//! let db = GeoDb::from_bytes(bytes)?;
//! assert_eq!(db.country("192.0.2.77".parse()?), Some(de));
//! assert_eq!(db.country("::ffff:192.0.2.77".parse()?), Some(de));
//! assert_eq!(db.country("198.51.100.1".parse()?), None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod country;
mod db;
mod error;
pub mod writer;

pub use country::{Country, CountryParseError, COUNTRY_CODE_LEN};
pub use db::{DbInfo, GeoDb, MAX_DB_BYTES, PROBE_MAX_NETWORKS, PROBE_MAX_RECORDS};
pub use error::{GeoError, IN_MEMORY_ORIGIN};

/// A [`GeoDb`] is shared between request tasks behind an `Arc`.
const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<GeoDb>();
};
