//! Command line and environment configuration.
//!
//! Every flag has an environment fallback so the same binary runs from a shell,
//! systemd or docker-compose. Nothing here opens a connection.
//!
//! The database URL is a [`DatabaseUrl`], whose `Debug` and `Display` hide the password, so
//! that logging a config (or anything holding the URL) cannot leak it. Durations are written
//! as `30s`, `5m`, `1h 30m` (humantime); a bare number is still read as seconds.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::ovsdb::{Remote, TlsFiles};
use crate::peering::links;

/// `ovn-peerd`: VPC peering as a gRPC API for OVN. With no subcommand it serves.
#[derive(Debug, Clone, Parser)]
#[command(name = "ovn-peerd", version, about)]
pub struct Config {
    /// Address the gRPC API listens on.
    #[arg(long, env = "OVN_PEERD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Postgres holding the desired peerings, e.g. postgres://user@127.0.0.1:5432/ovn_peerd.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: DatabaseUrl,

    /// OVN Northbound database, as `ovn-nbctl --db`: `tcp:IP:PORT`, `ssl:IP:PORT`,
    /// `unix:PATH`, or a comma-separated list of them for a Raft cluster.
    #[arg(
        long,
        env = "OVN_NB_DB",
        default_value = "unix:/var/run/ovn/ovnnb_db.sock"
    )]
    pub ovn_nb_db: String,

    /// PEM private key for `ssl:` NB remotes (as `ovn-nbctl -p`); read at every connection.
    #[arg(long, env = "OVN_NB_PRIVATE_KEY")]
    pub ovn_nb_private_key: Option<PathBuf>,

    /// PEM certificate for `ssl:` NB remotes (as `ovn-nbctl -c`); read at every connection.
    #[arg(long, env = "OVN_NB_CERTIFICATE")]
    pub ovn_nb_certificate: Option<PathBuf>,

    /// PEM CA certificate the NB servers' certificates must chain to (as `ovn-nbctl -C`);
    /// host names are not checked, as in OVS. Read at every connection.
    #[arg(long, env = "OVN_NB_CA_CERT")]
    pub ovn_nb_ca_cert: Option<PathBuf>,

    /// Send the NB server an `echo` after this much silence and end the session when the
    /// next interval passes without a reply (`5s`; `0` disables, as in OVS).
    #[arg(
        long,
        env = "OVN_NB_PROBE_INTERVAL",
        default_value = "5s",
        value_parser = parse_probe_interval
    )]
    pub ovn_nb_probe_interval: Duration,

    /// The longest the NB server may stay silent (no byte received) during the handshake
    /// (schema, leader check, initial dump) or while a large request waits: the session then
    /// ends. A dump that keeps streaming is not bounded in total (at least 1s).
    #[arg(
        long,
        env = "OVN_NB_MAX_SILENCE",
        default_value = "60s",
        value_parser = parse_duration
    )]
    pub ovn_nb_max_silence: Duration,

    /// Prometheus metrics address (serves `/metrics`); empty disables.
    #[arg(long, env = "OVN_PEERD_METRICS_LISTEN", default_value = "127.0.0.1:9150", value_parser = parse_optional_addr)]
    // Spelled out so that clap does not treat it as an optional flag: the
    // value parser itself maps "" to None.
    pub metrics_listen: std::option::Option<SocketAddr>,

    /// Log line format; levels come from `RUST_LOG` (default `info`).
    #[arg(long, env = "OVN_PEERD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Pool of IPv4 interconnect links allocated when a peering names no addresses.
    #[arg(long, env = "OVN_PEERD_LINK_POOL", default_value = links::DEFAULT_V4_POOL)]
    pub link_pool: Ipv4Net,

    /// Prefix length of each allocated IPv4 link.
    #[arg(long, env = "OVN_PEERD_LINK_PREFIX_LEN", default_value_t = links::DEFAULT_V4_LINK_PREFIX)]
    pub link_prefix_len: u8,

    /// Pool of IPv6 interconnect links (/126 each), used for IPv6 peerings.
    #[arg(long, env = "OVN_PEERD_LINK_POOL_V6", default_value = links::DEFAULT_V6_POOL)]
    pub link_pool_v6: Ipv6Net,

    /// VPCs that can never be peered (the platform's default router). Repeatable.
    #[arg(
        long = "protected-vpc",
        env = "OVN_PEERD_PROTECTED_VPCS",
        value_delimiter = ',',
        default_value = "ovn-cluster"
    )]
    pub protected_vpcs: Vec<String>,

    /// Period of the worker's full pass, on top of event-driven runs (`30s`, `5m`; at least 1s).
    /// `--resync-interval-secs` is the old spelling, still accepted.
    #[arg(
        long,
        env = "OVN_PEERD_RESYNC_INTERVAL",
        default_value = "5m",
        value_parser = parse_duration,
        alias = "resync-interval-secs"
    )]
    pub resync_interval: Duration,

    /// Run the convergence worker (when this replica holds the writer lock).
    #[arg(long, env = "OVN_PEERD_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub worker: bool,

    /// Serve gRPC over TLS with this certificate chain (PEM); re-read when it changes.
    #[arg(long, env = "OVN_PEERD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM); re-read when it changes.
    #[arg(long, env = "OVN_PEERD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by these CAs (PEM): mTLS; callers are identified by
    /// their certificate's first URI SAN, else first DNS SAN, else subject CN.
    #[arg(long, env = "OVN_PEERD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Allow plaintext gRPC on a non-loopback `--listen` address (logged as a warning).
    #[arg(long, env = "OVN_PEERD_ALLOW_INSECURE")]
    pub allow_insecure: bool,

    /// Authorization policy (TOML: admins, tenants with identities and VPC globs); needs
    /// `--tls-client-ca`. Re-read when it changes. Without it every caller is an admin.
    #[arg(long, env = "OVN_PEERD_AUTHZ_POLICY")]
    pub authz_policy: Option<PathBuf>,

    /// A second listener serving only `grpc.health.v1` in plaintext, without client
    /// certificates, for probes (Kubernetes' gRPC probe speaks no TLS); empty disables.
    #[arg(long, env = "OVN_PEERD_HEALTH_LISTEN", default_value = "", value_parser = parse_optional_addr)]
    pub health_listen: std::option::Option<SocketAddr>,

    /// PeeringService calls that may run at once; more are refused at once, on their headers
    /// (their messages unread), with RESOURCE_EXHAUSTED (load shedding). Health, reflection
    /// and WatchPeerings (`--watch-max-streams`) are not counted.
    #[arg(long, env = "OVN_PEERD_MAX_IN_FLIGHT", default_value_t = crate::api::DEFAULT_MAX_IN_FLIGHT, value_parser = parse_max_in_flight)]
    pub max_in_flight: usize,

    /// The longest a PeeringService call runs (`10s`, `1m`); a client's shorter deadline
    /// (`grpc-timeout`) is honoured. Past it the call's work stops: DEADLINE_EXCEEDED.
    #[arg(
        long,
        env = "OVN_PEERD_RPC_TIMEOUT",
        default_value = crate::api::DEFAULT_RPC_TIMEOUT,
        value_parser = parse_duration
    )]
    pub rpc_timeout: Duration,

    /// How long a cross-tenant request (STATE_PENDING_ACCEPTANCE) waits for the remote VPC's
    /// tenant before it becomes STATE_EXPIRED (`7d`, `12h`; at least 1s).
    #[arg(
        long,
        env = "OVN_PEERD_ACCEPTANCE_TTL",
        default_value = "7d",
        value_parser = parse_duration
    )]
    pub acceptance_ttl: Duration,

    /// Let a worker pass delete more than half of this deployment's NB rows (more than 10).
    /// Without it such a pass deletes nothing and waits (the mass-deletion brake).
    #[arg(long, env = "OVN_PEERD_ALLOW_MASS_DELETION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_mass_deletion: bool,

    /// WatchPeerings' limits.
    #[command(flatten)]
    pub watch: WatchFlags,

    /// Not a flag: the hub bound of the API's and the worker's reads
    /// ([`crate::store::FULL_READ_BELOW`]). Tests lower it (0: every VPC is a hub) to run
    /// the conflict probe's path through the served API.
    #[arg(skip = crate::store::FULL_READ_BELOW)]
    pub full_read_below: usize,
}

