//! Process limits that decide how many connections one process may hold.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// File descriptors kept back for the process's own use (epoll, pipes, stdio…).
pub(crate) const FD_RESERVE: u64 = 64;

/// The current soft limit on open files (`ulimit -n`); `u64::MAX` when unlimited.
pub(crate) fn nofile_soft() -> u64 {
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Raises the soft open-files limit to the hard limit; returns the soft limit in force.
pub(crate) fn raise_nofile() -> u64 {
    let lim = getrlimit(Resource::Nofile);
    if lim.current != lim.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        );
    }
    nofile_soft()
}

/// Connections one process can hold under its current limit.
pub(crate) fn connections_per_process() -> u64 {
    nofile_soft().saturating_sub(FD_RESERVE)
}

/// Ephemeral ports a source address leaves unused, so that a worker never runs its
/// address out of them (other sockets, TIME_WAIT).
const PORT_RESERVE: u64 = 1000;

/// Connections one worker process opens when a run is split (`--workers auto`): as many
/// as its open-files limit allows, and no more than its own source address has
/// ephemeral ports (`net.ipv4.ip_local_port_range`).
pub(crate) fn connections_per_worker() -> u64 {
    connections_per_process().min(ephemeral_ports().saturating_sub(PORT_RESERVE))
}

/// The size of `net.ipv4.ip_local_port_range` (28 232 by default).
pub(crate) fn ephemeral_ports() -> u64 {
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = range
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if hi >= lo => hi - lo + 1,
        _ => 28_232,
    }
}

/// Resident set size of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
///
/// # Errors
/// When the file cannot be read (no such process) or has no `VmRSS` line.
pub(crate) fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_vmrss(&text).ok_or_else(|| format!("no VmRSS line in {path}"))
}

fn parse_vmrss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmrss_parses() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t   5120 kB\nThreads: 1\n";
        assert_eq!(parse_vmrss(status), Some(5120));
        assert_eq!(parse_vmrss("Name: x\n"), None);
        assert!(rss_kib(std::process::id()).expect("own status") > 0);
        assert!(rss_kib(u32::MAX).is_err());
    }

    #[test]
    fn limits_are_sane() {
        assert!(raise_nofile() >= nofile_soft().min(1024));
        assert!(connections_per_process() > 0);
        assert!(ephemeral_ports() > PORT_RESERVE);
        assert!(connections_per_worker() <= connections_per_process());
    }
}
