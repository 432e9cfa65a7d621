//! The cache as the gateway uses it: keys, the storability and freshness
//! rules, and the store's lookups, expiry, eviction and purges.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use proptest::prelude::*;
use raftgate_cache::{Bypass, CacheKey, CacheStatus, Lookup, Miss, Policy, ResponseCache, Storable, Uncacheable};

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(*n, HeaderValue::from_static(v));
    }
    h
}

fn get_key(policy: &Policy, path: &str, query: Option<&str>, request: &HeaderMap) -> CacheKey {
    CacheKey::new(policy, "route-1", &Method::GET, "api.test", path, query, request)
}

fn key(path: &str) -> CacheKey {
    get_key(&Policy::default(), path, None, &HeaderMap::new())
}

fn ok_for(policy: &Policy, response: &HeaderMap) -> Result<Storable, Uncacheable> {
    policy.storable(&Method::GET, &HeaderMap::new(), StatusCode::OK, response)
}

fn ttl(ttl_ms: u64) -> Storable {
    Storable { ttl_ms, age_s: 0, max_object_bytes: usize::MAX }
}

fn store(cache: &ResponseCache, key: CacheKey, body: &'static [u8], storable: Storable, now_ms: u64) {
    cache
        .insert(key, &HeaderMap::new(), StatusCode::OK, &HeaderMap::new(), Bytes::from_static(body), storable, now_ms)
        .expect("stored");
}

fn hit(lookup: Lookup) -> raftgate_cache::Hit {
    match lookup {
        Lookup::Hit(h) => h,
        Lookup::Miss(m) => panic!("expected a hit, got {m:?}"),
    }
}

fn miss(lookup: Lookup) -> Miss {
    match lookup {
        Lookup::Hit(_) => panic!("expected a miss"),
        Lookup::Miss(m) => m,
    }
}

// ---- keys ----

#[test]
fn key_ignores_unchosen_query_params_and_param_order_but_not_values() {
    let policy = Policy { key_query: vec!["page".into(), "sort".into()], ..Policy::default() };
    let none = HeaderMap::new();
    let a = get_key(&policy, "/items", Some("page=2&sort=asc&utm_source=mail"), &none);
    let b = get_key(&policy, "/items", Some("sort=asc&tracking=1&page=2"), &none);
    let c = get_key(&policy, "/items", Some("page=3&sort=asc"), &none);
    let d = get_key(&policy, "/items", Some("sort=asc"), &none);
    assert_eq!(a, b);
    assert_eq!(a.hash(), b.hash());
    assert_ne!(a, c, "a chosen parameter's value counts");
    assert_ne!(a, d, "a chosen parameter's presence counts");
    let no_query = get_key(&Policy::default(), "/items", Some("page=2"), &none);
    assert_eq!(
        no_query,
        get_key(&Policy::default(), "/items", None, &none),
        "no chosen parameters: the query is ignored"
    );
}

#[test]
fn key_keeps_repeated_params_in_order_and_empty_differs_from_absent() {
    let policy = Policy { key_query: vec!["tag".into()], ..Policy::default() };
    let none = HeaderMap::new();
    let ab = get_key(&policy, "/p", Some("tag=a&x=1&tag=b"), &none);
    assert_eq!(ab, get_key(&policy, "/p", Some("tag=a&tag=b"), &none));
    assert_ne!(ab, get_key(&policy, "/p", Some("tag=b&tag=a"), &none));
    assert_eq!(get_key(&policy, "/p", Some("tag"), &none), get_key(&policy, "/p", Some("tag="), &none));
    assert_ne!(get_key(&policy, "/p", Some("tag="), &none), get_key(&policy, "/p", None, &none));
}

