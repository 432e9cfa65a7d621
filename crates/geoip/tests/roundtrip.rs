//! Databases the writer builds answer as their entries say: the most
//! specific network wins, prefix boundaries are exact, IPv4 works in the
//! IPv6 tree and through IPv4-mapped addresses, every record size reads the
//! same, and maxminddb's full verifier accepts what the writer writes.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use common::{boundaries, cc, expected, ip, sample_entries, Rng};
use raftgate_geoip::writer::{self, Builder, IpVersion, Record, RecordSize};
use raftgate_geoip::{Country, GeoDb, IN_MEMORY_ORIGIN};

fn open(bytes: Vec<u8>) -> GeoDb {
    GeoDb::from_bytes(bytes).expect("a database the writer built opens")
}

fn sample_db() -> GeoDb {
    open(writer::build(&sample_entries(), "GeoLite2-Country").expect("writes"))
}

fn builder_of(entries: &[(IpAddr, u8, Country)]) -> Builder {
    entries.iter().fold(Builder::new("GeoLite2-Country"), |b, &(addr, len, c)| b.network(addr, len, Record::country(c)))
}

/// Every boundary of every entry, a few fixed outsiders, and their
/// IPv4-mapped forms.
fn probe_addresses(entries: &[(IpAddr, u8, Country)]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = entries.iter().flat_map(|&(addr, len, _)| boundaries(addr, len)).collect();
    out.extend(["0.0.0.0", "255.255.255.255", "::", "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"].map(ip));
    let mapped: Vec<IpAddr> = out
        .iter()
        .filter_map(|addr| match addr {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        })
        .collect();
    out.extend(mapped);
    out
}

fn assert_matches_entries(db: &GeoDb, entries: &[(IpAddr, u8, Country)], addrs: &[IpAddr]) {
    for &addr in addrs {
        assert_eq!(db.country(addr), expected(entries, addr), "lookup of {addr}");
    }
}

#[test]
fn nested_networks_answer_with_the_most_specific_country() {
    let db = sample_db();
    assert_eq!(db.country(ip("10.0.0.1")), Some(cc("DE")));
    assert_eq!(db.country(ip("10.1.0.1")), Some(cc("FR")));
    assert_eq!(db.country(ip("10.1.2.3")), Some(cc("IT")));
    assert_eq!(db.country(ip("10.1.3.0")), Some(cc("FR")));
    assert_eq!(db.country(ip("10.2.0.0")), Some(cc("DE")));
    assert_eq!(db.country(ip("2001:db8::1")), Some(cc("NL")));
    assert_eq!(db.country(ip("2001:db8:1::1")), Some(cc("BE")));
    assert_eq!(db.country(ip("2001:db8:1:2::1")), Some(cc("LU")));
    assert_eq!(db.country(ip("2001:db8:1:3::1")), Some(cc("BE")));
    assert_eq!(db.country(ip("2001:db8:2::1")), Some(cc("NL")));
}

#[test]
fn addresses_outside_every_network_have_no_country() {
    let db = sample_db();
    for outside in [
        "9.255.255.255",
        "11.0.0.0",
        "192.0.3.0",
        "198.51.100.127",
        "203.0.113.6",
        "203.0.113.8",
        "0.0.0.0",
        "255.255.255.255",
        "2001:db9::",
        "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
        "::1",
        "::",
        "fe80::1",
    ] {
        assert_eq!(db.country(ip(outside)), None, "{outside}");
    }
}

#[test]
fn first_and_last_address_of_each_prefix_are_inside_and_their_neighbours_outside() {
    let entries = sample_entries();
    let db = sample_db();
    for &(addr, len, _) in &entries {
        // The first two are the network's own first and last address; the
        // rest its neighbours, which belong to a containing network or none.
        for (n, edge) in boundaries(addr, len).into_iter().enumerate() {
            let found = db.country(edge);
            assert_eq!(found, expected(&entries, edge), "{edge} by {addr}/{len}");
            if n < 2 {
                assert!(found.is_some(), "{edge} is inside {addr}/{len}");
            }
        }
    }
    assert_matches_entries(&db, &entries, &probe_addresses(&entries));
    // Spot checks of neighbours, spelled out.
    assert_eq!(db.country(ip("198.51.100.128")), Some(cc("JP")));
    assert_eq!(db.country(ip("198.51.100.255")), Some(cc("JP")));
    assert_eq!(db.country(ip("198.51.100.127")), None);
    assert_eq!(db.country(ip("198.51.101.0")), None);
    assert_eq!(db.country(ip("172.31.255.255")), Some(cc("CA")));
    assert_eq!(db.country(ip("172.32.0.0")), None);
    assert_eq!(db.country(ip("172.15.255.255")), None);
}

