//! Detection and false-positive rates on the crate's own corpora.
//!
//! `corpus/attacks.txt` holds tagged payloads (`<category>\t<payload>`, as
//! an attacker would put them on the wire, encodings included) and
//! `corpus/benign.txt` realistic user input, one per line. Every line goes
//! through `inspect_query` (as the value of `q`) and through `inspect_body`
//! (as a JSON string value); path traversal payloads also through
//! `inspect_path`. The test prints the rates per category and entry point
//! and fails below 95% detection in any category or above 1% false
//! positives. Run `cargo test -p raftgate-waf --test corpus -- --nocapture`
//! to see the table.

use std::collections::BTreeMap;

use raftgate_waf::{Category, Finding, Inspector, Limits};

const ATTACKS: &str = include_str!("corpus/attacks.txt");
const BENIGN: &str = include_str!("corpus/benign.txt");

/// Least share of one category's payloads that must be detected, in percent.
const MIN_DETECTION_PERCENT: f64 = 95.0;
/// Greatest share of benign lines that may be flagged, in percent.
const MAX_FALSE_POSITIVE_PERCENT: f64 = 1.0;
/// The corpora must stay at least this large, in lines.
const MIN_ATTACK_LINES: usize = 300;
const MIN_BENIGN_LINES: usize = 600;

fn category(tag: &str) -> Category {
    match tag {
        "sqli" => Category::SqlInjection,
        "xss" => Category::Xss,
        "cmdi" => Category::CommandInjection,
        "traversal" => Category::PathTraversal,
        other => panic!("unknown category tag {other:?}"),
    }
}

fn attacks() -> Vec<(Category, &'static str)> {
    ATTACKS
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (tag, payload) = l.split_once('\t').unwrap_or_else(|| panic!("untagged line {l:?}"));
            (category(tag), payload)
        })
        .collect()
}

fn benign() -> Vec<&'static str> {
    BENIGN.lines().filter(|l| !l.is_empty()).collect()
}

/// An attack payload is already in wire form; only the characters that
/// would change the query's structure are escaped.
fn attack_query(payload: &str) -> String {
    let mut q = String::from("q=");
    for c in payload.chars() {
        match c {
            '&' => q.push_str("%26"),
            '#' => q.push_str("%23"),
            '+' => q.push_str("%2B"),
            ' ' => q.push_str("%20"),
            c => q.push(c),
        }
    }
    q
}

/// Benign text is what a user typed: a browser form-encodes all of it.
fn benign_query(text: &str) -> String {
    let mut q = String::from("q=");
    for &b in text.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => q.push(b as char),
            b' ' => q.push('+'),
            b => q.push_str(&format!("%{b:02X}")),
        }
    }
    q
}

fn json_body(value: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "comment": { "text": value } })).expect("a JSON string serialises")
}

fn in_body(inspector: &Inspector, value: &str) -> Option<Finding> {
    inspector.inspect_body(Some("application/json"), &json_body(value)).expect("the corpus bodies are within limits")
}

fn percent(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

#[derive(Default)]
struct Tally {
    total: usize,
    query: usize,
    body: usize,
    path: usize,
    right_category: usize,
    missed: Vec<String>,
}

#[test]
fn the_corpora_meet_the_detection_and_false_positive_targets() {
    let inspector = Inspector::new(Limits::default());
    let attacks = attacks();
    let benign = benign();
    assert!(attacks.len() >= MIN_ATTACK_LINES, "only {} attack lines", attacks.len());
    assert!(benign.len() >= MIN_BENIGN_LINES, "only {} benign lines", benign.len());

    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for &(cat, payload) in &attacks {
        let t = tallies.entry(cat.as_str()).or_default();
        t.total += 1;
        let q = inspector.inspect_query(&attack_query(payload));
        let b = in_body(&inspector, payload);
        if q.is_some() {
            t.query += 1;
        }
        if b.is_some() {
            t.body += 1;
        }
        if cat == Category::PathTraversal && inspector.inspect_path(&format!("/files/{payload}")).is_some() {
            t.path += 1;
        }
        if q.as_ref().is_some_and(|f| f.category == cat) {
            t.right_category += 1;
        }
        if q.is_none() || b.is_none() {
            t.missed.push(format!("{}: {payload}", cat.as_str()));
        }
    }

    let mut fp_query = Vec::new();
    let mut fp_body = Vec::new();
    for &text in &benign {
        if let Some(f) = inspector.inspect_query(&benign_query(text)) {
            fp_query.push(format!("{} {}: {text}", f.category.as_str(), f.rule));
        }
        if let Some(f) = in_body(&inspector, text) {
            fp_body.push(format!("{} {}: {text}", f.category.as_str(), f.rule));
        }
    }

    eprintln!(
        "\n{:<10} {:>6} {:>9} {:>9} {:>9} {:>14}",
        "category", "lines", "query %", "json %", "path %", "same category %"
    );
    for (name, t) in &tallies {
        let path = if *name == "traversal" { format!("{:.1}", percent(t.path, t.total)) } else { "-".into() };
        eprintln!(
            "{:<10} {:>6} {:>9.1} {:>9.1} {:>9} {:>14.1}",
            name,
            t.total,
            percent(t.query, t.total),
            percent(t.body, t.total),
            path,
            percent(t.right_category, t.total)
        );
    }
    eprintln!(
        "benign     {:>6} false positives: query {} ({:.2}%), json {} ({:.2}%)",
        benign.len(),
        fp_query.len(),
        percent(fp_query.len(), benign.len()),
        fp_body.len(),
        percent(fp_body.len(), benign.len())
    );
    for t in tallies.values() {
        for m in &t.missed {
            eprintln!("missed    {m}");
        }
    }
    for fp in fp_query.iter().chain(&fp_body) {
        eprintln!("false +   {fp}");
    }

    for (name, t) in &tallies {
        for (entry, n) in [("query", t.query), ("json", t.body)] {
            let rate = percent(n, t.total);
            assert!(rate >= MIN_DETECTION_PERCENT, "{name} detection through {entry} is {rate:.1}%");
        }
    }
    for (entry, n) in [("query", fp_query.len()), ("json", fp_body.len())] {
        let rate = percent(n, benign.len());
        assert!(rate <= MAX_FALSE_POSITIVE_PERCENT, "false positives through {entry} are {rate:.2}%");
    }
}
