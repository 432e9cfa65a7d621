//! Behaviour of the public API: what each entry point finds and where, and
//! that every bound holds on hostile input (sizes, depth, counts, windows,
//! pathological repetitions, invalid UTF-8) without panicking or hanging.

use raftgate_waf::{BodyError, Category, Finding, Inspector, Limits, Location, MAX_LOCATION_CHARS};

/// One mebibyte, in bytes.
const MIB: usize = 1024 * 1024;

fn inspector() -> Inspector {
    Inspector::new(Limits::default())
}

fn json(body: &str) -> Result<Option<Finding>, BodyError> {
    inspector().inspect_body(Some("application/json"), body.as_bytes())
}

#[test]
fn a_name_with_an_apostrophe_is_not_sql_injection() {
    let i = inspector();
    assert_eq!(i.inspect_query("name=O%27Brien&city=Dublin"), None);
    assert_eq!(json(r#"{"name": "Conan O'Brien", "address": "12 O'Connell St"}"#), Ok(None));
}

#[test]
fn english_with_sql_keywords_is_not_sql_injection() {
    let i = inspector();
    assert_eq!(i.inspect_query("q=select+the+best+option+or+2"), None);
    assert_eq!(i.inspect_query("q=The+union+voted+to+drop+the+proposal%3B+delete+from+the+list+later"), None);
}

#[test]
fn a_quote_tautology_in_a_query_value_is_sql_injection_at_that_parameter() {
    let f = inspector().inspect_query("page=2&user=admin%27+or+%271%27%3D%271").expect("a finding");
    assert_eq!(f.category, Category::SqlInjection);
    assert_eq!(f.rule, "sqli-tautology");
    assert_eq!(f.location, Location::Query("user".into()));
}

#[test]
fn plus_in_a_query_is_a_space() {
    let f = inspector().inspect_query("id=1+union+select+1,2").expect("a finding");
    assert_eq!((f.category, f.rule), (Category::SqlInjection, "sqli-union-select"));
}

#[test]
fn query_parameter_names_are_inspected_too() {
    let f = inspector().inspect_query("%3Cscript%3E=1").expect("a finding");
    assert_eq!(f.category, Category::Xss);
    assert_eq!(f.location, Location::Query("<script>".into()));
}

#[test]
fn a_double_encoded_traversal_in_the_path_is_found() {
    let f = inspector().inspect_path("/static/%252e%252e%252f%252e%252e%252fetc/passwd").expect("a finding");
    assert_eq!((f.category, f.location), (Category::PathTraversal, Location::Path));
}

#[test]
fn an_ordinary_path_is_clean() {
    let i = inspector();
    for p in ["/", "/api/v1/users/42", "/shop/men's-shoes/size-10", "/files/report.final.pdf", "/a;jsessionid=abc"] {
        assert_eq!(i.inspect_path(p), None, "{p}");
    }
}

#[test]
fn typical_headers_are_clean() {
    let i = inspector();
    let headers: [(&str, &[u8]); 6] = [
        (
            "user-agent",
            b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0",
        ),
        ("accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("cookie", b"session=abc123; theme=dark; cart=%7B%22items%22%3A2%7D"),
        ("referer", b"https://shop.example/search?q=red+shoes&page=2"),
        ("authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"),
        ("accept-language", b"en-US,en;q=0.9,fr;q=0.8"),
    ];
    for (name, value) in headers {
        assert_eq!(i.inspect_header(name, value), None, "{name}");
    }
}

#[test]
fn a_command_in_a_header_is_found_at_that_header() {
    let f = inspector().inspect_header("X-Forwarded-For", b"127.0.0.1; cat /etc/passwd").expect("a finding");
    assert_eq!(f.category, Category::CommandInjection);
    assert_eq!(f.location, Location::Header("X-Forwarded-For".into()));
}

#[test]
fn invalid_utf8_in_a_header_is_inspected_as_bytes() {
    let i = inspector();
    assert_eq!(i.inspect_header("x-junk", b"\xff\xfe\xc3\x28 \xe2\x82"), None);
    let f = i.inspect_header("x-junk", b"\xff<script>\xfe").expect("a finding");
    assert_eq!(f.category, Category::Xss);
}

#[test]
fn invalid_utf8_behind_percent_encoding_in_the_path_is_handled() {
    let i = inspector();
    assert_eq!(i.inspect_path("/a/%ff%fe%c3%28/b"), None);
    assert!(i.inspect_path("/a/%ff..%2f..%2fetc%2fpasswd").is_some());
}

#[test]
fn a_json_finding_names_its_json_pointer() {
    let f = json(r#"{"user": {"names": ["ok", "<img src=x onerror=alert(1)>"]}}"#).unwrap().expect("a finding");
    assert_eq!(f.category, Category::Xss);
    assert_eq!(f.location, Location::Body("/user/names/1".into()));
}

#[test]
fn json_pointer_segments_are_escaped() {
    let f = json(r#"{"a/b": {"c~d": "' or 1=1--"}}"#).unwrap().expect("a finding");
    assert_eq!(f.location, Location::Body("/a~1b/c~0d".into()));
}

#[test]
fn json_keys_are_inspected() {
    let f = json(r#"{"<script>alert(1)</script>": 1}"#).unwrap().expect("a finding");
    assert_eq!(f.category, Category::Xss);
}

#[test]
fn a_duplicated_json_key_cannot_hide_the_first_value() {
    let f = json(r#"{"q": "1; drop table users", "q": "fine"}"#).unwrap().expect("a finding");
    assert_eq!(f.category, Category::SqlInjection);
}

#[test]
fn json_numbers_booleans_and_nulls_are_not_inspected() {
    assert_eq!(json(r#"{"n": 1e308, "m": -0, "b": true, "z": null, "a": [1, 2.5, false]}"#), Ok(None));
}

#[test]
fn plus_json_content_types_are_read_as_json() {
    let body = br#"{"title": "x", "detail": "..%2f..%2fetc%2fpasswd"}"#;
    let f = inspector().inspect_body(Some("application/problem+json"), body).unwrap().expect("a finding");
    assert_eq!(f.location, Location::Body("/detail".into()));
}

#[test]
fn a_form_body_finding_names_its_field() {
    let body = b"name=Ann&comment=nice+post%21&site=javascript%3Aalert(1)";
    let f = inspector().inspect_body(Some("application/x-www-form-urlencoded"), body).unwrap().expect("a finding");
    assert_eq!(f.category, Category::Xss);
    assert_eq!(f.location, Location::Body("site".into()));
}

#[test]
fn text_and_unknown_bodies_are_scanned_as_text() {
    let i = inspector();
    for ct in [Some("text/plain"), Some("application/octet-stream"), None] {
        let f = i.inspect_body(ct, b"hello\n; cat /etc/passwd\n").unwrap().expect("a finding");
        assert_eq!((f.category, f.location), (Category::CommandInjection, Location::Body(String::new())));
        assert_eq!(i.inspect_body(ct, "Hello, it's O'Brien & co. -- see you".as_bytes()), Ok(None));
    }
}

#[test]
fn invalid_json_is_refused_with_a_position_and_no_content() {
    let err = json(r#"{"secret": "hunter2", oops}"#).unwrap_err();
    assert!(matches!(err, BodyError::InvalidJson { line: 1, .. }), "{err:?}");
    assert!(!err.to_string().contains("hunter2"));
    assert!(matches!(json(r#"{"a": 1} trailing"#), Err(BodyError::InvalidJson { .. })));
    assert!(matches!(
        inspector().inspect_body(Some("application/json"), b"{\"a\": \"\xff\"}"),
        Err(BodyError::InvalidJson { .. })
    ));
}

#[test]
fn a_body_over_the_size_limit_is_too_large() {
    let i = Inspector::new(Limits { max_body_bytes: 16, ..Limits::default() });
    assert_eq!(i.inspect_body(None, &[b'a'; 16]), Ok(None));
    assert_eq!(i.inspect_body(None, &[b'a'; 17]), Err(BodyError::TooLarge { limit_bytes: 16 }));
    assert_eq!(i.inspect_body(Some("application/json"), &[b' '; 17]), Err(BodyError::TooLarge { limit_bytes: 16 }));
}

#[test]
fn json_nested_deeper_than_the_limit_is_too_deep_without_recursing() {
    let i = inspector();
    let depth = i.limits().max_json_depth;
    let arrays = "[".repeat(100_000);
    assert_eq!(
        i.inspect_body(Some("application/json"), arrays.as_bytes()),
        Err(BodyError::TooDeep { limit_levels: depth })
    );
    let objects = r#"{"a":"#.repeat(100_000);
    assert_eq!(
        i.inspect_body(Some("application/json"), objects.as_bytes()),
        Err(BodyError::TooDeep { limit_levels: depth })
    );
}

#[test]
fn json_nested_exactly_to_the_limit_is_walked() {
    for limit in [1, 64, raftgate_waf::JSON_PARSER_MAX_DEPTH] {
        let i = Inspector::new(Limits { max_json_depth: limit, ..Limits::default() });
        let ok = format!("{}\"fine\"{}", "[".repeat(limit), "]".repeat(limit));
        assert_eq!(i.inspect_body(Some("application/json"), ok.as_bytes()), Ok(None), "depth {limit}");
        let bad = format!("{}\"<script>\"{}", "[".repeat(limit), "]".repeat(limit));
        let f = i.inspect_body(Some("application/json"), bad.as_bytes()).unwrap().expect("a finding");
        let pointer: String = "/0".repeat(limit).chars().take(MAX_LOCATION_CHARS).collect();
        assert_eq!(f.location, Location::Body(pointer));
        let deeper = format!("{}1{}", "[".repeat(limit + 1), "]".repeat(limit + 1));
        assert_eq!(
            i.inspect_body(Some("application/json"), deeper.as_bytes()),
            Err(BodyError::TooDeep { limit_levels: limit })
        );
    }
}

#[test]
fn more_strings_than_the_limit_are_too_many_values() {
    let i = Inspector::new(Limits { max_values: 3, ..Limits::default() });
    assert_eq!(i.inspect_body(Some("application/json"), br#"{"a": "b", "c": 1}"#), Ok(None));
    assert_eq!(
        i.inspect_body(Some("application/json"), br#"["a", "b", "c", "d"]"#),
        Err(BodyError::TooManyValues { limit: 3 })
    );
    assert_eq!(
        i.inspect_body(Some("application/x-www-form-urlencoded"), b"a=1&b=2&c=3&d=4"),
        Err(BodyError::TooManyValues { limit: 3 })
    );
}

#[test]
fn a_payload_after_padding_longer_than_a_window_is_still_found() {
    let i = Inspector::new(Limits { max_value_bytes: 256, ..Limits::default() });
    let value = format!("{}<script>alert(1)</script>", "a ".repeat(10_000));
    let f = i.inspect_body(Some("application/json"), &serde_json::to_vec(&[value]).unwrap()).unwrap();
    assert_eq!(f.map(|f| f.category), Some(Category::Xss));
}

#[test]
fn a_payload_across_a_window_boundary_is_found_within_the_overlap() {
    let window = 256;
    let i = Inspector::new(Limits { max_value_bytes: window, ..Limits::default() });
    let payload = "' union select password from users--";
    for start in window - payload.len()..window {
        let value = format!("{}{payload}", "x".repeat(start));
        let f = i.inspect_query(&format!("q={}", value.replace(' ', "%20")));
        assert_eq!(f.map(|f| f.category), Some(Category::SqlInjection), "payload at {start}");
    }
}

#[test]
fn decoding_stops_after_the_configured_passes() {
    let triple = "q=%25252e%25252e%25252fetc%25252fpasswd-not";
    let two = Inspector::new(Limits { max_decode_passes: 2, ..Limits::default() });
    assert_eq!(two.inspect_query(triple), None);
    let three = Inspector::new(Limits { max_decode_passes: 3, ..Limits::default() });
    assert_eq!(three.inspect_query(triple).map(|f| f.category), Some(Category::PathTraversal));
}

#[test]
fn a_long_parameter_name_is_cut_in_the_location() {
    let name = "n".repeat(1000);
    let f = inspector().inspect_query(&format!("{name}=%3Cscript%3E")).expect("a finding");
    assert_eq!(f.location, Location::Query("n".repeat(MAX_LOCATION_CHARS)));
}

#[test]
fn a_mebibyte_of_quotes_returns_a_result() {
    let i = Inspector::new(Limits { max_body_bytes: 2 * MIB, ..Limits::default() });
    let quotes = "'".repeat(MIB);
    assert_eq!(i.inspect_query(&format!("q={quotes}")), None);
    assert_eq!(i.inspect_body(Some("text/plain"), quotes.as_bytes()), Ok(None));
    assert_eq!(i.inspect_body(Some("application/json"), &serde_json::to_vec(&[&quotes]).unwrap()), Ok(None));
    let odd = format!("{quotes}' or 1=1--");
    assert_eq!(i.inspect_body(None, odd.as_bytes()).unwrap().map(|f| f.category), Some(Category::SqlInjection));
}

#[test]
fn a_mebibyte_of_encoded_percent_signs_returns_a_result() {
    let i = Inspector::new(Limits { max_body_bytes: 4 * MIB, ..Limits::default() });
    let encoded = "%25".repeat(MIB / 3);
    assert_eq!(i.inspect_query(&format!("q={encoded}")), None);
    assert_eq!(i.inspect_path(&format!("/{encoded}")), None);
    let nested = "%252525".repeat(MIB / 7);
    assert_eq!(i.inspect_body(Some("application/x-www-form-urlencoded"), format!("a={nested}").as_bytes()), Ok(None));
}

#[test]
fn long_runs_of_markup_and_sql_punctuation_return_a_result() {
    let i = Inspector::new(Limits { max_body_bytes: 4 * MIB, ..Limits::default() });
    for unit in ["<", "<<a", "&#", "&lt;", "\\u", "(", "/*", "--", "#", ";", "|", "`", "../", "\0", "\u{ff0e}"] {
        let text = unit.repeat(MIB / unit.len());
        let got = i.inspect_body(Some("text/plain"), text.as_bytes());
        let expected = match unit {
            "../" => Some(Category::PathTraversal),
            _ => None,
        };
        assert_eq!(got.map(|f| f.map(|f| f.category)), Ok(expected), "run of {unit:?}");
    }
}

#[test]
fn errors_display_without_request_content() {
    let messages = [
        BodyError::TooLarge { limit_bytes: 10 }.to_string(),
        BodyError::TooDeep { limit_levels: 3 }.to_string(),
        BodyError::TooManyValues { limit: 5 }.to_string(),
        BodyError::InvalidJson { line: 1, column: 2 }.to_string(),
    ];
    assert_eq!(
        messages,
        [
            "request body is larger than 10 bytes",
            "JSON body is nested deeper than 3 levels",
            "request body has more than 5 values",
            "request body is not valid JSON (line 1, column 2)",
        ]
    );
}

/// Random inputs from an alphabet of the bytes the normalisers and the
/// tokenizer treat specially, through every entry point: none may panic.
#[test]
fn random_hostile_bytes_never_panic() {
    /// How many random inputs, and the longest, in bytes.
    const CASES: usize = 3_000;
    const MAX_LEN_BYTES: usize = 96;
    let alphabet: &[&[u8]] = &[
        b"'",
        b"\"",
        b"`",
        b"%",
        b"%2",
        b"%25",
        b"%u",
        b"%c0",
        b"%af",
        b"&#",
        b"&#x",
        b"&lt",
        b";",
        b"\\",
        b"\\u",
        b"\\x",
        b"/*",
        b"*/",
        b"/*!",
        b"--",
        b"#",
        b"(",
        b")",
        b"<",
        b">",
        b"=",
        b"|",
        b"&",
        b"$",
        b"{",
        b"..",
        b"/",
        b"\0",
        b"\xc0",
        b"\xe0\x80",
        b"\xef\xbc",
        b"\xff",
        b" ",
        b"+",
        b"or",
        b"union",
        b"select",
        b"1",
        b"script",
        b"on",
        b"cat",
        b"id",
        b"etc",
        b"passwd",
        b"[",
        b"]",
        b",",
        b":",
        b"@@",
        b"0x",
    ];
    let i = Inspector::new(Limits { max_value_bytes: 64, ..Limits::default() });
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..CASES {
        let mut input = Vec::new();
        while input.len() < (next() as usize) % MAX_LEN_BYTES {
            input.extend_from_slice(alphabet[(next() as usize) % alphabet.len()]);
        }
        let text = String::from_utf8_lossy(&input);
        let _ = i.inspect_path(&text);
        let _ = i.inspect_query(&text);
        let _ = i.inspect_header("x", &input);
        for ct in [None, Some("application/json"), Some("application/x-www-form-urlencoded")] {
            let _ = i.inspect_body(ct, &input);
        }
        let _ = i.inspect_body(Some("application/json"), &serde_json::to_vec(&[text.as_ref()]).unwrap_or_default());
    }
}
