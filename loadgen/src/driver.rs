//! Who runs the connections: this process ([`Local`]) or worker processes ([`Workers`]),
//! behind one [`Backend`] interface the scenarios drive.
//!
//! # Worker protocol
//! A worker is `loadgen <same arguments> --worker W/N --clock-base B --threads T`. It
//! opens its share of the connections from source address 127.0.0.(2+W), then talks to
//! the parent in lines: JSON events on stdout, commands on stdin.
//! ```text
//!  worker → {"event":"connecting","connected":…,"failed":…}     (every 250 ms)
//!  worker → {"event":"ready","connect":{…}}
//!  parent → go T0 T1 T2
//!  worker → {"event":"progress","delivered":…,"published":…,"open":…}   (every 250 ms)
//!  worker → {"event":"stopped","finals":[…]}          (final count per publisher id)
//!  parent → drain LIMIT_MS F0,F1,…
//!  worker → {"event":"drained","ok":true}
//!  parent → close
//!  worker → {"event":"result","tally":{…}}           (histogram inside, base64 V2)
//! ```
//! `abort` or end of input at any point makes the worker close and exit. Timestamps are
//! on the shared run clock, so the publish phase starts at the same instant everywhere.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::report::{ConnectSummary, Latency, Tally};
use crate::run::Run;

/// Runs a scenario's connections and reports on them.
pub(crate) trait Backend {
    /// Waits until every connection has an outcome; `tick(connected, failed)` is called
    /// periodically.
    fn wait_connected(&mut self, tick: &mut dyn FnMut(u64, u64)) -> ConnectSummary;
    /// Starts the run phase (run clock, ns).
    fn go(&mut self, t0: u64, t1: u64, t2: u64);
    /// Live (delivered, published, open connections).
    fn live(&mut self) -> (u64, u64, u64);
    /// The latency of the deliveries since the last call, where the connections are in
    /// this process (`None` with workers).
    fn take_lag_window(&mut self) -> Option<Latency>;
    /// Waits for the senders to stop; final count per global publisher id.
    fn wait_stopped(&mut self, limit: Duration) -> Vec<u64>;
    /// Waits for the tail; whether everything arrived.
    fn drain(&mut self, finals: &[u64], limit: Duration) -> bool;
    /// Ends the run and merges the counts.
    ///
    /// # Errors
    /// When a worker failed to report.
    fn finish(self: Box<Self>) -> Result<Tally, String>;
}

/// Connections in this process.
#[derive(Debug)]
pub(crate) struct Local(pub(crate) Run);

impl Backend for Local {
    fn wait_connected(&mut self, tick: &mut dyn FnMut(u64, u64)) -> ConnectSummary {
        self.0.wait_connected(tick)
    }
    fn go(&mut self, t0: u64, t1: u64, t2: u64) {
        self.0.go(t0, t1, t2);
    }
    fn live(&mut self) -> (u64, u64, u64) {
        let (d, p) = self.0.live();
        (d, p, self.0.open_now())
    }
    fn take_lag_window(&mut self) -> Option<Latency> {
        Some(self.0.take_lag_window())
    }
    fn wait_stopped(&mut self, limit: Duration) -> Vec<u64> {
        self.0.wait_stopped(limit)
    }
    fn drain(&mut self, finals: &[u64], limit: Duration) -> bool {
        self.0.drain(finals, limit)
    }
    fn finish(self: Box<Self>) -> Result<Tally, String> {
        Ok(self.0.finish())
    }
}

/// A worker's stdout line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum WorkerEvent {
    /// Connections made so far (for the parent's progress).
    Connecting {
        /// Handshakes completed.
        connected: u64,
        /// Attempts failed.
        failed: u64,
    },
    /// Connections have their outcome.
    Ready {
        /// How set-up went.
        connect: ConnectSummary,
    },
    /// Live counters.
    Progress {
        /// Deliveries so far.
        delivered: u64,
        /// Messages sent so far.
        published: u64,
        /// Connections open now.
        open: u64,
    },
    /// Senders stopped.
    Stopped {
        /// Final count per global publisher id (0 for those elsewhere).
        finals: Vec<u64>,
    },
    /// Drain over.
    Drained {
        /// Whether everything arrived.
        ok: bool,
    },
    /// The worker's counts.
    Result {
        /// Counts and latency histogram.
        tally: Box<Tally>,
    },
}

