//! Unmasking throughput (GB/s): the naive byte loop, the word-at-a-time scalar twin, each
//! SIMD implementation this CPU has, and the dispatching `unmask`.
//!
//! `cargo bench -p ringcast-bench --bench mask -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::protocol::mask::{Impl, unmask, unmask_with};
use ringcast_bench::{naive_unmask, pseudo_random_bytes};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const SIZES: [(usize, &str); 4] = [
    (64, "64B"),
    (1 << 10, "1KiB"),
    (16 << 10, "16KiB"),
    (1 << 20, "1MiB"),
];

fn bench_unmask(c: &mut Criterion) {
    for (size, label) in SIZES {
        let mut group = c.benchmark_group(format!("unmask/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = pseudo_random_bytes(size, 1);

        group.bench_function("naive", |b| {
            b.iter(|| naive_unmask(black_box(&mut buf[..]), black_box(KEY), black_box(1)))
        });
        for imp in Impl::available() {
            group.bench_function(imp.name(), |b| {
                b.iter(|| unmask_with(imp, black_box(&mut buf[..]), black_box(KEY), black_box(1)))
            });
        }
        group.bench_function(format!("dispatch({})", Impl::selected().name()), |b| {
            b.iter(|| unmask(black_box(&mut buf[..]), black_box(KEY), black_box(1)))
        });
        group.finish();
    }
}

criterion_group!(benches, bench_unmask);
criterion_main!(benches);
