//! Ctrl-C (SIGINT) as a request to save and stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag set by Ctrl-C (SIGINT): the loop saves a checkpoint and stops.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let setter = flag.clone();
    // Failing to install the handler (another one exists) only loses the save-on-Ctrl-C.
    let _ = ctrlc::set_handler(move || {
        if setter.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C while saving: leave at once.
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: saving a checkpoint, then stopping (Ctrl-C again to quit now)");
    });
    flag
}