#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    live: (u64, u64, u64),
    /// Connections made and failed so far, while connecting.
    connecting: (u64, u64),
    /// Sent its result; its end of output is expected.
    finished: bool,
}

/// Worker processes, driven over their stdin/stdout.
#[derive(Debug)]
pub(crate) struct Workers {
    workers: Vec<Worker>,
    rx: Receiver<(usize, Option<String>)>,
    backlog: VecDeque<(usize, WorkerEvent)>,
    error: Option<String>,
}

impl Workers {
    /// Spawns `count` workers running `args` plus the worker flags.
    ///
    /// # Errors
    /// When the executable cannot be found or spawned.
    pub(crate) fn spawn(
        args: &[std::ffi::OsString],
        count: usize,
        threads: usize,
        base: u64,
    ) -> Result<Self, String> {
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
        let (tx, rx) = channel();
        let mut workers = Vec::with_capacity(count);
        for w in 0..count {
            let mut child = Command::new(&exe)
                .args(args)
                .args([
                    "--worker".to_owned(),
                    format!("{w}/{count}"),
                    "--clock-base".to_owned(),
                    base.to_string(),
                    "--threads".to_owned(),
                    threads.to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot start worker {w}: {e}"))?;
            let stdout = child.stdout.take();
            let stdin = child.stdin.take();
            if let Some(out) = stdout {
                spawn_reader(w, out, tx.clone());
            }
            workers.push(Worker {
                child,
                stdin,
                live: (0, 0, 0),
                connecting: (0, 0),
                finished: false,
            });
        }
        Ok(Self {
            workers,
            rx,
            backlog: VecDeque::new(),
            error: None,
        })
    }

    fn send_all(&mut self, line: &str) {
        for w in &mut self.workers {
            if let Some(stdin) = w.stdin.as_mut() {
                let _ = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
            }
        }
    }

    /// Handles one line; returns the event if it parsed.
    fn take(&mut self, timeout: Duration) -> Option<(usize, WorkerEvent)> {
        if let Some(ev) = self.backlog.pop_front() {
            return Some(ev);
        }
        self.take_line(timeout).flatten()
    }

    /// Receives one line: `None` if none came in time, `Some(None)` if it was handled
    /// here (progress, or a failure recorded in `error`).
    fn take_line(&mut self, timeout: Duration) -> Option<Option<(usize, WorkerEvent)>> {
        Some(match self.rx.recv_timeout(timeout) {
            Ok((w, Some(line))) => match serde_json::from_str::<WorkerEvent>(&line) {
                Ok(WorkerEvent::Progress {
                    delivered,
                    published,
                    open,
                }) => {
                    if let Some(x) = self.workers.get_mut(w) {
                        x.live = (delivered, published, open);
                    }
                    None
                }
                Ok(WorkerEvent::Connecting { connected, failed }) => {
                    if let Some(x) = self.workers.get_mut(w) {
                        x.connecting = (connected, failed);
                    }
                    None
                }
                Ok(ev) => {
                    if matches!(ev, WorkerEvent::Result { .. })
                        && let Some(x) = self.workers.get_mut(w)
                    {
                        x.finished = true;
                    }
                    Some((w, ev))
                }
                Err(e) => {
                    self.error.get_or_insert_with(|| {
                        format!("worker {w} sent an unreadable line ({e}): {line}")
                    });
                    None
                }
            },
            Ok((w, None)) if self.workers.get(w).is_some_and(|x| x.finished) => None,
            Ok((w, None)) => {
                let status = self.workers.get_mut(w).and_then(|x| x.child.wait().ok());
                self.error.get_or_insert_with(|| match status {
                    Some(s) => format!("worker {w} exited early ({s})"),
                    None => format!("worker {w} exited early"),
                });
                None
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
        })
    }

    /// Waits until every worker has sent an event `pick` accepts (or one failed).
    fn collect<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(WorkerEvent) -> Option<T>,
    ) -> Vec<Option<T>> {
        let mut got: Vec<Option<T>> = (0..self.workers.len()).map(|_| None).collect();
        let deadline = Instant::now() + limit;
        while got.iter().any(Option::is_none) && self.error.is_none() {
            let now = Instant::now();
            if now >= deadline {
                let silent: Vec<String> = got
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| g.is_none())
                    .map(|(w, _)| w.to_string())
                    .collect();
                self.error.get_or_insert_with(|| {
                    format!("workers {} did not answer in time", silent.join(", "))
                });
                break;
            }
            if let Some((w, ev)) = self.take((deadline - now).min(Duration::from_millis(50)))
                && let Some(v) = pick(ev)
                && let Some(slot) = got.get_mut(w)
            {
                *slot = Some(v);
            }
        }
        got
    }

    fn kill_all(&mut self) {
        for w in &mut self.workers {
            w.stdin = None;
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for w in &mut self.workers {
            loop {
                match w.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = w.child.kill();
                        let _ = w.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn spawn_reader(w: usize, out: std::process::ChildStdout, tx: Sender<(usize, Option<String>)>) {
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            match line {
                Ok(l) if l.trim().is_empty() => {}
                Ok(l) => {
                    if tx.send((w, Some(l))).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send((w, None));
    });
}

/// How long past its own time limit a worker may take to answer: a worker of a
/// million-connection run shares two cores with fifty others and the server, so it may
/// be slow to be scheduled, but a worker that never answers still ends the run.
const ANSWER_SLACK: Duration = Duration::from_secs(60);

/// How often a worker reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Long enough for any connection phase: every handshake has its own timeout.
const SETUP_LIMIT: Duration = Duration::from_secs(3600);

impl Backend for Workers {
    fn wait_connected(&mut self, tick: &mut dyn FnMut(u64, u64)) -> ConnectSummary {
        let mut got: Vec<Option<ConnectSummary>> = (0..self.workers.len()).map(|_| None).collect();
        let deadline = Instant::now() + SETUP_LIMIT;
        while got.iter().any(Option::is_none) && self.error.is_none() && Instant::now() < deadline {
            if let Some((w, WorkerEvent::Ready { connect })) = self.take(Duration::from_millis(100))
                && let Some(slot) = got.get_mut(w)
            {
                *slot = Some(connect);
            }
            // Workers still connecting count with their latest progress.
            let (done, failed) = got.iter().zip(&self.workers).fold((0, 0), |acc, (g, w)| {
                let (c, f) = g.as_ref().map_or(w.connecting, |c| (c.connected, c.failed));
                (acc.0 + c, acc.1 + f)
            });
            tick(done, failed);
        }
        let mut total = ConnectSummary::default();
        for c in got.iter().flatten() {
            total.merge(c);
        }
        if let Some(e) = &self.error {
            total.fatal = true;
            total.first_error.get_or_insert_with(|| e.clone());
        }
        total
    }

    fn go(&mut self, t0: u64, t1: u64, t2: u64) {
        self.send_all(&format!("go {t0} {t1} {t2}"));
    }

    fn live(&mut self) -> (u64, u64, u64) {
        while let Some(line) = self.take_line(Duration::ZERO) {
            if let Some(ev) = line {
                // Ahead of the parent (a worker stopped first): keep it for `collect`.
                self.backlog.push_back(ev);
            }
        }
        self.workers.iter().fold((0, 0, 0), |acc, w| {
            (acc.0 + w.live.0, acc.1 + w.live.1, acc.2 + w.live.2)
        })
    }

    fn take_lag_window(&mut self) -> Option<Latency> {
        None
    }

    fn wait_stopped(&mut self, limit: Duration) -> Vec<u64> {
        let got = self.collect(limit + ANSWER_SLACK, |ev| match ev {
            WorkerEvent::Stopped { finals } => Some(finals),
            _ => None,
        });
        let mut total: Vec<u64> = Vec::new();
        for finals in got.iter().flatten() {
            if total.len() < finals.len() {
                total.resize(finals.len(), 0);
            }
            for (t, f) in total.iter_mut().zip(finals) {
                *t += f;
            }
        }
        total
    }

    fn drain(&mut self, finals: &[u64], limit: Duration) -> bool {
        let list: Vec<String> = finals.iter().map(u64::to_string).collect();
        self.send_all(&format!("drain {} {}", limit.as_millis(), list.join(",")));
        let got = self.collect(
            limit * crate::run::DRAIN_CAP + ANSWER_SLACK,
            |ev| match ev {
                WorkerEvent::Drained { ok } => Some(ok),
                _ => None,
            },
        );
        got.iter().all(|ok| *ok == Some(true))
    }

    fn finish(mut self: Box<Self>) -> Result<Tally, String> {
        self.send_all("close");
        let got = self.collect(ANSWER_SLACK * 2, |ev| match ev {
            WorkerEvent::Result { tally } => Some(tally),
            _ => None,
        });
        let mut total = Tally::default();
        for t in got.iter().flatten() {
            total.merge(t);
        }
        self.kill_all();
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}

/// A worker's side of the protocol: reports on `run` and follows the parent's commands.
/// Returns the process exit code.
pub(crate) fn serve_parent(run: Run) -> i32 {
    let (tx, rx) = channel::<Option<String>>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    });
    let emit = |ev: &WorkerEvent| {
        let Ok(line) = serde_json::to_string(ev) else {
            return;
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    };
    let mut last = Instant::now();
    let mut orphaned = false;
    let connect = run.wait_connected(|connected, failed| {
        // No command comes before `ready`: a line or the end of input means the parent
        // gave up (or died), and the connections still planned are not opened.
        if !orphaned && !matches!(rx.try_recv(), Err(TryRecvError::Empty)) {
            orphaned = true;
            run.abort("the parent process went away");
        }
        if last.elapsed() >= PROGRESS_EVERY {
            last = Instant::now();
            emit(&WorkerEvent::Connecting { connected, failed });
        }
    });
    if orphaned {
        let _ = run.finish();
        return 1;
    }
    emit(&WorkerEvent::Ready { connect });
    let mut stage = 0;
    loop {
        let Ok(Some(cmd)) = rx.recv() else {
            let _ = run.finish();
            return 1;
        };
        let mut words = cmd.split_whitespace();
        match (words.next(), stage) {
            (Some("go"), 0) => {
                let mut t = [0u64; 3];
                for slot in &mut t {
                    *slot = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                }
                run.go(t[0], t[1], t[2]);
                // Progress until t2, watching for an abort.
                loop {
                    let (delivered, published) = run.live();
                    emit(&WorkerEvent::Progress {
                        delivered,
                        published,
                        open: run.open_now(),
                    });
                    let now = clock::now_ns();
                    if now >= t[2] {
                        break;
                    }
                    let wait = Duration::from_nanos(t[2] - now).min(Duration::from_millis(250));
                    match rx.recv_timeout(wait) {
                        Err(RecvTimeoutError::Timeout) => {}
                        Ok(Some(l)) if l.trim() != "abort" => {}
                        _ => {
                            let _ = run.finish();
                            return 1;
                        }
                    }
                }
                let finals = run.wait_stopped(Duration::from_secs(5));
                emit(&WorkerEvent::Stopped { finals });
                stage = 1;
            }
            (Some("drain"), 1) => {
                let limit = words.next().and_then(|w| w.parse().ok()).unwrap_or(2000);
                let finals: Vec<u64> = words
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap_or(0))
                    .collect();
                let ok = run.drain(&finals, Duration::from_millis(limit));
                emit(&WorkerEvent::Drained { ok });
                stage = 2;
            }
            (Some("close"), _) => {
                let tally = run.finish();
                emit(&WorkerEvent::Result {
                    tally: Box::new(tally),
                });
                return 0;
            }
            (Some("abort"), _) => {
                let _ = run.finish();
                return 1;
            }
            _ => {
                eprintln!("loadgen worker: unexpected command '{cmd}'");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_lines() {
        let mut tally = Tally {
            delivered: 5,
            ..Tally::default()
        };
        tally.latency.record(1500);
        let events = [
            WorkerEvent::Ready {
                connect: ConnectSummary {
                    connected: 3,
                    ..ConnectSummary::default()
                },
            },
            WorkerEvent::Stopped { finals: vec![1, 0] },
            WorkerEvent::Result {
                tally: Box::new(tally),
            },
        ];
        for ev in &events {
            let line = serde_json::to_string(ev).expect("serialize");
            assert!(!line.contains('\n'));
            let back: WorkerEvent = serde_json::from_str(&line).expect("parse");
            match (ev, back) {
                (WorkerEvent::Ready { .. }, WorkerEvent::Ready { connect }) => {
                    assert_eq!(connect.connected, 3)
                }
                (WorkerEvent::Stopped { .. }, WorkerEvent::Stopped { finals }) => {
                    assert_eq!(finals, [1, 0])
                }
                (WorkerEvent::Result { .. }, WorkerEvent::Result { tally }) => {
                    assert_eq!(tally.delivered, 5);
                    assert_eq!(tally.latency.count(), 1);
                }
                (a, b) => panic!("{a:?} came back as {b:?}"),
            }
        }
    }
}
