//! Errors of the padam library: invalid configuration and non-finite gradients.

use thiserror::Error;

/// A configuration value that cannot be used, found when an optimizer is built.
///
/// The message names the field and the offending value, e.g.
/// `invalid PAdam config: p = -1 (p must be finite and > 0)`.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("invalid {optimizer} config: {field} = {value} ({reason})")]
pub struct ConfigError {
    /// Which optimizer (or component) the field belongs to.
    pub optimizer: &'static str,
    /// The field name, as spelled in the config struct.
    pub field: String,
    /// The offending value, formatted.
    pub value: String,
    /// What a valid value looks like.
    pub reason: &'static str,
}

impl ConfigError {
    pub(crate) fn new(
        optimizer: &'static str,
        field: impl Into<String>,
        value: impl std::fmt::Display,
        reason: &'static str,
    ) -> Self {
        Self {
            optimizer,
            field: field.into(),
            value: value.to_string(),
            reason,
        }
    }
}

/// One parameter whose gradient held NaN or infinite values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFiniteParam {
    /// Module path of the parameter, e.g. `fc1.weight`.
    pub path: String,
    /// How many gradient entries were NaN or +-inf; `None` when the check was deferred over
    /// several steps ([`DecayConfig::check_every`](crate::DecayConfig::check_every) > 1) and
    /// only a per-parameter flag was kept.
    pub count: Option<usize>,
}

/// A step was refused because some gradients were not finite
/// ([`NonFinitePolicy::Error`](crate::NonFinitePolicy::Error)). The weights were not changed:
/// the module handed back is the one from before step `step`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("non-finite gradient (NaN or inf) {} in {}; the weights were left unchanged", steps(*.step, *.through), describe(.params))]
pub struct NonFiniteGradient {
    /// The first optimizer step (0-based) that was refused.
    pub step: usize,
    /// The last refused step: `step` itself when every step is checked, else the end of the
    /// deferred check's window (the gradient was not finite in at least one of them).
    pub through: usize,
    /// The parameters with non-finite gradient entries.
    pub params: Vec<NonFiniteParam>,
}

fn steps(step: usize, through: usize) -> String {
    if through == step {
        format!("at step {step}")
    } else {
        format!("in steps {step}..={through} (checked together; rolled back to before step {step})")
    }
}

fn describe(params: &[NonFiniteParam]) -> String {
    params
        .iter()
        .map(|p| match p.count {
            Some(n) => format!("`{}` ({n} values)", p.path),
            None => format!("`{}`", p.path),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a step was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepFailure {
    /// Some gradients held NaN or inf ([`NonFinitePolicy::Error`]).
    #[error(transparent)]
    NonFiniteGradient(#[from] NonFiniteGradient),
    /// The learning rate was negative, NaN or infinite.
    #[error(transparent)]
    InvalidLearningRate(#[from] ConfigError),
}

/// A refused step: the reason, and the module handed back unchanged.
pub struct StepError<M> {
    /// The module as it was before the step.
    pub module: M,
    /// Why the step was refused.
    pub error: StepFailure,
}

impl<M> std::fmt::Debug for StepError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.error, f)
    }
}

impl<M> std::fmt::Display for StepError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl<M> std::error::Error for StepError<M> {}
