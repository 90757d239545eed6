//! Where agents' sessions stand among the replicas sharing a database.
//!
//! Every few seconds ([`keep`]) this replica:
//! - sets its session records right against the sessions it holds, so a
//!   record lost (forgotten while the database was away) or left behind
//!   heals within one heartbeat;
//! - asks its agents to connect again elsewhere once the database has been
//!   out of reach for [`Replica::agents_leave_after`], well under a lease:
//!   the other replicas would soon stop counting it alive and could no
//!   longer reach its agents. Until the database is back it refuses agents
//!   ([`refuses_agents`]), so they land on a replica that has it;
//! - once a lease, when it holds far more sessions than its share
//!   ([`to_move`]), asks a few to connect again, so one replica does not end
//!   up holding every agent after the others restarted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use borealis_store::SessionRecord;
use tokio_util::sync::CancellationToken;

use crate::hub::Session;
use crate::state::AppState;
use borealis_engine::cluster::Replica;

/// The record other replicas read to find `session` here.
pub fn record(replica: &Replica, session: &Session) -> SessionRecord {
    SessionRecord {
        session_id: session.id.clone(),
        replica_id: replica.id.clone(),
        team: session.info.agent.team.clone(),
        agent_id: session.info.agent.name.clone(),
        instance: session.info.instance.clone(),
        version: session.info.version.clone(),
        remote_addr: session.info.remote_addr.map(|a| a.to_string()),
        connected_at: session.connected_at,
        allow_list: session.info.allow_list.clone(),
    }
}

/// Whether agents are turned away: replicas share the database and this
/// one cannot reach it.
pub fn refuses_agents(state: &AppState) -> bool {
    state.store.shared() && !state.replica.reachable()
}

/// How many of its `mine` sessions a replica should ask to move, given how
/// many each live replica holds (`held`, this one included). A replica
/// moves sessions only when it holds at least half again its fair share
/// (the total over the replicas, rounded up) and more than one above it,
/// and then half of its excess, rounded up: gently, so that agents moving
/// at once do not all land on one replica.
pub fn to_move(mine: u64, held: &[u64]) -> u64 {
    let replicas = held.len() as u64;
    if replicas < 2 {
        return 0;
    }
    let fair = held.iter().sum::<u64>().div_ceil(replicas);
    let excess = mine.saturating_sub(fair);
    if excess == 0 || mine * 2 < fair * 3 {
        return 0;
    }
    excess.div_ceil(2)
}

/// Keeps this replica's agent sessions placed (see the module doc) until
/// `stop`. Only where replicas share the database.
pub async fn keep(state: Arc<AppState>, stop: CancellationToken) {
    if !state.store.shared() {
        return;
    }
    let replica = state.replica.clone();
    let tick = replica.lease / 8;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Agents asked to leave for want of the database, until it is back.
    let mut sent_away = false;
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        ticks += 1;
        match replica.unreachable_for() {
            Some(away) if away >= replica.agents_leave_after() && !sent_away => {
                let sessions: Vec<Arc<Session>> = state.hub.sessions().into_values().flatten().collect();
                tracing::warn!(
                    sessions = sessions.len(),
                    unreachable_for_ms = away.as_millis() as u64,
                    "the database is out of reach: asking this replica's agents to connect to another replica"
                );
                state.hub.ask_to_leave(&sessions, "this relay replica cannot reach its database", replica.lease);
                sent_away = true;
            }
            Some(_) => {}
            None => {
                if sent_away {
                    tracing::info!("the database is back: taking agents again");
                    sent_away = false;
                }
                // Every other tick: once a heartbeat.
                if ticks.is_multiple_of(2) || ticks == 1 {
                    reconcile(&state).await;
                }
                // Once a lease, and not in the first: the others' records
                // need a lease to settle after a start.
                if ticks.is_multiple_of(8) && ticks > 8 {
                    rebalance(&state).await;
                }
            }
        }
    }
}

/// Records the sessions held here that the database lacks, and removes
/// the records of sessions no longer held here.
async fn reconcile(state: &AppState) {
    let replica = &state.replica;
    // The records first, then the sessions: a session that connects in
    // between is in the second list, so its new record is never taken for
    // a stale one.
    let recorded: HashSet<String> = match state.store.replica_session_ids(&replica.id).await {
        Ok(ids) => ids.into_iter().collect(),
        Err(err) => {
            tracing::debug!(error = %err, "could not read this replica's session records");
            return;
        }
    };
    let held: Vec<Arc<Session>> = state.hub.sessions().into_values().flatten().collect();
    let held_ids: HashSet<&str> = held.iter().map(|s| s.id.as_str()).collect();
    let mut added = 0;
    for session in held.iter().filter(|s| !recorded.contains(&s.id)) {
        match state.store.put_session(&record(replica, session)).await {
            Ok(()) => added += 1,
            Err(err) => {
                tracing::debug!(error = %err, "could not record an agent session");
                return;
            }
        }
    }
    let mut removed = 0;
    for id in recorded.iter().filter(|id| !held_ids.contains(id.as_str())) {
        match state.store.remove_session(id).await {
            Ok(()) => removed += 1,
            Err(err) => {
                tracing::debug!(error = %err, "could not remove a stale agent session record");
                return;
            }
        }
    }
    // A session that ended since the list was taken removes its own record;
    // one re-recorded after that is removed at the next heartbeat.
    if added + removed > 0 {
        tracing::info!(added, removed, "set this replica's agent session records right");
    }
}

/// Asks some agents to move when this replica holds far more than its share.
async fn rebalance(state: &AppState) {
    let replica = &state.replica;
    let held = match state.store.sessions_held(replica.alive_since()).await {
        Ok(held) => held,
        Err(err) => {
            tracing::debug!(error = %err, "could not count the replicas' sessions");
            return;
        }
    };
    let Some(mine) = held.iter().find(|(id, _)| *id == replica.id).map(|(_, n)| *n) else { return };
    let counts: Vec<u64> = held.iter().map(|(_, n)| *n).collect();
    let moving = to_move(mine, &counts) as usize;
    if moving == 0 {
        return;
    }
    // The least busy go: their requests in flight finish here meanwhile.
    let mut sessions: Vec<Arc<Session>> =
        state.hub.sessions().into_values().flatten().filter(|s| !s.is_draining()).collect();
    sessions.sort_by_key(|s| (s.in_flight(), std::cmp::Reverse(s.connected_at)));
    sessions.truncate(moving);
    tracing::info!(
        moving = sessions.len(),
        held = mine,
        replicas = held.len(),
        "this replica holds more than its share of agent sessions: asking some to connect again"
    );
    state.hub.ask_to_leave(&sessions, "rebalancing agents over the relay replicas", Duration::from_secs(10));
}

#[cfg(test)]
mod tests {
    use super::to_move;

    #[test]
    fn a_replica_moves_sessions_only_when_far_above_its_share() {
        assert_eq!(to_move(3, &[3]), 0, "alone, nothing moves");
        assert_eq!(to_move(3, &[3, 0, 0]), 1, "all three on one replica: one moves at a time");
        assert_eq!(to_move(2, &[2, 1, 0]), 1);
        assert_eq!(to_move(2, &[2, 0]), 1);
        assert_eq!(to_move(1, &[1, 0, 0]), 0, "one session cannot be spread");
        assert_eq!(to_move(1, &[1, 1, 1]), 0);
        assert_eq!(to_move(14, &[14, 8, 8]), 0, "a little over the share stays");
        assert_eq!(to_move(30, &[30, 0, 0]), 10, "half the excess over 10");
        assert_eq!(to_move(0, &[0, 30, 0]), 0);
    }
}
