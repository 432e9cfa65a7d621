//! What compressing one realistic 16 KiB JSON API response costs, for each
//! coding at the default level: the whole path the gateway takes
//! (`compress_response`, then the body collected), with the body arriving in
//! 4 KiB frames as it would from an upstream connection. Prints the
//! compression ratio of each coding before measuring.
//!
//! Run: `cargo bench -p raftgate-compress --bench compress`.

#[path = "../tests/fixture/mod.rs"]
mod fixture;

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use raftgate_compress::{compress_response, BodyError, Encoding, Level};

/// Size of the frames the upstream body arrives in, in bytes.
const FRAME_BYTES: usize = 4 * 1024;
/// Measurement time per coding.
const MEASUREMENT: Duration = Duration::from_secs(5);

async fn compress_once(json: &Bytes, enc: Encoding) -> Bytes {
    let frames: Vec<Result<Frame<Bytes>, BodyError>> = (0..json.len())
        .step_by(FRAME_BYTES)
        .map(|start| Ok(Frame::data(json.slice(start..json.len().min(start + FRAME_BYTES)))))
        .collect();
    let resp = Response::new(StreamBody::new(futures::stream::iter(frames)));
    match compress_response(resp, enc, Level::Default).into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => panic!("compressing failed: {e}"),
    }
}

fn bench(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(rt) => rt,
        Err(e) => panic!("no tokio runtime: {e}"),
    };
    let json = Bytes::from(fixture::json_orders());
    let encodings = [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd];

    for enc in encodings {
        let compressed = runtime.block_on(compress_once(&json, enc));
        println!(
            "{:<5} {} -> {} bytes, ratio {:.2} ({:.1}% of the original)",
            enc.as_str(),
            json.len(),
            compressed.len(),
            json.len() as f64 / compressed.len() as f64,
            100.0 * compressed.len() as f64 / json.len() as f64,
        );
    }

    let mut group = c.benchmark_group("compress_16k_json");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.measurement_time(MEASUREMENT);
    for enc in encodings {
        group.bench_with_input(BenchmarkId::from_parameter(enc.as_str()), &json, |b, json| {
            b.iter(|| runtime.block_on(compress_once(json, enc)));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
