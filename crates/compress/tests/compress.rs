//! Behaviour of the crate through its public API: negotiation, the
//! may-we-compress decision, the rewritten head and the streamed body,
//! decoded again with async-compression's decoders.

mod fixture;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use raftgate_compress::{
    add_vary_accept_encoding, compress_response, negotiate, should_compress, BodyError, CompressedBody, Encoding,
    Level, Policy, OUTPUT_CHUNK_BYTES,
};
use tokio::io::AsyncReadExt;

const ALL: [Encoding; 3] = [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd];

// ---------------------------------------------------------------- negotiate

fn pick(lines: &[&str], policy: &Policy) -> Option<Encoding> {
    let values: Vec<HeaderValue> = lines.iter().map(|l| HeaderValue::from_str(l).expect("test header")).collect();
    negotiate(values.iter(), policy)
}

fn pick_default(line: &str) -> Option<Encoding> {
    pick(&[line], &Policy::default())
}

#[test]
fn negotiate_picks_the_highest_q_value() {
    assert_eq!(pick_default("gzip;q=0.5, br;q=1.0, *;q=0"), Some(Encoding::Brotli));
    assert_eq!(pick_default("gzip;q=0.9, br;q=0.5, zstd;q=0.1"), Some(Encoding::Gzip));
    assert_eq!(pick_default("br;q=0.001, zstd;q=0.002"), Some(Encoding::Zstd));
}

#[test]
fn negotiate_breaks_ties_by_the_policy_order() {
    assert_eq!(pick_default("gzip, deflate, br, zstd"), Some(Encoding::Zstd));
    assert_eq!(pick_default("gzip, deflate, br"), Some(Encoding::Brotli));
    let brotli_first =
        Policy { encodings: vec![Encoding::Brotli, Encoding::Gzip, Encoding::Zstd], ..Policy::default() };
    assert_eq!(pick(&["gzip, br, zstd"], &brotli_first), Some(Encoding::Brotli));
    assert_eq!(pick(&["zstd;q=0.5, gzip;q=0.5"], &brotli_first), Some(Encoding::Gzip));
}

#[test]
fn negotiate_star_matches_codings_not_listed() {
    assert_eq!(pick_default("*"), Some(Encoding::Zstd));
    assert_eq!(pick_default("zstd;q=0, *;q=0.5"), Some(Encoding::Brotli));
    assert_eq!(pick_default("gzip;q=0.4, *;q=0.5"), Some(Encoding::Zstd));
    assert_eq!(pick_default("gzip;q=0.6, *;q=0.5"), Some(Encoding::Gzip));
    assert_eq!(pick_default("*;q=0"), None);
    assert_eq!(pick_default("gzip;q=0.2, *;q=0"), Some(Encoding::Gzip));
}

#[test]
fn negotiate_q_zero_makes_a_coding_unacceptable() {
    assert_eq!(pick_default("br;q=0, gzip"), Some(Encoding::Gzip));
    assert_eq!(pick_default("br;q=0, gzip;q=0, zstd;q=0.000"), None);
}

#[test]
fn negotiate_identity_q0_without_an_acceptable_coding_gives_none() {
    assert_eq!(pick_default("identity;q=0"), None);
    assert_eq!(pick_default("identity;q=0, deflate"), None);
    assert_eq!(pick_default("identity;q=0, gzip"), Some(Encoding::Gzip));
}

#[test]
fn negotiate_honours_a_client_that_ranks_identity_above_every_coding() {
    assert_eq!(pick_default("gzip;q=0.5, identity"), None);
    assert_eq!(pick_default("gzip;q=0.5, identity;q=0.5"), Some(Encoding::Gzip));
    assert_eq!(pick_default("gzip, identity;q=0.5"), Some(Encoding::Gzip));
}

