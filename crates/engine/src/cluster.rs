//! This relay among the replicas sharing its database: who it is, its
//! heartbeat in the store, and the changes the others announce.
//!
//! A replica's id is new with every start, so a restarted process never
//! holds the leases of its previous life (they lapse, and whoever claims
//! them first, maybe itself, takes the work over). Its name is for people.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use borealis_store::{Change, ClusterStore, ReplicaRecord};
use tokio_util::sync::CancellationToken;

use crate::clock::Skew;

/// This replica.
#[derive(Debug)]
pub struct Replica {
    pub id: String,
    pub name: String,
    /// Where other replicas reach this one's internal routes.
    pub peer_url: Option<String>,
    pub started_at: SystemTime,
    /// How long its leases last without renewal; also how long it counts
    /// as alive after its last heartbeat.
    pub lease: Duration,
    /// False while the last heartbeat could not reach the database.
    reachable: AtomicBool,
    /// When the first of the heartbeats that failed since the last one
    /// that reached the database failed.
    unreachable_since: Mutex<Option<Instant>>,
    /// The database's clock against this machine's: lease times are read
    /// on the database's, which every replica shares.
    pub skew: Arc<Skew>,
    /// Whether other replicas may use the same store (PostgreSQL). Where
    /// not, whatever the store says is leased belongs to this relay's
    /// previous life, and is taken over at start at once.
    pub shared_store: bool,
}

impl Replica {
    /// `skew`: where this replica records what its heartbeats measure of
    /// the database's clock against this machine's; `shared_store`: whether
    /// other replicas may use its store.
    pub fn new(name: String, peer_url: Option<String>, lease: Duration, skew: Arc<Skew>, shared_store: bool) -> Self {
        let id = format!("{name}/{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Self {
            id,
            name,
            peer_url,
            started_at: SystemTime::now(),
            lease,
            reachable: AtomicBool::new(true),
            unreachable_since: Mutex::new(None),
            skew,
            shared_store,
        }
    }

    /// The time now, by the database's clock.
    pub fn now(&self) -> SystemTime {
        self.skew.now()
    }

    /// A lease taken or renewed now runs until then.
    pub fn lease_until(&self) -> SystemTime {
        self.now() + self.lease
    }

    /// Replicas seen since then count as alive.
    pub fn alive_since(&self) -> SystemTime {
        self.now() - self.lease
    }

    /// Whether the last heartbeat reached the database.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// While the database is unreachable: how long since the first
    /// heartbeat that could not reach it (one failed beat is not yet an
    /// outage: it counts from there).
    pub fn unreachable_for(&self) -> Option<Duration> {
        self.unreachable_since.lock().expect("heartbeat lock").map(|since| since.elapsed())
    }

    /// How long the database may be out of reach (from the first heartbeat
    /// that failed) before this replica's agents are asked to go to another
    /// replica: well under a lease, so they have moved before the others
    /// stop counting this one alive.
    pub fn agents_leave_after(&self) -> Duration {
        self.lease / 3
    }

    fn record(&self) -> ReplicaRecord {
        ReplicaRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            peer_url: self.peer_url.clone(),
            started_at: self.started_at,
            seen_at: self.now(),
        }
    }

    /// Records this replica as alive now. A database that does not answer
    /// within a quarter lease (a link that drops packets) counts as
    /// unreachable.
    pub async fn beat(&self, store: &dyn ClusterStore) -> Result<(), borealis_store::StoreError> {
        let sent = SystemTime::now();
        let result = match tokio::time::timeout(self.lease / 4, store.replica_seen(&self.record())).await {
            Ok(Ok(theirs)) => {
                if let Some(theirs) = theirs {
                    // The database read its clock about halfway through.
                    let ours = sent + SystemTime::now().duration_since(sent).unwrap_or_default() / 2;
                    let before = self.skew.millis();
                    let skew = self.skew.measure(theirs, ours);
                    // Logged when it first shows, or moves by a second.
                    if skew.abs() >= 1000 && (skew - before).abs() >= 1000 {
                        tracing::warn!(
                            skew_ms = skew,
                            "this machine's clock differs from the database's; leases and schedules follow the database's"
                        );
                    }
                }
                Ok(())
            }
            Ok(Err(err)) => Err(err),
            Err(_) => Err(borealis_store::StoreError::Unavailable(
                format!("the database did not answer the heartbeat within {:?}", self.lease / 4).into(),
            )),
        };
        let reachable = result.is_ok();
        {
            let mut since = self.unreachable_since.lock().expect("heartbeat lock");
            if reachable {
                *since = None;
            } else if since.is_none() {
                *since = Some(Instant::now());
            }
        }
        if self.reachable.swap(reachable, Ordering::Relaxed) != reachable {
            if reachable {
                tracing::info!(replica = %self.id, "the database is reachable again");
            } else {
                tracing::warn!(replica = %self.id, "the database is unreachable: this replica claims no work until it returns");
            }
        }
        result
    }
}

/// Beats every quarter lease until `stop` (every eighth while the
/// database is unreachable, to notice its return sooner), and forgets
/// replicas not seen for three leases (with the sessions they recorded).
pub async fn heartbeat(replica: Arc<Replica>, store: Arc<dyn ClusterStore>, stop: CancellationToken) {
    loop {
        let every = if replica.reachable() { replica.lease / 4 } else { replica.lease / 8 };
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.cancelled() => return,
        }
        if let Err(err) = replica.beat(&*store).await {
            tracing::debug!(error = %err, "heartbeat not recorded");
            continue;
        }
        let long_gone = replica.now() - 3 * replica.lease;
        match store.forget_replicas(long_gone).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(replicas = n, "forgot replicas not seen for three lease periods"),
            Err(err) => tracing::debug!(error = %err, "could not forget old replicas"),
        }
    }
}

/// Where announced changes go.
pub trait ChangeSink: Send + Sync {
    fn run_changed(&self, id: &str);
    fn deployment_changed(&self, id: &str);
    fn credential_changed(&self, id: &str);
    fn secret_changed(&self, name: &str);
}

/// Passes the changes other replicas announce to `sink` until `stop`. A
/// store without a feed (SQLite: no other writer) ends at once.
pub async fn follow_changes(store: Arc<dyn ClusterStore>, sink: Arc<dyn ChangeSink>, stop: CancellationToken) {
    loop {
        let feed = tokio::select! {
            feed = store.changes() => feed,
            () = stop.cancelled() => return,
        };
        let mut feed = match feed {
            Ok(Some(feed)) => feed,
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, "could not listen for other replicas' changes; trying again");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        loop {
            let change = tokio::select! {
                change = feed.recv() => change,
                () = stop.cancelled() => return,
            };
            match change {
                Some(Change::Run(id)) => sink.run_changed(&id),
                Some(Change::Deployment(id)) => sink.deployment_changed(&id),
                Some(Change::Credential(id)) => sink.credential_changed(&id),
                Some(Change::Secret(name)) => sink.secret_changed(&name),
                None => break,
            }
        }
    }
}
