//! W3C Trace Context (`traceparent`, `tracestate`) through the gateway.
//!
//! Every proxied request is one hop of a trace. A valid incoming
//! `traceparent` keeps its trace id and flags; the gateway gives its hop a
//! new span id and sends `traceparent: 00-<trace>-<gateway span>-<flags>`
//! upstream, with `tracestate` passed on unchanged (if it is within
//! [`MAX_TRACESTATE_BYTES`]). A request without one, or with a malformed
//! one (which is dropped, with its `tracestate`), starts a new trace,
//! marked sampled with the configured probability. The trace and span ids
//! go into the access log, so a log line and the upstream's spans meet.
//!
//! A [`SpanSink`] (the node's OTLP exporter, when built with it) receives
//! each sampled hop as a [`FinishedSpan`] once its response head is ready.
//! The proxy knows nothing of how spans are exported; without a sink the
//! cost is one `Option` check per request.

use std::time::{Duration, SystemTime};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use rand::RngCore;

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// Longest `tracestate` passed on (the W3C recommendation for what a
/// vendor must propagate); a longer one is dropped.
pub const MAX_TRACESTATE_BYTES: usize = 512;
const SAMPLED: u8 = 0x01;

/// Whether and how the gateway joins traces.
#[derive(Clone, Debug)]
pub struct TracePolicy {
    /// Send `traceparent` upstream (and keep a client's trace).
    pub propagate: bool,
    /// Traces the gateway starts that are marked sampled, per million.
    pub sample_per_million: u32,
}

impl Default for TracePolicy {
    fn default() -> Self {
        Self { propagate: true, sample_per_million: 1_000_000 }
    }
}

/// This hop's place in a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The gateway's span for this request.
    pub span_id: [u8; 8],
    /// The caller's span, when the request came with a trace.
    pub parent_id: Option<[u8; 8]>,
    pub flags: u8,
}

impl TraceContext {
    /// Continues the request's trace or starts one.
    pub fn for_request(headers: &HeaderMap, policy: &TracePolicy) -> Self {
        let mut rng = rand::thread_rng();
        let mut span_id = [0u8; 8];
        while span_id == [0; 8] {
            rng.fill_bytes(&mut span_id);
        }
        let mut incoming = headers.get_all(TRACEPARENT).iter();
        if let (Some(v), None) = (incoming.next(), incoming.next()) {
            if let Some((trace_id, parent, flags)) = parse_traceparent(v.as_bytes()) {
                return Self { trace_id, span_id, parent_id: Some(parent), flags };
            }
        }
        let mut trace_id = [0u8; 16];
        while trace_id == [0; 16] {
            rng.fill_bytes(&mut trace_id);
        }
        let sampled = rng.next_u32() % 1_000_000 < policy.sample_per_million;
        Self { trace_id, span_id, parent_id: None, flags: if sampled { SAMPLED } else { 0 } }
    }

    /// The sampled flag: this hop is recorded (and exported, with a sink).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// `00-<trace id>-<this hop's span id>-<flags>`.
    pub fn traceparent(&self) -> HeaderValue {
        // `00-<32 hex>-<16 hex>-<2 hex>`, written in place (on every proxied request).
        let mut v = [b'-'; 55];
        v[..2].copy_from_slice(b"00");
        hex_into(&self.trace_id, &mut v[3..35]);
        hex_into(&self.span_id, &mut v[36..52]);
        hex_into(&[self.flags], &mut v[53..55]);
        HeaderValue::from_bytes(&v).expect("hex and dashes are valid header bytes")
    }

    /// Rewrites the upstream request's trace headers: ours replaces the
    /// client's `traceparent`; `tracestate` stays only with a continued trace.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let keep_state = self.parent_id.is_some()
            && headers.get_all(TRACESTATE).iter().map(|v| v.len() + 1).sum::<usize>() <= MAX_TRACESTATE_BYTES;
        if !keep_state {
            headers.remove(TRACESTATE);
        }
        headers.insert(TRACEPARENT, self.traceparent());
    }
}

