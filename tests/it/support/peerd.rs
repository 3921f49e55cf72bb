//! ovn-peerd started in-process on port 0 over a fresh database and a fresh NB.

use std::net::SocketAddr;
use std::time::Duration;

use ovn_peerd::config::{Config, LogFormat};
use ovn_peerd::proto::v1::peering_service_client::PeeringServiceClient;
use ovn_peerd::reconciler::{self, Reconciler};
use ovn_peerd::startup::Application;
use ovn_peerd::store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::nb::NbServer;
use super::pg::TestDb;

/// A running ovn-peerd with its own database and NB server.
///
/// `N` is what the instance holds of its NB: an [`NbServer`] of its own (the default), or `()`
/// when it runs against an NB someone else owns (an `OvnCentral`, see
/// [`TestPeerd::start_against`]); `config.ovn_nb_db` is the remote either way.
pub struct TestPeerd<N = NbServer> {
    /// The gRPC address.
    pub addr: SocketAddr,
    /// The health-only listener's address (`--health-listen`).
    pub health_addr: Option<SocketAddr>,
    /// Its database.
    pub db: TestDb,
    /// Its NB server (owned here unless shared).
    pub nb: N,
    /// The configuration it runs with.
    pub config: Config,
    /// The service's own NB client (the one its API and worker read the replica from).
    pub nb_client: ovn_peerd::ovsdb::Client,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// How to start a [`TestPeerd`].
#[derive(Clone)]
pub struct Options {
    /// Run the worker in the background (else tests drive it with [`TestPeerd::converge`]).
    pub worker: bool,
    /// Protected VPCs.
    pub protected_vpcs: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            worker: false,
            protected_vpcs: vec!["ovn-cluster".into()],
        }
    }
}

/// A configuration for tests: port 0, no metrics listener.
pub fn test_config(database_url: &str, nb_remote: &str, opts: &Options) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: database_url.into(),
        ovn_nb_db: nb_remote.to_string(),
        ovn_nb_private_key: None,
        ovn_nb_certificate: None,
        ovn_nb_ca_cert: None,
        ovn_nb_probe_interval: Duration::from_secs(5),
        ovn_nb_max_silence: Duration::from_secs(60),
        metrics_listen: None,
        log_format: LogFormat::Text,
        link_pool: "169.254.0.0/16".parse().unwrap(),
        link_prefix_len: 30,
        link_pool_v6: "fd00:a9fe::/64".parse().unwrap(),
        protected_vpcs: opts.protected_vpcs.clone(),
        resync_interval: Duration::from_secs(300),
        worker: opts.worker,
        tls_cert: None,
        tls_key: None,
        tls_client_ca: None,
        allow_insecure: false,
        authz_policy: None,
        health_listen: None,
        allow_mass_deletion: false,
        max_in_flight: ovn_peerd::api::DEFAULT_MAX_IN_FLIGHT,
        rpc_timeout: Duration::from_secs(30),
        watch: Default::default(),
        acceptance_ttl: Duration::from_secs(7 * 86400),
        full_read_below: full_read_below(),
    }
}

/// The prefix of the tests run again with every VPC a hub (`tests/it/main.rs`).
pub const EVERY_VPC_A_HUB: &str = "every_vpc_a_hub::";

/// The hub bound a test's ovn-peerd runs with ([`Config::full_read_below`]): 0 (every VPC a
/// hub: the conflict probe's path) for the suites run again under [`EVERY_VPC_A_HUB`] (libtest
/// names each test's thread after the test, and the test's body runs on it), or whatever
/// `OVN_PEERD_TEST_FULL_READ_BELOW` says for a whole run; else the served default.
pub fn full_read_below() -> usize {
    let set = std::env::var("OVN_PEERD_TEST_FULL_READ_BELOW").ok();
    if let Some(n) = set.and_then(|v| v.parse().ok()) {
        return n;
    }
    let thread = std::thread::current();
    match thread
        .name()
        .is_some_and(|n| n.starts_with(EVERY_VPC_A_HUB))
    {
        true => 0,
        false => ovn_peerd::store::FULL_READ_BELOW,
    }
}

impl TestPeerd {
    /// Fresh database, fresh NB, worker driven by the test.
    pub async fn start() -> TestPeerd {
        Self::start_with(Options::default()).await
    }

