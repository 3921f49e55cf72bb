//! README.md's "Walk-through with grpcurl", run as written: every command of its `sh` block
//! against an in-process ovn-peerd (worker running) and its NB, set up as `scripts/run` sets up
//! the sandbox (two demo VPCs). Needs the grpcurl binary; skips, saying so, without it.
//!
//! `export`/`eval` lines set up an operator's shell and are skipped: the test provides what they
//! would (grpcurl on PATH, `OVN_NB_DB`); `127.0.0.1:50051` (and `$ADDR`, if the block uses it)
//! become the test server's address.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ovn_peerd::proto::v1::GetPeeringRequest;
use tonic::Code;

use crate::support::peerd::{Options, TestPeerd};
use crate::support::process::grpcurl;

const README: &str = include_str!("../../README.md");
const HEADING: &str = "## Walk-through with grpcurl";
const DEFAULT_ADDR: &str = "127.0.0.1:50051";
const CONVERGE_WITHIN: Duration = Duration::from_secs(20);

/// The commands of the first `sh` block under [`HEADING`], continuation lines joined, with
/// blank and comment lines dropped.
fn walkthrough_commands(readme: &str) -> Vec<String> {
    let section = readme
        .split_once(HEADING)
        .unwrap_or_else(|| panic!("README.md has no {HEADING:?} section"))
        .1;
    let block = section
        .split_once("```sh\n")
        .expect("the walk-through has a ```sh block")
        .1;
    let block = block.split_once("\n```").expect("the ```sh block ends").0;
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let (text, continued) = match line.trim_end().strip_suffix('\\') {
            Some(head) => (head, true),
            None => (line.trim_end(), false),
        };
        current.push_str(text.trim());
        if continued {
            current.push(' ');
            continue;
        }
        let command = std::mem::take(&mut current);
        let command = command.trim();
        if !command.is_empty() && !command.starts_with('#') {
            commands.push(command.to_string());
        }
    }
    assert!(current.trim().is_empty(), "the block ends in a `\\`");
    commands
}

/// What the walk-through's environment lines are for: the test provides it instead.
fn is_environment(command: &str) -> bool {
    command.starts_with("export ") || command.starts_with("eval ")
}

struct Shell {
    addr: String,
    nb_remote: String,
    path: String,
}

