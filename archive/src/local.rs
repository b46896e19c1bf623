//! The `local` adapter (`contract/archive.md` §4): NDJSON chunk files under a directory.
//!
//! ```text
//! <root>/events/v1/<b64(id)>/<chunk_start>.ndjson     256-event chunks
//! <root>/sessions/v1/<b64(id)>.json                    catalog records
//! ```
//!
//! Every write replaces a whole file atomically: the merged chunk goes to a temp file in the same
//! directory (`.<chunk_start>.ndjson.tmp-<random>`), which is fsynced, renamed over the chunk, and then
//! the directory is fsynced so that the rename survives a crash. Reads open chunk files by their exact
//! name, so temp files left by a crash and any other stray name are never read.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::format::{self, chunk_file_name};
use crate::{ArchiveAdapter, ArchiveError, ArchivedEvent, SessionCatalog};

/// Number of locks that serialise read-merge-write of chunks inside this process. Two writers of the
/// same chunk would otherwise both read the old file and the later rename would drop the other's
/// events; distinct chunks rarely share a stripe, so writers of different sessions stay parallel.
const CHUNK_LOCK_STRIPES_COUNT: usize = 64;

/// The `local` archive adapter.
#[derive(Debug)]
pub struct LocalAdapter {
    root: PathBuf,
    chunk_locks: Vec<Mutex<()>>,
}

impl LocalAdapter {
    /// Opens (creating if needed) the archive rooted at `root` (`STARCITE_ARCHIVE_LOCAL_DIR`).
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalAdapter, ArchiveError> {
        let adapter = LocalAdapter {
            root: root.into(),
            chunk_locks: (0..CHUNK_LOCK_STRIPES_COUNT)
                .map(|_| Mutex::new(()))
                .collect(),
        };
        create_directory_durably(&adapter.events_root())?;
        create_directory_durably(&adapter.sessions_root())?;
        Ok(adapter)
    }

    /// The archive's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding a session's chunks: `<root>/events/v1/<b64(id)>`.
    pub fn session_events_directory(&self, session_id: &str) -> PathBuf {
        self.events_root()
            .join(format::encode_session_id(session_id))
    }

    /// The file of the chunk starting at `chunk_start`.
    pub fn chunk_path(&self, session_id: &str, chunk_start: u64) -> PathBuf {
        self.session_events_directory(session_id)
            .join(chunk_file_name(chunk_start))
    }

    /// The catalog file of a session: `<root>/sessions/v1/<b64(id)>.json`.
    pub fn catalog_path(&self, session_id: &str) -> PathBuf {
        self.sessions_root()
            .join(format!("{}.json", format::encode_session_id(session_id)))
    }

    fn events_root(&self) -> PathBuf {
        self.root.join("events").join("v1")
    }

    fn sessions_root(&self) -> PathBuf {
        self.root.join("sessions").join("v1")
    }

    fn chunk_lock(&self, session_id: &str, chunk_start: u64) -> &Mutex<()> {
        let mut hasher = DefaultHasher::new();
        (session_id, chunk_start).hash(&mut hasher);
        let stripe_index = (hasher.finish() % CHUNK_LOCK_STRIPES_COUNT as u64) as usize;
        &self.chunk_locks[stripe_index]
    }

    /// Read-merge-write of one chunk; returns the number of seqs added.
    fn write_chunk(
        &self,
        session_id: &str,
        directory: &Path,
        chunk_start: u64,
        events: &[ArchivedEvent],
    ) -> Result<u64, ArchiveError> {
        let path = directory.join(chunk_file_name(chunk_start));
        // The lock guards no data, so a poisoned lock (a panic elsewhere) leaves nothing inconsistent.
        let _guard = self
            .chunk_lock(session_id, chunk_start)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let stored = read_optional(&path)?.unwrap_or_default();
        let lines = format::parse_chunk(&stored, chunk_start, &path.display().to_string())?;
        let (body, new_count) = format::merge_chunk(&lines, events);
        if new_count == 0 {
            return Ok(0);
        }
        let temp_name = format!(
            ".{}.tmp-{:016x}",
            chunk_file_name(chunk_start),
            rand::random::<u64>()
        );
        replace_file_durably(directory, &temp_name, &path, &body)?;
        Ok(new_count)
    }
}