#[test]
fn negotiate_ignores_codings_it_does_not_produce() {
    assert_eq!(pick_default("deflate, compress, exi, pack200-gzip"), None);
    assert_eq!(pick_default("deflate, compress, zstd;q=0.1"), Some(Encoding::Zstd));
}

#[test]
fn negotiate_offers_only_the_policy_encodings() {
    let gzip_only = Policy { encodings: vec![Encoding::Gzip], ..Policy::default() };
    assert_eq!(pick(&["br, zstd"], &gzip_only), None);
    assert_eq!(pick(&["br, zstd, gzip;q=0.1"], &gzip_only), Some(Encoding::Gzip));
    let none = Policy { encodings: Vec::new(), ..Policy::default() };
    assert_eq!(pick(&["gzip, br, zstd, *"], &none), None);
}

#[test]
fn negotiate_empty_or_absent_header_gives_none() {
    assert_eq!(pick(&[], &Policy::default()), None);
    assert_eq!(pick_default(""), None);
    assert_eq!(pick_default(" , ,, "), None);
}

#[test]
fn negotiate_ignores_malformed_entries_only() {
    for line in [
        "br;q=abc, gzip;q=0.1",
        "br;q=1.5, gzip;q=0.1",
        "br;q=0.1234, gzip;q=0.1",
        "br;q=0.5;q=0.9, gzip;q=0.1",
        "br;level=3, gzip;q=0.1",
        "br;q, gzip;q=0.1",
        "b r, gzip;q=0.1",
        "br/1, gzip;q=0.1",
        ";q=1, gzip;q=0.1",
        "br;q=-1, gzip;q=0.1",
    ] {
        assert_eq!(pick_default(line), Some(Encoding::Gzip), "{line:?}");
    }
}

#[test]
fn negotiate_is_case_insensitive_and_tolerates_whitespace() {
    assert_eq!(pick_default("GZIP ; Q=0.8 ,  BR\t;\tq=0.9"), Some(Encoding::Brotli));
    assert_eq!(pick_default("  Zstd  "), Some(Encoding::Zstd));
    assert_eq!(pick_default("IDENTITY;q=0, gZip"), Some(Encoding::Gzip));
}

#[test]
fn negotiate_reads_every_header_line() {
    assert_eq!(pick(&["gzip;q=0.2", "zstd;q=0.3"], &Policy::default()), Some(Encoding::Zstd));
}

#[test]
fn negotiate_takes_x_gzip_as_gzip() {
    assert_eq!(pick_default("x-gzip"), Some(Encoding::Gzip));
}

#[test]
fn negotiate_skips_a_header_line_that_is_not_ascii() {
    let bad = HeaderValue::from_bytes(b"br\xff, zstd").expect("obs-text is a valid header value");
    let good = HeaderValue::from_static("gzip;q=0.5");
    assert_eq!(negotiate([&bad, &good].into_iter(), &Policy::default()), Some(Encoding::Gzip));
}

#[test]
fn negotiate_never_panics_on_any_header_value() {
    let policy = Policy::default();
    let mut bytes: Vec<u8> = (0x20..=0x7e).collect();
    bytes.extend([b'\t', 0x80, 0xff]);
    for a in &bytes {
        for b in &bytes {
            for text in [vec![*a], vec![b'g', *a, b'=', *b], b"br;q=".iter().copied().chain([*a, *b]).collect()] {
                if let Ok(value) = HeaderValue::from_bytes(&text) {
                    let _ = negotiate(std::iter::once(&value), &policy);
                }
            }
        }
    }
}

// ---------------------------------------------------------- should_compress

fn json_head() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("20000"));
    headers
}

fn may(headers: &HeaderMap) -> bool {
    should_compress(StatusCode::OK, &Method::GET, headers, &Policy::default())
}

fn with(header: http::HeaderName, value: &'static str) -> HeaderMap {
    let mut headers = json_head();
    headers.insert(header, HeaderValue::from_static(value));
    headers
}

