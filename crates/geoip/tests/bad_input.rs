//! Files the gateway must refuse at startup, each with an error that says
//! which file and what is wrong, and never a panic: a missing path, a
//! directory, an oversized file, an empty one, random bytes, every
//! truncation of a valid database, damaged bytes anywhere in one, and valid
//! databases that carry no countries.

mod common;

use std::fs::File;
use std::path::Path;

use common::{cc, ip, sample_entries, Rng};
use raftgate_geoip::writer::{self, Builder, Record, METADATA_MARKER};
use raftgate_geoip::{GeoDb, GeoError, MAX_DB_BYTES};

fn valid_db() -> Vec<u8> {
    writer::build(&sample_entries(), "GeoLite2-Country").expect("writes")
}

fn open_err(bytes: Vec<u8>) -> GeoError {
    match GeoDb::from_bytes(bytes) {
        Ok(_) => panic!("expected the database to be refused"),
        Err(err) => err,
    }
}

fn open_path_err(path: &Path) -> GeoError {
    match GeoDb::open(path) {
        Ok(_) => panic!("expected {} to be refused", path.display()),
        Err(err) => err,
    }
}

fn assert_corrupt(err: &GeoError, context: &str) {
    assert!(matches!(err, GeoError::Corrupt { .. }), "{context}: {err:?}");
}

