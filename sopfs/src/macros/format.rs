//! The macro format (JSON, version 1) and its validation.
//!
//! ```json
//! {"format": 1, "name": "archive", "description": "...", "scope": "single",
//!  "params": [{"name": "dir"}, {"name": "days", "default": "30"}],
//!  "steps": [{"op": "list", "path": "${dir}", "into": "old",
//!             "filter": {"older_than_days": "${days}"}},
//!            {"op": "foreach", "list": "${old}", "as": "f", "do": [
//!               {"op": "move", "from": "${f.path}", "to": "/archive/${f.name}"}]}]}
//! ```

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The only format version this build reads and writes.
pub const FORMAT: u32 = 1;

/// A stored program of steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Macro {
    /// Format version (1).
    pub format: u32,
    /// Name, as under `/.macros/`.
    pub name: String,
    /// What it does, for `ls` and `--help`.
    #[serde(default)]
    pub description: String,
    /// Parameters, bound from the command line in order or as `name=value`.
    #[serde(default)]
    pub params: Vec<Param>,
    /// Transaction scope.
    #[serde(default)]
    pub scope: Scope,
    /// The program.
    pub steps: Vec<Step>,
}

/// One parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// Name, used as `${name}`.
    pub name: String,
    /// Value when not given; a parameter without one is required.
    #[serde(default)]
    pub default: Option<String>,
    /// What it means.
    #[serde(default)]
    pub description: String,
}

/// How steps map to transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// All steps in one transaction: all or nothing, retried on conflict.
    #[default]
    Single,
    /// Each step commits on its own.
    PerStep,
}

/// Filters of a `list` step (all given ones must hold).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Shell-style pattern on the name (`*`, `?`).
    #[serde(default)]
    pub name: Option<String>,
    /// Smallest size in bytes.
    #[serde(default)]
    pub min_size: Option<String>,
    /// Largest size in bytes.
    #[serde(default)]
    pub max_size: Option<String>,
    /// Modified more than this many days ago.
    #[serde(default)]
    pub older_than_days: Option<String>,
    /// Modified less than this many days ago.
    #[serde(default)]
    pub newer_than_days: Option<String>,
    /// Content contains this text (files only).
    #[serde(default)]
    pub contains: Option<String>,
    /// "file" or "dir".
    #[serde(default)]
    pub kind: Option<String>,
}

/// A condition of an `if` step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Cond {
    /// The two texts are equal.
    Equals([String; 2]),
    /// The two texts differ.
    NotEquals([String; 2]),
    /// The path exists.
    Exists(String),
    /// The path does not exist.
    Missing(String),
    /// The value is empty (text, list).
    Empty(String),
    /// The value is not empty.
    NotEmpty(String),
}

/// One step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Entries of a directory (by prefix or name range, with filters) into a
    /// list variable of {name, path, size, mtime, kind}.
    List {
        /// Directory.
        path: String,
        /// Names starting with this.
        #[serde(default)]
        prefix: Option<String>,
        /// Names from this one on.
        #[serde(default)]
        from: Option<String>,
        /// Names before this one.
        #[serde(default)]
        to: Option<String>,
        /// At most this many.
        #[serde(default)]
        limit: Option<String>,
        /// Filters.
        #[serde(default)]
        filter: Box<Filter>,
        /// Variable to set.
        into: String,
    },
    /// A file's content into a variable.
    Read {
        /// File.
        path: String,
        /// Variable to set.
        into: String,
    },
    /// Replace a file's content (created if absent).
    Write {
        /// File.
        path: String,
        /// New content.
        content: String,
    },
    /// Add to a file's end (created if absent).
    Append {
        /// File.
        path: String,
        /// Text to add.
        content: String,
    },
    /// Remove a file or an empty directory.
    Delete {
        /// What to remove.
        path: String,
    },
    /// Create a directory (and its parents with `parents`).
    Mkdir {
        /// Directory.
        path: String,
        /// Create missing parents; an existing directory is fine.
        #[serde(default)]
        parents: bool,
    },
    /// Rename.
    Move {
        /// Source.
        from: String,
        /// Destination (replaced if a file).
        to: String,
    },
    /// Copy a file.
    Copy {
        /// Source file.
        from: String,
        /// Destination file.
        to: String,
    },
    /// Set a variable (text with `${...}` expanded, or any JSON value).
    Set {
        /// Variable.
        var: String,
        /// Value.
        value: serde_json::Value,
    },
    /// Branch.
    If {
        /// Condition.
        cond: Cond,
        /// Steps when it holds.
        then: Vec<Step>,
        /// Steps otherwise.
        #[serde(default, rename = "else")]
        otherwise: Vec<Step>,
    },
    /// Loop over a list (or the lines of a text).
    Foreach {
        /// The list, usually `${var}`.
        list: String,
        /// Loop variable.
        #[serde(rename = "as")]
        var: String,
        /// Body.
        #[serde(rename = "do")]
        steps: Vec<Step>,
    },
    /// Run another macro with named arguments, inside this one's transaction.
    Call {
        /// Macro name.
        #[serde(rename = "macro")]
        name: String,
        /// Arguments.
        #[serde(default)]
        args: BTreeMap<String, String>,
        /// Variable to receive its output lines.
        #[serde(default)]
        into: Option<String>,
    },
    /// Run a command (only where the mount enables exec).
    Exec {
        /// Program and arguments.
        command: Vec<String>,
        /// Variable to receive its standard output.
        #[serde(default)]
        into: Option<String>,
    },
    /// Ask the configured OpenAI-compatible chat endpoint.
    Prompt {
        /// The message.
        text: String,
        /// Variable to receive the answer.
        into: String,
    },
    /// Output a line.
    Print {
        /// Text.
        text: String,
    },
    /// Stop with an error (rolls a `single` macro back).
    Fail {
        /// Why.
        message: String,
    },
}

