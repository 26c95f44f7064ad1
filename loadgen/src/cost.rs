//! What connections cost: in memory, the server's resident set (`VmRSS` of its
//! `/proc/PID/status`) and the kernel's — its slab caches (`Slab` of `/proc/meminfo`:
//! sockets, their files, epoll items, io_uring's fixed-file nodes…) and the pages TCP
//! buffers hold (`mem` of the `TCP:` line of `/proc/net/sockstat`) — sampled before and
//! once every connection is open; in time, the server's CPU (`utime + stime` of its
//! `/proc/PID/stat`) over the publishing phase. On loopback the kernel holds both ends of
//! each connection, the client's and the server's: the kernel figure per connection
//! counts both, and the server's CPU includes the kernel's receive path of the clients'
//! sockets (loopback delivers a packet in the sender's context).

use serde::Serialize;

use crate::limits;

/// Page size for `sockstat`'s `mem` (pages): 4 KiB on the machines loadgen runs on.
const PAGE: u64 = 4096;

/// One reading.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sample {
    /// Server `VmRSS`, KiB.
    rss_kib: Option<u64>,
    /// Server CPU time (user + system), seconds.
    cpu_s: Option<f64>,
    /// Kernel slab memory, KiB.
    slab_kib: u64,
    /// Pages held by TCP buffers.
    tcp_pages: u64,
    /// Sockets in use, machine-wide.
    sockets: u64,
}

/// The growth between two readings, per connection.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Cost {
    /// Server RSS growth ÷ connections, bytes.
    pub(crate) server_rss_per_conn: Option<f64>,
    /// Server RSS at the second reading, KiB.
    pub(crate) server_rss_kib: Option<u64>,
    /// Kernel memory growth (slab + TCP buffers) ÷ connections, bytes, both ends.
    pub(crate) kernel_per_conn: f64,
    /// Of it, slab growth ÷ connections.
    pub(crate) slab_per_conn: f64,
    /// Sockets opened in between (both ends on loopback).
    pub(crate) sockets: i64,
}

/// Reads the server's RSS (if `server_pid`) and the kernel's memory now.
///
/// # Errors
/// When the server's status cannot be read (no such process).
pub(crate) fn sample(server_pid: Option<u32>) -> Result<Sample, String> {
    let rss_kib = server_pid.map(limits::rss_kib).transpose()?;
    let cpu_s = server_pid.and_then(cpu_secs);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    Ok(Sample {
        rss_kib,
        cpu_s,
        slab_kib: field(&meminfo, "Slab:", 0).unwrap_or(0),
        tcp_pages: line_field(&sockstat, "TCP:", "mem").unwrap_or(0),
        sockets: line_field(&sockstat, "sockets:", "used").unwrap_or(0),
    })
}

impl Sample {
    /// The server's `VmRSS` in KiB, if it was read.
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        self.rss_kib
    }

    /// Server CPU seconds since `before`, if both were read.
    pub(crate) fn cpu_since(&self, before: &Self) -> Option<f64> {
        Some(self.cpu_s? - before.cpu_s?)
    }

    /// What `conns` connections opened since `before` cost, each.
    pub(crate) fn cost_since(&self, before: &Self, conns: u64) -> Cost {
        let n = conns.max(1) as f64;
        let delta = |a: u64, b: u64| a as f64 - b as f64;
        let slab = delta(self.slab_kib, before.slab_kib) * 1024.0;
        let tcp = delta(self.tcp_pages, before.tcp_pages) * PAGE as f64;
        Cost {
            server_rss_per_conn: match (self.rss_kib, before.rss_kib) {
                (Some(a), Some(b)) => Some(delta(a, b) * 1024.0 / n),
                _ => None,
            },
            server_rss_kib: self.rss_kib,
            kernel_per_conn: (slab + tcp) / n,
            slab_per_conn: slab / n,
            sockets: self.sockets as i64 - before.sockets as i64,
        }
    }
}

/// CPU seconds (user + system) of process `pid`: fields 14 and 15 of its `stat`, after
/// the command name (which may hold spaces, hence the last `)`).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let hz = rustix::param::clock_ticks_per_second();
    Some((utime + stime) as f64 / hz.max(1) as f64)
}

/// The number after `key` on its line (`Slab:   123 kB`), skipping `skip` numbers.
fn field(text: &str, key: &str, skip: usize) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .nth(skip)
}

/// The value after word `name` on the line starting with `key` (`TCP: inuse 5 … mem 9`).
fn line_field(text: &str, key: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == name {
            return words.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let meminfo = "MemTotal:  100 kB\nSlab:     579360 kB\nSReclaimable: 1 kB\n";
        assert_eq!(field(meminfo, "Slab:", 0), Some(579_360));
        let sockstat = "sockets: used 1773\nTCP: inuse 1747 orphan 0 tw 1985 alloc 1750 mem 1522\n";
        assert_eq!(line_field(sockstat, "TCP:", "mem"), Some(1522));
        assert_eq!(line_field(sockstat, "sockets:", "used"), Some(1773));
        assert_eq!(line_field(sockstat, "UDP:", "mem"), None);
        let before = Sample {
            cpu_s: Some(1.0),
            rss_kib: Some(1000),
            slab_kib: 1000,
            tcp_pages: 10,
            sockets: 5,
        };
        let after = Sample {
            cpu_s: Some(1.5),
            rss_kib: Some(1200),
            slab_kib: 1400,
            tcp_pages: 10,
            sockets: 205,
        };
        let c = after.cost_since(&before, 100);
        assert_eq!(c.server_rss_per_conn, Some(2048.0));
        assert_eq!(c.kernel_per_conn, 4096.0);
        assert_eq!(c.sockets, 200);
        assert!(sample(None).is_ok());
        assert_eq!(after.cpu_since(&before), Some(0.5));
        let own = sample(Some(std::process::id())).expect("own process");
        assert!(own.cpu_s.is_some_and(|s| s >= 0.0));
    }
}