#[test]
fn should_compress_a_large_json_response() {
    assert!(may(&json_head()));
    assert!(should_compress(StatusCode::NOT_FOUND, &Method::POST, &json_head(), &Policy::default()));
}

#[test]
fn should_not_compress_a_response_already_encoded() {
    assert!(!may(&with(CONTENT_ENCODING, "gzip")));
    assert!(!may(&with(CONTENT_ENCODING, "identity, br")));
    assert!(!may(&with(CONTENT_ENCODING, "something-unknown")));
    let mut headers = json_head();
    headers.insert(CONTENT_ENCODING, HeaderValue::from_bytes(b"\xffgzip").expect("obs-text"));
    assert!(!may(&headers));
}

#[test]
fn should_compress_a_response_whose_encoding_is_identity() {
    assert!(may(&with(CONTENT_ENCODING, "identity")));
    assert!(may(&with(CONTENT_ENCODING, "Identity")));
}

#[test]
fn should_not_compress_bodiless_or_partial_statuses() {
    for status in [
        StatusCode::CONTINUE,
        StatusCode::SWITCHING_PROTOCOLS,
        StatusCode::NO_CONTENT,
        StatusCode::NOT_MODIFIED,
        StatusCode::PARTIAL_CONTENT,
    ] {
        assert!(!should_compress(status, &Method::GET, &json_head(), &Policy::default()), "{status}");
    }
}

#[test]
fn should_not_compress_an_answer_to_head_or_connect() {
    assert!(!should_compress(StatusCode::OK, &Method::HEAD, &json_head(), &Policy::default()));
    assert!(!should_compress(StatusCode::OK, &Method::CONNECT, &json_head(), &Policy::default()));
}

#[test]
fn should_not_compress_when_cache_control_says_no_transform() {
    assert!(!may(&with(CACHE_CONTROL, "no-transform")));
    assert!(!may(&with(CACHE_CONTROL, "public, max-age=60, No-Transform")));
    let mut headers = json_head();
    headers.append(CACHE_CONTROL, HeaderValue::from_static("public"));
    headers.append(CACHE_CONTROL, HeaderValue::from_static("no-transform"));
    assert!(!may(&headers));
    assert!(may(&with(CACHE_CONTROL, "public, max-age=60")));
}

#[test]
fn should_not_compress_a_range() {
    assert!(!may(&with(CONTENT_RANGE, "bytes 0-99/20000")));
}

#[test]
fn should_not_compress_a_body_with_a_digest() {
    assert!(!may(&with(http::HeaderName::from_static("content-digest"), "sha-256=:AAAA:")));
    assert!(!may(&with(http::HeaderName::from_static("repr-digest"), "sha-256=:AAAA:")));
}

#[test]
fn should_not_compress_a_type_outside_the_list_or_no_type() {
    assert!(!may(&with(CONTENT_TYPE, "application/x-custom-binary")));
    assert!(!may(&with(CONTENT_TYPE, "not a media type")));
    assert!(!may(&with(CONTENT_TYPE, "")));
    let mut headers = json_head();
    headers.remove(CONTENT_TYPE);
    assert!(!may(&headers));
}

#[test]
fn should_compress_listed_types_in_every_pattern_form() {
    for ty in [
        "text/html",
        "TEXT/CSS; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/problem+json",
        "application/atom+xml",
        "application/javascript",
        "application/xml",
        "image/svg+xml",
    ] {
        assert!(may(&with(CONTENT_TYPE, ty)), "{ty}");
    }
    let custom = Policy {
        content_types: vec!["application/vnd.example.*".into(), "application/x-ndjson".into()],
        ..Policy::default()
    };
    let check = |ty: &'static str| should_compress(StatusCode::OK, &Method::GET, &with(CONTENT_TYPE, ty), &custom);
    assert!(check("application/vnd.example.report"));
    assert!(check("application/X-NDJSON"));
    assert!(!check("text/html"));
}

