//! The per-subscriber cost of fan-out: queueing a shared frame (a refcount bump and a
//! push) on every subscriber's out-queue, then gathering each queue for one `writev` and
//! consuming it as a completed write would. Reported per subscriber per message.

use std::hint::black_box;
use std::io::IoSlice;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringcast::fanout::{OutQueue, encode};
use ringcast::protocol::OpCode;

const SUBSCRIBERS: usize = 10_000;

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for batch in [1usize, 16, 256] {
        let frames: Vec<_> = (0..batch)
            .map(|i| encode::frame(OpCode::Binary, &[i as u8; 64]))
            .collect();
        let mut queues: Vec<OutQueue> = (0..SUBSCRIBERS).map(|_| OutQueue::new()).collect();
        g.throughput(Throughput::Elements((SUBSCRIBERS * batch) as u64));
        // Enqueue only: what publishing costs the reactor per subscriber per message.
        g.bench_with_input(BenchmarkId::new("enqueue", batch), &batch, |b, _| {
            b.iter(|| {
                for q in &mut queues {
                    for f in &frames {
                        q.push_tagged(f.clone(), 1);
                    }
                }
                for q in &mut queues {
                    q.clear();
                }
            });
        });
        // Enqueue, gather into iovecs and consume: the whole user-space path of a
        // delivery, without the syscall.
        g.bench_with_input(BenchmarkId::new("enqueue_gather", batch), &batch, |b, _| {
            b.iter(|| {
                for q in &mut queues {
                    for f in &frames {
                        q.push_tagged(f.clone(), 1);
                    }
                    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(q.len_frames());
                    q.io_slices(&mut slices, 1024, usize::MAX);
                    let bytes: usize = slices.iter().map(|s| s.len()).sum();
                    black_box(&slices);
                    q.advance(bytes);
                }
            });
        });
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