/// WatchPeerings' flags (see README, "Watching peerings").
#[derive(Debug, Clone, clap::Args)]
pub struct WatchFlags {
    /// WatchPeerings streams open at once on this replica; more are RESOURCE_EXHAUSTED.
    #[arg(
        long = "watch-max-streams",
        env = "OVN_PEERD_WATCH_MAX_STREAMS",
        default_value_t = 1000
    )]
    pub max_streams: usize,

    /// WatchPeerings streams one caller (its identity; without one, its address) may have
    /// open at once on this replica; more are RESOURCE_EXHAUSTED.
    #[arg(
        long = "watch-max-streams-per-caller",
        env = "OVN_PEERD_WATCH_MAX_STREAMS_PER_CALLER",
        default_value_t = 100
    )]
    pub max_streams_per_caller: usize,

    /// How long a stream's client may not read during its initial list or a catch-up before
    /// the stream is ended (ABORTED).
    #[arg(long = "watch-stall-timeout", env = "OVN_PEERD_WATCH_STALL_TIMEOUT",
          default_value = "30s", value_parser = parse_duration)]
    pub stall_timeout: Duration,

    /// How often a filtered stream whose position moved past changes it does not show sends
    /// an EVENT_TYPE_BOOKMARK (its token keeps up with the log).
    #[arg(long = "watch-bookmark-interval", env = "OVN_PEERD_WATCH_BOOKMARK_INTERVAL",
          default_value = "30s", value_parser = parse_duration)]
    pub bookmark_interval: Duration,

    /// Streams end after about this long (±10%, ABORTED), to be resumed with their token
    /// under the caller's current authorization.
    #[arg(long = "watch-max-age", env = "OVN_PEERD_WATCH_MAX_AGE", default_value = "30m",
          value_parser = parse_duration)]
    pub max_age: Duration,

    /// Changes each replica keeps in memory for its watchers; a watcher whose client stops
    /// reading for longer than that many changes is ended (ABORTED) and resumes with its token.
    #[arg(long = "watch-buffer", env = "OVN_PEERD_WATCH_BUFFER", default_value_t = 4096,
          value_parser = parse_positive)]
    pub buffer: usize,

    /// How long the change log keeps changes (`1h`, `30m`): resume tokens older than that
    /// may be OUT_OF_RANGE.
    #[arg(long = "watch-retention", env = "OVN_PEERD_WATCH_RETENTION", default_value = "1h",
          value_parser = parse_duration)]
    pub retention: Duration,

    /// The most changes the change log keeps, whatever their age.
    #[arg(long = "watch-retention-changes", env = "OVN_PEERD_WATCH_RETENTION_CHANGES",
          default_value_t = 100_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub retention_changes: i64,
}