#[test]
fn should_never_compress_compressed_or_streaming_types_whatever_the_policy() {
    let everything = Policy { content_types: vec!["*/*".into()], ..Policy::default() };
    for ty in [
        "image/png",
        "image/jpeg",
        "image/webp",
        "video/mp4",
        "audio/ogg",
        "font/woff2",
        "application/zip",
        "application/gzip",
        "application/octet-stream",
        "application/grpc+proto",
        "text/event-stream",
    ] {
        assert!(!should_compress(StatusCode::OK, &Method::GET, &with(CONTENT_TYPE, ty), &everything), "{ty}");
    }
    assert!(should_compress(StatusCode::OK, &Method::GET, &with(CONTENT_TYPE, "application/x-anything"), &everything));
}

#[test]
fn should_not_compress_a_known_length_below_the_minimum() {
    assert!(!may(&with(CONTENT_LENGTH, "1023")));
    assert!(!may(&with(CONTENT_LENGTH, "0")));
    assert!(may(&with(CONTENT_LENGTH, "1024")));
    let mut headers = json_head();
    headers.remove(CONTENT_LENGTH);
    assert!(may(&headers), "a body of unknown length is compressed");
}

#[test]
fn should_not_compress_when_the_length_cannot_be_read() {
    assert!(!may(&with(CONTENT_LENGTH, "12ab")));
    assert!(!may(&with(CONTENT_LENGTH, "+5000")));
    assert!(!may(&with(CONTENT_LENGTH, "99999999999999999999999")));
}

#[test]
fn should_not_compress_when_the_policy_offers_no_coding() {
    let off = Policy { encodings: Vec::new(), ..Policy::default() };
    assert!(!should_compress(StatusCode::OK, &Method::GET, &json_head(), &off));
}

// --------------------------------------------------------------- the head

fn response_with(headers: &[(&'static str, &'static str)], body: &'static [u8]) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    for (name, value) in headers {
        resp.headers_mut().append(*name, HeaderValue::from_static(value));
    }
    resp
}

#[test]
fn compress_response_rewrites_the_head() {
    let resp = response_with(
        &[
            ("content-type", "application/json"),
            ("content-length", "2"),
            ("content-encoding", "identity"),
            ("vary", "Origin"),
            ("etag", "\"v1\""),
            ("accept-ranges", "bytes"),
        ],
        b"{}",
    );
    let out = compress_response(resp, Encoding::Brotli, Level::Default);
    let h = out.headers();
    assert_eq!(h.get_all(CONTENT_ENCODING).iter().collect::<Vec<_>>(), ["br"]);
    assert!(h.get(CONTENT_LENGTH).is_none());
    assert!(h.get(ACCEPT_RANGES).is_none());
    assert_eq!(h.get_all(VARY).iter().collect::<Vec<_>>(), ["Origin, Accept-Encoding"]);
    assert_eq!(h.get(ETAG).map(|v| v.as_bytes()), Some(&b"W/\"v1\""[..]));
    assert_eq!(h.get(CONTENT_TYPE).map(|v| v.as_bytes()), Some(&b"application/json"[..]));
}

#[test]
fn compress_response_keeps_a_weak_etag_and_drops_a_malformed_one() {
    let weak = compress_response(response_with(&[("etag", "W/\"v1\"")], b""), Encoding::Gzip, Level::Default);
    assert_eq!(weak.headers().get(ETAG).map(|v| v.as_bytes()), Some(&b"W/\"v1\""[..]));
    let bad = compress_response(response_with(&[("etag", "v1")], b""), Encoding::Gzip, Level::Default);
    assert!(bad.headers().get(ETAG).is_none());
}

