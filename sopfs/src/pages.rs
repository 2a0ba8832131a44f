//! Transparent huge pages off for the daemon.
//!
//! mimalloc asks the kernel for huge pages on its arenas, and returns
//! memory a second after it is freed. A daemon that frees and reuses
//! buffers all the time (records, nodes, FUSE replies) then faults the
//! same regions back in, and each fault of a huge page zeroes 2 MiB: with
//! eight mounts on one machine, clearing pages was 15 % of the daemons'
//! CPU and doubled the p99 of a create. With small pages a fault zeroes
//! 4 KiB. This is what mimalloc's own `MIMALLOC_ALLOW_THP=0` does; the
//! environment is read before `main`, so the daemon sets it itself.

/// Turns transparent huge pages off for this process (a no-op where the
/// kernel has no such switch).
#[allow(unsafe_code)]
pub fn keep_small_pages() {
    // SAFETY: prctl with integer arguments only changes a flag of this
    // process's memory map; it touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not turn huge pages off");
    }
}

/// Gives a program this process starts back the kernel's default: the
/// switch is inherited across `fork` and `exec`, and the programs a macro
/// runs are not ours to tune.
#[allow(unsafe_code)]
pub fn default_pages_for(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: prctl is a plain system call.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
            Ok(())
        });
    }
}
