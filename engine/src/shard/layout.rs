//! The layout file `<raft_data_dir>/layout`: the shard and group counts the data was written
//! with. Groups are assigned to shard logs by `group_id % shards` and sessions to groups by
//! hashing over `num_groups`, so starting with different counts would silently hide sessions;
//! the node refuses to start instead.
//!
//! Format (text, one `key=value` per line): `shards=<n>` and `num_groups=<n>`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::EngineError;

const LAYOUT_FILE_NAME: &str = "layout";

fn render(shards: u32, num_groups: u32) -> String {
    format!("shards={shards}\nnum_groups={num_groups}\n")
}

fn parse(text: &str) -> Option<(u32, u32)> {
    let mut shards = None;
    let mut num_groups = None;
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let (key, value) = line.split_once('=')?;
        let value = value.trim().parse().ok()?;
        match key.trim() {
            "shards" => shards = Some(value),
            "num_groups" => num_groups = Some(value),
            _ => return None,
        }
    }
    Some((shards?, num_groups?))
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EngineError {
    let path = path.to_path_buf();
    move |source| EngineError::DataDir { op, path, source }
}

/// Compare with the stored layout, or store it on first start (file and directory synced, since
/// the filesystem may have no journal).
pub(crate) fn check_or_write(dir: &Path, shards: u32, num_groups: u32) -> Result<(), EngineError> {
    let path = dir.join(LAYOUT_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mismatch = |reason: String| EngineError::LayoutMismatch {
                path: path.clone(),
                reason,
            };
            let (stored_shards, stored_groups) =
                parse(&text).ok_or_else(|| mismatch(format!("unreadable layout {text:?}")))?;
            if stored_shards != shards || stored_groups != num_groups {
                return Err(mismatch(format!(
                    "written with shards={stored_shards} num_groups={stored_groups}, configured \
                     shards={shards} num_groups={num_groups}"
                )));
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            write_new(dir, &path, shards, num_groups)
        }
        Err(error) => Err(io_error("read layout file", &path)(error)),
    }
}

fn write_new(dir: &Path, path: &PathBuf, shards: u32, num_groups: u32) -> Result<(), EngineError> {
    let temporary = dir.join(format!("{LAYOUT_FILE_NAME}.tmp"));
    let mut file =
        std::fs::File::create(&temporary).map_err(io_error("create layout file", &temporary))?;
    file.write_all(render(shards, num_groups).as_bytes())
        .map_err(io_error("write layout file", &temporary))?;
    file.sync_all()
        .map_err(io_error("sync layout file", &temporary))?;
    std::fs::rename(&temporary, path).map_err(io_error("rename layout file", path))?;
    std::fs::File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error("sync raft data dir", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_and_refuses_changes() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        check_or_write(dir.path(), 2, 16)?;
        check_or_write(dir.path(), 2, 16)?;
        assert!(matches!(
            check_or_write(dir.path(), 3, 16),
            Err(EngineError::LayoutMismatch { .. })
        ));
        assert_eq!(parse(&render(4, 256)), Some((4, 256)));
        assert_eq!(parse("shards=x"), None);
        Ok(())
    }
}