#[test]
fn ipv4_mapped_ipv6_addresses_are_looked_up_as_ipv4() {
    let db = sample_db();
    assert_eq!(db.country(ip("::ffff:10.1.2.3")), Some(cc("IT")));
    assert_eq!(db.country(ip("::ffff:10.9.9.9")), Some(cc("DE")));
    assert_eq!(db.country(ip("::ffff:203.0.113.7")), Some(cc("AU")));
    assert_eq!(db.country(ip("::ffff:11.0.0.0")), None);
}

#[test]
fn ipv4_networks_sit_under_the_ipv6_trees_ipv4_subtree() {
    // `::a.b.c.d` is the IPv4 subtree's own spelling of a.b.c.d.
    let db = sample_db();
    assert_eq!(db.country(ip("::10.1.2.3")), Some(cc("IT")));
    assert_eq!(db.country(ip("::192.0.2.200")), Some(cc("US")));
}

#[test]
fn an_ipv4_mapped_alias_in_the_database_gives_the_same_answers() {
    let entries = sample_entries();
    let bytes = builder_of(&entries).alias_ipv4_mapped(true).build().expect("writes");
    // maxminddb itself, asked for the IPv6 spelling, finds the IPv4 record
    // through the alias (GeoDb would convert the address first).
    let mapped = ip("::ffff:10.1.2.3");
    let iso_code = |bytes: &[u8]| -> Option<String> {
        let reader = maxminddb::Reader::from_source(bytes).expect("reads");
        let found = reader.lookup(mapped).expect("lookup");
        found.decode_path(&maxminddb::path!["country", "iso_code"]).expect("decodes")
    };
    assert_eq!(iso_code(&bytes).as_deref(), Some("IT"));
    let unaliased = builder_of(&entries).build().expect("writes");
    assert_eq!(iso_code(&unaliased), None, "without the alias");

    let db = open(bytes);
    assert_matches_entries(&db, &entries, &probe_addresses(&entries));
    db.verify().expect("an aliased tree verifies");
}

#[test]
fn the_order_entries_are_given_in_does_not_change_the_answers() {
    let entries = sample_entries();
    let mut reversed = entries.clone();
    reversed.reverse();
    let forward = writer::build(&entries, "GeoLite2-Country").expect("writes");
    let backward = writer::build(&reversed, "GeoLite2-Country").expect("writes");
    let db = open(backward);
    assert_matches_entries(&db, &entries, &probe_addresses(&entries));
    assert_eq!(forward.len(), db.describe().size_bytes, "same tree size either way");
}

#[test]
fn every_record_size_reads_back_the_same_answers() {
    let entries = sample_entries();
    let addrs = probe_addresses(&entries);
    for size in [RecordSize::Bits24, RecordSize::Bits28, RecordSize::Bits32] {
        let db = open(builder_of(&entries).record_size(size).build().expect("writes"));
        assert_eq!(db.describe().record_size_bits, size.bits());
        assert_matches_entries(&db, &entries, &addrs);
        db.verify().expect("verifies");
    }
}

#[test]
fn a_small_database_gets_the_smallest_record_size() {
    assert_eq!(sample_db().describe().record_size_bits, 24);
}

#[test]
fn many_random_networks_read_back_as_the_longest_match() {
    let mut rng = Rng::new(0x5EED_0001);
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    let codes = ["DE", "FR", "US", "JP", "BR", "ZA", "IN", "AU"].map(cc);
    while entries.len() < 600 {
        let country = codes[rng.below(codes.len() as u64) as usize];
        let (addr, len) = if rng.below(2) == 0 {
            // Clustered under 10/8 and 192/8 so networks nest often.
            let top = if rng.below(2) == 0 { 10u32 } else { 192 };
            let len = 8 + rng.below(25) as u8;
            let raw = (top << 24) | (rng.next_u64() as u32 & 0x00FF_FFFF);
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            (IpAddr::V4(Ipv4Addr::from(raw & mask)), len)
        } else {
            let len = 16 + rng.below(113) as u8;
            let raw = (0x2001_0db8u128 << 96) | (u128::from(rng.next_u64()) << 32);
            let raw = raw | u128::from(rng.next_u64() as u32);
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            (IpAddr::V6(Ipv6Addr::from(raw & mask)), len)
        };
        if seen.insert((addr, len)) {
            entries.push((addr, len, country));
        }
    }
    let db = open(writer::build(&entries, "GeoLite2-Country").expect("writes"));
    let mut addrs = probe_addresses(&entries);
    for _ in 0..2000 {
        addrs.push(IpAddr::V4(Ipv4Addr::from((10u32 << 24) | (rng.next_u64() as u32 & 0x00FF_FFFF))));
        addrs.push(IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(rng.next_u64()) << 32)));
    }
    assert_matches_entries(&db, &entries, &addrs);
    db.verify().expect("verifies");
}

