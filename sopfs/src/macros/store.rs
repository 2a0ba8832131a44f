//! Where macros live: the volume's `m` tree, name -> the macro's JSON text.

use super::format::{self, Macro};
use crate::error::{FsError, FsResult};
use engine::{Cursor, Direction, Transaction, TreeConfig};

/// The macro tree.
pub const MACROS: &str = "m";

const TREE: TreeConfig = TreeConfig {
    slots: 64,
    inline_max: 2048,
};

/// The macro named `name`, if installed.
pub fn load_macro_in(tx: &mut Transaction, name: &str) -> FsResult<Option<Macro>> {
    if !tx.tree_exists(MACROS)? {
        return Ok(None);
    }
    match tx.get(MACROS, name.as_bytes())? {
        None => Ok(None),
        Some(text) => format::parse(&text)
            .map(Some)
            .map_err(|e| FsError::Corrupted(format!("macro {name}: {e}"))),
    }
}

/// The stored JSON text of a macro.
pub fn macro_text_in(tx: &mut Transaction, name: &str) -> FsResult<Option<Vec<u8>>> {
    if !tx.tree_exists(MACROS)? {
        return Ok(None);
    }
    Ok(tx.get(MACROS, name.as_bytes())?)
}

/// Installs or replaces a macro after validating it.
pub fn install_in(tx: &mut Transaction, text: &[u8]) -> Result<Macro, InstallError> {
    let m = format::parse(text).map_err(InstallError::Invalid)?;
    tx.ensure_tree(MACROS, TREE).map_err(FsError::from)?;
    tx.upsert(MACROS, m.name.as_bytes(), text)
        .map_err(FsError::from)?;
    Ok(m)
}

/// Removes a macro; false when there was none.
pub fn remove_in(tx: &mut Transaction, name: &str) -> FsResult<bool> {
    if !tx.tree_exists(MACROS)? {
        return Ok(false);
    }
    Ok(tx.remove(MACROS, name.as_bytes())?)
}

/// Names of the installed macros, sorted.
pub fn list_in(tx: &mut Transaction) -> FsResult<Vec<String>> {
    if !tx.tree_exists(MACROS)? {
        return Ok(Vec::new());
    }
    let mut cur = Cursor::new(.., Direction::Forward);
    let mut out = Vec::new();
    loop {
        for (k, _) in tx.scan_values(MACROS, &mut cur, 1024)? {
            out.push(String::from_utf8_lossy(&k).into_owned());
        }
        if cur.is_done() {
            return Ok(out);
        }
    }
}

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The text is not a valid macro.
    #[error("invalid macro: {0}")]
    Invalid(format::Invalid),
    /// The volume failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl engine::RetryableError for InstallError {
    fn is_conflict(&self) -> bool {
        matches!(self, InstallError::Fs(e) if e.is_conflict())
    }
}

impl From<engine::Error> for InstallError {
    fn from(e: engine::Error) -> Self {
        InstallError::Fs(e.into())
    }
}
