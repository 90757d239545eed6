//! The Borealis relay.
//!
//! The relay runs centrally. Agents inside private networks dial out to it
//! and hold a gRPC tunnel; operators and webhooks reach it over HTTP.
//!
//! Layout:
//! - [`config`]: layered configuration (defaults, file, env, flags, validate).
//! - [`run`]: starts everything on listeners the caller bound, until shutdown.
//! - [`serve`]: the accept loop both listeners share (TLS, HTTP/1.1, HTTP/2).
//! - [`http`]: the HTTP edge: routes, problems, one module per resource.
//! - [`console`]: the web console on the same listener: pages, sessions.
//! - [`changes`]: where changes other replicas announce go.
//! - [`forward`]: forwarding one request, direct or through an agent; the
//!   engine's [`Transport`](borealis_engine::transport::Transport).
//! - [`tunnel`]: the `Tunnel` gRPC service agents call.
//! - [`hub`]: live agent sessions, pools, offers and drain.
//! - [`lane`]: a session's lanes: small exchanges batched on long-lived calls.
//! - [`placement`]: this replica's session records kept right; agents sent
//!   elsewhere when the database is lost or this replica holds too many.
//! - [`auth`]: credentials, tokens and the admin token.
//! - [`throttle`]: failed authentication logged, counted and limited per peer.
//!
//! Webhook runs and deployments, and the calls they make, are the engine's
//! (`borealis-engine`); the relay gives them a store, a transport and edges.
//!
//! The binary (`main.rs`) only parses flags, binds, and waits for a signal;
//! tests call [`run`] with listeners on port 0.

pub mod access;
pub mod auth;
pub mod changes;
pub mod config;
pub mod console;
pub mod forward;
pub mod http;
pub mod hub;
pub mod lane;
pub mod metrics;
pub mod peer;
pub mod placement;
pub mod preflight;
pub mod serve;
pub mod state;
pub mod throttle;
pub mod tls;
pub mod tunnel;

use std::future::Future;
use std::sync::Arc;

use borealis_egress::{AddressGuard, Egress, EgressOptions, Policy};
use borealis_engine::clock::Clock;
use borealis_engine::deployments::Deployments;
use borealis_engine::deployments::caller::Caller;
use borealis_engine::runs::{RunParts, Runs};
use borealis_engine::{cluster, runs, signing, vault};
use borealis_protocol::v1::tunnel_server::TunnelServer;
use borealis_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::RelayConfig;

use crate::forward::Forwarder;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::state::AppState;

