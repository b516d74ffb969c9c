//! Ctrl-C during `padam train` (SIGINT, and SIGTERM as `kill` sends it): the first asks the run
//! to stop after the step in progress, with a checkpoint of that step, so `--resume` loses
//! nothing; a second stops the process at once.
//!
//! A second signal within [`REPEAT_WINDOW`] of the first counts as the same request: GNU
//! `timeout` (and other supervisors) deliver SIGTERM twice in the same instant, once to the
//! process and once to its process group, and that must not throw away the checkpoint.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Signals closer than this to the first one are the same request.
const REPEAT_WINDOW: Duration = Duration::from_millis(500);

static REQUESTED: AtomicBool = AtomicBool::new(false);
static FIRST: Mutex<Option<Instant>> = Mutex::new(None);
static INSTALLED: OnceLock<()> = OnceLock::new();

/// What a signal arriving at `now` does, given when the first one came.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// The first: stop after this step, with a checkpoint.
    Checkpoint,
    /// A copy of the first (within [`REPEAT_WINDOW`]): nothing more.
    Ignore,
    /// A later one: stop now.
    Exit,
}

fn action(first: Option<Instant>, now: Instant) -> Action {
    match first {
        None => Action::Checkpoint,
        Some(t) if now.saturating_duration_since(t) < REPEAT_WINDOW => Action::Ignore,
        Some(_) => Action::Exit,
    }
}

/// Install the handler (once per process; later calls do nothing).
pub fn install() {
    INSTALLED.get_or_init(|| {
        let handler = || {
            let now = Instant::now();
            let mut first = FIRST.lock().unwrap_or_else(|e| e.into_inner());
            match action(*first, now) {
                Action::Checkpoint => {
                    *first = Some(now);
                    REQUESTED.store(true, Ordering::SeqCst);
                    eprintln!(
                        "\ninterrupt: saving a checkpoint after this step (Ctrl-C again to stop \
                         at once)"
                    );
                }
                Action::Ignore => {}
                Action::Exit => {
                    eprintln!(
                        "\ninterrupted again: stopping now (resume from the last checkpoint)"
                    );
                    std::process::exit(130);
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_repeated_at_once_is_one_request_and_a_later_one_stops() {
        let t0 = Instant::now();
        assert_eq!(action(None, t0), Action::Checkpoint);
        // `timeout`'s second copy, microseconds later.
        assert_eq!(
            action(Some(t0), t0 + Duration::from_micros(50)),
            Action::Ignore
        );
        assert_eq!(
            action(Some(t0), t0 + REPEAT_WINDOW - Duration::from_millis(1)),
            Action::Ignore
        );
        // A person pressing Ctrl-C again.
        assert_eq!(action(Some(t0), t0 + REPEAT_WINDOW), Action::Exit);
        assert_eq!(action(Some(t0), t0 + Duration::from_secs(5)), Action::Exit);
    }
}
