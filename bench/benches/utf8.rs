//! UTF-8 validation throughput (GB/s) of text messages through `Utf8Validator`, whole and
//! fed in 1 KiB and 7-byte pieces, against `std::str::from_utf8` on the whole message.
//!
//! `cargo bench -p ringcast-bench --bench utf8 -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::protocol::utf8::Utf8Validator;
use ringcast_bench::{ascii_text, mixed_text};

const SIZES: [(usize, &str); 3] = [(1 << 10, "1KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB")];

/// Feeds `text` in pieces of `piece` bytes and finishes.
fn validate_in_pieces(text: &[u8], piece: usize) -> bool {
    let mut v = Utf8Validator::new();
    text.chunks(piece).all(|p| v.feed(black_box(p)).is_ok()) && v.finish().is_ok()
}

fn bench_utf8(c: &mut Criterion) {
    for kind in ["ascii", "mixed"] {
        for (size, label) in SIZES {
            let text = match kind {
                "ascii" => ascii_text(size, 7),
                _ => mixed_text(size, 7),
            }
            .into_bytes();
            assert!(validate_in_pieces(&text, 7) && std::str::from_utf8(&text).is_ok());
            let mut group = c.benchmark_group(format!("utf8/{kind}/{label}"));
            group.throughput(Throughput::Bytes(size as u64));

            group.bench_function("std", |b| {
                b.iter(|| std::str::from_utf8(black_box(&text)).is_ok())
            });
            group.bench_function("validator_whole", |b| {
                b.iter(|| validate_in_pieces(black_box(&text), usize::MAX))
            });
            group.bench_function("validator_1KiB_pieces", |b| {
                b.iter(|| validate_in_pieces(black_box(&text), 1 << 10))
            });
            group.bench_function("validator_7B_pieces", |b| {
                b.iter(|| validate_in_pieces(black_box(&text), 7))
            });
            group.finish();
        }
    }
}

criterion_group!(benches, bench_utf8);
criterion_main!(benches);