#[test]
fn key_decodes_unreserved_escapes_but_keeps_plus_and_reserved_escapes() {
    let policy = Policy { key_query: vec!["q".into()], ..Policy::default() };
    let none = HeaderMap::new();
    assert_eq!(get_key(&policy, "/s", Some("q=A"), &none), get_key(&policy, "/s", Some("%71=%41"), &none));
    assert_eq!(get_key(&policy, "/s", Some("q=%2b"), &none), get_key(&policy, "/s", Some("q=%2B"), &none));
    assert_ne!(get_key(&policy, "/s", Some("q=%2B"), &none), get_key(&policy, "/s", Some("q=+"), &none));
    assert_ne!(get_key(&policy, "/s", Some("q=a+b"), &none), get_key(&policy, "/s", Some("q=a%20b"), &none));
}

#[test]
fn key_headers_are_chosen_case_insensitively_and_others_ignored() {
    let policy = Policy { key_headers: vec!["X-Tenant".into()], ..Policy::default() };
    let t1 = headers(&[("x-tenant", "one"), ("user-agent", "a")]);
    let t1_other_agent = headers(&[("X-TENANT", "one"), ("user-agent", "b")]);
    let t2 = headers(&[("x-tenant", "two")]);
    let empty = headers(&[("x-tenant", "")]);
    let absent = HeaderMap::new();
    assert_eq!(get_key(&policy, "/", None, &t1), get_key(&policy, "/", None, &t1_other_agent));
    assert_ne!(get_key(&policy, "/", None, &t1), get_key(&policy, "/", None, &t2));
    assert_ne!(get_key(&policy, "/", None, &empty), get_key(&policy, "/", None, &absent));
    let upper = Policy { key_headers: vec!["x-tenant".into()], ..Policy::default() };
    assert_eq!(get_key(&policy, "/", None, &t1), get_key(&upper, "/", None, &t1));
}

#[test]
fn key_parts_are_length_prefixed_so_moving_a_boundary_changes_the_key() {
    let p = Policy::default();
    let none = HeaderMap::new();
    let a = CacheKey::new(&p, "ab", &Method::GET, "c", "/", None, &none);
    let b = CacheKey::new(&p, "a", &Method::GET, "bc", "/", None, &none);
    assert_ne!(a, b);
    assert_ne!(a.hash(), b.hash());
    let q = Policy { key_query: vec!["a".into(), "b".into()], ..Policy::default() };
    assert_ne!(
        CacheKey::new(&q, "r", &Method::GET, "h", "/", Some("a=1&b=2"), &none),
        CacheKey::new(&q, "r", &Method::GET, "h", "/", Some("a=1b%3D2"), &none)
    );
}

#[test]
fn key_differs_by_route_host_path_and_method_but_head_shares_get() {
    let p = Policy { methods: vec![Method::GET, Method::HEAD, Method::POST], ..Policy::default() };
    let none = HeaderMap::new();
    let base = CacheKey::new(&p, "r", &Method::GET, "h", "/x", None, &none);
    assert_eq!(
        base,
        CacheKey::new(&p, "r", &Method::HEAD, "H", "/x", None, &none),
        "HEAD is GET's class, host is case-free"
    );
    assert_ne!(base, CacheKey::new(&p, "r2", &Method::GET, "h", "/x", None, &none));
    assert_ne!(base, CacheKey::new(&p, "r", &Method::GET, "h2", "/x", None, &none));
    assert_ne!(base, CacheKey::new(&p, "r", &Method::GET, "h", "/X", None, &none));
    assert_ne!(base, CacheKey::new(&p, "r", &Method::POST, "h", "/x", None, &none));
    assert_eq!(base.route_id(), "r");
    assert_eq!(base.path(), "/x");
}

#[test]
fn key_from_request_takes_the_authority_or_the_host_header() {
    let p = Policy { key_query: vec!["a".into()], ..Policy::default() };
    let origin_form = Request::get("/x?a=1").header("host", "Api.Test").body(()).expect("request");
    let absolute = Request::get("http://api.test/x?a=1").body(()).expect("request");
    let expected = CacheKey::new(&p, "r", &Method::GET, "api.test", "/x", Some("a=1"), &HeaderMap::new());
    assert_eq!(CacheKey::from_request(&p, "r", &origin_form), expected);
    assert_eq!(CacheKey::from_request(&p, "r", &absolute), expected);
}

