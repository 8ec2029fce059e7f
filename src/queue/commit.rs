//! Group commit: many concurrent requests share one flush.
//!
//! sled's `flush_async` deadlocks when eight or more tasks call it at once (sled issue 1308),
//! and one flush per request caps ingest at a few thousand per second. So a single
//! committer thread drains a channel of pending events, writes them in one transaction,
//! flushes and syncs once, and then answers every waiting request with the same result.
//! The bounded channel is the ingress back-pressure: when the disk is slow, requests wait.

use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::{Committed, NewEvent, Store, StoreError};

/// Largest number of events in one flush.
const MAX_BATCH: usize = 1024;

struct Pending {
    event: NewEvent,
    done: oneshot::Sender<Result<Committed, StoreError>>,
}

/// Sends events to the committer thread; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Pending>,
}

/// The committer thread; joining it waits until every queued event is written and flushed.
pub struct CommitterThread {
    handle: JoinHandle<()>,
}

impl CommitterThread {
    /// Waits for the thread to finish (after every [`Committer`] is dropped).
    pub fn join(self) {
        if self.handle.join().is_err() {
            tracing::error!("the committer thread panicked");
        }
    }
}

impl Committer {
    /// Starts the committer thread for `store`.
    pub fn start(store: Store) -> std::io::Result<(Committer, CommitterThread)> {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let handle = std::thread::Builder::new()
            .name("hookrouter-commit".into())
            .spawn(move || run(store, rx))?;
        Ok((Committer { tx }, CommitterThread { handle }))
    }

    /// Writes `event` durably; returns once it is flushed and synced to disk (or once it is
    /// known to be a duplicate, which writes nothing).
    pub async fn commit(&self, event: NewEvent) -> Result<Committed, StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending { event, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }
}

fn run(store: Store, mut rx: mpsc::Receiver<Pending>) {
    let mut events: Vec<NewEvent> = Vec::with_capacity(MAX_BATCH);
    let mut waiters = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(p) = next.take() {
            events.push(p.event);
            waiters.push(p.done);
            if events.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let result = store.commit_events(&events);
        if let Err(e) = &result {
            tracing::error!(error = %e, events = events.len(), "could not persist a batch of events; answering 503");
        }
        for (n, done) in waiters.drain(..).enumerate() {
            let reply = match &result {
                Ok(outcomes) => Ok(outcomes.get(n).cloned().unwrap_or(Committed::New)),
                Err(e) => Err(StoreError::NotPersisted(e.to_string())),
            };
            // The requester may have gone away (client disconnected); nothing to do then.
            let _ = done.send(reply);
        }
        events.clear();
    }
}
