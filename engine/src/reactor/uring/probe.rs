//! Whether io_uring can be used here, and the process limit that sizes each ring's
//! descriptor table.

use std::io;

use io_uring::{IoUring, Probe, opcode};

use super::bufring::{BGID, BufRing};

/// Why io_uring cannot be used here, or `Ok` when every piece the driver needs works:
/// `io_uring_setup`, the opcodes, the extended enter arguments, a sparse file table, a
/// provided-buffer ring, and a kernel with multishot receive (6.0). `RINGCAST_URING=off`
/// makes it fail (to exercise the fallback).
///
/// The kernel part runs once per process, on a thread of its own: closing an io_uring
/// instance queues work to every thread that created or used it, and a thread that is
/// still alive sees that as a pending signal (blocking socket calls with a timeout fail
/// with EINTR), which the caller of `Engine::start` must never see.
pub(crate) fn probe() -> Result<(), String> {
    if let Ok(v) = std::env::var("RINGCAST_URING") {
        if matches!(v.as_str(), "off" | "0" | "no" | "false") {
            return Err(format!("disabled by RINGCAST_URING={v}"));
        }
    }
    static PROBED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBED
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("ringcast-uring-probe".into())
                .spawn(probe_kernel)
                .map_err(|e| format!("probe thread: {e}"))?
                .join()
                .map_err(|_| "probe thread panicked".to_string())?
        })
        .clone()
}

fn probe_kernel() -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup: {}", describe(&e)))?;
    if !ring.params().is_feature_ext_arg() {
        return Err("the kernel lacks IORING_FEAT_EXT_ARG (needs Linux 5.11)".into());
    }
    let mut p = Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("IORING_REGISTER_PROBE: {}", describe(&e)))?;
    let needed = [
        (opcode::AcceptMulti::CODE, "IORING_OP_ACCEPT"),
        (opcode::RecvMulti::CODE, "IORING_OP_RECV"),
        (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
        (opcode::Send::CODE, "IORING_OP_SEND"),
        (opcode::Shutdown::CODE, "IORING_OP_SHUTDOWN"),
        (opcode::Close::CODE, "IORING_OP_CLOSE"),
        (opcode::AsyncCancel::CODE, "IORING_OP_ASYNC_CANCEL"),
        (opcode::Read::CODE, "IORING_OP_READ"),
    ];
    for (code, name) in needed {
        if !p.is_supported(code) {
            return Err(format!("missing opcode {name}"));
        }
    }
    if kernel_version() < (6, 0) {
        return Err("the kernel lacks multishot receive (needs Linux 6.0)".into());
    }
    ring.submitter()
        .register_files_sparse(1)
        .map_err(|e| format!("sparse file table: {}", describe(&e)))?;
    let bufs = BufRing::register(&ring, 1, 64, true)
        .map_err(|e| format!("provided-buffer ring: {}", describe(&e)))?;
    // Unregistered before its memory goes.
    let _ = ring.submitter().unregister_buf_ring(BGID);
    drop(bufs);
    Ok(())
}

/// An `io_uring_setup` or registration error, with what EPERM and ENOSYS usually mean.
pub(super) fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) => format!("EPERM ({e}; a sandbox or kernel.io_uring_disabled?)"),
        Some(libc::ENOSYS) => format!("ENOSYS ({e}; kernel without io_uring)"),
        _ => e.to_string(),
    }
}

fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// The soft `RLIMIT_NOFILE`: the most direct descriptors one ring may register (the
/// kernel refuses a larger table with EMFILE), and also the cap on the ring descriptors
/// themselves, which live in the process table.
pub(super) fn nofile_limit() -> u32 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit struct.
    match super::super::sys::cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut rl) }) {
        Ok(_) => u32::try_from(rl.rlim_cur).unwrap_or(u32::MAX),
        Err(_) => 1024,
    }
}
