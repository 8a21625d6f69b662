//! Errors and warnings about recipes.
//!
//! A recipe fault always names the recipe (its file path, or its component name when it came
//! from memory) and the JSON pointer of the offending node, written with the recipe's own key
//! spelling (`/Manifests/0/Lifecycle/Run`).

use std::fmt;

/// One problem found in a recipe, located by a JSON pointer into the recipe document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// JSON pointer (RFC 6901) of the offending node; empty for the whole document.
    pub path: String,
    /// What is wrong, in words a recipe author can act on.
    pub message: String,
}

impl Fault {
    /// A fault at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "(document): {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a recipe could not be loaded. Every variant is an input problem: fix the recipe (or the
/// path to it) and try again; retrying unchanged never helps.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file could not be read.
    #[error("recipe {recipe}: cannot read: {source}")]
    Read {
        /// The recipe's file path.
        recipe: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file name does not say YAML or JSON.
    #[error("recipe {recipe}: unknown recipe format (expected a .yaml, .yml or .json file)")]
    UnknownFormat {
        /// The recipe's file path.
        recipe: String,
    },
    /// The text is not well-formed YAML or JSON.
    #[error("recipe {recipe}: not valid {format}: {message}")]
    Syntax {
        /// The recipe's file path or label.
        recipe: String,
        /// The format the text was read as.
        format: super::RecipeFormat,
        /// The parser's message (with line and column where the parser gives them).
        message: String,
    },
    /// The document is well-formed but breaks the recipe rules (schema or typed checks).
    #[error("recipe {recipe}: {}", list_faults(.faults))]
    Invalid {
        /// The recipe's file path, or its component name.
        recipe: String,
        /// Every problem found, schema faults first.
        faults: Vec<Fault>,
    },
}

impl RecipeError {
    /// The faults of an [`RecipeError::Invalid`] error; empty for the other kinds.
    pub fn faults(&self) -> &[Fault] {
        match self {
            RecipeError::Invalid { faults, .. } => faults,
            _ => &[],
        }
    }
}

fn list_faults(faults: &[Fault]) -> String {
    match faults {
        [one] => one.to_string(),
        many => {
            let mut out = format!("{} problems:", many.len());
            for fault in many {
                out.push_str("\n  ");
                out.push_str(&fault.to_string());
            }
            out
        }
    }
}

/// Escapes one JSON pointer segment (RFC 6901 §3: `~` → `~0`, `/` → `~1`).
pub(crate) fn escape_segment(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Appends a segment to a JSON pointer.
pub(crate) fn join_path(path: &str, segment: &str) -> String {
    format!("{path}/{}", escape_segment(segment))
}
