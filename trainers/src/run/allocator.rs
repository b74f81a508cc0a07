//! glibc told to keep freed memory for the trainer programs: a training step frees and
//! reallocates the same large buffers every step, and glibc's defaults map each one afresh
//! (and zero its pages) and hand it back when freed. Measured on the step-speed workload
//! (`docs/benchmarks.md`, "Trainer step speed"): with every allocation served from the heap,
//! a third of the page faults and 1.3× the tokens/s, peak memory unchanged. The same as
//! setting `MALLOC_MMAP_MAX_=0`, `MALLOC_TRIM_THRESHOLD_` and `MALLOC_ARENA_MAX=1`; a variable
//! the user set wins.

/// Serves every allocation from glibc's main heap (no per-allocation mappings, one arena for
/// every thread) and raises its trim threshold, unless the user set those. Does nothing on
/// other C libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Freed heap memory stays with the process (up to 1 GiB above the top).
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        let unset = |name: &str| std::env::var_os(name).is_none();
        // SAFETY: mallopt only changes glibc's allocation parameters; called once at start.
        unsafe {
            // The largest buffers (the embedding's gradient and optimizer temporaries, over
            // 100 MB at 135M parameters) are above any mmap threshold glibc allows (32 MiB):
            // only turning mappings off keeps them.
            if unset("MALLOC_MMAP_MAX_") && unset("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_MAX, 0);
            }
            if unset("MALLOC_TRIM_THRESHOLD_") {
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            }
            // The steps run on rayon's threads (`cli::main`), whose own arenas glibc maps in
            // 64 MiB heaps regardless of the settings above: one arena for every thread keeps
            // their buffers too (a third of the page faults, +5% tokens/s measured).
            if unset("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, 1);
            }
        }
    }
}
