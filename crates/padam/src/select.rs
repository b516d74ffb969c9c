//! Which parameters the decay applies to (SPEC 5): all by default (as the reference), or only
//! tensors of rank >= 2, or by module-path patterns such as `*.bias` or `*norm*`.
//!
//! Paths are the dotted field names of the burn module tree, e.g. `layers.0.fc1.weight`.
//! Patterns use `*` (any run of characters, dots included) and `?` (one character).

use serde::{Deserialize, Serialize};

/// A rule choosing the decayed parameters. The base optimizer updates every parameter either way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParamSelection {
    /// Decay only tensors of at least this rank (0 = all; 2 = skip biases and norm scales).
    pub min_rank: usize,
    /// If non-empty, only paths matching one of these patterns are decayed.
    pub include: Vec<String>,
    /// Paths matching any of these patterns are never decayed.
    pub exclude: Vec<String>,
}

impl ParamSelection {
    /// Every parameter (the reference implementation's behaviour).
    pub fn all() -> Self {
        Self::default()
    }

    /// Only tensors of rank >= 2 (weight matrices and conv kernels).
    pub fn matrices_only() -> Self {
        Self {
            min_rank: 2,
            ..Self::default()
        }
    }

    /// Add an include pattern.
    pub fn include(mut self, pattern: impl Into<String>) -> Self {
        self.include.push(pattern.into());
        self
    }

    /// Add an exclude pattern.
    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.exclude.push(pattern.into());
        self
    }

    /// Whether the parameter at `path` with the given rank is decayed.
    pub fn is_decayed(&self, path: &str, rank: usize) -> bool {
        rank >= self.min_rank
            && (self.include.is_empty() || self.include.iter().any(|p| glob_match(p, path)))
            && !self.exclude.iter().any(|p| glob_match(p, path))
    }
}

/// Match `text` against a pattern with `*` and `?` wildcards (iterative, linear backtracking).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_cases() {
        assert!(glob_match("*.bias", "fc1.bias"));
        assert!(glob_match("*.bias", "layers.0.fc.bias"));
        assert!(!glob_match("*.bias", "fc1.weight"));
        assert!(glob_match("*norm*", "blocks.1.layer_norm.gamma"));
        assert!(!glob_match("*norm*", "blocks.1.attn.weight"));
        assert!(glob_match("fc?.weight", "fc2.weight"));
        assert!(!glob_match("fc?.weight", "fc12.weight"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn selection_rules() {
        let all = ParamSelection::all();
        assert!(all.is_decayed("fc.bias", 1));
        let mats = ParamSelection::matrices_only();
        assert!(!mats.is_decayed("fc.bias", 1));
        assert!(mats.is_decayed("fc.weight", 2));
        assert!(mats.is_decayed("conv.weight", 4));
        let ex = ParamSelection::all().exclude("*.bias").exclude("*norm*");
        assert!(!ex.is_decayed("fc.bias", 1));
        assert!(!ex.is_decayed("ln_norm.gamma", 1));
        assert!(ex.is_decayed("fc.weight", 2));
        let inc = ParamSelection::all().include("encoder.*");
        assert!(inc.is_decayed("encoder.fc.weight", 2));
        assert!(!inc.is_decayed("decoder.fc.weight", 2));
    }
}