impl Step {
    /// The op name, for messages.
    pub fn op(&self) -> &'static str {
        match self {
            Step::List { .. } => "list",
            Step::Read { .. } => "read",
            Step::Write { .. } => "write",
            Step::Append { .. } => "append",
            Step::Delete { .. } => "delete",
            Step::Mkdir { .. } => "mkdir",
            Step::Move { .. } => "move",
            Step::Copy { .. } => "copy",
            Step::Set { .. } => "set",
            Step::If { .. } => "if",
            Step::Foreach { .. } => "foreach",
            Step::Call { .. } => "call",
            Step::Exec { .. } => "exec",
            Step::Prompt { .. } => "prompt",
            Step::Print { .. } => "print",
            Step::Fail { .. } => "fail",
        }
    }
}

/// Why a macro is not valid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Invalid(pub String);

/// True for a name that can appear under `/.macros/`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Parses and validates a macro's JSON text.
pub fn parse(text: &[u8]) -> Result<Macro, Invalid> {
    let m: Macro =
        serde_json::from_slice(text).map_err(|e| Invalid(format!("not a macro: {e}")))?;
    validate(&m)?;
    Ok(m)
}

/// Variable names a `${...}` text refers to (the part before any '.').
pub fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) => {
                let inner = &after[..j];
                out.push(inner.split('.').next().unwrap_or(inner).to_string());
                rest = &after[j + 1..];
            }
            None => break,
        }
    }
    out
}

/// Names that are always defined.
pub const BUILTINS: &[&str] = &["now", "today", "args", "macro"];

fn defined_vars(steps: &[Step], out: &mut BTreeSet<String>) {
    for s in steps {
        match s {
            Step::List { into, .. } | Step::Read { into, .. } | Step::Prompt { into, .. } => {
                out.insert(into.clone());
            }
            Step::Set { var, .. } => {
                out.insert(var.clone());
            }
            Step::Call { into, .. } | Step::Exec { into, .. } => {
                out.extend(into.iter().cloned());
            }
            Step::If {
                then, otherwise, ..
            } => {
                defined_vars(then, out);
                defined_vars(otherwise, out);
            }
            Step::Foreach { var, steps, .. } => {
                out.insert(var.clone());
                defined_vars(steps, out);
            }
            _ => {}
        }
    }
}

fn texts(s: &Step) -> Vec<&str> {
    let mut t: Vec<&str> = Vec::new();
    match s {
        Step::List {
            path,
            prefix,
            from,
            to,
            limit,
            filter,
            ..
        } => {
            t.push(path);
            for o in [prefix, from, to, limit] {
                t.extend(o.as_deref());
            }
            for o in [
                &filter.name,
                &filter.min_size,
                &filter.max_size,
                &filter.older_than_days,
                &filter.newer_than_days,
                &filter.contains,
                &filter.kind,
            ] {
                t.extend(o.as_deref());
            }
        }
        Step::Read { path, .. } | Step::Delete { path } | Step::Mkdir { path, .. } => t.push(path),
        Step::Write { path, content } | Step::Append { path, content } => {
            t.push(path);
            t.push(content);
        }
        Step::Move { from, to } | Step::Copy { from, to } => {
            t.push(from);
            t.push(to);
        }
        Step::Set { value, .. } => {
            if let Some(v) = value.as_str() {
                t.push(v);
            }
        }
        Step::If { cond, .. } => match cond {
            Cond::Equals([a, b]) | Cond::NotEquals([a, b]) => {
                t.push(a);
                t.push(b);
            }
            Cond::Exists(a) | Cond::Missing(a) | Cond::Empty(a) | Cond::NotEmpty(a) => t.push(a),
        },
        Step::Foreach { list, .. } => t.push(list),
        Step::Call { args, .. } => t.extend(args.values().map(String::as_str)),
        Step::Exec { command, .. } => t.extend(command.iter().map(String::as_str)),
        Step::Prompt { text, .. } | Step::Print { text } => t.push(text),
        Step::Fail { message } => t.push(message),
    }
    t
}

