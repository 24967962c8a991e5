//! Keeping the resident size small (a Pi Zero 2 W has 512 MB): glibc's allocator
//! otherwise keeps a heap arena per thread that ever allocated and holds on to
//! memory freed after large transient work such as compiling a million-name list.

/// Caps glibc at two malloc arenas. Call before any thread starts: with an arena
/// per thread, each DNS worker, tokio worker and log thread keeps its own free
/// memory, which measured as tens of megabytes of idle RSS.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns memory freed by large transient work (list compilation) to the system.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