// ---- storability and freshness ----

#[test]
fn no_store_private_no_cache_set_cookie_and_vary_star_are_not_stored() {
    let p = Policy::default();
    let cases = [
        (headers(&[("cache-control", "no-store, max-age=60")]), Uncacheable::NoStore),
        (headers(&[("cache-control", "private, max-age=60")]), Uncacheable::Private),
        (headers(&[("cache-control", "private=\"x-user\"")]), Uncacheable::Private),
        (headers(&[("cache-control", "no-cache")]), Uncacheable::NoCache),
        (headers(&[("cache-control", "max-age=60"), ("set-cookie", "s=1")]), Uncacheable::SetCookie),
        (headers(&[("vary", "accept-encoding, *")]), Uncacheable::VaryStar),
        (headers(&[("vary", "not a name")]), Uncacheable::VaryInvalid),
        (headers(&[("cache-control", "max-age=soon")]), Uncacheable::InvalidCacheControl),
    ];
    for (response, reason) in cases {
        assert_eq!(ok_for(&p, &response), Err(reason), "{response:?}");
    }
    // And insert refuses them too, whatever the caller claims.
    let cache = ResponseCache::new(1 << 20, 100);
    for response in [headers(&[("set-cookie", "s=1")]), headers(&[("vary", "*")])] {
        let r = cache.insert(key("/"), &HeaderMap::new(), StatusCode::OK, &response, Bytes::new(), ttl(1000), 0);
        assert!(r.is_err());
    }
    assert_eq!(cache.stats().entries, 0);
}

#[test]
fn s_maxage_beats_max_age() {
    let p = Policy { max_ttl_ms: u64::MAX, ..Policy::default() };
    let s = ok_for(&p, &headers(&[("cache-control", "max-age=10, s-maxage=300")])).expect("storable");
    assert_eq!(s.ttl_ms, 300_000);
    let s =
        ok_for(&p, &headers(&[("cache-control", "s-maxage=5"), ("cache-control", "max-age=900")])).expect("storable");
    assert_eq!(s.ttl_ms, 5_000);
    let s = ok_for(&p, &headers(&[("cache-control", "max-age=10")])).expect("storable");
    assert_eq!(s.ttl_ms, 10_000);
}

#[test]
fn ttl_is_the_default_without_explicit_freshness_and_is_clamped_to_max_ttl() {
    let p = Policy { default_ttl_ms: 7_000, max_ttl_ms: 60_000, ..Policy::default() };
    assert_eq!(ok_for(&p, &HeaderMap::new()).map(|s| s.ttl_ms), Ok(7_000));
    assert_eq!(ok_for(&p, &headers(&[("cache-control", "max-age=86400")])).map(|s| s.ttl_ms), Ok(60_000));
    assert_eq!(ok_for(&p, &headers(&[("cache-control", "max-age=99999999999999")])).map(|s| s.ttl_ms), Ok(60_000));
    assert_eq!(ok_for(&p, &headers(&[("cache-control", "max-age=0")])), Err(Uncacheable::NotFresh));
    let explicit_only = Policy { default_ttl_ms: 0, ..Policy::default() };
    assert_eq!(ok_for(&explicit_only, &HeaderMap::new()), Err(Uncacheable::NotFresh));
    assert_eq!(ok_for(&explicit_only, &headers(&[("cache-control", "max-age=3")])).map(|s| s.ttl_ms), Ok(3_000));
}

#[test]
fn an_upstream_age_is_taken_off_the_lifetime_and_reported() {
    let p = Policy::default();
    let s = ok_for(&p, &headers(&[("cache-control", "max-age=100"), ("age", "30")])).expect("storable");
    assert_eq!((s.ttl_ms, s.age_s), (70_000, 30));
    assert_eq!(ok_for(&p, &headers(&[("cache-control", "max-age=100"), ("age", "100")])), Err(Uncacheable::NotFresh));
}