fn check_steps(steps: &[Step], known: &BTreeSet<String>, at: &str) -> Result<(), Invalid> {
    if steps.is_empty() && at.is_empty() {
        return Err(Invalid("a macro needs at least one step".into()));
    }
    for (i, s) in steps.iter().enumerate() {
        let here = format!("{at}step {} ({})", i + 1, s.op());
        for t in texts(s) {
            for r in references(t) {
                if !known.contains(&r) && !BUILTINS.contains(&r.as_str()) {
                    return Err(Invalid(format!("{here}: ${{{r}}} is never set")));
                }
            }
            if t.matches("${").count() > t.matches('}').count() {
                return Err(Invalid(format!("{here}: unclosed ${{ in {t:?}")));
            }
        }
        match s {
            Step::If {
                then, otherwise, ..
            } => {
                check_steps(then, known, &format!("{here} > then "))?;
                check_steps(otherwise, known, &format!("{here} > else "))?;
            }
            Step::Foreach { steps, .. } => check_steps(steps, known, &format!("{here} > "))?,
            Step::Call { name, .. } if !valid_name(name) => {
                return Err(Invalid(format!("{here}: {name:?} is not a macro name")))
            }
            Step::Exec { command, .. } if command.is_empty() => {
                return Err(Invalid(format!("{here}: empty command")))
            }
            Step::List { into, .. } | Step::Read { into, .. } | Step::Prompt { into, .. }
                if into.is_empty() =>
            {
                return Err(Invalid(format!("{here}: empty variable name")))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a parsed macro: version, names, and that every `${var}` is a
/// parameter, a builtin, or set by some step.
pub fn validate(m: &Macro) -> Result<(), Invalid> {
    if m.format != FORMAT {
        return Err(Invalid(format!(
            "format {} is not supported (this build reads format {FORMAT})",
            m.format
        )));
    }
    if !valid_name(&m.name) {
        return Err(Invalid(format!(
            "{:?} is not a macro name (letters, digits, '-', '_', '.')",
            m.name
        )));
    }
    let mut known: BTreeSet<String> = BTreeSet::new();
    for p in &m.params {
        if p.name.is_empty() || !known.insert(p.name.clone()) {
            return Err(Invalid(format!(
                "parameter {:?} is empty or repeated",
                p.name
            )));
        }
    }
    defined_vars(&m.steps, &mut known);
    check_steps(&m.steps, &known, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_macro_parses_and_bad_ones_name_their_step() {
        let good = br#"{"format":1,"name":"hello","params":[{"name":"who"}],
            "steps":[{"op":"print","text":"hello ${who}"}]}"#;
        assert_eq!(parse(good).map(|m| m.steps.len()), Ok(1));
        let cases: &[(&[u8], &str)] = &[
            (b"{", "not a macro"),
            (br#"{"format":2,"name":"x","steps":[{"op":"print","text":"a"}]}"#, "format 2"),
            (br#"{"format":1,"name":"a/b","steps":[{"op":"print","text":"a"}]}"#, "not a macro name"),
            (br#"{"format":1,"name":"x","steps":[]}"#, "at least one step"),
            (br#"{"format":1,"name":"x","steps":[{"op":"fly"}]}"#, "unknown variant"),
            (br#"{"format":1,"name":"x","steps":[{"op":"print","text":"${nope}"}]}"#, "step 1 (print): ${nope} is never set"),
            (br#"{"format":1,"name":"x","steps":[{"op":"foreach","list":"a","as":"i","do":[{"op":"exec","command":[]}]}]}"#, "step 1 (foreach) > step 1 (exec): empty command"),
            (br#"{"format":1,"name":"x","steps":[{"op":"read","path":"/a","into":"v","extra":1}]}"#, "unknown field"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err("must be refused").0;
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }
}
