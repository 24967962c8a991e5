//! Keeping the resident size small (a Pi Zero 2 W has 512 MB): glibc's allocator
//! otherwise keeps a heap arena per thread that ever allocated and holds on to
//! memory freed after large transient work such as compiling a million-name list.

/// Tunes the allocator and the kernel's treatment of this process for a small
/// resident size. Call first thing in `main`, before any thread starts:
/// * glibc gets two malloc arenas: with an arena per thread, each DNS worker,
///   tokio worker and log thread keeps its own free memory (tens of megabytes
///   of idle RSS, measured);
/// * allocations of 256 KiB and more always get their own mapping, returned to
///   the system when freed: glibc's default threshold rises after large frees
///   (a compiled list, a download), after which such buffers stay in the heap
///   and its free space stays resident (a Pi measured 79-85 MiB instead of
///   53-56 MiB with the 1.6 M list in 3 of 7 starts);
/// * no transparent huge pages: with the kernel's `always` mode, partly used
///   memory was merged into 2 MiB pages in the background (a Pi's RSS grew from
///   89 to 119 MiB in two idle minutes).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
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