#[test]
fn vary_accept_encoding_is_never_duplicated() {
    let mut headers = HeaderMap::new();
    add_vary_accept_encoding(&mut headers);
    add_vary_accept_encoding(&mut headers);
    assert_eq!(headers.get_all(VARY).iter().collect::<Vec<_>>(), ["Accept-Encoding"]);

    for existing in ["accept-encoding", "Origin, ACCEPT-ENCODING", "*"] {
        let mut headers = HeaderMap::new();
        headers.insert(VARY, HeaderValue::from_static(existing));
        add_vary_accept_encoding(&mut headers);
        assert_eq!(headers.get_all(VARY).iter().collect::<Vec<_>>(), [existing]);
    }

    let mut headers = HeaderMap::new();
    headers.append(VARY, HeaderValue::from_static("Origin"));
    headers.append(VARY, HeaderValue::from_static("Cookie, Authorization"));
    add_vary_accept_encoding(&mut headers);
    assert_eq!(headers.get_all(VARY).iter().collect::<Vec<_>>(), ["Origin, Cookie, Authorization, Accept-Encoding"]);
}

#[test]
fn vary_that_cannot_be_read_is_kept_beside_ours() {
    let mut headers = HeaderMap::new();
    let odd = HeaderValue::from_bytes(b"Orig\xffin").expect("obs-text");
    headers.insert(VARY, odd.clone());
    add_vary_accept_encoding(&mut headers);
    assert_eq!(headers.get_all(VARY).iter().collect::<Vec<_>>(), [&odd, &HeaderValue::from_static("Accept-Encoding")]);
}

// --------------------------------------------------------------- the body

type TestFrames = Vec<Result<Frame<Bytes>, BodyError>>;
type FramedBody = StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BodyError>>>>;

fn framed(frames: TestFrames) -> FramedBody {
    StreamBody::new(futures::stream::iter(frames))
}

fn small_frames(data: &[u8], frame_bytes: usize) -> TestFrames {
    data.chunks(frame_bytes).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect()
}

async fn decode(enc: Encoding, compressed: &[u8]) -> std::io::Result<Vec<u8>> {
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
    let mut out = Vec::new();
    match enc {
        Encoding::Gzip => GzipDecoder::new(compressed).read_to_end(&mut out).await?,
        Encoding::Brotli => BrotliDecoder::new(compressed).read_to_end(&mut out).await?,
        Encoding::Zstd => ZstdDecoder::new(compressed).read_to_end(&mut out).await?,
    };
    Ok(out)
}

async fn compress_frames(frames: TestFrames, enc: Encoding) -> (Vec<Bytes>, Option<HeaderMap>) {
    let resp = compress_response(Response::new(framed(frames)), enc, Level::Default);
    let mut body = resp.into_body();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        match frame.into_data() {
            Ok(chunk) => {
                assert!(trailers.is_none(), "data after trailers");
                data.push(chunk);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    assert!(body.is_end_stream());
    (data, trailers)
}

async fn round_trip_json_in_small_frames(enc: Encoding) {
    let json = fixture::json_orders();
    assert!(json.len() >= fixture::JSON_FIXTURE_BYTES);
    let (chunks, trailers) = compress_frames(small_frames(&json, 61), enc).await;
    assert!(trailers.is_none());
    let compressed: Vec<u8> = chunks.concat();
    assert!(compressed.len() * 3 < json.len(), "{enc:?}: {} of {} bytes", compressed.len(), json.len());
    assert_eq!(decode(enc, &compressed).await.expect("valid stream"), json);
}

#[tokio::test]
async fn gzip_round_trips_json_delivered_in_small_frames() {
    round_trip_json_in_small_frames(Encoding::Gzip).await;
}

#[tokio::test]
async fn brotli_round_trips_json_delivered_in_small_frames() {
    round_trip_json_in_small_frames(Encoding::Brotli).await;
}

#[tokio::test]
async fn zstd_round_trips_json_delivered_in_small_frames() {
    round_trip_json_in_small_frames(Encoding::Zstd).await;
}

#[tokio::test]
async fn every_level_round_trips() {
    let json = fixture::json_orders();
    for enc in ALL {
        for level in [Level::Fastest, Level::Default, Level::Best] {
            let resp = compress_response(Response::new(Full::new(Bytes::from(json.clone()))), enc, level);
            let compressed = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(decode(enc, &compressed).await.expect("valid stream"), json, "{enc:?} {level:?}");
        }
    }
}

#[tokio::test]
async fn an_empty_body_compresses_to_a_valid_empty_stream() {
    for enc in ALL {
        let resp = compress_response(Response::new(Full::new(Bytes::new())), enc, Level::Default);
        let compressed = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(!compressed.is_empty(), "{enc:?} still writes its framing");
        assert_eq!(decode(enc, &compressed).await.expect("valid stream"), b"", "{enc:?}");

        let (chunks, _) = compress_frames(Vec::new(), enc).await;
        assert_eq!(decode(enc, &chunks.concat()).await.expect("valid stream"), b"", "{enc:?}");
    }
}

#[derive(Debug)]
struct UpstreamReset;

impl std::fmt::Display for UpstreamReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream reset the stream")
    }
}