#[test]
fn expires_minus_date_is_the_lifetime_when_max_age_is_absent() {
    let p = Policy::default();
    let date = ("date", "Sun, 06 Nov 1994 08:49:37 GMT");
    let s = ok_for(&p, &headers(&[date, ("expires", "Sun, 06 Nov 1994 08:50:37 GMT")])).expect("storable");
    assert_eq!(s.ttl_ms, 60_000);
    let s = ok_for(&p, &headers(&[date, ("expires", "Sun, 06 Nov 1994 09:50:37 GMT"), ("cache-control", "max-age=5")]))
        .expect("storable");
    assert_eq!(s.ttl_ms, 5_000, "max-age wins over Expires");
    assert_eq!(ok_for(&p, &headers(&[date, ("expires", "0")])), Err(Uncacheable::NotFresh));
    assert_eq!(ok_for(&p, &headers(&[date, ("expires", "Sun, 06 Nov 1994 08:49:37 GMT")])), Err(Uncacheable::NotFresh));
    assert_eq!(
        ok_for(&p, &headers(&[("expires", "Sun, 06 Nov 1994 08:50:37 GMT")])),
        Err(Uncacheable::ExpiresWithoutDate)
    );
}

#[test]
fn a_request_with_authorization_is_stored_only_if_the_response_allows_shared_caching() {
    let p = Policy::default();
    let auth = headers(&[("authorization", "Bearer t")]);
    let check = |cc: &'static str| {
        p.storable(&Method::GET, &auth, StatusCode::OK, &headers(&[("cache-control", cc)])).map(|s| s.ttl_ms)
    };
    assert_eq!(check("max-age=60"), Err(Uncacheable::Authorization));
    assert_eq!(check("public, max-age=60"), Ok(60_000));
    assert_eq!(check("s-maxage=30"), Ok(30_000));
    assert_eq!(check("must-revalidate, max-age=60"), Ok(60_000));
}

#[test]
fn partial_content_other_statuses_head_and_unlisted_methods_are_not_stored() {
    let p = Policy::default();
    let none = HeaderMap::new();
    assert_eq!(p.storable(&Method::GET, &none, StatusCode::PARTIAL_CONTENT, &none), Err(Uncacheable::PartialContent));
    let ranged = headers(&[("content-range", "bytes 0-9/100")]);
    assert_eq!(p.storable(&Method::GET, &none, StatusCode::OK, &ranged), Err(Uncacheable::PartialContent));
    assert_eq!(p.storable(&Method::GET, &none, StatusCode::INTERNAL_SERVER_ERROR, &none), Err(Uncacheable::Status));
    assert_eq!(p.storable(&Method::GET, &none, StatusCode::FOUND, &none), Err(Uncacheable::Status));
    assert!(p.storable(&Method::GET, &none, StatusCode::NOT_FOUND, &none).is_ok());
    assert_eq!(p.storable(&Method::HEAD, &none, StatusCode::OK, &none), Err(Uncacheable::HeadResponse));
    assert_eq!(p.storable(&Method::POST, &none, StatusCode::OK, &none), Err(Uncacheable::Method));
}

#[test]
fn a_content_length_over_max_object_bytes_is_refused_before_the_body_is_read() {
    let p = Policy { max_object_bytes: 1000, ..Policy::default() };
    assert_eq!(ok_for(&p, &headers(&[("content-length", "1001")])), Err(Uncacheable::TooLarge));
    assert_eq!(ok_for(&p, &headers(&[("content-length", "1000")])).map(|s| s.max_object_bytes), Ok(1000));
}