#[test]
fn a_missing_file_is_reported_as_missing_with_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("GeoLite2-Country.mmdb");
    let err = open_path_err(&path);
    assert!(matches!(&err, GeoError::Missing { path: p } if *p == path), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn a_directory_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = open_path_err(dir.path());
    assert!(matches!(err, GeoError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn a_file_above_the_size_limit_is_refused_without_being_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("huge.mmdb");
    // A sparse file: its length is over the limit, its blocks are not there.
    File::create(&path).and_then(|file| file.set_len(MAX_DB_BYTES + 1)).expect("sparse file");
    let err = open_path_err(&path);
    match &err {
        GeoError::TooLarge { size_bytes, limit_bytes, .. } => {
            assert_eq!(*size_bytes, MAX_DB_BYTES + 1);
            assert_eq!(*limit_bytes, MAX_DB_BYTES);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn an_empty_file_is_corrupt_and_says_it_is_empty() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("empty.mmdb");
    File::create(&path).expect("empty file");
    let err = open_path_err(&path);
    assert_corrupt(&err, "empty file");
    let message = err.to_string();
    assert!(message.contains("empty"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");

    assert_corrupt(&open_err(Vec::new()), "empty bytes");
}

#[test]
fn a_kibibyte_of_random_bytes_is_corrupt() {
    for seed in 1..=32 {
        let bytes = Rng::new(seed).bytes(1024);
        let err = open_err(bytes);
        assert_corrupt(&err, &format!("seed {seed}"));
        assert!(err.to_string().contains("not a valid MaxMind DB"), "{err}");
    }
}

#[test]
fn random_bytes_around_a_metadata_marker_are_corrupt() {
    for seed in 1..=32 {
        let mut rng = Rng::new(seed);
        let mut bytes = rng.bytes(512);
        bytes.extend_from_slice(METADATA_MARKER);
        bytes.extend(rng.bytes(64));
        assert_corrupt(&open_err(bytes), &format!("seed {seed}"));
    }
}

#[test]
fn every_truncation_of_a_valid_database_is_corrupt() {
    let full = valid_db();
    assert!(GeoDb::from_bytes(full.clone()).is_ok());
    for cut in 0..full.len() {
        let err = open_err(full[..cut].to_vec());
        assert_corrupt(&err, &format!("cut at {cut} of {}", full.len()));
    }
}

#[test]
fn a_truncated_database_file_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cut.mmdb");
    let full = valid_db();
    std::fs::write(&path, &full[..full.len() / 2]).expect("write");
    let err = open_path_err(&path);
    assert_corrupt(&err, "half a file");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn damaged_bytes_anywhere_in_a_database_never_panic() {
    let full = valid_db();
    let addrs: Vec<_> = sample_entries()
        .into_iter()
        .map(|(addr, _, _)| addr)
        .chain(["10.1.2.3", "::ffff:10.0.0.1", "2001:db8:1:2::5", "8.8.8.8"].map(ip))
        .collect();
    for position in 0..full.len() {
        for flip in [0xFF, 0x01, 0x80] {
            let mut bytes = full.clone();
            bytes[position] ^= flip;
            match GeoDb::from_bytes(bytes) {
                Ok(db) => {
                    for &addr in &addrs {
                        let _ = db.try_country(addr);
                    }
                    let _ = db.verify();
                    let _ = db.describe();
                }
                Err(err) => assert!(
                    matches!(err, GeoError::Corrupt { .. } | GeoError::WrongKind { .. }),
                    "byte {position} ^ {flip:#x}: {err:?}"
                ),
            }
        }
    }
}

#[test]
fn a_damaged_record_past_the_probe_is_an_error_from_try_country_and_none_from_country() {
    let bytes = Builder::new("GeoLite2-Country")
        .network(ip("10.0.0.0"), 8, Record::country(cc("DE")))
        .network(ip("20.0.0.0"), 8, Record::country(cc("FR")))
        .build()
        .expect("writes");
    // Turn the string "FR" (control byte 0x42) into a two-byte uint32.
    let mut bytes = bytes;
    let at = bytes.windows(3).position(|w| w == b"\x42FR").expect("FR is in the data section");
    bytes[at] = 0xC2;
    let db = GeoDb::from_bytes(bytes).expect("the probe reads only the first record");
    assert_eq!(db.country(ip("10.0.0.1")), Some(cc("DE")));
    assert_eq!(db.country(ip("20.0.0.1")), None);
    let err = db.try_country(ip("20.0.0.1")).expect_err("unreadable record");
    assert!(matches!(err, GeoError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("decoding"), "{err}");
}

#[test]
fn an_asn_database_is_the_wrong_kind_and_says_its_type() {
    let bytes = Builder::new("GeoLite2-ASN")
        .network(ip("10.0.0.0"), 8, Record::Asn { number: 64_496, organization: "Example Networks".into() })
        .network(ip("2001:db8::"), 32, Record::Asn { number: 64_497, organization: "Example Six".into() })
        .build()
        .expect("writes");
    let err = open_err(bytes);
    assert!(matches!(err, GeoError::WrongKind { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("GeoLite2-ASN"), "{message}");
    assert!(message.contains("country"), "{message}");
}

#[test]
fn an_asn_database_file_is_the_wrong_kind_and_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("GeoLite2-ASN.mmdb");
    let bytes = Builder::new("GeoLite2-ASN")
        .network(ip("10.0.0.0"), 8, Record::Asn { number: 64_496, organization: "Example Networks".into() })
        .build()
        .expect("writes");
    std::fs::write(&path, bytes).expect("write");
    let err = open_path_err(&path);
    assert!(matches!(err, GeoError::WrongKind { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

#[test]
fn a_database_whose_records_are_all_empty_is_the_wrong_kind() {
    let empty = Record::Country { country: None, registered_country: None };
    let bytes = Builder::new("GeoLite2-Country")
        .network(ip("10.0.0.0"), 8, empty.clone())
        .network(ip("20.0.0.0"), 8, empty)
        .build()
        .expect("writes");
    assert!(matches!(open_err(bytes), GeoError::WrongKind { .. }));
}

#[test]
fn a_database_with_no_networks_is_the_wrong_kind() {
    let bytes = Builder::new("GeoLite2-Country").build().expect("writes");
    let err = open_err(bytes);
    assert!(matches!(err, GeoError::WrongKind { .. }), "{err:?}");
    assert!(err.to_string().contains("no network"), "{err}");
}