/// One proxied request as a span: the gateway's hop of its trace.
#[derive(Clone, Copy, Debug)]
pub struct FinishedSpan<'a> {
    pub trace: &'a TraceContext,
    /// The route's id; None when no route matched.
    pub route: Option<&'a str>,
    pub method: &'a Method,
    /// The status sent to the client.
    pub status: StatusCode,
    /// The gateway's own error code (`upstream_timeout`, ...), when it
    /// answered instead of the upstream.
    pub error: Option<&'static str>,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// When the request arrived (wall clock).
    pub start: SystemTime,
    /// From arrival to the response head.
    pub duration: Duration,
}

/// Where sampled spans go. Called on the request path: an implementation
/// must not block or wait on the network (queue, and drop when full).
pub trait SpanSink: Send + Sync + std::fmt::Debug {
    fn record(&self, span: &FinishedSpan<'_>);

    /// Sends what is still queued and stops; called once, at shutdown, off
    /// the async runtime (it may block for the sink's own bounded time).
    fn shutdown(&self) {}
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Parses a `traceparent` value (W3C Trace Context level 1): lower-case
/// hex, no all-zero ids, version `ff` invalid; a later version is read by
/// its first four fields, as the specification asks.
pub fn parse_traceparent(v: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    if v.len() < 55 {
        return None;
    }
    let version = unhex::<1>(&v[0..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (version > 0 && v.len() > 55 && v[55] != b'-') {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = unhex::<16>(&v[3..35])?;
    let parent = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_keeps_its_trace_and_gets_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(GOOD));
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=abc"));
        let t = TraceContext::for_request(&h, &TracePolicy::default());
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id, Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]));
        assert_ne!(t.span_id_hex(), "00f067aa0ba902b7");
        t.apply(&mut h);
        let sent = h.get(TRACEPARENT).unwrap().to_str().unwrap().to_string();
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{sent}");
        assert!(sent.ends_with("-01"));
        assert_eq!(sent, format!("00-{}-{}-01", t.trace_id_hex(), t.span_id_hex()));
        assert_eq!(parse_traceparent(sent.as_bytes()), Some((t.trace_id, t.span_id, 1)));
        assert_eq!(h.get(TRACESTATE).unwrap(), "vendor=abc");
    }

    #[test]
    fn malformed_traceparents_start_a_new_trace_and_drop_tracestate() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            assert!(parse_traceparent(bad.as_bytes()).is_none(), "{bad:?}");
            let mut h = HeaderMap::new();
            h.insert(TRACEPARENT, HeaderValue::from_str(bad).unwrap());
            h.insert(TRACESTATE, HeaderValue::from_static("vendor=abc"));
            let t = TraceContext::for_request(&h, &TracePolicy::default());
            assert!(t.parent_id.is_none());
            t.apply(&mut h);
            assert!(h.get(TRACESTATE).is_none());
            assert_ne!(t.trace_id, [0; 16]);
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_fields() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever";
        assert!(parse_traceparent(v.as_bytes()).is_some());
    }

    #[test]
    fn new_traces_follow_the_sampling_rate() {
        let never = TracePolicy { propagate: true, sample_per_million: 0 };
        let always = TracePolicy::default();
        let h = HeaderMap::new();
        assert!((0..100).all(|_| TraceContext::for_request(&h, &never).flags == 0));
        assert!((0..100).all(|_| TraceContext::for_request(&h, &always).flags == SAMPLED));
    }

    #[test]
    fn an_oversized_tracestate_is_not_passed_on() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(GOOD));
        h.insert(TRACESTATE, HeaderValue::from_str(&"a=b,".repeat(200)).unwrap());
        TraceContext::for_request(&h, &TracePolicy::default()).apply(&mut h);
        assert!(h.get(TRACESTATE).is_none());
    }
}
