//! Stop requests: Ctrl-C (SIGINT) and a scheduler's SIGTERM both ask the loop to save a
//! checkpoint at the end of the current step and stop; a second signal exits at once.
//!
//! Cluster schedulers (Slurm, Kubernetes, spot instances) stop a job with SIGTERM and send
//! SIGKILL after a grace period, so SIGTERM must save like Ctrl-C. The exit codes follow the
//! shell's convention (128 + the signal's number), so that a script or a scheduler can tell a
//! stopped run (resume it) from a finished one (0).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

/// The signal that stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopSignal {
    /// Ctrl-C at a terminal (SIGINT).
    Interrupt,
    /// A scheduler's or `kill`'s request to terminate (SIGTERM).
    Terminate,
}

impl StopSignal {
    /// The signal's number on Unix.
    pub fn number(self) -> u8 {
        match self {
            StopSignal::Interrupt => 2,
            StopSignal::Terminate => 15,
        }
    }

    /// The exit status of a run it stopped: 130 for SIGINT, 143 for SIGTERM.
    pub fn exit_code(self) -> u8 {
        128 + self.number()
    }

    /// The signal's name, as `kill -l` writes it.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    fn from_number(number: u8) -> Option<Self> {
        [StopSignal::Interrupt, StopSignal::Terminate]
            .into_iter()
            .find(|s| s.number() == number)
    }
}

/// The process's stop requests (0: none; else the first signal's number).
#[derive(Debug, Clone)]
pub struct StopRequests(Arc<AtomicU8>);

impl StopRequests {
    /// The first stop signal received so far, if any.
    pub fn received(&self) -> Option<StopSignal> {
        StopSignal::from_number(self.0.load(Ordering::SeqCst))
    }

    /// Forgets any request: a run starts with none (a process may train more than once).
    pub fn clear(&self) {
        self.0.store(0, Ordering::SeqCst);
    }

    /// Records `signal` as received, as the listener does (the first one wins); returns
    /// whether it was the first.
    pub fn request(&self, signal: StopSignal) -> bool {
        self.0
            .compare_exchange(0, signal.number(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// The process's stop requests, listening for SIGINT and SIGTERM from the first call on.
/// Signals are one per process, so every caller shares the same requests.
pub fn stop_requests() -> StopRequests {
    static REQUESTS: OnceLock<StopRequests> = OnceLock::new();
    REQUESTS
        .get_or_init(|| {
            let requests = StopRequests(Arc::new(AtomicU8::new(0)));
            listen(requests.clone());
            requests
        })
        .clone()
}

/// Handles the signals on a thread of its own (signal-hook's self-pipe), where printing and
/// exiting are safe, unlike in a signal handler.
#[cfg(unix)]
fn listen(requests: StopRequests) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Failing to install the handlers only loses the save-on-signal: the run itself goes on.
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        for number in signals.forever() {
            let Some(signal) = u8::try_from(number).ok().and_then(StopSignal::from_number) else {
                continue;
            };
            if !requests.request(signal) {
                // A second signal while finishing the step or saving: leave at once.
                std::process::exit(signal.exit_code().into());
            }
            eprintln!(
                "\n{}: saving a checkpoint at the next step's end, then stopping \
                 (send it again to quit now, without saving)",
                signal.name()
            );
        }
    });
}

/// Elsewhere only Ctrl-C is caught (through `ctrlc`, which serves Windows too).
#[cfg(not(unix))]
fn listen(requests: StopRequests) {
    let _ = ctrlc::set_handler(move || {
        if !requests.request(StopSignal::Interrupt) {
            std::process::exit(StopSignal::Interrupt.exit_code().into());
        }
        eprintln!("\ninterrupted: saving a checkpoint, then stopping (Ctrl-C again to quit now)");
    });
}
