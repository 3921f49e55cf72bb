//! Wiring: builds every part from the configuration, runs them, and stops
//! them in order on shutdown. `main` and the tests both start ovn-peerd here.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::api::{ApiSettings, PeeringApi};
use crate::auth::{tls, Policy, Watched};
use crate::backoff::Backoff;
use crate::config::{Config, Transport};
use crate::health;
use crate::metrics::GrpcMetricsLayer;
use crate::ovsdb;
use crate::proto::v1::peering_service_server::PeeringServiceServer;
use crate::reconciler::{self, Reconciler};
use crate::store::{Deployment, Store};
use crate::watch::Hub;

/// The OVN Northbound database's name in its schema.
pub const NB_DATABASE: &str = "OVN_Northbound";

/// A built, not yet running, ovn-peerd.
pub struct Application {
    config: Config,
    listener: TcpListener,
    /// The TLS configuration, re-read when its files change; `None`: plaintext.
    tls: Option<Arc<Watched<rustls::ServerConfig>>>,
    policy: Option<Arc<Watched<Policy>>>,
    /// The plaintext health-only listener (`--health-listen`).
    health_listener: Option<TcpListener>,
    store: Store,
    nb: ovsdb::Client,
    deployment: Deployment,
}

impl Application {
    /// Binds the listener, connects to Postgres (waiting for it) and applies
    /// migrations, and starts the NB client. Serving starts with [`run`](Self::run).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Configuration mistakes first, before waiting for Postgres.
        let (tls, policy) = security(&config)?;
        let nb_config = nb_client_config(&config)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let health_listener = match config.health_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--health-listen)"))?,
            ),
            None => None,
        };
        let store = Store::connect_lazy(config.database_url.expose())?;
        store.set_full_read_below(config.full_read_below);
        migrate_with_retry(&store).await?;
        let deployment = store
            .deployment_get()
            .await
            .context("cannot read this deployment's id")?;
        tracing::info!(deployment_id = %deployment.id, "deployment");
        let nb = ovsdb::Client::start(nb_config).context("invalid --ovn-nb-db")?;
        Ok(Self {
            config,
            listener,
            tls,
            policy,
            health_listener,
            store,
            nb,
            deployment,
        })
    }

    /// This deployment's id (made at its first migration).
    pub fn deployment_id(&self) -> uuid::Uuid {
        self.deployment.id
    }

    /// The address the gRPC API is bound to (tests bind port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address of the health-only listener, if any.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener
            .as_ref()
            .map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// The NB client (tests read its cache).
    pub fn nb(&self) -> &ovsdb::Client {
        &self.nb
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, finishes
    /// in-flight calls and stops the background tasks.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            config,
            listener,
            tls,
            policy,
            health_listener,
            store,
            nb,
            deployment,
        } = self;
        let (reporter, health_service) = tonic_health::server::health_reporter();
        health::register_not_serving(&reporter).await;
        let mut tasks = JoinSet::new();
        let tasks_stop = shutdown.child_token();

        tasks.spawn(named(
            "postgres health",
            health::watch_postgres(store.clone(), reporter.clone(), tasks_stop.clone()),
        ));
        tasks.spawn(named(
            "northbound health",
            health::watch_northbound(nb.state(), reporter.clone(), tasks_stop.clone()),
        ));
        tasks.spawn(named(
            "SIGHUP handler",
            reset_index_guard_on_sighup(nb.clone(), tasks_stop.clone()),
        ));
        tasks.spawn(named(
            "request expiry",
            crate::acceptance::expire_requests(
                store.clone(),
                config.acceptance_ttl,
                tasks_stop.clone(),
            ),
        ));
        if config.worker {
            let reconciler = Reconciler::new(
                store.clone(),
                nb.clone(),
                reconciler::Settings::from_config(&config, deployment.id),
            );
            tasks.spawn(named(
                "mass-deletion health",
                health::watch_mass_deletion(
                    reconciler.mass_deletion_blocked(),
                    reporter.clone(),
                    tasks_stop.clone(),
                ),
            ));
            tasks.spawn(named(
                "reconciler",
                reconciler::run_with_writer_lock(reconciler, tasks_stop.clone()),
            ));
        }

        // One change reader per process for every WatchPeerings stream; the streams end at
        // `shutdown` (not `tasks_stop`), so that graceful shutdown does not wait on them.
        let hub = Hub::new(
            store.clone(),
            deployment.id,
            config.watch.settings(),
            shutdown.clone(),
        );
        tasks.spawn(named("change reader", hub.clone().run(tasks_stop.clone())));
        let settings = ApiSettings {
            instance: Some(deployment.id.to_string()),
            ..api_settings(&config)
        };
        let api = PeeringApi::new(store.clone(), nb.clone(), settings)
            .with_policy(policy)
            .with_watch(hub);
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;

        if let Some(health_listener) = health_listener {
            tracing::info!(listen = %health_listener.local_addr()?, "serving gRPC health only, plaintext");
            let health_only = crate::api::http2_settings(tonic::transport::Server::builder())
                .layer(GrpcMetricsLayer)
                .add_service(health_service.clone())
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(health_listener).with_nodelay(Some(true)),
                    tasks_stop.clone().cancelled_owned(),
                );
            tasks.spawn(named("health listener", async move {
                if let Err(e) = health_only.await {
                    tracing::error!(error = %e, "health listener failed");
                }
            }));
        }

        tracing::info!(listen = %listener.local_addr()?, tls = tls.is_some(), "serving gRPC");
        let admission = api.admission_layer();
        let router = crate::api::http2_settings(tonic::transport::Server::builder())
            .layer(GrpcMetricsLayer)
            .layer(admission)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(PeeringServiceServer::new(api));
        let serve: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match tls {
                Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                    tls::incoming(listener, tls, shutdown.clone()),
                    shutdown.clone().cancelled_owned(),
                )),
                None => Box::pin(router.serve_with_incoming_shutdown(
                    // With our own listener tonic's `tcp_nodelay` default does not apply:
                    // without it Nagle + delayed ACKs add ~40 ms to multi-segment replies.
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    shutdown.clone().cancelled_owned(),
                )),
            };

        let mut serve = std::pin::pin!(serve);
        let result = loop {
            tokio::select! {
                r = &mut serve => break r.context("gRPC server failed"),
                Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                    // On shutdown the tasks stop first, while the server finishes
                    // its in-flight calls: that is expected.
                    if shutdown.is_cancelled() {
                        continue;
                    }
                    // Otherwise background tasks run until shutdown; one ending early is a bug.
                    let name = ended.unwrap_or("a background task (panicked)");
                    break Err(anyhow::anyhow!("{name} stopped unexpectedly"));
                }
            }
        };
        tasks_stop.cancel();
        while tasks.join_next().await.is_some() {}
        nb.shutdown();
        result
    }
}