impl std::error::Error for UpstreamReset {}

#[tokio::test]
async fn a_body_error_mid_stream_surfaces_as_that_error() {
    let json = fixture::json_orders();
    for enc in ALL {
        let mut frames = small_frames(&json[..8000], 500);
        frames.push(Err(Box::new(UpstreamReset)));
        frames.extend(small_frames(&json[8000..], 500));
        let resp = compress_response(Response::new(framed(frames)), enc, Level::Default);
        let mut body = resp.into_body();
        let mut error = None;
        while let Some(frame) = body.frame().await {
            if let Err(e) = frame {
                error = Some(e);
                break;
            }
        }
        let error = error.unwrap_or_else(|| panic!("{enc:?}: the error was swallowed"));
        assert!(error.downcast_ref::<UpstreamReset>().is_some(), "{enc:?}: {error}");
        assert!(body.frame().await.is_none(), "{enc:?}: the body ends after its error");
        assert!(body.is_end_stream());
    }
}

#[tokio::test]
async fn trailers_are_forwarded_after_the_compressed_stream() {
    let json = fixture::json_orders();
    for enc in ALL {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
        let mut frames = small_frames(&json, 1000);
        frames.push(Ok(Frame::trailers(trailers.clone())));
        let (chunks, got) = compress_frames(frames, enc).await;
        assert_eq!(got.as_ref(), Some(&trailers), "{enc:?}");
        assert_eq!(decode(enc, &chunks.concat()).await.expect("valid stream"), json, "{enc:?}");
    }
}

#[tokio::test]
async fn frames_never_exceed_the_output_chunk_size() {
    // Incompressible input: the output is as large as the input.
    let mut seed: u32 = 0x9e37_79b9;
    let noise: Vec<u8> = (0..300_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed.to_le_bytes()[0]
        })
        .collect();
    for enc in ALL {
        let (chunks, _) = compress_frames(vec![Ok(Frame::data(Bytes::from(noise.clone())))], enc).await;
        assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= OUTPUT_CHUNK_BYTES), "{enc:?}");
        assert_eq!(decode(enc, &chunks.concat()).await.expect("valid stream"), noise, "{enc:?}");
    }
}

/// Counts the polls of the compressed body that returned a frame, to see a
/// large, always-ready body compressed over many polls.
struct CountPolls<B>(B, usize);

impl<B: Body + Unpin> Body for CountPolls<B> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.1 += 1;
        Pin::new(&mut self.0).poll_frame(cx)
    }
}

#[tokio::test]
async fn a_large_ready_body_is_compressed_in_bounded_polls() {
    let zeros = Bytes::from(vec![0u8; 4 << 20]);
    for enc in ALL {
        let resp = compress_response(Response::new(Full::new(zeros.clone())), enc, Level::Fastest);
        let mut body = CountPolls(resp.into_body(), 0);
        let mut compressed = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("body frame").into_data() {
                compressed.extend_from_slice(&data);
            }
        }
        // 4 MiB at most 256 KiB per poll: at least 16 polls, each ending in a flush.
        assert!(body.1 >= 16, "{enc:?}: {} polls", body.1);
        assert_eq!(decode(enc, &compressed).await.expect("valid stream").len(), zeros.len(), "{enc:?}");
    }
}

