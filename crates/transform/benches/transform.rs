//! What body transformation costs on the request path: a realistic order of
//! at least 16 KiB of JSON (customer, address, line items with attributes
//! and text) written as XML, and that XML read back as JSON.
//!
//! Run: `cargo bench -p raftgate-transform --bench transform`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raftgate_model::transform::{JsonEdit, JsonToXml, XmlToJson};
use raftgate_transform::{json_body_to_xml, xml_body_to_json, Limits};
use serde_json::json;

/// The size the JSON body is grown to, in bytes.
const BODY_BYTES: usize = 16 * 1024;

/// An order grown with line items to at least `BODY_BYTES`.
fn order_body() -> Vec<u8> {
    let item = |n: usize| {
        json!({
            "@sku": format!("SKU-{n:05}"),
            "@currency": "EUR",
            "name": "Men's trail running shoes (size 10.5, blue/grey)",
            "description": "Lightweight & breathable; the sole grips on wet rock <and> mud.",
            "quantity": n % 3 + 1,
            "price": 89.99,
            "tag": ["running", "outdoor", "men's"],
        })
    };
    let mut items = Vec::new();
    loop {
        let body = json!({
            "@id": "ord-2026-000123",
            "customer": {
                "@id": "c5f0e8a2-1b7d-4c1e-9f3a-2d6b8e4a7c90",
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
            "item": items,
            "coupon": "SPRING-20",
            "gift": false,
            "note": null,
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        if bytes.len() >= BODY_BYTES {
            return bytes;
        }
        items.push(item(items.len()));
    }
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let to_xml = JsonToXml { root: "order".into(), declaration: true };
    let to_json = XmlToJson { array_paths: vec!["item".into()] };
    let edits: Vec<JsonEdit> = Vec::new();
    let body = order_body();
    let xml = json_body_to_xml(&body, &edits, &to_xml, &limits).expect("the order maps to XML");
    let back = xml_body_to_json(&xml, &to_json, &edits, &limits).expect("its XML reads back");
    eprintln!("JSON body: {} bytes; as XML: {} bytes; back as JSON: {} bytes", body.len(), xml.len(), back.len());

    let mut group = c.benchmark_group("transform");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("json_to_xml_16kib", |b| {
        b.iter(|| json_body_to_xml(black_box(&body), &edits, &to_xml, &limits))
    });
    // Baseline in the same run: serde_json reading the body into a Value
    // and writing it back, the floor under any transform that reads JSON.
    group.bench_function("baseline_json_parse_and_write_16kib", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_slice(black_box(&body)).unwrap_or_default();
            serde_json::to_vec(&v).unwrap_or_default()
        })
    });
    group.throughput(Throughput::Bytes(xml.len() as u64));
    group.bench_function("xml_to_json_of_that", |b| {
        b.iter(|| xml_body_to_json(black_box(&xml), &to_json, &edits, &limits))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
