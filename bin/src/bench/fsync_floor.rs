//! The disk's durable-write floor: one 4 KiB `pwrite` + `fdatasync` per sample, overwriting a
//! preallocated file (as the peer benchmark's `appendload fsync` does), so no durable append on
//! this disk can be faster than its p50.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;

/// Bytes written per sample.
pub const WRITE_BYTES: usize = 4096;
/// Distinct blocks the samples cycle through (a 4 MiB file).
const BLOCK_COUNT: u64 = 1024;
/// Warm-up samples are at most this many.
const WARMUP_SAMPLES_MAX: u64 = 200;

/// Result of a floor measurement.
pub struct FsyncFloor {
    pub directory: PathBuf,
    pub samples: u64,
    pub latency_us: Histogram<u64>,
}

/// Removes the probe file however the measurement ends.
struct ProbeFile {
    path: PathBuf,
}

impl Drop for ProbeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Measures `samples` write + fdatasync pairs in `directory` (after a short warm-up).
pub fn measure(directory: &Path, samples: u64) -> anyhow::Result<FsyncFloor> {
    let probe = ProbeFile {
        path: directory.join(format!(".starcite-fsync-floor-{}", std::process::id())),
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe.path)
        .with_context(|| format!("create {}", probe.path.display()))?;
    preallocate(&file).with_context(|| format!("preallocate {}", probe.path.display()))?;

    let block = vec![0x5a_u8; WRITE_BYTES];
    let warmup_samples = (samples / 10).min(WARMUP_SAMPLES_MAX);
    let mut latency_us =
        Histogram::new_with_bounds(1, 60_000_000, 3).context("create histogram")?;
    for sample in 0..warmup_samples + samples {
        let offset = (sample % BLOCK_COUNT) * WRITE_BYTES as u64;
        let started = Instant::now();
        file.write_all_at(&block, offset)
            .context("write probe block")?;
        file.sync_data().context("fdatasync probe file")?;
        let elapsed_us = started.elapsed().as_micros() as u64;
        if sample >= warmup_samples {
            latency_us.saturating_record(elapsed_us.max(1));
        }
    }
    Ok(FsyncFloor {
        directory: directory.to_path_buf(),
        samples,
        latency_us,
    })
}

/// Writes and syncs zeros over the whole file so later writes overwrite allocated blocks.
fn preallocate(file: &File) -> std::io::Result<()> {
    let zeros = vec![0_u8; WRITE_BYTES * 64];
    let total_bytes = BLOCK_COUNT * WRITE_BYTES as u64;
    let mut offset = 0;
    while offset < total_bytes {
        file.write_all_at(&zeros, offset)?;
        offset += zeros.len() as u64;
    }
    file.sync_all()
}