#[test]
fn request_no_store_no_cache_max_age_zero_and_range_bypass_the_cache() {
    let p = Policy::default();
    let bypass = |pairs: &[(&'static str, &'static str)]| p.request_bypass(&Method::GET, &headers(pairs));
    assert_eq!(bypass(&[]), None);
    assert_eq!(bypass(&[("cache-control", "max-age=60")]), None);
    assert_eq!(bypass(&[("cache-control", "no-store")]), Some(Bypass::NoStore));
    assert_eq!(bypass(&[("cache-control", "No-Cache")]), Some(Bypass::NoCache));
    assert_eq!(bypass(&[("cache-control", "max-age=0")]), Some(Bypass::MaxAgeZero));
    assert_eq!(bypass(&[("range", "bytes=0-10")]), Some(Bypass::Range));
    assert_eq!(bypass(&[("cache-control", "max-age=\"unterminated")]), Some(Bypass::InvalidCacheControl));
    assert_eq!(p.request_bypass(&Method::POST, &HeaderMap::new()), Some(Bypass::Method));
    assert_eq!(p.request_bypass(&Method::HEAD, &HeaderMap::new()), None);
    // no-store keeps the response out of the cache too; no-cache lets it refresh the cache.
    let store = |cc: &'static str| {
        p.storable(&Method::GET, &headers(&[("cache-control", cc)]), StatusCode::OK, &HeaderMap::new())
    };
    assert_eq!(store("no-store"), Err(Uncacheable::RequestNoStore));
    assert!(store("no-cache").is_ok());
}

proptest! {
    #[test]
    fn arbitrary_header_bytes_never_panic(
        cc in proptest::collection::vec(any::<u8>(), 0..40),
        vary in proptest::collection::vec(any::<u8>(), 0..40),
        date in proptest::collection::vec(any::<u8>(), 0..40),
        age in proptest::collection::vec(any::<u8>(), 0..12),
        length in proptest::collection::vec(any::<u8>(), 0..12),
    ) {
        let mut response = HeaderMap::new();
        let mut request = HeaderMap::new();
        for (name, bytes) in [("cache-control", &cc), ("vary", &vary), ("date", &date), ("expires", &date), ("age", &age), ("content-length", &length)] {
            if let Ok(v) = HeaderValue::from_bytes(bytes) {
                response.insert(name, v.clone());
                request.insert(name, v);
            }
        }
        let p = Policy { key_headers: vec!["vary".into(), "\u{e9}".into()], key_query: vec!["%".into()], ..Policy::default() };
        let _ = p.request_bypass(&Method::GET, &request);
        let stored = p.storable(&Method::GET, &request, StatusCode::OK, &response);
        let cache = ResponseCache::new(1 << 20, 10);
        let k = CacheKey::new(&p, "r", &Method::GET, "h", "/", Some(&String::from_utf8_lossy(&cc)), &request);
        let body = Bytes::from(vec![0u8; 3]);
        let inserted = cache.insert(k.clone(), &request, StatusCode::OK, &response, body, ttl(1000), 0);
        let _ = cache.lookup(&k, &request, 1);
        if let Ok(s) = stored {
            prop_assert!(s.ttl_ms > 0);
        }
        if inserted.is_ok() {
            prop_assert!(matches!(cache.lookup(&k, &request, 1), Lookup::Hit(_)));
        }
    }
}

// ---- the store ----

#[test]
fn a_stored_response_is_served_until_exactly_its_ttl() {
    let cache = ResponseCache::new(1 << 20, 100);
    store(&cache, key("/e"), b"body", ttl(1_500), 10_000);
    let h = hit(cache.lookup(&key("/e"), &HeaderMap::new(), 11_499));
    assert_eq!(h.fresh_for_ms, 1);
    assert_eq!(&h.response.body[..], b"body");
    assert_eq!(miss(cache.lookup(&key("/e"), &HeaderMap::new(), 11_500)), Miss::Expired);
    assert_eq!(cache.stats().entries, 0, "an expired entry met by a lookup is removed");
    assert_eq!(miss(cache.lookup(&key("/e"), &HeaderMap::new(), 11_500)), Miss::Absent);
    assert_eq!(cache.stats().expired, 1);
}