impl Default for WatchFlags {
    fn default() -> Self {
        let d = crate::watch::WatchSettings::default();
        WatchFlags {
            max_streams: d.max_streams,
            max_streams_per_caller: d.max_streams_per_caller,
            stall_timeout: d.stall_timeout,
            bookmark_interval: d.bookmark_interval,
            max_age: d.max_age,
            buffer: d.buffer,
            retention: d.retention,
            retention_changes: d.retention_changes,
        }
    }
}

impl WatchFlags {
    /// The settings they stand for.
    pub fn settings(&self) -> crate::watch::WatchSettings {
        crate::watch::WatchSettings {
            max_streams: self.max_streams,
            max_streams_per_caller: self.max_streams_per_caller,
            stall_timeout: self.stall_timeout,
            bookmark_interval: self.bookmark_interval,
            max_age: self.max_age,
            buffer: self.buffer,
            retention: self.retention,
            retention_changes: self.retention_changes,
        }
    }
}

/// `--max-in-flight`: a positive count.
fn parse_max_in_flight(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a count: {e}")),
    }
}

/// How the gRPC API is served, as the flags ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Plaintext; `warning` is set when that is on a non-loopback address (allowed with
    /// `--allow-insecure`).
    Plaintext {
        /// What to log at start.
        warning: Option<String>,
    },
    /// TLS (with client certificates when `client_ca` is set).
    Tls(crate::auth::tls::TlsFiles),
}

