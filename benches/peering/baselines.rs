//! Phase (2): the baselines, each on an identical fresh NB and to the same end point (the
//! monitor saw every row): an `ovn-nbctl` process per peering, one `ovn-nbctl` daemon, and all
//! rows in one OVSDB transaction (the NB floor), sent over a raw socket with JSON written by
//! hand (`support::raw`, `nb::Peering::ops`), so neither the floor nor the clock (the raw
//! monitor) goes through ovn-peerd's OVSDB client.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::peerd::{sample_pair, CONVERGE_TIMEOUT};
use crate::support::monitor::Monitor;
use crate::support::nb::{self, NbServer};
use crate::support::proc::Owned;
use crate::support::Summary;

#[derive(Debug, Default, serde::Serialize)]
pub struct BaselineResults {
    pub name: &'static str,
    pub peerings: usize,
    pub converged_s: f64,
    pub converged_per_s: f64,
    /// One peering at a time: write issued → monitor saw its four rows.
    pub low_load_end_to_end: Summary,
    /// CPU seconds of the raw monitor's reader thread over the whole baseline (what the clock
    /// costs the machine).
    pub monitor_cpu_s: f64,
}

enum Writer {
    /// A process per peering (`--db=`), or through the daemon (`OVN_NB_DAEMON`).
    Nbctl {
        db: Option<String>,
        daemon: Option<String>,
    },
    /// A raw OVSDB connection (`support::raw`): the floor carries none of our client's cost.
    Txn(crate::support::raw::RawConn),
}

impl Writer {
    async fn write(&self, ps: &[nb::Peering]) {
        match self {
            Writer::Nbctl { db, daemon } => {
                for p in ps {
                    let mut cmd = tokio::process::Command::new("ovn-nbctl");
                    if let Some(db) = db {
                        cmd.arg(format!("--db={db}"));
                    }
                    if let Some(d) = daemon {
                        cmd.env("OVN_NB_DAEMON", d);
                    }
                    let out = cmd.args(p.nbctl_args()).output().await.expect("ovn-nbctl");
                    assert!(
                        out.status.success(),
                        "ovn-nbctl failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            Writer::Txn(client) => {
                let mut ops = Vec::with_capacity(ps.len() * 6);
                for p in ps {
                    p.ops(&mut ops);
                }
                client.transact(ops).await.expect("one transaction");
            }
        }
    }
}

pub async fn run(
    args: &Args,
    root: &Path,
    name: &'static str,
    peerings: usize,
    samples: usize,
) -> BaselineResults {
    let dir = root.join(name);
    let nbs = NbServer::start_in(&dir);
    let monitor = Monitor::start(&nbs.remote()).await;
    nb::seed_vpcs(&monitor.client, 2 * args.n + 2 * args.samples).await;
    let mut _daemon: Option<Owned> = None;
    let writer = match name {
        "nbctl-process" => Writer::Nbctl {
            db: Some(nbs.remote()),
            daemon: None,
        },
        "nbctl-daemon" => {
            let (guard, socket) = start_nbctl_daemon(&dir, &nbs.remote());
            _daemon = Some(guard);
            Writer::Nbctl {
                db: None,
                daemon: Some(socket),
            }
        }
        _ => Writer::Txn(nb::client(&nbs.remote()).await),
    };
    let writer = Arc::new(writer);
    println!("[{name}] bulk: {peerings} peerings");
    let all: Vec<nb::Peering> = (0..peerings)
        .map(|k| nb::Peering {
            a: 2 * k + 1,
            b: 2 * k + 2,
            link: k,
        })
        .collect();
    let t0 = Instant::now();
    if let Writer::Txn(_) = &*writer {
        writer.write(&all).await;
    } else {
        // C concurrent writers, like the C gRPC clients.
        let all = Arc::new(all);
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..args.c {
            let (all, next, writer) = (all.clone(), next.clone(), writer.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= all.len() {
                        return;
                    }
                    writer.write(std::slice::from_ref(&all[k])).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let seen = monitor
        .wait_counts(2 * peerings, 2 * peerings, CONVERGE_TIMEOUT)
        .await;
    let converged = seen - t0;
    println!(
        "[{name}] bulk converged in {:.3} s ({:.0}/s)",
        converged.as_secs_f64(),
        peerings as f64 / converged.as_secs_f64()
    );

    let mut e2e = Vec::new();
    for j in 0..samples {
        tokio::time::sleep(args.gap).await;
        let (a, b) = sample_pair(args.n, j);
        let p = nb::Peering {
            a,
            b,
            link: args.n + j,
        };
        let c = monitor.counts();
        let t = Instant::now();
        writer.write(std::slice::from_ref(&p)).await;
        let seen = monitor
            .wait_counts(c.peer_ports + 2, c.routes + 2, Duration::from_secs(30))
            .await;
        e2e.push(seen - t);
    }
    BaselineResults {
        name,
        peerings,
        converged_s: converged.as_secs_f64(),
        converged_per_s: peerings as f64 / converged.as_secs_f64(),
        low_load_end_to_end: Summary::of(&e2e),
        monitor_cpu_s: monitor.cpu_s(),
    }
}

/// `ovn-nbctl --detach`: prints its control socket; we kill it by the pid in its pidfile.
fn start_nbctl_daemon(dir: &Path, remote: &str) -> (Owned, String) {
    let pidfile = dir.join("nbctl.pid");
    let out = Command::new("ovn-nbctl")
        .arg(format!("--db={remote}"))
        .arg("--detach")
        .arg("--no-chdir")
        .arg(format!("--pidfile={}", pidfile.display()))
        .arg(format!("--log-file={}", dir.join("nbctl.log").display()))
        .arg(format!("--unixctl={}", dir.join("nbctl.ctl").display()))
        .output()
        .expect("ovn-nbctl --detach");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let socket = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("nbctl pidfile")
        .trim()
        .parse()
        .expect("pid");
    // A detached daemon is not our child: hold it through a `kill` on drop.
    (
        Owned::spawn("ovn-nbctl daemon", &mut pid_guard(pid)),
        socket,
    )
}

/// A command whose child, once dropped (SIGKILL), leaves `pid` to die too: the shell's own
/// child `sleep` notices nothing, so the shell polls `pid` and is the one we kill; the TERM trap
/// covers a clean stop. A SIGKILLed bench leaves the daemon behind (it detached: no
/// parent-death signal reaches it).
fn pid_guard(pid: u32) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "trap 'kill {pid}; exit 0' TERM; while kill -0 {pid} 2>/dev/null; do sleep 1; done"
    ));
    cmd
}
