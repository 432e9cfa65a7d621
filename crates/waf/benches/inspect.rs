//! What inspection costs on the request path: a realistic benign 4 KiB JSON
//! body, the same size of body with an attack in its last value (the worst
//! place: everything before it is scanned first), and a typical query string.
//!
//! Run: `cargo bench -p raftgate-waf --bench inspect`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raftgate_waf::{Inspector, Limits};
use serde_json::{json, Value};

/// The size the bodies are grown to, in bytes.
const BODY_BYTES: usize = 4 * 1024;

const ATTACK: &str = "' union select username, password from users--";

/// An order with a customer, an address, line items and a free-text note
/// (written last, after everything else), grown with more line items to at
/// least `BODY_BYTES`.
fn order_body(last_note: &str) -> Vec<u8> {
    let item = |n: usize| {
        json!({
            "sku": format!("SKU-{n:05}"),
            "name": "Men's trail running shoes (size 10.5, blue/grey)",
            "description": "Lightweight and breathable; the sole grips on wet rock & mud. Select a size or 2 to compare.",
            "quantity": n % 3 + 1,
            "price": {"amount": 89.99, "currency": "EUR"},
            "tags": ["running", "outdoor", "men's"],
        })
    };
    let mut items = Vec::new();
    loop {
        let body = json!({
            "customer": {
                "id": "c5f0e8a2-1b7d-4c1e-9f3a-2d6b8e4a7c90",
                "name": "Siobhán O'Connor-Smith",
                "email": "siobhan.oconnor+orders@example.ie",
                "phone": "+353 1 555 0142",
            },
            "shipping": {
                "street": "12 O'Connell Street, Apt. #4B",
                "city": "Dublin",
                "postcode": "D01 F5P2",
                "country": "IE",
                "instructions": "Leave with the neighbour at no. 14 if I'm out -- thanks!",
            },
            "items": items,
            "coupon": "SPRING-20",
        });
        // serde_json sorts keys; the note is appended by hand to come last.
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        bytes.pop();
        bytes.extend_from_slice(b",\"note\":");
        bytes.extend_from_slice(&serde_json::to_vec(last_note).unwrap_or_default());
        bytes.push(b'}');
        if bytes.len() >= BODY_BYTES {
            return bytes;
        }
        items.push(item(items.len()));
    }
}

fn bench(c: &mut Criterion) {
    let inspector = Inspector::new(Limits::default());
    let benign = order_body("Please gift-wrap the second pair; it's for my brother's birthday.");
    let attack = order_body(ATTACK);
    assert!(matches!(inspector.inspect_body(Some("application/json"), &benign), Ok(None)));
    assert!(matches!(inspector.inspect_body(Some("application/json"), &attack), Ok(Some(_))));
    let values = serde_json::from_slice::<Value>(&benign).map(|v| v["items"].as_array().map_or(0, Vec::len));
    eprintln!("benign body: {} bytes, {} line items", benign.len(), values.unwrap_or(0));

    let mut group = c.benchmark_group("inspect_body");
    group.throughput(Throughput::Bytes(benign.len() as u64));
    group.bench_function("benign_4kib_json", |b| {
        b.iter(|| inspector.inspect_body(black_box(Some("application/json")), black_box(&benign)))
    });
    group.throughput(Throughput::Bytes(attack.len() as u64));
    group.bench_function("attack_at_end_4kib_json", |b| {
        b.iter(|| inspector.inspect_body(black_box(Some("application/json")), black_box(&attack)))
    });
    group.finish();

    let query = "q=red+trail+running+shoes&category=men%27s&size=10.5&colour=blue%2Fgrey&sort=price_asc&page=2\
                 &utm_source=newsletter&utm_medium=email&utm_campaign=spring_sale";
    assert!(inspector.inspect_query(query).is_none());
    let mut group = c.benchmark_group("inspect_query");
    group.throughput(Throughput::Bytes(query.len() as u64));
    group.bench_function("typical_query", |b| b.iter(|| inspector.inspect_query(black_box(query))));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