#[test]
fn age_grows_with_now_from_the_upstream_age() {
    let cache = ResponseCache::new(1 << 20, 100);
    store(&cache, key("/a"), b"x", Storable { ttl_ms: 60_000, age_s: 5, max_object_bytes: 10 }, 1_000);
    assert_eq!(hit(cache.lookup(&key("/a"), &HeaderMap::new(), 1_000)).age_s, 5);
    assert_eq!(hit(cache.lookup(&key("/a"), &HeaderMap::new(), 1_999)).age_s, 5);
    assert_eq!(hit(cache.lookup(&key("/a"), &HeaderMap::new(), 2_000)).age_s, 6);
    let late = hit(cache.lookup(&key("/a"), &HeaderMap::new(), 43_000));
    assert_eq!(late.age_s, 47);
    assert_eq!(late.to_response(&Method::GET).headers()["age"], "47");
}

#[test]
fn head_is_served_from_a_get_entry_without_the_body() {
    let p = Policy::default();
    let cache = ResponseCache::new(1 << 20, 100);
    let none = HeaderMap::new();
    let response = headers(&[("content-type", "text/plain"), ("content-length", "5"), ("cache-control", "max-age=60")]);
    let s = p.storable(&Method::GET, &none, StatusCode::OK, &response).expect("storable");
    let get = CacheKey::new(&p, "r", &Method::GET, "h", "/doc", None, &none);
    cache.insert(get, &none, StatusCode::OK, &response, Bytes::from_static(b"hello"), s, 0).expect("stored");

    assert_eq!(p.request_bypass(&Method::HEAD, &none), None);
    let head = CacheKey::new(&p, "r", &Method::HEAD, "h", "/doc", None, &none);
    let h = hit(cache.lookup(&head, &none, 10));
    let served = h.to_response(&Method::HEAD);
    assert_eq!(served.status(), StatusCode::OK);
    assert!(served.body().is_empty());
    assert_eq!(served.headers()["content-length"], "5");
    assert_eq!(&h.to_response(&Method::GET).body()[..], b"hello");
}

#[test]
fn vary_variants_are_stored_side_by_side_and_the_request_must_match() {
    let p = Policy::default();
    let cache = ResponseCache::new(1 << 20, 100);
    let gzip = headers(&[("accept-encoding", "gzip")]);
    let br = headers(&[("accept-encoding", "br")]);
    let none = HeaderMap::new();
    let response = headers(&[("vary", "Accept-Encoding"), ("cache-control", "max-age=60")]);
    let s = p.storable(&Method::GET, &gzip, StatusCode::OK, &response).expect("storable");
    cache.insert(key("/v"), &gzip, StatusCode::OK, &response, Bytes::from_static(b"gz"), s, 0).expect("stored");
    assert_eq!(miss(cache.lookup(&key("/v"), &br, 1)), Miss::VaryMismatch);
    assert_eq!(miss(cache.lookup(&key("/v"), &none, 1)), Miss::VaryMismatch);
    cache.insert(key("/v"), &br, StatusCode::OK, &response, Bytes::from_static(b"br"), s, 2).expect("stored");
    cache.insert(key("/v"), &none, StatusCode::OK, &response, Bytes::from_static(b"id"), s, 2).expect("stored");
    assert_eq!(&hit(cache.lookup(&key("/v"), &gzip, 3)).response.body[..], b"gz");
    assert_eq!(&hit(cache.lookup(&key("/v"), &br, 3)).response.body[..], b"br");
    assert_eq!(&hit(cache.lookup(&key("/v"), &none, 3)).response.body[..], b"id");
    let gzip_spaced = headers(&[("accept-encoding", " gzip ")]);
    assert_eq!(&hit(cache.lookup(&key("/v"), &gzip_spaced, 3)).response.body[..], b"gz");
    assert_eq!(cache.stats().entries, 3);
    // A new response for the same request replaces the old variant, not the others.
    cache.insert(key("/v"), &gzip, StatusCode::OK, &response, Bytes::from_static(b"gz2"), s, 4).expect("stored");
    assert_eq!(cache.stats().entries, 3);
    assert_eq!(&hit(cache.lookup(&key("/v"), &gzip, 5)).response.body[..], b"gz2");
}