#[tokio::test]
async fn a_slow_upstream_is_flushed_before_it_ends() {
    for enc in ALL {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let resp = compress_response(Response::new(StreamBody::new(rx)), enc, Level::Default);
        let mut body: CompressedBody<_> = resp.into_body();

        let event = Bytes::from_static(b"{\"event\":\"first\",\"payload\":\"hello hello hello\"}\n");
        tx.send(Ok(Frame::data(event.clone()))).await.expect("send");
        let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap_or_else(|_| panic!("{enc:?}: the first event was held back"))
            .expect("a frame")
            .expect("no error");
        let flushed = first.into_data().expect("data");

        // What was flushed decodes to the whole first event, with the stream still open.
        let (mut writer, reader) = tokio::io::duplex(64 * 1024);
        tokio::io::AsyncWriteExt::write_all(&mut writer, &flushed).await.expect("write");
        let mut decoder: Pin<Box<dyn tokio::io::AsyncRead + Send>> = match enc {
            Encoding::Gzip => {
                Box::pin(async_compression::tokio::bufread::GzipDecoder::new(tokio::io::BufReader::new(reader)))
            }
            Encoding::Brotli => {
                Box::pin(async_compression::tokio::bufread::BrotliDecoder::new(tokio::io::BufReader::new(reader)))
            }
            Encoding::Zstd => {
                Box::pin(async_compression::tokio::bufread::ZstdDecoder::new(tokio::io::BufReader::new(reader)))
            }
        };
        let mut got = vec![0u8; event.len()];
        tokio::time::timeout(Duration::from_secs(5), decoder.read_exact(&mut got))
            .await
            .unwrap_or_else(|_| panic!("{enc:?}: the flushed bytes did not decode"))
            .expect("decode");
        assert_eq!(got, event, "{enc:?}");

        drop(tx);
        let rest: Vec<_> = body.collect().await.expect("rest").to_bytes().to_vec();
        let whole = [flushed.to_vec(), rest].concat();
        assert_eq!(decode(enc, &whole).await.expect("valid stream"), event, "{enc:?}");
    }
}

#[test]
fn compressed_body_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<CompressedBody<Full<Bytes>>>();
    assert_send::<CompressedBody<http_body_util::combinators::BoxBody<Bytes, BodyError>>>();
}

#[test]
fn encodings_name_their_tokens() {
    assert_eq!(ALL.map(Encoding::as_str), ["gzip", "br", "zstd"]);
    for enc in ALL {
        assert_eq!(Encoding::from_token(enc.as_str()), Some(enc));
        assert_eq!(Encoding::from_token(&enc.as_str().to_uppercase()), Some(enc));
    }
    assert_eq!(Encoding::from_token("deflate"), None);
}

#[test]
fn the_default_policy_prefers_zstd_then_brotli_then_gzip() {
    let policy = Policy::default();
    assert_eq!(policy.encodings, [Encoding::Zstd, Encoding::Brotli, Encoding::Gzip]);
    assert_eq!(policy.min_bytes, raftgate_compress::DEFAULT_MIN_BYTES);
    assert_eq!(policy.level, Level::Default);
}

#[tokio::test]
async fn the_stream_of_frames_is_fused_after_the_end() {
    let resp = compress_response(response_with(&[], b"hello"), Encoding::Gzip, Level::Default);
    let mut body = resp.into_body();
    let mut frames = futures::stream::poll_fn(move |cx| Pin::new(&mut body).poll_frame(cx));
    while frames.next().await.is_some() {}
    assert!(frames.next().await.is_none());
}
