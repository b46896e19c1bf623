//! The archive worker threads: adapters block on disk and network IO, so they never run on a
//! glommio executor. Executors hand jobs to these threads over a bounded queue and await the
//! answer on a one-shot channel.

use std::sync::Arc;

use starcite_archive::ArchiveAdapter;

/// Worker threads per node; also the node's bound on archive calls running at once, which
/// keeps at most 8 sessions in flight (archive.md §2 "Parallelism").
pub const ARCHIVE_WORKER_THREADS_COUNT: usize = 8;

/// Jobs waiting for a free worker; a full queue makes submitters wait (or, for best-effort
/// catalog writes, skip).
pub const ARCHIVE_JOB_QUEUE_MAX: usize = 64;

type Job = Box<dyn FnOnce(&dyn ArchiveAdapter) + Send>;

/// Why a job did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The workers are gone (node shutdown) or the job's worker died while running it.
    #[error("the archive worker threads stopped")]
    Stopped,
    /// The queue is full (only from [`WorkerPool::try_submit`]).
    #[error("the archive job queue is full ({ARCHIVE_JOB_QUEUE_MAX} jobs)")]
    QueueFull,
}

/// A fixed set of threads running jobs against one adapter. Dropping the pool closes the queue;
/// the threads finish their current job and exit.
pub(crate) struct WorkerPool {
    sender: flume::Sender<Job>,
}

impl WorkerPool {
    /// Start [`ARCHIVE_WORKER_THREADS_COUNT`] threads calling `adapter`.
    pub(crate) fn start(adapter: Arc<dyn ArchiveAdapter>) -> std::io::Result<WorkerPool> {
        let (sender, receiver) = flume::bounded::<Job>(ARCHIVE_JOB_QUEUE_MAX);
        for worker_index in 0..ARCHIVE_WORKER_THREADS_COUNT {
            let receiver = receiver.clone();
            let adapter = adapter.clone();
            std::thread::Builder::new()
                .name(format!("starcite-archive-{worker_index}"))
                .spawn(move || {
                    while let Ok(job) = receiver.recv() {
                        job(adapter.as_ref());
                    }
                })?;
        }
        Ok(WorkerPool { sender })
    }

    /// Run `work` on a worker thread and await its result without blocking the executor.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ArchiveAdapter) -> T + Send + 'static,
    {
        let (reply, answer) = flume::bounded(1);
        let job: Job = Box::new(move |adapter| {
            // The submitter may have gone away; the work is done all the same.
            let _ = reply.send(work(adapter));
        });
        self.sender
            .send_async(job)
            .await
            .map_err(|_| PoolError::Stopped)?;
        answer.recv_async().await.map_err(|_| PoolError::Stopped)
    }

    /// Queue `work` without waiting for room or for its result.
    pub(crate) fn try_submit<F>(&self, work: F) -> Result<(), PoolError>
    where
        F: FnOnce(&dyn ArchiveAdapter) + Send + 'static,
    {
        self.sender
            .try_send(Box::new(work))
            .map_err(|error| match error {
                flume::TrySendError::Full(_) => PoolError::QueueFull,
                flume::TrySendError::Disconnected(_) => PoolError::Stopped,
            })
    }
}
