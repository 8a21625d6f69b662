//! Reading a recipe document (a `serde_json::Value`) with case-insensitive keys, collecting
//! faults with JSON pointers instead of stopping at the first one.

use serde_json::Value;

use super::error::{Fault, join_path};

/// Faults (the recipe is rejected) and warnings (the recipe loads; the caller should say so).
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    pub faults: Vec<Fault>,
    pub warnings: Vec<Fault>,
}

impl Diagnostics {
    pub fn fault(&mut self, path: &str, message: impl Into<String>) {
        self.faults.push(Fault::new(path, message));
    }

    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Fault::new(path, message));
    }
}

struct Entry<'v> {
    key: &'v str,
    lower: String,
    value: &'v Value,
    used: bool,
}

/// The keys of one JSON object, looked up case-insensitively, remembering which were used.
pub(crate) struct Fields<'v> {
    entries: Vec<Entry<'v>>,
    path: String,
}

impl<'v> Fields<'v> {
    /// Opens `value` as an object; records a fault (naming `what`) and returns `None` otherwise.
    /// Keys that differ only in case are a fault: the recipe would mean two things at once.
    pub fn of(value: &'v Value, path: &str, what: &str, diag: &mut Diagnostics) -> Option<Self> {
        let Value::Object(map) = value else {
            diag.fault(path, format!("{what} must be an object, found {}", kind_of(value)));
            return None;
        };
        let mut entries: Vec<Entry<'v>> = Vec::with_capacity(map.len());
        for (key, value) in map {
            let lower = key.to_lowercase();
            if let Some(first) = entries.iter().find(|e| e.lower == lower) {
                diag.fault(
                    &join_path(path, key),
                    format!(
                        "duplicate key: {key:?} and {:?} are the same key (recipe keys are case-insensitive)",
                        first.key
                    ),
                );
                continue;
            }
            entries.push(Entry { key, lower, value, used: false });
        }
        Some(Self { entries, path: path.to_owned() })
    }

    /// The value under `key` (given in lower case) and its path, spelled as in the recipe.
    pub fn get(&mut self, key: &str) -> Option<(String, &'v Value)> {
        let entry = self.entries.iter_mut().find(|e| e.lower == key)?;
        entry.used = true;
        Some((join_path(&self.path, entry.key), entry.value))
    }

    /// Keys not looked up so far, with their paths.
    pub fn unused(&self) -> Vec<(String, &'v str)> {
        self.entries.iter().filter(|e| !e.used).map(|e| (join_path(&self.path, e.key), e.key)).collect()
    }

    /// Warns about every key not looked up: the nucleus ignores unknown keys.
    pub fn warn_unused(&self, what: &str, diag: &mut Diagnostics) {
        for (path, key) in self.unused() {
            diag.warn(&path, format!("unknown {what} key {key:?} is ignored"));
        }
    }
}

/// A string value, or a fault.
pub(crate) fn string(value: &Value, path: &str, what: &str, diag: &mut Diagnostics) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        other => {
            diag.fault(path, format!("{what} must be a string, found {}", kind_of(other)));
            None
        }
    }
}

/// A short name for a JSON value's type, for messages.
pub(crate) fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
