//! The footprint of the bench's child processes, from `/proc` (the children themselves are
//! `ovn_peerd_test_support::process::Owned`).

use std::path::Path;

pub use ovn_peerd_test_support::process::Owned;

/// RSS and CPU time of a live process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Footprint {
    pub rss_mb: f64,
    pub hwm_rss_mb: f64,
    pub cpu_s: f64,
}

/// Reads `/proc/<pid>/status` (VmRSS, VmHWM) and `/proc/<pid>/stat` (utime + stime).
pub fn footprint(pid: u32) -> Footprint {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Footprint {
        rss_mb: kb("VmRSS:") / 1024.0,
        hwm_rss_mb: kb("VmHWM:") / 1024.0,
        cpu_s: cpu_seconds(pid),
    }
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Size of a file in bytes (0 when missing).
pub fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// utime + stime of `pid` and its direct children (Postgres: the postmaster and its backends;
/// backends that exited meanwhile are missed, ours live as long as their pool).
pub fn cpu_tree_seconds(pid: u32) -> f64 {
    let mut total = cpu_seconds(pid);
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if ppid == Some(pid) {
                total += cpu_seconds(child);
            }
        }
    }
    total
}

/// CPU seconds used so far by each process of a phase.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct CpuSplit {
    pub ovn_peerd: f64,
    pub postgres: f64,
    pub ovsdb_server: f64,
    pub bench: f64,
    pub wall: f64,
}

impl CpuSplit {
    pub fn now(peerd: u32, postmaster: u32, nb: u32, since: std::time::Instant) -> CpuSplit {
        CpuSplit {
            ovn_peerd: cpu_seconds(peerd),
            postgres: cpu_tree_seconds(postmaster),
            ovsdb_server: cpu_seconds(nb),
            bench: cpu_seconds(std::process::id()),
            wall: since.elapsed().as_secs_f64(),
        }
    }

    pub fn minus(self, o: CpuSplit) -> CpuSplit {
        CpuSplit {
            ovn_peerd: self.ovn_peerd - o.ovn_peerd,
            postgres: self.postgres - o.postgres,
            ovsdb_server: self.ovsdb_server - o.ovsdb_server,
            bench: self.bench - o.bench,
            wall: self.wall - o.wall,
        }
    }
}