impl Shell {
    fn output(&self, command: &str) -> (std::process::Output, String) {
        let command = command.replace(DEFAULT_ADDR, &self.addr);
        let out = Command::new("sh")
            .args(["-c", &command])
            .env("PATH", &self.path)
            .env("ADDR", &self.addr)
            .env("OVN_NB_DB", &self.nb_remote)
            .output()
            .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out, stdout)
    }

    /// Runs a streaming command bounded by grpcurl's `-max-time`: its stdout, whether it ended
    /// at that deadline (DEADLINE_EXCEEDED) or not.
    fn run_stream(&self, command: &str) -> String {
        let (out, stdout) = self.output(command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("DeadlineExceeded"),
            "walk-through command failed ({}): {command}\nstdout: {stdout}\nstderr: {stderr}",
            out.status,
        );
        stdout
    }

    /// Runs one walk-through command with `sh -c`; its stdout, or a panic with its account.
    fn run(&self, command: &str) -> String {
        let (out, stdout) = self.output(command);
        assert!(
            out.status.success(),
            "walk-through command failed ({}): {command}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

#[test]
fn the_walkthrough_block_parses() {
    let commands = walkthrough_commands(README);
    let method = |m: &str| commands.iter().any(|c| c.contains(m));
    for m in [
        "PeeringService/CreatePeering",
        "PeeringService/GetPeering",
        "PeeringService/UpdatePeering",
        "PeeringService/DiagnosePeering",
        "PeeringService/DeletePeering",
        "PeeringService/WatchPeerings",
    ] {
        assert!(
            method(m),
            "the walk-through no longer calls {m}: {commands:#?}"
        );
    }
    assert!(commands.iter().all(|c| !c.ends_with('\\')), "{commands:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_works_as_written() {
    let Some(grpcurl) = grpcurl() else {
        eprintln!("walkthrough: skipped: grpcurl not installed (scripts/install-deps installs it)");
        return;
    };
    let started = Instant::now();
    let t = TestPeerd::start_with(Options {
        worker: true,
        ..Options::default()
    })
    .await;
    // The demo VPCs of scripts/run.
    for (vpc, gateway, mac) in [
        ("vpc-1", "10.1.0.1/24", "0a:00:00:01:00:01"),
        ("vpc-2", "10.2.0.1/24", "0a:00:00:02:00:01"),
    ] {
        t.nb.nbctl(&["--may-exist", "lr-add", vpc]);
        let port = format!("{vpc}-subnet");
        t.nb.nbctl(&["--may-exist", "lrp-add", vpc, &port, mac, gateway]);
    }
    let tools = grpcurl.parent().unwrap_or(Path::new("/"));
    let path = std::env::join_paths(std::iter::once(tools.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH");
    let shell = Shell {
        addr: t.addr.to_string(),
        nb_remote: t.nb.remote(),
        path: path.to_string_lossy().into_owned(),
    };
    let mut api = t.client().await;

    let commands = walkthrough_commands(README);
    let mut ran = Vec::new();
    for command in &commands {
        if is_environment(command) {
            continue;
        }
        if command.contains("PeeringService/WatchPeerings") {
            // The stream lists demo (ACTIVE by now) and SYNCED, then runs until -max-time.
            let out = shell.run_stream(command);
            assert!(
                out.contains("EVENT_TYPE_SYNCED") && out.contains("\"demo\""),
                "{command}:\n{out}"
            );
            ran.push(command.clone());
            continue;
        }
        let out = shell.run(command);
        if command.contains("PeeringService/DeletePeering") {
            assert!(out.contains("STATE_DELETING"), "{command}:\n{out}");
            let deadline = Instant::now() + CONVERGE_WITHIN;
            loop {
                match api
                    .get_peering(GetPeeringRequest {
                        name: "demo".into(),
                    })
                    .await
                {
                    Err(e) if e.code() == Code::NotFound => break,
                    other => assert!(
                        Instant::now() < deadline,
                        "demo not gone after {CONVERGE_WITHIN:?}: {other:?}"
                    ),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let ports = t.nb.nbctl(&["lrp-list", "vpc-1"]);
            assert!(!ports.contains("vpc-1-vpc-2"), "peer port left: {ports}");
        } else if command.contains("PeeringService/UpdatePeering") {
            // Routes changed in place: a new generation, the explicit halves, the label.
            assert!(
                out.contains("10.2.0.128/25")
                    && out.contains("\"generation\": \"2\"")
                    && out.contains("\"team\": \"net\""),
                "{command}:\n{out}"
            );
        } else if command.ends_with(" list") {
            assert!(
                out.contains("ovnpeerd.v1.PeeringService"),
                "{command}:\n{out}"
            );
        } else if command.contains("PeeringService/CreatePeering") {
            assert!(out.contains("\"demo\""), "{command}:\n{out}");
        } else if command.contains("PeeringService/GetPeering") {
            // The worker converges in the background: an operator re-runs this until ACTIVE.
            let deadline = Instant::now() + CONVERGE_WITHIN;
            let mut out = out;
            while !out.contains("STATE_ACTIVE") {
                assert!(
                    Instant::now() < deadline,
                    "not ACTIVE after {CONVERGE_WITHIN:?}: {command}:\n{out}"
                );
                assert!(!out.contains("STATE_FAILED"), "{command}:\n{out}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                out = shell.run(command);
            }
        } else if command.contains("PeeringService/ListRoutes") {
            assert!(
                out.contains("10.2.0.0/24") && out.contains("demo"),
                "{command}:\n{out}"
            );
        } else if command.contains("PeeringService/DiagnosePeering") {
            // The peering is ACTIVE (GetPeering waited for it): every check passes.
            assert!(
                out.contains("SEVERITY_OK")
                    && !out.contains("SEVERITY_WARNING")
                    && !out.contains("SEVERITY_ERROR"),
                "{command}:\n{out}"
            );
        } else if command.starts_with("ovn-nbctl") && command.contains(" show") {
            assert!(out.contains("vpc-1-vpc-2"), "{command}:\n{out}");
        } else if command.contains("grpc.health.v1.Health/Check") {
            // `NOT_SERVING` contains "SERVING": compare the parsed status.
            let reply: serde_json::Value = serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("{command}: not JSON ({e}):\n{out}"));
            assert_eq!(reply["status"], "SERVING", "{command}:\n{out}");
        }
        ran.push(command.clone());
    }
    assert!(
        ran.iter().any(|c| c.contains("DeletePeering")),
        "the walk-through ran no DeletePeering: {ran:#?}"
    );
    eprintln!(
        "walkthrough: {} commands in {:.1?}",
        ran.len(),
        started.elapsed()
    );
}
