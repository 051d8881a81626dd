//! A thread that does bulk work beside the event loop and shares no lock
//! with it (writing a snapshot file), or for it while it waits (installing a
//! snapshot from the leader), runs at a lower CPU priority. (Removing
//! compacted entries does not: it takes sled's locks in turn with the event
//! loop, and a preempted low-priority holder would stall it.)
//!
//! Why: on a machine with few cores the event loop, the gRPC workers and the
//! background writers compete for the same CPUs. A snapshot that takes a
//! little longer costs nothing; client writes that wait for it do. Measured
//! with `cargo bench -p kuberaft-tests --bench lifecycle` (writes while
//! snapshots are taken and sent, as a share of the steady rate).

/// The nice value given to background threads (0 is normal, 19 the lowest).
const BACKGROUND_NICE: libc::c_int = 10;

/// Lowers the calling thread's CPU priority. On Linux `setpriority` with a
/// thread id affects that thread only. Failing is harmless: the work then
/// runs at normal priority, as before.
pub fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id.
        let rc = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, BACKGROUND_NICE)
        };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot lower a background thread's priority"
            );
        }
    }
}
