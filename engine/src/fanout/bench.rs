//! The user-space fan-out path, without sockets, for the criterion benchmark
//! (`bench/benches/fanout.rs`): not part of the API.

use bytes::Bytes;

use super::SlowConsumer;
use super::outbox::Outbox;
use super::topic::{Form, Start, TopicName, Topics};

/// One reactor's topic with `n` subscribers. See [`FanoutBench::round`].
#[derive(Debug)]
pub struct FanoutBench {
    topics: Topics,
    id: u32,
    subs: Vec<Outbox>,
}

impl FanoutBench {
    /// A topic with `subscribers` subscriptions.
    pub fn new(subscribers: usize) -> Self {
        let mut topics = Topics::default();
        let name = TopicName::new("t");
        let mut subs = Vec::with_capacity(subscribers);
        let mut id = 0;
        for key in 0..subscribers {
            let (t, pos) = topics.subscribe(&name, Form::Plain, key, 0);
            id = t;
            let mut o = Outbox::default();
            o.add_sub(id, pos, topics.start(id, Start::Live, u64::MAX).0);
            subs.push(o);
        }
        Self { topics, id, subs }
    }

    /// What a reactor does for one publish batch, minus the syscalls: appends `frames` to
    /// the log (once), then for every subscriber applies the slow-consumer check, gathers
    /// its pending bytes into iovecs and consumes them as a completed write would; trims
    /// the log. Returns the iovecs built, summed over subscribers.
    pub fn round(&mut self, frames: &[Bytes]) -> usize {
        let batch_start = self.topics.log(self.id).head();
        for f in frames {
            let seq = self.topics.log(self.id).last_seq() + 1;
            self.topics.append(self.id, f, seq);
        }
        let log = self.topics.log(self.id);
        let mut slices = 0;
        let mut min = log.head();
        for o in &mut self.subs {
            let _ = SlowConsumer::Close.apply(o, 0, log, batch_start, u64::MAX);
            let mut iov = [(std::ptr::null::<u8>(), 0usize); 8];
            let mut n = 0;
            let total = o.gather(&self.topics, usize::MAX, |b, _| {
                iov[n] = (b.as_ptr(), b.len());
                n += 1;
                n < iov.len()
            });
            std::hint::black_box(&iov);
            slices += n;
            o.advance(&self.topics, total);
            min = min.min(o.subs()[0].cursor);
        }
        self.topics.trim(self.id, min);
        slices
    }
}
