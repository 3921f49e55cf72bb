//! Command line and environment configuration.
//!
//! Every flag has an environment fallback so the same binary runs from a shell,
//! systemd or docker-compose. Nothing here opens a connection.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::{Ipv4Net, Ipv6Net};

/// `ovn-peerd`: VPC peering as a gRPC API for OVN. With no subcommand it serves.
#[derive(Debug, Clone, Parser)]
#[command(name = "ovn-peerd", version, about)]
pub struct Config {
    /// Address the gRPC API listens on.
    #[arg(long, env = "OVN_PEERD_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Postgres holding the desired peerings, e.g. postgres://user@127.0.0.1:5432/ovn_peerd.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// OVN Northbound database, as `ovn-nbctl --db`: `tcp:IP:PORT`, `unix:PATH`,
    /// or a comma-separated list of them for a Raft cluster.
    #[arg(
        long,
        env = "OVN_NB_DB",
        default_value = "unix:/var/run/ovn/ovnnb_db.sock"
    )]
    pub ovn_nb_db: String,

    /// Prometheus metrics address (serves `/metrics`); empty disables.
    #[arg(long, env = "OVN_PEERD_METRICS_LISTEN", default_value = "127.0.0.1:9150", value_parser = parse_optional_addr)]
    // Spelled out so that clap does not treat it as an optional flag: the
    // value parser itself maps "" to None.
    pub metrics_listen: std::option::Option<SocketAddr>,

    /// Log line format; levels come from `RUST_LOG` (default `info`).
    #[arg(long, env = "OVN_PEERD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Pool of IPv4 interconnect links allocated when a peering names no addresses.
    #[arg(long, env = "OVN_PEERD_LINK_POOL", default_value = "169.254.0.0/16")]
    pub link_pool: Ipv4Net,

    /// Prefix length of each allocated IPv4 link.
    #[arg(long, env = "OVN_PEERD_LINK_PREFIX_LEN", default_value_t = 30)]
    pub link_prefix_len: u8,

    /// Pool of IPv6 interconnect links (/126 each), used for IPv6 peerings.
    #[arg(long, env = "OVN_PEERD_LINK_POOL_V6", default_value = "fd00:a9fe::/64")]
    pub link_pool_v6: Ipv6Net,

    /// VPCs that can never be peered (the platform's default router). Repeatable.
    #[arg(
        long = "protected-vpc",
        env = "OVN_PEERD_PROTECTED_VPCS",
        value_delimiter = ',',
        default_value = "ovn-cluster"
    )]
    pub protected_vpcs: Vec<String>,

    /// Period of the worker's full pass, in seconds, on top of event-driven runs.
    #[arg(long, env = "OVN_PEERD_RESYNC_INTERVAL", default_value_t = 300)]
    pub resync_interval_secs: u64,

    /// Run the convergence worker (when this replica holds the writer lock).
    #[arg(long, env = "OVN_PEERD_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub worker: bool,

    /// Let a worker pass delete more than half of this deployment's NB rows (more than 10).
    /// Without it such a pass deletes nothing and waits (the mass-deletion brake).
    #[arg(long, env = "OVN_PEERD_ALLOW_MASS_DELETION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_mass_deletion: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// The worker's periodic full pass.
    pub fn resync_interval(&self) -> Duration {
        Duration::from_secs(self.resync_interval_secs.max(1))
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
    fn missing_database_url_is_an_error() {
        std::env::remove_var("DATABASE_URL");
        assert!(Config::try_parse_from(["ovn-peerd"]).is_err());
    }
}