impl Config {
    /// Checks the TLS, plaintext and policy flags together: a clear start-up error for any
    /// combination that would serve less securely than it seems to.
    pub fn transport(&self) -> Result<Transport, String> {
        if self.authz_policy.is_some() && self.tls_client_ca.is_none() {
            return Err(
                "--authz-policy needs --tls-client-ca: callers are identified by their client certificates"
                    .into(),
            );
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Transport::Tls(crate::auth::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            })),
            (Some(_), None) => Err("--tls-cert needs --tls-key".into()),
            (None, Some(_)) => Err("--tls-key needs --tls-cert".into()),
            (None, None) if self.tls_client_ca.is_some() => {
                Err("--tls-client-ca needs --tls-cert and --tls-key".into())
            }
            (None, None) if self.listen.ip().is_loopback() => {
                Ok(Transport::Plaintext { warning: None })
            }
            (None, None) if self.allow_insecure => Ok(Transport::Plaintext {
                warning: Some(format!(
                    "serving plaintext gRPC without authentication on {} (--allow-insecure): \
                     anyone who reaches it can peer any VPCs",
                    self.listen
                )),
            }),
            (None, None) => Err(format!(
                "refusing to serve plaintext gRPC on the non-loopback address {}: \
                 give --tls-cert and --tls-key (and --tls-client-ca), or --allow-insecure",
                self.listen
            )),
        }
    }
}

impl Config {
    /// The TLS files for the NB remotes: `None` without `ssl:` remotes (the files are then
    /// ignored), an error naming the missing flag when an `ssl:` remote lacks one. Whether the
    /// files exist and are valid is checked at every connection (they may appear or be
    /// rotated later), not here.
    pub fn nb_tls(&self) -> Result<Option<TlsFiles>, String> {
        let remotes =
            Remote::parse_list(&self.ovn_nb_db).map_err(|e| format!("invalid --ovn-nb-db: {e}"))?;
        let Some(ssl) = remotes.iter().find(|r| r.is_ssl()) else {
            return Ok(None);
        };
        let need = |v: &Option<PathBuf>, flag: &str, env: &str| {
            v.clone().ok_or_else(|| {
                format!("--ovn-nb-db names an ssl: remote ({ssl}) but {flag} ({env}) is not set")
            })
        };
        Ok(Some(TlsFiles {
            private_key: need(
                &self.ovn_nb_private_key,
                "--ovn-nb-private-key",
                "OVN_NB_PRIVATE_KEY",
            )?,
            certificate: need(
                &self.ovn_nb_certificate,
                "--ovn-nb-certificate",
                "OVN_NB_CERTIFICATE",
            )?,
            ca_cert: need(&self.ovn_nb_ca_cert, "--ovn-nb-ca-cert", "OVN_NB_CA_CERT")?,
        }))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A Postgres URL whose `Debug` and `Display` replace the password (in the user info or a
/// `password=` parameter) with `***`. [`DatabaseUrl::expose`] gives the real one, for
/// connecting only.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL with its password, to hand to the driver. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for DatabaseUrl {
    fn from(s: &str) -> Self {
        DatabaseUrl(s.to_owned())
    }
}

impl From<String> for DatabaseUrl {
    fn from(s: String) -> Self {
        DatabaseUrl(s)
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(s.into())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", redact_url(&self.0))
    }
}

/// `scheme://user:***@host/db?password=***`. Anything that does not look like a URL is
/// hidden whole: better an unhelpful log line than a leaked password.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => format!("{user_info}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// A humantime duration (`30s`, `5m`, `1h 30m`) of at least one second; a bare number is
/// seconds (how durations were written before).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(s.parse().map_err(|e| format!("{e}"))?)
    } else {
        humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 30s, 5m)"))?
    };
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

