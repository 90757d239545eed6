//! The audit entries of proxied requests, appended in batches off the
//! request path. The proxy carries traffic: a store write per request, in
//! the request's time, would bound its rate by the disk's. Entries wait in a
//! bounded queue (a request waits for room only when the store falls
//! behind), and go to the store gathered for [`GATHER`] after the first
//! (or [`MAX_AUDIT_BATCH`] at once): one commit, with its fsync, for many
//! requests. The queue is emptied into the store when the relay stops. A
//! crash loses at most the entries queued at that moment; each one's log
//! line was written before its response. Every other entry (changes, refusals) is appended
//! before its response, as ever.

use std::sync::Arc;

use borealis_store::{AuditEntry, MAX_AUDIT_BATCH, Store};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Entries queued at most before a request waits for room.
const QUEUE: usize = 4 * MAX_AUDIT_BATCH;

/// How long the writer gathers entries after the first of a batch: a
/// profile of the relay under load had a fifth of its CPU in committing
/// batches of about twenty.
const GATHER: std::time::Duration = std::time::Duration::from_millis(50);

pub struct ProxyTrail {
    queue: mpsc::Sender<AuditEntry>,
    store: Arc<dyn Store>,
}

impl ProxyTrail {
    /// Starts the writer; it empties the queue and ends once `stop` fires.
    pub fn start(store: Arc<dyn Store>, stop: CancellationToken) -> (Self, JoinHandle<()>) {
        let (queue, entries) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write(store.clone(), entries, stop));
        (Self { queue, store }, writer)
    }

    /// Queues `entry`; once the writer has stopped, appends it directly.
    pub async fn append(&self, entry: AuditEntry) {
        if let Err(mpsc::error::SendError(entry)) = self.queue.send(entry).await {
            append(&*self.store, std::slice::from_ref(&entry)).await;
        }
    }
}

async fn write(store: Arc<dyn Store>, mut entries: mpsc::Receiver<AuditEntry>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(MAX_AUDIT_BATCH);
    loop {
        tokio::select! {
            biased;
            received = entries.recv_many(&mut batch, MAX_AUDIT_BATCH) => {
                if received == 0 {
                    return;
                }
                // More come meanwhile; a stop cuts the wait short.
                let gathered = tokio::time::Instant::now() + GATHER;
                while batch.len() < MAX_AUDIT_BATCH {
                    let room = MAX_AUDIT_BATCH - batch.len();
                    tokio::select! {
                        received = entries.recv_many(&mut batch, room) => if received == 0 { break },
                        () = tokio::time::sleep_until(gathered) => break,
                        () = stop.cancelled() => break,
                    }
                }
            }
            () = stop.cancelled() => {
                // No more come through the queue; what is in it is written.
                entries.close();
                while entries.recv_many(&mut batch, MAX_AUDIT_BATCH).await > 0 {
                    append(&*store, &batch).await;
                    batch.clear();
                }
                return;
            }
        }
        append(&*store, &batch).await;
        batch.clear();
    }
}

/// Appends a batch; when it fails, each entry on its own, so that one bad
/// row (or a moment's failure) costs no others.
async fn append(store: &dyn Store, entries: &[AuditEntry]) {
    if entries.len() > 1 && store.append_audit(entries).await.is_ok() {
        return;
    }
    for entry in entries {
        if let Err(err) = store.append_audit(std::slice::from_ref(entry)).await {
            tracing::error!(request_id = entry.request_id.as_str(), error = %err, "could not append a proxied request to the audit trail");
        }
    }
}