    /// Fresh database, fresh NB, with options.
    pub async fn start_with(opts: Options) -> TestPeerd {
        let db = TestDb::create().await;
        let nb = NbServer::start();
        let config = test_config(&db.url, &nb.remote(), &opts);
        Self::start_on(db, nb, config).await
    }
}

impl TestPeerd {
    /// [`TestPeerd::start`] on a database collated as glibc's `en_US` ([`TestDb::create_en_us`]):
    /// names compare differently there than in byte order.
    pub async fn start_en_us() -> TestPeerd {
        let db = TestDb::create_en_us().await;
        let nb = NbServer::start();
        let config = test_config(&db.url, &nb.remote(), &Options::default());
        Self::start_on(db, nb, config).await
    }
}

impl TestPeerd<()> {
    /// Fresh database, against an NB the caller owns (e.g. `OvnCentral::nb_remote()`).
    pub async fn start_against(nb_remote: &str, opts: Options) -> TestPeerd<()> {
        let db = TestDb::create().await;
        let config = test_config(&db.url, nb_remote, &opts);
        TestPeerd::start_on(db, (), config).await
    }
}

impl<N> TestPeerd<N> {
    /// Starts on the given database and NB (`config.ovn_nb_db` is the NB it connects to;
    /// `nb` is only kept alive with it).
    pub async fn start_on(db: TestDb, nb: N, config: Config) -> TestPeerd<N> {
        Self::start_inner(db, nb, config, true).await
    }

    /// [`TestPeerd::start_on`] without waiting for the NB replica (for an NB it cannot use).
    pub async fn start_unsynced(db: TestDb, nb: N, config: Config) -> TestPeerd<N> {
        Self::start_inner(db, nb, config, false).await
    }

    async fn start_inner(db: TestDb, nb: N, config: Config, synced: bool) -> TestPeerd<N> {
        ovn_peerd_test_support::log::init();
        let app = Application::build(config.clone()).await.expect("build");
        let addr = app.local_addr();
        let health_addr = app.health_addr();
        if synced {
            app.nb()
                .wait_synced(Duration::from_secs(10))
                .await
                .expect("NB cache in sync");
        }
        let nb_client = app.nb().clone();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run(shutdown.clone()));
        TestPeerd {
            addr,
            health_addr,
            db,
            nb,
            config,
            nb_client,
            shutdown,
            handle: Some(handle),
        }
    }

    /// A client of the API.
    pub async fn client(&self) -> PeeringServiceClient<Channel> {
        PeeringServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to ovn-peerd")
    }

    /// A channel for other services (health).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to ovn-peerd")
    }

    /// A store over this instance's database with its hub bound, as the served one.
    pub fn store(&self) -> Store {
        let store = Store::connect_lazy(&self.db.url).unwrap();
        store.set_full_read_below(self.config.full_read_below);
        store
    }

    /// A worker over this instance's database and NB, driven by the test.
    pub async fn reconciler(&self) -> Reconciler {
        let store = self.store();
        let nb = ovn_peerd::ovsdb::Client::start(
            ovn_peerd::ovsdb::ClientConfig::new(
                &self.config.ovn_nb_db,
                ovn_peerd::startup::NB_DATABASE,
            )
            .unwrap()
            .with_tls(self.config.nb_tls().unwrap())
            .with_owner_key(ovn_peerd::peering::PEERING_KEY),
        )
        .unwrap();
        nb.wait_synced(Duration::from_secs(10)).await.unwrap();
        let deployment = store.deployment_get().await.expect("deployment id");
        Reconciler::new(
            store,
            nb,
            reconciler::Settings::from_config(&self.config, deployment.id),
        )
    }

    /// Runs the worker until a pass writes nothing.
    pub async fn converge(&self) -> reconciler::PassOutcome {
        self.reconciler()
            .await
            .run_until_idle(20)
            .await
            .expect("reconciler pass")
    }

    /// Graceful stop; returns what `run` returned.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(h) => h.await.expect("ovn-peerd task"),
            None => Ok(()),
        }
    }
}

impl<N> Drop for TestPeerd<N> {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl<N> TestPeerd<N> {
    /// Whether the database holds no peering at all.
    pub async fn store_is_empty(&self) -> bool {
        let store = Store::connect_lazy(&self.db.url).unwrap();
        store.peering_list(None, 1, None).await.unwrap().is_empty()
    }
}