/// The relay's two listeners, bound by the caller.
pub struct Listeners {
    /// HTTP API, token endpoint and callbacks.
    pub http: TcpListener,
    /// Agents' gRPC.
    pub agents: TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] borealis_store::StoreError),
    #[error("{0}")]
    Auth(#[from] auth::AuthError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("direct-mode client: {0}")]
    Egress(#[from] borealis_egress::EgressError),
    #[error(transparent)]
    Vault(#[from] vault::VaultError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// Runs the relay until `shutdown` completes, then drains agents, lets
/// in-flight requests finish (up to the grace period) and returns.
pub async fn run(
    config: RelayConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RelayError> {
    borealis_egress::client::install_crypto_provider();
    let data_dir = config.data_dir.clone();
    let dir_error = |source| RelayError::DataDir { path: data_dir.clone(), source };
    create_private_dir(&data_dir).map_err(dir_error)?;
    let store: Arc<dyn Store> =
        borealis_store::open(config.database_url.as_ref().map(|url| url.expose()), &data_dir).await?;
    let (admin_token, shared_admin_hash) = if config.disable_admin_token {
        tracing::info!("the admin token is turned off: organization admins are the people in oidc_admin_groups");
        (None, None)
    } else {
        admin_token(&*store, &data_dir, config.admin_token.as_ref()).await.map_err(|e| match e {
            AdminTokenError::Dir(source) => dir_error(source),
            AdminTokenError::Store(err) => RelayError::Store(err),
        })?
    };
    let auth =
        auth::Authority::new(store.clone(), store.as_ref(), admin_token.as_ref(), shared_admin_hash.as_deref()).await?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let egress =
        Egress::new(Policy::Guarded(AddressGuard::new(config.direct_allow.clone())), EgressOptions::default())?;
    let metrics = Arc::new(Metrics::default());
    let descriptors = serve::raise_descriptor_limit();
    let limits = config.connection_limits(descriptors);
    let edge = serve::Edge::new(limits, serve::TrustedProxies::new(config.trusted_proxies.clone()), &metrics);
    let auth_guard = throttle::AuthGuard::new(config.auth_failures_per_minute, &metrics);
    let hub = Hub::new(metrics.clone(), config.agent_lanes);
    let grace = config.shutdown_grace;
    let vault = vault::Vault::open(store.clone(), &data_dir, config.secret_key.as_ref())?
        .with_relay_key(config.webhook_signing_secret.clone());
    if let Some(name) = &config.webhook_signing_secret {
        // A secret of team `default`: it signs every team's calls.
        match signing::keys(Some(name), None, &vault.keyring(borealis_store::DEFAULT_TEAM).await?) {
            Ok(_) => tracing::info!(secret = %name, "outgoing calls are signed (Standard Webhooks)"),
            Err(reason) => tracing::warn!(%reason, "outgoing calls fail until the signing secret is stored"),
        }
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let vault = Arc::new(vault);
    let http_addr = listeners.http.local_addr().ok();
    let public_base = config.public_base(http_addr);
    let sign_in = match config.oidc()? {
        Some(settings) => {
            let sign_in = access::oidc::SignIn::new(settings, &public_base)
                .map_err(|e| config::ConfigError::Invalid(format!("the identity provider's client: {e}")))?;
            Some(Arc::new(sign_in))
        }
        None => None,
    };
    let peer_url = config.own_peer_url(http_addr);
    let replica_name = config.own_replica_name(http_addr);
    let replica =
        Arc::new(cluster::Replica::new(replica_name, peer_url, config.lease_duration, auth.clock(), store.shared()));
    if let Err(err) = replica.beat(&*store).await {
        tracing::warn!(error = %err, "could not record this replica in the database");
    }
    if !store.shared() {
        // One relay uses this store: any other replica record is this
        // relay's previous life, and the sessions it held are gone.
        if let Err(err) = store.forget_replicas(replica.started_at).await {
            tracing::warn!(error = %err, "could not forget the previous start's agent sessions");
        }
    } else if replica.peer_url.is_none() {
        tracing::warn!(
            "the HTTP listener is a wildcard address and --peer-url is not set: other replicas cannot forward \
             requests for the agents connected here"
        );
    }
    let peers: Option<Arc<dyn forward::PeerRoute>> = if store.shared() {
        let peers = peer::Peers::new(replica.clone(), store.clone(), auth.peer_key(), metrics.clone())
            .map_err(|e| RelayError::Egress(borealis_egress::EgressError::Internal(e.to_string())))?;
        Some(Arc::new(peers))
    } else {
        None
    };
    let forwarder = Arc::new(Forwarder::new(egress, hub.clone(), store.clone(), peers));
    // Schedules read the database's clock, as leases do.
    let clock = Clock::corrected(replica.skew.clone());
    let (runs, scheduler) = Runs::new(RunParts {
        store: store.clone(),
        agents: store.clone(),
        replica: replica.clone(),
        metrics: metrics.engine.clone(),
        vault: vault.clone(),
        transport: forwarder.clone(),
        settings: config.run_settings(public_base),
        clock,
    });
    let caller = Arc::new(Caller::new(
        forwarder.clone(),
        vault.clone(),
        config.webhook_signing_secret.clone(),
        config.max_body_bytes,
        config.retry_base_delay,
    ));
    let deployments =
        Deployments::new(store.clone(), store.clone(), runs.clone(), caller, config.deployment_settings());
    let poll_interval = config.poll_interval;
    let revocations = Arc::new(tokio::sync::Notify::new());
    let trail_stop = CancellationToken::new();
    let (proxy_trail, trail_writer) = access::trail::ProxyTrail::start(store.clone(), trail_stop.clone());
    let state = Arc::new(AppState {
        config,
        store: store.clone(),
        auth,
        hub: hub.clone(),
        forwarder,
        metrics,
        vault,
        runs: runs.clone(),
        deployments: deployments.clone(),
        auth_guard,
        replica: replica.clone(),
        revocations,
        peer_nonces: Default::default(),
        agents_addr: listeners.agents.local_addr().ok(),
        sign_in,
        proxy_trail,
    });

    let tunnel = TunnelServer::new(tunnel::TunnelService { state: state.clone() })
        .max_decoding_message_size(borealis_protocol::MAX_FRAME_BYTES)
        .max_encoding_message_size(borealis_protocol::MAX_FRAME_BYTES);
    let tunnel_router = tonic::service::Routes::new(tunnel).prepare().into_axum_router();
    let agents_addr = listeners.agents.local_addr().ok();
    let stop = CancellationToken::new();
    let engine = tokio::spawn(runs::engine::schedule(runs.clone(), scheduler));
    let sweeper = tokio::spawn(tunnel::sweep_revoked(state.clone(), stop.clone()));
    let waiters = Arc::new(changes::LocalWaiters(state.clone()));
    let background = [
        tokio::spawn(cluster::heartbeat(replica.clone(), store.clone(), stop.clone())),
        tokio::spawn(cluster::follow_changes(store.clone(), waiters, stop.clone())),
        tokio::spawn(deployments.clone().keep(poll_interval, stop.clone())),
        tokio::spawn(placement::keep(state.clone(), stop.clone())),
        tokio::spawn(forget_old_audit(store.clone(), state.config.audit_retention, stop.clone())),
    ];
    let servers = [
        tokio::spawn(serve::serve(
            "http",
            listeners.http,
            tls.clone(),
            http::http_router(state.clone()).merge(console::router(state.clone())),
            edge.clone(),
            stop.clone(),
            grace,
        )),
        tokio::spawn(serve::serve(
            "agents",
            listeners.agents,
            tls,
            http::agent_router(state.clone(), tunnel_router),
            edge,
            stop.clone(),
            grace,
        )),
    ];
    tracing::info!(
        http = %format!("{scheme}://{}", addr_text(http_addr)),
        agents = %format!("{scheme}://{}", addr_text(agents_addr)),
        data_dir = %data_dir.display(),
        replica = %replica.id,
        "relay ready"
    );

    shutdown.await;
    // Stop intake, drain, wait within the grace, then close the store.
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: draining agents");
    let started = tokio::time::Instant::now();
    hub.drain(grace).await;
    deployments.close().await;
    runs.close(grace.saturating_sub(started.elapsed())).await;
    hub.close_all();
    stop.cancel();
    for server in servers {
        let _ = server.await;
    }
    let _ = engine.await;
    let _ = sweeper.await;
    for task in background {
        let _ = task.await;
    }
    // The proxied requests' entries still queued go to the store first.
    trail_stop.cancel();
    let _ = trail_writer.await;
    hub.close().await;
    if let Err(err) = store.replica_gone(&replica.id).await {
        tracing::warn!(error = %err, "could not remove this replica's record");
    }
    store.close().await;
    tracing::info!("relay stopped");
    Ok(())
}

enum AdminTokenError {
    Dir(std::io::Error),
    Store(borealis_store::StoreError),
}

/// This replica's admin token, and the hash of the one replicas sharing
/// the database use. On a shared database the first replica to start
/// records its token's hash; a replica started later with neither a
/// configured token nor one in its data dir takes that one and writes no
/// file. Without a shared database: the configured token, else the data
/// dir's, created on first start.
async fn admin_token(
    store: &dyn Store,
    data_dir: &std::path::Path,
    configured: Option<&borealis_core::Secret>,
) -> Result<(Option<borealis_core::Secret>, Option<Vec<u8>>), AdminTokenError> {
    if !store.shared() {
        let token = auth::load_or_create_admin_token(data_dir, configured).map_err(AdminTokenError::Dir)?;
        return Ok((Some(token), None));
    }
    let recorded = store.setting(auth::ADMIN_TOKEN_HASH_SETTING).await.map_err(AdminTokenError::Store)?;
    if configured.is_none() && !data_dir.join("admin-token").exists() && recorded.is_some() {
        tracing::info!(
            "the admin token is the one the first replica on this database created (in its data dir), or set BOREALIS_ADMIN_TOKEN"
        );
        return Ok((None, recorded));
    }
    let token = auth::load_or_create_admin_token(data_dir, configured).map_err(AdminTokenError::Dir)?;
    let shared = store
        .setting_or_init(auth::ADMIN_TOKEN_HASH_SETTING, auth::admin_token_hash(&token))
        .await
        .map_err(AdminTokenError::Store)?;
    Ok((Some(token), Some(shared)))
}

fn addr_text(addr: Option<std::net::SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_else(|| "?".into())
}

/// Creates the data dir readable by its owner only, and narrows one that
/// already exists wider (systemd's `StateDirectory=` makes it 0755): it
/// holds the admin token, the secret key and the database.
fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
        tracing::warn!(path = %path.display(), was = %format!("{mode:o}"), "the data directory was readable by others; its mode is now 0700");
    }
    Ok(())
}

/// Every hour, removes the audit entries older than `retention` (none when
/// it is 0: the trail is kept forever).
async fn forget_old_audit(store: Arc<dyn Store>, retention: std::time::Duration, stop: CancellationToken) {
    if retention.is_zero() {
        return;
    }
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = stop.cancelled() => return,
        }
        let before = std::time::SystemTime::now() - retention;
        match store.forget_audit_before(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "audit entries past their retention removed"),
            Err(err) => tracing::warn!(error = %err, "could not remove old audit entries"),
        }
    }
}