/// The TLS configuration and the policy the flags ask for, loaded once (a start-up error if
/// they do not load), with what they mean logged.
#[allow(clippy::type_complexity)]
fn security(
    config: &Config,
) -> anyhow::Result<(
    Option<Arc<Watched<rustls::ServerConfig>>>,
    Option<Arc<Watched<Policy>>>,
)> {
    let tls = match config.transport().map_err(anyhow::Error::msg)? {
        Transport::Plaintext { warning } => {
            if let Some(warning) = warning {
                tracing::warn!("{warning}");
            }
            None
        }
        Transport::Tls(files) => {
            tracing::info!(
                cert = %files.cert.display(),
                client_ca = ?files.client_ca,
                "TLS; files re-read when they change"
            );
            Some(Arc::new(files.watch()?))
        }
    };
    let policy = match &config.authz_policy {
        Some(path) => {
            let p = path.clone();
            let watched = Watched::new("policy", vec![path.clone()], move || {
                let text = std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                Ok(Policy::parse(&text)?)
            })?;
            tracing::info!(path = %path.display(), "authorization policy; re-read when it changes");
            Some(Arc::new(watched))
        }
        None => {
            tracing::info!("no --authz-policy: every caller that connects is an admin");
            None
        }
    };
    Ok((tls, policy))
}

/// Reflection over our API, health, and the `google.rpc` error details (so
/// grpcurl can print a refusal's BadRequest / PreconditionFailure).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// `SIGHUP` resets the NB client's "index went backwards" guard: the operator's action after
/// restoring the NB cluster from a backup (README, "Operations").
async fn reset_index_guard_on_sighup(nb: ovsdb::Client, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP");
            return stop.cancelled().await;
        }
    };
    loop {
        tokio::select! {
            Some(()) = hup.recv() => {
                tracing::info!("SIGHUP: resetting the NB index guard");
                nb.reset_index_guard();
            }
            _ = stop.cancelled() => return,
        }
    }
}

async fn named(name: &'static str, fut: impl std::future::Future<Output = ()>) -> &'static str {
    fut.await;
    name
}

/// Postgres may come up after us (compose, systemd): wait for it with backoff.
async fn migrate_with_retry(store: &Store) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_unavailable() => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "postgres not reachable yet");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e).context("cannot apply database migrations"),
        }
    }
}

fn nb_client_config(config: &Config) -> anyhow::Result<ovsdb::ClientConfig> {
    let tls = config.nb_tls().map_err(anyhow::Error::msg)?;
    let mut nb = ovsdb::ClientConfig::new(&config.ovn_nb_db, NB_DATABASE)?
        .with_tls(tls)
        .with_owner_key(crate::peering::PEERING_KEY);
    nb.probe_interval = Some(config.ovn_nb_probe_interval);
    nb.handshake_timeout = config.ovn_nb_max_silence;
    Ok(nb)
}

/// The API's settings from the configuration (`instance` unset: [`Application`] sets it
/// from the database).
pub fn api_settings(config: &Config) -> ApiSettings {
    ApiSettings {
        protected_vpcs: config.protected_vpcs.clone(),
        link_pool_v4: (config.link_pool.into(), config.link_prefix_len),
        link_pool_v6: (
            config.link_pool_v6.into(),
            crate::peering::links::DEFAULT_V6_LINK_PREFIX,
        ),
        limits: crate::api::Limits {
            max_in_flight: config.max_in_flight,
            rpc_timeout: config.rpc_timeout,
        },
        acceptance_ttl: config.acceptance_ttl,
        instance: None,
    }
}
