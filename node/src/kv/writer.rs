//! Writes the state machine's staged changes to its sled tree on a thread of
//! its own, in order, so the event loop does not wait for sled: one batch of
//! 4,096 keys takes sled about 25 ms, which the event loop spent as a pause
//! in every client's answer (p99 at 64 clients went from 14 to 26–29 ms when
//! the batches were written inline, 2026-11-26).

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

enum Job {
    Write(sled::Batch),
    /// Answered once every job before it is done.
    Barrier(SyncSender<()>),
}

pub(crate) struct TreeWriter {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// The first write that failed; nothing is written after it.
    failed: Arc<Mutex<Option<String>>>,
}

impl TreeWriter {
    pub fn start(tree: sled::Tree) -> TreeWriter {
        // One batch waits while one is written: a writer that falls behind
        // slows the event loop down instead of piling batches up in memory.
        let (jobs, queue) = sync_channel(1);
        let failed = Arc::new(Mutex::new(None));
        let record = failed.clone();
        let thread = std::thread::Builder::new()
            .name("kv-writer".into())
            .spawn(move || run(&tree, &queue, &record))
            .ok();
        TreeWriter {
            jobs: thread.as_ref().map(|_| jobs),
            thread,
            failed,
        }
    }

    /// Queues a batch; waits only while another is already queued.
    pub fn write(&self, batch: sled::Batch) -> Result<(), String> {
        self.check()?;
        self.send(Job::Write(batch))
    }

    /// Returns once every queued batch is in the tree.
    pub fn wait(&self) -> Result<(), String> {
        let (ack, done) = sync_channel(1);
        self.send(Job::Barrier(ack))?;
        done.recv()
            .map_err(|_| "the state machine's writer thread stopped".to_string())?;
        self.check()
    }

    fn send(&self, job: Job) -> Result<(), String> {
        let Some(jobs) = &self.jobs else {
            return Err("the state machine's writer thread could not be started".into());
        };
        jobs.send(job)
            .map_err(|_| "the state machine's writer thread stopped".to_string())
    }

    fn check(&self) -> Result<(), String> {
        match self.failed.lock().map(|f| f.clone()) {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(e),
            Err(_) => Err("the state machine's writer thread panicked".into()),
        }
    }
}

impl Drop for TreeWriter {
    fn drop(&mut self) {
        // The queued batches are written before the thread ends, so a data
        // dir reopened in this process finds them (and sled's lock free).
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(tree: &sled::Tree, queue: &Receiver<Job>, failed: &Mutex<Option<String>>) {
    while let Ok(job) = queue.recv() {
        match job {
            Job::Write(batch) => {
                let already_failed = failed.lock().map_or(true, |f| f.is_some());
                if already_failed {
                    continue;
                }
                if let Err(e) = tree.apply_batch(batch)
                    && let Ok(mut f) = failed.lock()
                {
                    *f = Some(e.to_string());
                }
            }
            Job::Barrier(ack) => {
                let _ = ack.send(());
            }
        }
    }
}