/// [`parse_duration`], or `0`: disabled.
fn parse_probe_interval(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "0" | "0s" => Ok(Duration::ZERO),
        other => parse_duration(other),
    }
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("must be a positive whole number".into()),
    }
}

fn parse_optional_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    if s.is_empty() || s == "off" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|e| format!("{e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::try_parse_from(["ovn-peerd", "--database-url", "postgres://x/y"]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.protected_vpcs, vec!["ovn-cluster".to_string()]);
        assert_eq!(c.metrics_listen.unwrap().port(), 9150);
        let c = Config::try_parse_from([
            "ovn-peerd",
            "--database-url=postgres://x/y",
            "--metrics-listen=",
            "--protected-vpc=a",
            "--protected-vpc=b",
            "--log-format=json",
        ])
        .unwrap();
        assert!(c.metrics_listen.is_none());
        assert_eq!(c.protected_vpcs, vec!["a", "b"]);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn secure_by_default() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["ovn-peerd", "--database-url=postgres://x/y"];
            argv.extend_from_slice(args);
            Config::try_parse_from(argv).unwrap().transport()
        };
        assert_eq!(parse(&[]), Ok(Transport::Plaintext { warning: None }));
        assert_eq!(
            parse(&["--listen=[::1]:1"]),
            Ok(Transport::Plaintext { warning: None })
        );
        let e = parse(&["--listen=0.0.0.0:50051"]).unwrap_err();
        assert!(
            e.contains("0.0.0.0:50051") && e.contains("--allow-insecure"),
            "{e}"
        );
        match parse(&["--listen=0.0.0.0:50051", "--allow-insecure"]) {
            Ok(Transport::Plaintext { warning: Some(w) }) => assert!(w.contains("0.0.0.0")),
            other => panic!("{other:?}"),
        }
        match parse(&["--listen=0.0.0.0:1", "--tls-cert=c", "--tls-key=k"]) {
            Ok(Transport::Tls(f)) => assert!(f.client_ca.is_none()),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["--tls-cert=c"]).unwrap_err().contains("--tls-key"));
        assert!(parse(&["--tls-client-ca=ca"]).is_err());
        let e = parse(&["--tls-cert=c", "--tls-key=k", "--authz-policy=p"]).unwrap_err();
        assert!(e.contains("--tls-client-ca"), "{e}");
        assert!(parse(&[
            "--tls-cert=c",
            "--tls-key=k",
            "--tls-client-ca=ca",
            "--authz-policy=p"
        ])
        .is_ok());
    }

    #[test]
    fn durations_take_units_and_bare_seconds() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["ovn-peerd", "--database-url=postgres://x/y"];
            argv.extend_from_slice(args);
            Config::try_parse_from(argv).map(|c| c.resync_interval)
        };
        assert_eq!(parse(&[]).unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse(&["--resync-interval=30s"]).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            parse(&["--resync-interval", "1h 30m"]).unwrap(),
            Duration::from_secs(5400)
        );
        // The old flag and a bare number (the old env var's form) still work.
        assert_eq!(
            parse(&["--resync-interval-secs=45"]).unwrap(),
            Duration::from_secs(45)
        );
        assert!(parse(&["--resync-interval=500ms"]).is_err());
        assert!(parse(&["--resync-interval=soon"]).is_err());
    }

    #[test]
    fn nb_probe_and_silence_take_durations_and_zero_disables_the_probe() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["ovn-peerd", "--database-url=postgres://x/y"];
            argv.extend_from_slice(args);
            Config::try_parse_from(argv).map(|c| (c.ovn_nb_probe_interval, c.ovn_nb_max_silence))
        };
        let s = Duration::from_secs;
        assert_eq!(parse(&[]).unwrap(), (s(5), s(60)));
        assert_eq!(
            parse(&["--ovn-nb-probe-interval=0", "--ovn-nb-max-silence=3m"]).unwrap(),
            (Duration::ZERO, s(180))
        );
        assert!(parse(&["--ovn-nb-max-silence=0s"]).is_err());
        assert!(parse(&["--ovn-nb-probe-interval=200ms"]).is_err());
    }

    #[test]
    fn the_acceptance_ttl_defaults_to_seven_days() {
        let ttl = |args: &[&str]| {
            let mut argv = vec!["ovn-peerd", "--database-url=postgres://x/y"];
            argv.extend_from_slice(args);
            Config::try_parse_from(argv).map(|c| c.acceptance_ttl)
        };
        assert_eq!(ttl(&[]).unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(
            ttl(&["--acceptance-ttl=12h"]).unwrap(),
            Duration::from_secs(12 * 3600)
        );
        assert!(ttl(&["--acceptance-ttl=0s"]).is_err());
    }

    #[test]
    fn the_password_never_shows_in_debug_or_display() {
        for (url, shown) in [
            (
                "postgres://peerd:s3cr3t-pw@db.example:5432/ovn_peerd",
                "postgres://peerd:***@db.example:5432/ovn_peerd",
            ),
            (
                "postgres://peerd@db/ovn_peerd?sslmode=require&password=s3cr3t-pw",
                "postgres://peerd@db/ovn_peerd?sslmode=require&password=***",
            ),
            ("postgres://u:s3cr3t-pw@h", "postgres://u:***@h"),
            ("host=db password=s3cr3t-pw", "***"),
        ] {
            let c = Config::try_parse_from(["ovn-peerd", "--database-url", url]).unwrap();
            assert_eq!(c.database_url.expose(), url);
            assert_eq!(c.database_url.to_string(), shown);
            for text in [
                format!("{c:?}"),
                format!("{c:#?}"),
                c.database_url.to_string(),
            ] {
                assert!(!text.contains("s3cr3t"), "{text}");
            }
            assert!(format!("{c:?}").contains(shown), "{c:?}");
        }
    }

    #[test]
    fn ssl_remotes_need_all_three_files() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["ovn-peerd", "--database-url=postgres://x/y"];
            argv.extend_from_slice(args);
            Config::try_parse_from(argv).unwrap().nb_tls()
        };
        let files = [
            "--ovn-nb-private-key=/k.pem",
            "--ovn-nb-certificate=/c.pem",
            "--ovn-nb-ca-cert=/ca.pem",
        ];
        // No ssl: remote: no TLS, whatever files are given.
        assert_eq!(parse(&["--ovn-nb-db=tcp:127.0.0.1:6641"]), Ok(None));
        assert_eq!(parse(&files), Ok(None));
        let mut all = vec!["--ovn-nb-db=tcp:10.0.0.1:6641,ssl:10.0.0.2:6641"];
        all.extend_from_slice(&files);
        assert_eq!(
            parse(&all),
            Ok(Some(TlsFiles {
                private_key: "/k.pem".into(),
                certificate: "/c.pem".into(),
                ca_cert: "/ca.pem".into(),
            }))
        );
        // Each missing file is named by its flag and its variable.
        for (i, (flag, env)) in [
            ("--ovn-nb-private-key", "OVN_NB_PRIVATE_KEY"),
            ("--ovn-nb-certificate", "OVN_NB_CERTIFICATE"),
            ("--ovn-nb-ca-cert", "OVN_NB_CA_CERT"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut args = vec!["--ovn-nb-db=ssl:10.0.0.2:6641"];
            args.extend(
                files
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, f)| *f),
            );
            let err = parse(&args).unwrap_err();
            assert!(err.contains(flag) && err.contains(env), "{err}");
            assert!(err.contains("ssl:10.0.0.2:6641"), "{err}");
        }
    }

    #[test]
    fn missing_database_url_is_an_error() {
        // Without its env fallback rather than by removing DATABASE_URL from the process's
        // environment, which other tests running in parallel threads read.
        let err = Config::command()
            .mut_arg("database_url", |a| a.env(None::<&str>))
            .try_get_matches_from(["ovn-peerd"])
            .expect_err("parsed without a database URL");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }
}
