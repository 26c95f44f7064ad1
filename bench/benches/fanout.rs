//! The per-subscriber cost of fan-out on the topic logs: a publish batch of k messages is
//! appended to the topic's log once, then every subscriber is visited once — slow-consumer
//! check, gather of its pending run into iovecs, consumption as by a completed write.
//! Reported per subscriber per batch: it should not depend on k (the per-message work is
//! the one copy into the log, per reactor, not per subscriber).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringcast::fanout::bench::FanoutBench;
use ringcast::protocol::{OpCode, encode};

const SUBSCRIBERS: usize = 10_000;

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_per_subscriber_batch");
    for batch in [1usize, 16, 64, 256] {
        let frames: Vec<_> = (0..batch)
            .map(|i| encode::frame(OpCode::Binary, &[i as u8; 64]))
            .collect();
        let mut f = FanoutBench::new(SUBSCRIBERS);
        g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, _| {
            b.iter(|| black_box(f.round(&frames)));
        });
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
