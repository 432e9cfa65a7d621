//! Helpers shared by the integration tests: parsing shorthands, a
//! deterministic pseudo-random source, and a reference answer computed
//! straight from the entries, to compare the database's answers against.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use raftgate_geoip::Country;

/// Bits of the IPv4 subtree's position (`::/96`) in an IPv6 key.
const IPV4_SUBTREE_DEPTH: u8 = 96;

pub fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

pub fn cc(text: &str) -> Country {
    text.parse().expect("test country code")
}

/// The networks most tests use: nested IPv4 and IPv6 prefixes, a single
/// host, a network that is not byte-aligned.
pub fn sample_entries() -> Vec<(IpAddr, u8, Country)> {
    vec![
        (ip("10.0.0.0"), 8, cc("DE")),
        (ip("10.1.0.0"), 16, cc("FR")),
        (ip("10.1.2.0"), 24, cc("IT")),
        (ip("192.0.2.0"), 24, cc("US")),
        (ip("198.51.100.128"), 25, cc("JP")),
        (ip("203.0.113.7"), 32, cc("AU")),
        (ip("172.16.0.0"), 12, cc("CA")),
        (ip("2001:db8::"), 32, cc("NL")),
        (ip("2001:db8:1::"), 48, cc("BE")),
        (ip("2001:db8:1:2::"), 64, cc("LU")),
        (ip("2400:cb00::"), 32, cc("CH")),
        (ip("2a00::"), 12, cc("SE")),
    ]
}

/// An address as a key of an IPv6 tree: IPv4 (and IPv4-mapped IPv6) under
/// `::/96`.
pub fn key(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => u128::from(v6),
        },
    }
}

/// A network as (key, depth) in an IPv6 tree.
pub fn network_key(addr: IpAddr, prefix_len: u8) -> (u128, u8) {
    match addr {
        IpAddr::V4(_) => (key(addr), prefix_len + IPV4_SUBTREE_DEPTH),
        IpAddr::V6(v6) => (u128::from(v6), prefix_len),
    }
}

fn contains(network: (u128, u8), address: u128) -> bool {
    let (net, depth) = network;
    let shift = 128 - u32::from(depth);
    net.checked_shr(shift).unwrap_or(0) == address.checked_shr(shift).unwrap_or(0)
}

/// What an IPv6 database built from `entries` should answer for `addr`:
/// the country of the longest network containing it.
pub fn expected(entries: &[(IpAddr, u8, Country)], addr: IpAddr) -> Option<Country> {
    let address = key(addr);
    entries
        .iter()
        .filter(|&&(net, len, _)| contains(network_key(net, len), address))
        .max_by_key(|&&(net, len, _)| network_key(net, len).1)
        .map(|&(_, _, country)| country)
}

/// The first and last address of a network, and the addresses just before
/// and after it (where they exist), in the network's own family.
pub fn boundaries(addr: IpAddr, prefix_len: u8) -> Vec<IpAddr> {
    match addr {
        IpAddr::V4(v4) => {
            let first = u32::from(v4);
            let size = 1u64 << (32 - u32::from(prefix_len));
            let last = (u64::from(first) + size - 1) as u32;
            let mut out = vec![first, last];
            out.extend(first.checked_sub(1));
            out.extend(last.checked_add(1));
            out.into_iter().map(|a| IpAddr::V4(Ipv4Addr::from(a))).collect()
        }
        IpAddr::V6(v6) => {
            let first = u128::from(v6);
            let host_bits = 128 - u32::from(prefix_len);
            let last = first | 1u128.checked_shl(host_bits).map_or(u128::MAX, |b| b - 1);
            let mut out = vec![first, last];
            out.extend(first.checked_sub(1));
            out.extend(last.checked_add(1));
            out.into_iter().map(|a| IpAddr::V6(Ipv6Addr::from(a))).collect()
        }
    }
}

/// xorshift64*: reproducible test data without a random-number crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}