#[test]
fn registered_country_is_used_when_country_is_absent() {
    let bytes = Builder::new("GeoIP2-Country")
        .network(ip("10.0.0.0"), 8, Record::country(cc("DE")))
        .network(ip("20.0.0.0"), 8, Record::Country { country: None, registered_country: Some(cc("US")) })
        .network(ip("30.0.0.0"), 8, Record::Country { country: Some(cc("GB")), registered_country: Some(cc("US")) })
        .network(ip("40.0.0.0"), 8, Record::Country { country: None, registered_country: None })
        .build()
        .expect("writes");
    let db = open(bytes);
    assert_eq!(db.country(ip("20.1.2.3")), Some(cc("US")), "registered only");
    assert_eq!(db.country(ip("30.1.2.3")), Some(cc("GB")), "country wins");
    assert_eq!(db.country(ip("40.1.2.3")), None, "a record with neither");
    assert_eq!(db.try_country(ip("40.1.2.3")).expect("readable"), None);
}

#[test]
fn a_database_of_registered_countries_only_opens() {
    let bytes = Builder::new("GeoIP2-Country")
        .network(ip("20.0.0.0"), 8, Record::Country { country: None, registered_country: Some(cc("US")) })
        .build()
        .expect("writes");
    assert_eq!(open(bytes).country(ip("20.0.0.1")), Some(cc("US")));
}

#[test]
fn an_ipv4_only_database_answers_ipv4_and_mapped_addresses_but_not_ipv6() {
    let bytes = Builder::new("GeoLite2-Country")
        .ip_version(IpVersion::V4)
        .network(ip("10.0.0.0"), 8, Record::country(cc("DE")))
        .network(ip("10.1.0.0"), 16, Record::country(cc("FR")))
        .build()
        .expect("writes");
    let db = open(bytes);
    assert_eq!(db.describe().ip_version, 4);
    assert_eq!(db.country(ip("10.1.0.1")), Some(cc("FR")));
    assert_eq!(db.country(ip("10.2.0.1")), Some(cc("DE")));
    assert_eq!(db.country(ip("::ffff:10.1.0.1")), Some(cc("FR")));
    assert_eq!(db.country(ip("2001:db8::1")), None);
    assert_eq!(db.try_country(ip("2001:db8::1")).expect("not an error"), None);
    db.verify().expect("verifies");
}

#[test]
fn whole_address_space_networks_cover_every_address_of_their_family() {
    let entries = vec![(ip("::"), 0, cc("EU")), (ip("0.0.0.0"), 0, cc("AQ")), (ip("10.0.0.0"), 8, cc("DE"))];
    let db = open(writer::build(&entries, "GeoLite2-Country").expect("writes"));
    assert_eq!(db.country(ip("2001:db8::1")), Some(cc("EU")));
    assert_eq!(db.country(ip("1.2.3.4")), Some(cc("AQ")));
    assert_eq!(db.country(ip("10.2.3.4")), Some(cc("DE")));
    assert_eq!(db.country(ip("::ffff:1.2.3.4")), Some(cc("AQ")));
    assert_matches_entries(&db, &entries, &probe_addresses(&entries));
}

#[test]
fn describe_reports_the_metadata_for_the_startup_log() {
    let bytes = builder_of(&sample_entries()).build_epoch(1_234_567_890).build().expect("writes");
    let len = bytes.len();
    let info = open(bytes).describe();
    assert_eq!(info.database_type, "GeoLite2-Country");
    assert_eq!(info.build_epoch, 1_234_567_890);
    assert_eq!(info.ip_version, 6);
    assert!(info.node_count > 128, "an IPv6 tree is deeper than 128 nodes");
    assert_eq!(info.size_bytes, len);
    assert_eq!(info.origin, IN_MEMORY_ORIGIN);
    let line = info.to_string();
    assert!(line.contains("GeoLite2-Country"), "{line}");
    assert!(line.contains("IPv6"), "{line}");
}

#[test]
fn open_reads_a_database_file_and_names_it_in_describe() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("GeoLite2-Country.mmdb");
    std::fs::write(&path, writer::build(&sample_entries(), "GeoLite2-Country").expect("writes")).expect("write file");
    let db = GeoDb::open(&path).expect("opens");
    assert_eq!(db.country(ip("10.1.2.3")), Some(cc("IT")));
    assert_eq!(db.describe().origin, path.display().to_string());
}

#[test]
fn one_database_serves_lookups_from_many_threads() {
    let db = Arc::new(sample_db());
    let threads: Vec<_> = (0..4u8)
        .map(|n| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                (0..1000u32)
                    .filter(|i| {
                        let addr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, (i % 256) as u8 ^ n));
                        db.country(addr) == Some(cc("IT"))
                    })
                    .count()
            })
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().expect("no panic"), 1000);
    }
}