impl ArchiveAdapter for LocalAdapter {
    fn name(&self) -> &'static str {
        "local"
    }

    fn write_events(
        &self,
        session_id: &str,
        events: &[ArchivedEvent],
    ) -> Result<u64, ArchiveError> {
        format::validate_batch(events)?;
        if events.is_empty() {
            return Ok(0);
        }
        let directory = self.session_events_directory(session_id);
        if !directory.is_dir() {
            create_directory_durably(&directory)?;
        }
        let mut new_count = 0;
        for (chunk_start, run) in format::split_by_chunk(events) {
            new_count += self.write_chunk(session_id, &directory, chunk_start, run)?;
        }
        Ok(new_count)
    }

    fn read_events(
        &self,
        session_id: &str,
        from_seq: u64,
        to_seq: u64,
    ) -> Result<Vec<ArchivedEvent>, ArchiveError> {
        let directory = self.session_events_directory(session_id);
        let mut events = Vec::new();
        for chunk_start in format::chunk_starts(from_seq, to_seq)? {
            let path = directory.join(chunk_file_name(chunk_start));
            let Some(body) = read_optional(&path)? else {
                continue;
            };
            let location = path.display().to_string();
            let lines = format::parse_chunk(&body, chunk_start, &location)?;
            events.extend(format::chunk_events_in_range(
                &lines, from_seq, to_seq, &location,
            )?);
        }
        Ok(events)
    }

    fn write_catalog(&self, session: &SessionCatalog) -> Result<(), ArchiveError> {
        let body = format::render_catalog(session)?;
        let path = self.catalog_path(&session.id);
        if path.exists() {
            return Ok(());
        }
        let directory = self.sessions_root();
        let temp_name = format!(
            ".{}.json.tmp-{:016x}",
            format::encode_session_id(&session.id),
            rand::random::<u64>()
        );
        let temp_path = directory.join(&temp_name);
        write_synced_file(&temp_path, &body)?;
        // A hard link fails when the target exists, which makes "first write wins" hold even when two
        // writers race, and the target appears only with its complete content.
        let linked = fs::hard_link(&temp_path, &path);
        let _ = fs::remove_file(&temp_path);
        match linked {
            Ok(()) => sync_directory(&directory),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(ArchiveError::Io {
                operation: "link catalog record",
                path,
                source,
            }),
        }
    }
}

/// Reads a whole file; `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, ArchiveError> {
    match fs::read(path) {
        Ok(body) => Ok(Some(body)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ArchiveError::Io {
            operation: "read chunk",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `body` to a new file and fsyncs it.
fn write_synced_file(path: &Path, body: &[u8]) -> Result<(), ArchiveError> {
    let io_error = |operation, source| ArchiveError::Io {
        operation,
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| io_error("create temp file", source))?;
    file.write_all(body)
        .map_err(|source| io_error("write temp file", source))?;
    file.sync_all()
        .map_err(|source| io_error("fsync temp file", source))
}

/// Atomically replaces `target` with `body`: temp file, fsync, rename, fsync of the directory.
fn replace_file_durably(
    directory: &Path,
    temp_name: &str,
    target: &Path,
    body: &[u8],
) -> Result<(), ArchiveError> {
    let temp_path = directory.join(temp_name);
    let result = write_synced_file(&temp_path, body).and_then(|()| {
        fs::rename(&temp_path, target).map_err(|source| ArchiveError::Io {
            operation: "rename temp file over",
            path: target.to_owned(),
            source,
        })
    });
    if result.is_err() {
        // Best effort: reads ignore temp files anyway.
        let _ = fs::remove_file(&temp_path);
    }
    result?;
    sync_directory(directory)
}

/// Fsyncs a directory so that entries created or renamed in it survive a crash (this file system has no
/// journal that would do it for us).
fn sync_directory(directory: &Path) -> Result<(), ArchiveError> {
    File::open(directory)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| ArchiveError::Io {
            operation: "fsync directory",
            path: directory.to_owned(),
            source,
        })
}

/// Creates `path` and any missing ancestors, fsyncing each new directory's parent.
fn create_directory_durably(path: &Path) -> Result<(), ArchiveError> {
    let missing: Vec<&Path> = path
        .ancestors()
        .take_while(|ancestor| !ancestor.as_os_str().is_empty() && !ancestor.is_dir())
        .collect();
    for directory in missing.into_iter().rev() {
        match fs::create_dir(directory) {
            Ok(()) => {}
            // Another writer created it first; it still needs the parent fsync below.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(ArchiveError::Io {
                    operation: "create directory",
                    path: directory.to_owned(),
                    source,
                })
            }
        }
        if let Some(parent) = directory
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            sync_directory(parent)?;
        }
    }
    Ok(())
}
