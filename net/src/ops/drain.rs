//! The drain marks of this node (ops.md §3): the operator's mark, sticky across restarts through
//! `<STARCITE_DATA_DIR>/node/drain`, and the shutdown mark of ops.md §6, which lives only as long
//! as the process.
//!
//! The file's presence is the mark; its content (who marked it, when) is for humans. It is
//! written as a temporary file, fsynced, renamed into place, and the directory fsynced, so that
//! a crash leaves either the old state or the new one.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Directory under `STARCITE_DATA_DIR` that holds node-level state.
pub const NODE_DIRECTORY: &str = "node";
/// File name of the operator's drain mark.
pub const DRAIN_FILE: &str = "drain";
/// Temporary name the mark is written under before the rename.
const DRAIN_FILE_TEMPORARY: &str = "drain.tmp";

/// Why the node is draining (`drain.reason` of `/ops/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainReason {
    /// `starcite ops drain`: sticky until `undrain`.
    Operator,
    /// SIGTERM/SIGINT: ends with the process.
    Shutdown,
}

impl DrainReason {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DrainReason::Operator => "operator",
            DrainReason::Shutdown => "shutdown",
        }
    }
}

/// Reading or writing the persisted mark failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} {path}: {source}")]
pub struct DrainError {
    /// What was being done (`write drain mark`, `sync directory`, …).
    pub operation: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error.
    pub source: io::Error,
}

#[derive(Clone, Copy, Debug, Default)]
struct Marks {
    operator: bool,
    shutdown: bool,
}

/// The drain marks, shared by every shard.
#[derive(Debug)]
pub struct DrainState {
    directory: PathBuf,
    marks: Mutex<Marks>,
}

impl DrainState {
    /// Load the operator's mark from `<data_dir>/node/drain` (absent = not drained).
    pub fn load(data_dir: &Path) -> Result<DrainState, DrainError> {
        let directory = data_dir.join(NODE_DIRECTORY);
        let path = directory.join(DRAIN_FILE);
        let operator = match std::fs::symlink_metadata(&path) {
            Ok(_) => true,
            Err(error) if error.kind() == io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(DrainError {
                    operation: "read drain mark",
                    path,
                    source,
                })
            }
        };
        Ok(DrainState {
            directory,
            marks: Mutex::new(Marks {
                operator,
                shutdown: false,
            }),
        })
    }

    /// A state that never touches the disk (tests of the routes).
    pub fn in_memory() -> DrainState {
        DrainState {
            directory: PathBuf::new(),
            marks: Mutex::new(Marks::default()),
        }
    }

    fn marks(&self) -> MutexGuard<'_, Marks> {
        self.marks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Why the node is draining; the operator's mark wins over the shutdown mark because it is
    /// the one that outlives the process.
    pub fn reason(&self) -> Option<DrainReason> {
        let marks = *self.marks();
        if marks.operator {
            Some(DrainReason::Operator)
        } else if marks.shutdown {
            Some(DrainReason::Shutdown)
        } else {
            None
        }
    }

    /// Marked draining for any reason.
    pub fn is_draining(&self) -> bool {
        self.reason().is_some()
    }

    /// Set the operator's mark and persist it; `Ok(false)` when it was already set.
    pub fn mark_operator(&self, node_id: &str, now_ms: u64) -> Result<bool, DrainError> {
        let mut marks = self.marks();
        if marks.operator {
            return Ok(false);
        }
        if !self.directory.as_os_str().is_empty() {
            let content = serde_json::json!({
                "node": node_id,
                "reason": DrainReason::Operator.as_str(),
                "marked_at_ms": now_ms,
            });
            write_durably(&self.directory, format!("{content}\n").as_bytes())?;
        }
        marks.operator = true;
        Ok(true)
    }

    /// Clear the operator's mark on disk and in memory; `Ok(false)` when it was not set.
    pub fn clear_operator(&self) -> Result<bool, DrainError> {
        let mut marks = self.marks();
        if !marks.operator {
            return Ok(false);
        }
        if !self.directory.as_os_str().is_empty() {
            remove_durably(&self.directory)?;
        }
        marks.operator = false;
        Ok(true)
    }

    /// Set the shutdown mark (never persisted: a restarted node comes back ready unless the
    /// operator's mark exists).
    pub fn mark_shutdown(&self) {
        self.marks().shutdown = true;
    }
}

fn io_error(operation: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DrainError {
    let path = path.to_path_buf();
    move |source| DrainError {
        operation,
        path,
        source,
    }
}

/// Temporary file, fsync, rename over the mark, fsync the directory.
fn write_durably(directory: &Path, content: &[u8]) -> Result<(), DrainError> {
    std::fs::create_dir_all(directory).map_err(io_error("create directory", directory))?;
    let temporary = directory.join(DRAIN_FILE_TEMPORARY);
    let path = directory.join(DRAIN_FILE);
    let mut file = File::create(&temporary).map_err(io_error("create drain mark", &temporary))?;
    file.write_all(content)
        .map_err(io_error("write drain mark", &temporary))?;
    file.sync_all()
        .map_err(io_error("sync drain mark", &temporary))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(io_error("rename drain mark", &path))?;
    sync_directory(directory)
}

/// Remove the mark and fsync the directory so that the removal survives a crash.
fn remove_durably(directory: &Path) -> Result<(), DrainError> {
    let path = directory.join(DRAIN_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(DrainError {
                operation: "remove drain mark",
                path,
                source,
            })
        }
    }
    sync_directory(directory)
}

fn sync_directory(directory: &Path) -> Result<(), DrainError> {
    File::open(directory)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("sync directory", directory))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn operator_mark_survives_reload_and_undrain_clears_it() {
        let directory = tempfile::tempdir().unwrap();
        let state = DrainState::load(directory.path()).unwrap();
        assert_eq!(state.reason(), None);
        assert!(state.mark_operator("n@h", 1).unwrap());
        assert!(!state.mark_operator("n@h", 2).unwrap(), "idempotent");
        let mark = directory.path().join(NODE_DIRECTORY).join(DRAIN_FILE);
        assert!(mark.exists());
        assert!(!directory
            .path()
            .join(NODE_DIRECTORY)
            .join(DRAIN_FILE_TEMPORARY)
            .exists());

        let reloaded = DrainState::load(directory.path()).unwrap();
        assert_eq!(reloaded.reason(), Some(DrainReason::Operator));
        assert!(reloaded.clear_operator().unwrap());
        assert!(!reloaded.clear_operator().unwrap(), "idempotent");
        assert!(!mark.exists());
        assert_eq!(DrainState::load(directory.path()).unwrap().reason(), None);
    }

    #[test]
    fn shutdown_mark_is_not_persisted_and_operator_wins() {
        let directory = tempfile::tempdir().unwrap();
        let state = DrainState::load(directory.path()).unwrap();
        state.mark_shutdown();
        assert_eq!(state.reason(), Some(DrainReason::Shutdown));
        assert_eq!(DrainState::load(directory.path()).unwrap().reason(), None);
        state.mark_operator("n@h", 1).unwrap();
        assert_eq!(state.reason(), Some(DrainReason::Operator));
        state.clear_operator().unwrap();
        assert_eq!(state.reason(), Some(DrainReason::Shutdown));
    }
}