#[test]
fn lru_eviction_order_under_a_byte_capacity() {
    let one = ResponseCache::with_shards(1 << 20, 100, 1);
    store(&one, key("/a"), &[0; 1000], ttl(60_000), 0);
    let entry_bytes = one.stats().bytes;
    assert!(entry_bytes > 1000, "the size counts more than the body");

    let cache = ResponseCache::with_shards(3 * entry_bytes + entry_bytes / 2, 100, 1);
    for path in ["/a", "/b", "/c"] {
        store(&cache, key(path), &[0; 1000], ttl(60_000), 0);
    }
    assert!(matches!(cache.lookup(&key("/a"), &HeaderMap::new(), 1), Lookup::Hit(_)));
    store(&cache, key("/d"), &[0; 1000], ttl(60_000), 2);
    let present = |p: &str| matches!(cache.lookup(&key(p), &HeaderMap::new(), 3), Lookup::Hit(_));
    assert!(!present("/b"), "b was the least recently used");
    assert!(present("/c") && present("/d") && present("/a"));
    // Now c is the least recently used, then d, then a.
    store(&cache, key("/e"), &[0; 1000], ttl(60_000), 4);
    assert!(!present("/c"));
    assert!(present("/d") && present("/a") && present("/e"));
    let stats = cache.stats();
    assert_eq!(stats.evictions, 2);
    assert!(stats.bytes <= cache.capacity_bytes());
}

#[test]
fn max_entries_evicts_the_least_recently_used() {
    let cache = ResponseCache::with_shards(1 << 20, 2, 1);
    store(&cache, key("/a"), b"a", ttl(60_000), 0);
    store(&cache, key("/b"), b"b", ttl(60_000), 0);
    store(&cache, key("/c"), b"c", ttl(60_000), 0);
    assert_eq!(cache.stats().entries, 2);
    assert_eq!(miss(cache.lookup(&key("/a"), &HeaderMap::new(), 1)), Miss::Absent);
}

#[test]
fn an_oversized_object_is_refused() {
    let cache = ResponseCache::with_shards(10_000, 100, 2);
    let small = Storable { ttl_ms: 1000, age_s: 0, max_object_bytes: 100 };
    let r = cache.insert(
        key("/o"),
        &HeaderMap::new(),
        StatusCode::OK,
        &HeaderMap::new(),
        Bytes::from(vec![0; 101]),
        small,
        0,
    );
    assert_eq!(r, Err(Uncacheable::TooLarge), "over max_object_bytes");
    let r = cache.insert(
        key("/o"),
        &HeaderMap::new(),
        StatusCode::OK,
        &HeaderMap::new(),
        Bytes::from(vec![0; 6_000]),
        ttl(1000),
        0,
    );
    assert_eq!(r, Err(Uncacheable::TooLarge), "over one shard's share of the capacity");
    assert_eq!(cache.stats().entries, 0);
    store(&cache, key("/o"), &[0; 4_000], ttl(1000), 0);
    assert_eq!(cache.stats().entries, 1);
}

#[test]
fn a_body_that_differs_from_content_length_is_refused() {
    let cache = ResponseCache::new(1 << 20, 100);
    let response = headers(&[("content-length", "10")]);
    let r = cache.insert(
        key("/i"),
        &HeaderMap::new(),
        StatusCode::OK,
        &response,
        Bytes::from_static(b"short"),
        ttl(1000),
        0,
    );
    assert_eq!(r, Err(Uncacheable::Incomplete));
}

