//! Fixtures of the `peering` bench that exist only for the bench: a raw OVSDB client (no
//! ovn-peerd code) and the independent NB monitor on it, the VPC seed and baseline rows,
//! `/proc` readings, statistics and `/metrics` scraping. The processes themselves (Postgres,
//! `ovsdb-server`, children that die with the bench) come from the `ovn-peerd-test-support`
//! crate (`tests/support/`), shared with the integration tests.

pub mod monitor;
pub mod nb;
pub mod proc;
pub mod raw;

use std::time::Duration;

pub use ovn_peerd_test_support::free_port;

/// Latency summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    pub fn of(samples: &[Duration]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        Summary {
            n: v.len(),
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            max_ms: v[v.len() - 1],
            mean_ms: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

/// The sum of every sample of a Prometheus metric (all label sets) in a text exposition.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// Like [`metric_sum`] but only samples whose labels contain `label` (e.g. `result="ok"`).
pub fn metric_sum_with(exposition: &str, name: &str, label: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// `GET /metrics` over plain HTTP/1.0; `None` while nothing listens.
pub async fn scrape(addr: std::net::SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some(body)
}
