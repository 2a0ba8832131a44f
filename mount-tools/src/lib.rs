//! Mount helper (`mount.sopfs`), admin CLI and macro runner. They arrive with
//! the operations and macros work; the crate exists so the workspace layout is
//! the final one.