#[test]
fn stored_headers_drop_hop_by_hop_fields_and_age() {
    let cache = ResponseCache::new(1 << 20, 100);
    let response = headers(&[
        ("content-type", "text/plain"),
        ("connection", "keep-alive, x-hop"),
        ("keep-alive", "timeout=5"),
        ("x-hop", "1"),
        ("transfer-encoding", "chunked"),
        ("age", "3"),
        ("etag", "\"v1\""),
        ("x-multi", "1"),
        ("x-multi", "2"),
    ]);
    cache
        .insert(key("/h"), &HeaderMap::new(), StatusCode::OK, &response, Bytes::from_static(b"b"), ttl(1000), 0)
        .expect("stored");
    let h = hit(cache.lookup(&key("/h"), &HeaderMap::new(), 0));
    let kept = &h.response.headers;
    for gone in ["connection", "keep-alive", "x-hop", "transfer-encoding", "age"] {
        assert!(!kept.contains_key(gone), "{gone} stored");
    }
    assert_eq!(kept["content-type"], "text/plain");
    assert_eq!(kept["etag"], "\"v1\"");
    assert_eq!(kept.get_all("x-multi").iter().count(), 2);
}

#[test]
fn purge_by_route_and_by_path_prefix() {
    let cache = ResponseCache::new(1 << 20, 100);
    let p = Policy::default();
    let none = HeaderMap::new();
    for (route, path) in
        [("a", "/img/1"), ("a", "/img/2"), ("a", "/doc/1"), ("b", "/img/1"), ("b", "/doc/1"), ("c", "/x")]
    {
        store(&cache, CacheKey::new(&p, route, &Method::GET, "h", path, None, &none), b"b", ttl(60_000), 0);
    }
    assert_eq!(cache.purge_prefix(Some("a"), "/img/"), 2);
    assert_eq!(cache.purge_prefix(None, "/doc"), 2);
    assert_eq!(cache.stats().entries, 2);
    let b_img = CacheKey::new(&p, "b", &Method::GET, "h", "/img/1", None, &none);
    assert!(matches!(cache.lookup(&b_img, &none, 1), Lookup::Hit(_)));
    assert_eq!(cache.purge_route("b"), 1);
    assert_eq!(cache.purge_route("b"), 0);
    assert_eq!(cache.purge_key(&CacheKey::new(&p, "c", &Method::GET, "h", "/x", None, &none)), 1);
    store(&cache, key("/z"), b"z", ttl(60_000), 0);
    assert_eq!(cache.purge_all(), 1);
    let stats = cache.stats();
    assert_eq!((stats.entries, stats.bytes, stats.purged), (0, 0, 7));
}

#[test]
fn remove_expired_sweeps_only_expired_entries() {
    let cache = ResponseCache::new(1 << 20, 100);
    store(&cache, key("/short"), b"s", ttl(100), 0);
    store(&cache, key("/long"), b"l", ttl(10_000), 0);
    assert_eq!(cache.remove_expired(99), 0);
    assert_eq!(cache.remove_expired(100), 1);
    assert_eq!(cache.stats().entries, 1);
}

#[test]
fn the_gateway_flow_yields_a_cache_status() {
    let p = Policy::default();
    let cache = ResponseCache::new(1 << 20, 100);
    let request = HeaderMap::new();
    let response = headers(&[("cache-control", "max-age=1")]);
    let k = key("/flow");

    let status = match cache.lookup(&k, &request, 0) {
        Lookup::Hit(_) => CacheStatus::Hit,
        Lookup::Miss(m) => {
            let stored = p.storable(&Method::GET, &request, StatusCode::OK, &response).and_then(|s| {
                cache.insert(k.clone(), &request, StatusCode::OK, &response, Bytes::from_static(b"r"), s, 0)
            });
            CacheStatus::after_miss(m, stored)
        }
    };
    assert_eq!(status.as_str(), "MISS");
    assert!(matches!(cache.lookup(&k, &request, 999), Lookup::Hit(_)));
    let Lookup::Miss(m) = cache.lookup(&k, &request, 1_000) else { panic!("expired") };
    assert_eq!(CacheStatus::after_miss(m, Ok(())).as_str(), "EXPIRED");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.inserts), (1, 2, 1));
}
