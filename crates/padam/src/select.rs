//! Which parameters the decay applies to (SPEC 5): all by default (as the reference), or only
//! tensors of rank >= 2, or by module-path patterns such as `*.bias` or `*norm*`.
//!
//! Paths are the dotted field names of the burn module tree, e.g. `layers.0.fc1.weight`.
//! Patterns use `*` (any run of characters, dots included) and `?` (one character).

use serde::{Deserialize, Serialize};

/// A rule choosing the decayed parameters. The base optimizer updates every parameter either way.
///
/// In serde formats `"all"` and `"matrices"` name [`ParamSelection::all`] and
/// [`ParamSelection::matrices_only`] (and are written back so); any other rule is a table
/// `{ min_rank = 2, include = [...], exclude = ["*.bias"] }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub struct ParamSelection {
    /// Decay only tensors of at least this rank (0 = all; 2 = skip biases and norm scales).
    pub min_rank: usize,
    /// If non-empty, only paths matching one of these patterns are decayed.
    pub include: Vec<String>,
    /// Paths matching any of these patterns are never decayed.
    pub exclude: Vec<String>,
}

impl Serialize for ParamSelection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if *self == Self::all() {
            s.serialize_str("all")
        } else if *self == Self::matrices_only() {
            s.serialize_str("matrices")
        } else {
            ParamSelection::serialize(self, s)
        }
    }
}

impl<'de> Deserialize<'de> for ParamSelection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Rule;
        impl<'de> serde::de::Visitor<'de> for Rule {
            type Value = ParamSelection;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"all\", \"matrices\" or a table { min_rank, include, exclude }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ParamSelection, E> {
                match v {
                    "all" => Ok(ParamSelection::all()),
                    "matrices" => Ok(ParamSelection::matrices_only()),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ParamSelection, A::Error> {
                ParamSelection::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(Rule)
    }
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
    fn named_selections_and_tables_in_serde() {
        let read = |t: &str| serde_json::from_str::<ParamSelection>(t);
        assert_eq!(read(r#""all""#).unwrap(), ParamSelection::all());
        assert_eq!(
            read(r#""matrices""#).unwrap(),
            ParamSelection::matrices_only()
        );
        let rule = ParamSelection::matrices_only().exclude("*.bias");
        let json = serde_json::to_string(&rule).unwrap();
        assert_eq!(read(&json).unwrap(), rule);
        assert_eq!(
            serde_json::to_string(&ParamSelection::all()).unwrap(),
            r#""all""#
        );
        assert_eq!(
            serde_json::to_string(&ParamSelection::matrices_only()).unwrap(),
            r#""matrices""#
        );
        let e = read(r#""weights""#).unwrap_err().to_string();
        assert!(
            e.contains("\"weights\"") && e.contains("\"matrices\""),
            "{e}"
        );
        assert!(read(r#"{"min_rank": 2, "oops": 1}"#).is_err());
    }

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
