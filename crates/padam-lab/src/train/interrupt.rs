//! Ctrl-C during `padam train` (SIGINT, and SIGTERM as `kill` sends it): the first asks the run
//! to stop after the step in progress, with a checkpoint of that step, so `--resume` loses
//! nothing; a second stops the process at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static INSTALLED: OnceLock<()> = OnceLock::new();

/// Install the handler (once per process; later calls do nothing).
pub fn install() {
    INSTALLED.get_or_init(|| {
        let handler = || {
            if REQUESTED.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted again: stopping now (resume from the last checkpoint)");
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt: saving a checkpoint after this step (Ctrl-C again to stop at once)"
            );
        };
        // Without a handler (another one already set by the embedding program) Ctrl-C keeps
        // its default: the process stops, and --resume continues from the last checkpoint.
        if let Err(e) = ctrlc::set_handler(handler) {
            tracing::warn!("no Ctrl-C handler: {e}");
        }
    });
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// A run stopped by Ctrl-C after saving a checkpoint (the binary exits with 130).
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted at step {step} of {total}: checkpoint saved in {dir}; the same command with \
     --resume continues from there"
)]
pub struct Interrupted {
    /// The step the checkpoint holds.
    pub step: usize,
    /// The run's steps.
    pub total: usize,
    /// The run directory.
    pub dir: String,
}
