//! A whole OVN per test: central (NB + SB `ovsdb-server`, `ovn-northd`), a chassis with a
//! userspace datapath (`ovs-vswitchd` + `ovn-controller`), and "pods" (network namespaces
//! plugged into `br-int`), following `/shared/ovn-notes.md` §4.
//!
//! Every daemon is a child process owned by its fixture and killed by pid on `Drop`, panic or
//! not; every network namespace is deleted on `Drop`. Names carry this process's pid and a
//! counter so that tests run in parallel, with each other and with `scripts/sandbox`: a chassis
//! runs its `ovs-vswitchd` inside a namespace of its own, so its `br-int` tap and the pods'
//! veth ends never meet another chassis's. A failing test keeps its directory (logs, databases)
//! and prints where it is.
//!
//! The datapath needs root (raw sockets, tap devices, namespaces): tests call
//! [`skip_unless_root`] first. One chassis per central: chassis find each other by encap IP,
//! and here all would have 127.0.0.1.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ovn_peerd_test_support::ovsdb::{self, NB_SCHEMA, SB_SCHEMA, VSWITCH_SCHEMA};
use ovn_peerd_test_support::pki::Pki;
use ovn_peerd_test_support::process::Owned;
pub use ovn_peerd_test_support::skip::skip_unless_root;
pub use ovn_peerd_test_support::wait_until;
use tempfile::TempDir;

/// Names of namespaces this fixture creates: `ovnpd-<pid>-<n>`.
const NETNS_PREFIX: &str = "ovnpd-";
const START_TIMEOUT: Duration = Duration::from_secs(20);

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

fn next_id() -> usize {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Waits for a fixture to come up; panics naming it when it does not.
fn must_wait(what: &str, cond: impl FnMut() -> bool) {
    wait_until(what, START_TIMEOUT, cond).unwrap_or_else(|e| panic!("{e}"));
}

/// Runs a command to completion; Ok(stdout) on success, Err(a readable account) otherwise.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{shown}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{shown}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(mut cmd: Command) -> String {
    run(&mut cmd).unwrap_or_else(|e| panic!("{e}"))
}

fn cmd<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// A daemon this fixture started in the foreground: killed (SIGKILL) and reaped on drop, and
/// by the kernel when the test binary dies.
struct Daemon(Owned);

impl Daemon {
    fn spawn(name: &'static str, mut command: Command) -> Daemon {
        Daemon(Owned::spawn(
            name,
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ))
    }

    /// Panics if the daemon has already exited (a bad flag, a port in use, ...).
    fn check_alive(&mut self, log: &Path) {
        if let Some(status) = self.0.exited() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(10).collect();
            panic!(
                "{} exited early ({status}); last log lines:\n{}",
                self.0.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// A temporary directory kept (and reported) when the test fails.
struct WorkDir(Option<TempDir>);

impl WorkDir {
    fn new(prefix: &str) -> WorkDir {
        // Under /tmp: unix socket paths must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .expect("create a temporary directory");
        WorkDir(Some(dir))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("work dir").path()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.0.take() {
                eprintln!(
                    "test failed: OVN logs and databases kept in {}",
                    dir.keep().display()
                );
            }
        }
    }
}

fn ovsdb_server(dir: &Path, name: &str, schema: &str, ssl: Option<(u16, &Pki)>) -> Daemon {
    ovsdb::create_db(&dir.join(format!("{name}.db")), schema);
    let (remotes, args) = match ssl {
        Some((port, pki)) => (vec![format!("pssl:{port}:127.0.0.1")], pki.server_args()),
        None => (Vec::new(), Vec::new()),
    };
    Daemon(ovsdb::start_server_with(dir, name, &remotes, &args))
}

/// NB and SB `ovsdb-server`s and `ovn-northd`, in a temporary directory.
pub struct OvnCentral {
    // Fields drop in order: northd before the databases, the directory last.
    _northd: Option<Daemon>,
    _sb: Daemon,
    _nb: Daemon,
    /// NB's `pssl:` port, in a central from [`OvnCentral::start_ssl`].
    nb_ssl_port: Option<u16>,
    dir: WorkDir,
}

impl OvnCentral {
    /// Starts NB, SB and northd and waits until northd has synced NB to SB once (~0.2 s).
    pub fn start() -> OvnCentral {
        Self::start_inner(None)
    }

    /// [`OvnCentral::start`] with NB also served over `pssl:` with `pki`'s server
    /// certificate ([`OvnCentral::nb_ssl_remote`]); northd and the tools stay on unix sockets.
    pub fn start_ssl(pki: &Pki) -> OvnCentral {
        Self::start_inner(Some(pki))
    }

    fn start_inner(pki: Option<&Pki>) -> OvnCentral {
        let dir = WorkDir::new("ovn-central-");
        let d = dir.path().to_path_buf();
        let ssl = pki.map(|p| (ovn_peerd_test_support::free_port(), p));
        let nb = ovsdb_server(&d, "nb", NB_SCHEMA, ssl);
        let sb = ovsdb_server(&d, "sb", SB_SCHEMA, None);
        let mut c = Command::new("ovn-northd");
        c.arg("-vconsole:off")
            .arg(format!("--pidfile={}/northd.pid", d.display()))
            .arg(format!("--log-file={}/northd.log", d.display()))
            .arg(format!("--unixctl={}/northd.ctl", d.display()))
            .arg(format!("--ovnnb-db=unix:{}/nb.sock", d.display()))
            .arg(format!("--ovnsb-db=unix:{}/sb.sock", d.display()));
        let mut northd = Daemon::spawn("ovn-northd", c);
        let mut central = OvnCentral {
            _northd: None,
            _sb: sb,
            _nb: nb,
            nb_ssl_port: ssl.map(|(port, _)| port),
            dir,
        };
        // `--wait=sb` returns once northd has copied NB's nb_cfg to SB: northd is up.
        let log = d.join("northd.log");
        must_wait("ovn-northd", || {
            northd.check_alive(&log);
            central
                .try_nbctl(["--timeout=1", "--wait=sb", "sync"])
                .is_ok()
        });
        central._northd = Some(northd);
        central
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `unix:<dir>/nb.sock`, for ovn-peerd's `--ovn-nb-db`.
    pub fn nb_remote(&self) -> String {
        format!("unix:{}/nb.sock", self.dir().display())
    }

    /// `ssl:127.0.0.1:PORT` of a central from [`OvnCentral::start_ssl`].
    pub fn nb_ssl_remote(&self) -> String {
        let port = self.nb_ssl_port.expect("an OvnCentral::start_ssl central");
        format!("ssl:127.0.0.1:{port}")
    }

    pub fn sb_remote(&self) -> String {
        format!("unix:{}/sb.sock", self.dir().display())
    }

    /// `ovn-nbctl` against this NB; Err carries the command and its stderr.
    pub fn try_nbctl<I, S>(&self, args: I) -> Result<String, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ovn-nbctl");
        c.arg(format!("--db={}", self.nb_remote()))
            .arg("--timeout=10")
            .args(args);
        run(&mut c)
    }

    /// `ovn-nbctl` against this NB, panicking on failure.
    pub fn nbctl<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.try_nbctl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ovn-sbctl` against this SB, panicking on failure.
    pub fn sbctl<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ovn-sbctl");
        c.arg(format!("--db={}", self.sb_remote()))
            .arg("--timeout=10")
            .args(args);
        must(c)
    }

    /// `ovn-trace` against this SB's logical flows, e.g.
    /// `trace(["--minimal", "ls", "inport == \"p1\" && ..."])`.
    pub fn trace<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ovn-trace");
        c.arg(format!("--db={}", self.sb_remote())).args(args);
        must(c)
    }

    /// `ovn-nbctl --wait=hv sync`: returns once every chassis has installed the current NB.
    pub fn sync_hv(&self) {
        self.nbctl(["--wait=hv", "sync"]);
    }

    /// `ovn-nbctl --wait=sb sync`: returns once northd has turned the current NB into SB
    /// logical flows (what `ovn-trace` reads); needs no chassis.
    pub fn sync_sb(&self) {
        self.nbctl(["--wait=sb", "sync"]);
    }

    /// `ovn-trace --minimal` of `microflow` entering logical switch `switch`; returns the trace
    /// and whether it ends in `output("<lsp>")`.
    pub fn trace_reaches(&self, switch: &str, microflow: &str, lsp: &str) -> (bool, String) {
        let out = self.trace(["--minimal", switch, microflow]);
        (out.contains(&format!("output(\"{lsp}\")")), out)
    }
}

/// An `ip netns` namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn create(tag: &str) -> Netns {
        let name = format!("{NETNS_PREFIX}{}-{}{tag}", std::process::id(), next_id());
        must(cmd("ip", ["netns", "add", &name]));
        let ns = Netns(name);
        must(cmd("ip", ["-n", &ns.0, "link", "set", "lo", "up"]));
        ns
    }

    fn name(&self) -> &str {
        &self.0
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&mut cmd("ip", ["netns", "del", &self.0]));
    }
}

/// Deletes namespaces left by test processes that died without dropping their fixtures.
fn delete_stale_netns() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&mut cmd("ip", ["netns", "del", &name]));
        }
    }
}

/// A hypervisor: a vswitch `ovsdb-server`, `ovs-vswitchd` (userspace, in a namespace of its
/// own), `br-int` and `ovn-controller` registered with the central's SB.
pub struct Chassis {
    // Drop order: ovn-controller, vswitchd, its database, then the namespace and directory.
    _controller: Daemon,
    _vswitchd: Daemon,
    _db: Daemon,
    netns: Netns,
    name: String,
    dir: WorkDir,
    next_port: AtomicUsize,
}

impl Chassis {
    /// Starts the datapath and waits until the chassis is in the SB and has caught up with
    /// NB (`--wait=hv sync`). Needs root.
    pub fn start(central: &OvnCentral) -> Chassis {
        delete_stale_netns();
        let dir = WorkDir::new("ovn-chassis-");
        let d = dir.path().to_path_buf();
        let db_remote = format!("unix:{}/db.sock", d.display());
        let db = ovsdb_server(&d, "db", VSWITCH_SCHEMA, None);
        let name = format!("ch-{}-{}", std::process::id(), next_id());
        let vsctl = |args: &[&str]| {
            let mut c = Command::new("ovs-vsctl");
            c.arg(format!("--db={db_remote}"))
                .arg("--timeout=10")
                .args(args);
            must(c)
        };
        vsctl(&["--no-wait", "init"]);

        // Its own namespace: the netdev datapath's br-int is a tap device, and two in one
        // namespace would collide.
        let netns = Netns::create("c");
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            netns.name(),
            "ovs-vswitchd",
            "-vconsole:off",
        ])
        .arg(format!("--pidfile={}/ovs-vswitchd.pid", d.display()))
        .arg(format!("--log-file={}/ovs-vswitchd.log", d.display()))
        .arg(format!("--unixctl={}/ovs-vswitchd.ctl", d.display()))
        .arg(&db_remote)
        // br-int.mgmt, which ovn-controller connects to, is created in OVS_RUNDIR.
        .env("OVS_RUNDIR", &d);
        let mut vswitchd = Daemon::spawn("ovs-vswitchd", c);
        // Without --no-wait, ovs-vsctl returns once ovs-vswitchd has applied the change.
        let vs_log = d.join("ovs-vswitchd.log");
        vswitchd.check_alive(&vs_log);
        vsctl(&[
            "--",
            "add-br",
            "br-int",
            "--",
            "set",
            "bridge",
            "br-int",
            "datapath_type=netdev",
            "fail-mode=secure",
            "other-config:disable-in-band=true",
        ]);
        let system_id = format!("external-ids:system-id={name}");
        let hostname = format!("external-ids:hostname={name}");
        let remote = format!("external-ids:ovn-remote={}", central.sb_remote());
        vsctl(&[
            "--no-wait",
            "set",
            "open_vswitch",
            ".",
            &system_id,
            &hostname,
            &remote,
            "external-ids:ovn-encap-type=geneve",
            "external-ids:ovn-encap-ip=127.0.0.1",
            "external-ids:ovn-bridge-datapath-type=netdev",
        ]);

        let mut c = Command::new("ovn-controller");
        c.arg("-vconsole:off")
            .arg(format!("--pidfile={}/ovn-controller.pid", d.display()))
            .arg(format!("--log-file={}/ovn-controller.log", d.display()))
            .arg(&db_remote)
            // It has no --unixctl: its control socket goes to OVN_RUNDIR.
            .env("OVN_RUNDIR", &d)
            .env("OVS_RUNDIR", &d);
        let mut controller = Daemon::spawn("ovn-controller", c);
        let ctl_log = d.join("ovn-controller.log");
        must_wait("the chassis in the SB", || {
            controller.check_alive(&ctl_log);
            !central
                .sbctl([
                    "--bare",
                    "--columns=name",
                    "find",
                    "chassis",
                    &format!("name={name}"),
                ])
                .trim()
                .is_empty()
        });
        let chassis = Chassis {
            _controller: controller,
            _vswitchd: vswitchd,
            _db: db,
            netns,
            name,
            dir,
            next_port: AtomicUsize::new(0),
        };
        central.sync_hv();
        chassis
    }

    /// The chassis name (`system-id`), unique per test process.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ovs-vsctl` against this chassis's database, panicking on failure.
    pub fn vsctl<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ovs-vsctl");
        c.arg(format!("--db=unix:{}/db.sock", self.dir().display()))
            .arg("--timeout=10")
            .args(args);
        must(c)
    }
}

/// A network namespace with one interface, `eth0` (a veth whose other end is a `br-int` port
/// bound to a logical switch port), deleted on drop.
pub struct Pod<'c> {
    chassis: &'c Chassis,
    name: String,
    netns: Netns,
    port: String,
}

impl<'c> Pod<'c> {
    /// Plugs a pod into `chassis`: `eth0` gets `mac` and `ip_cidr` (IPv4 or IPv6) and a default
    /// route via `gateway`; the br-int port carries `external-ids:iface-id=<lsp_name>`.
    pub fn add(
        chassis: &'c Chassis,
        name: &str,
        lsp_name: &str,
        mac: &str,
        ip_cidr: &str,
        gateway: &str,
    ) -> Pod<'c> {
        let netns = Netns::create("p");
        // Unique within the chassis namespace, and well under IFNAMSIZ.
        let port = format!("vp{}", chassis.next_port.fetch_add(1, Ordering::Relaxed));
        let ns = netns.name().to_string();
        must(cmd(
            "ip",
            [
                "-n",
                chassis.netns.name(),
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns,
            ],
        ));
        let pod = Pod {
            chassis,
            name: name.to_string(),
            netns,
            port,
        };
        must(cmd(
            "ip",
            ["-n", &ns, "link", "set", "eth0", "address", mac],
        ));
        must(cmd(
            "ip",
            ["-n", chassis.netns.name(), "link", "set", &pod.port, "up"],
        ));
        must(cmd("ip", ["-n", &ns, "link", "set", "eth0", "up"]));
        pod.add_address(ip_cidr, Some(gateway));
        let iface_id = format!("external-ids:iface-id={lsp_name}");
        chassis.vsctl([
            "add-port",
            "br-int",
            &pod.port,
            "--",
            "set",
            "interface",
            &pod.port,
            &iface_id,
        ]);
        pod
    }

    /// Adds another address (say, IPv6 to an IPv4 pod) and optionally a default route for
    /// its family.
    pub fn add_address(&self, ip_cidr: &str, gateway: Option<&str>) {
        let ns = self.netns.name();
        if ip_cidr.contains(':') {
            // No duplicate address detection: the address is usable at once.
            must(cmd(
                "ip",
                [
                    "-n", ns, "-6", "addr", "add", ip_cidr, "dev", "eth0", "nodad",
                ],
            ));
        } else {
            must(cmd("ip", ["-n", ns, "addr", "add", ip_cidr, "dev", "eth0"]));
        }
        if let Some(gw) = gateway {
            let family = if gw.contains(':') { "-6" } else { "-4" };
            must(cmd(
                "ip",
                ["-n", ns, family, "route", "add", "default", "via", gw],
            ));
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &str {
        self.netns.name()
    }

    /// One ICMP echo with a 1 s timeout (IPv4 or IPv6, by the address); true if answered.
    pub fn ping(&self, ip: &str) -> bool {
        self.ping_ttl(ip).is_some()
    }

    /// One ICMPv6 echo (`ping -6`); true if answered.
    pub fn ping6(&self, ip: &str) -> bool {
        self.ping_raw(ip, true).is_some()
    }

    /// The TTL (hop limit) of the reply to one echo, if one came.
    pub fn ping_ttl(&self, ip: &str) -> Option<u8> {
        self.ping_raw(ip, ip.contains(':'))
    }

    /// Pings until answered or `timeout` passes: flows are installed when `--wait=hv sync`
    /// returns, but the first packet may still race ARP/ND.
    pub fn ping_within(&self, ip: &str, timeout: Duration) -> bool {
        wait_until(&format!("a ping to {ip}"), timeout, || self.ping(ip)).is_ok()
    }

    fn ping_raw(&self, ip: &str, v6: bool) -> Option<u8> {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            self.netns.name(),
            "ping",
            "-n",
            "-c",
            "1",
            "-W",
            "1",
        ]);
        if v6 {
            c.arg("-6");
        }
        let out = run(c.arg(ip)).ok()?;
        // "64 bytes from 10.0.1.10: icmp_seq=1 ttl=62 time=0.4 ms"
        let ttl = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ttl="))?;
        ttl.parse().ok()
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        let db = format!("--db=unix:{}/db.sock", self.chassis.dir().display());
        let _ = run(&mut cmd(
            "ovs-vsctl",
            [
                db.as_str(),
                "--timeout=5",
                "--",
                "--if-exists",
                "del-port",
                "br-int",
                &self.port,
            ],
        ));
        // Deleting the namespace deletes eth0, and with it the veth's other end.
    }
}

/// A VPC as a cloud lays it out in NB: a logical router, one logical switch, the router's
/// port on that switch and the switch's `router`-type port facing it.
#[derive(Debug, Clone)]
pub struct Vpc {
    pub router: String,
    pub switch: String,
    /// The router's port on the switch (`<router>-rp`), holding `router_ip/plen`.
    pub router_port: String,
    pub router_mac: String,
    pub router_ip: String,
    pub subnet: String,
}

/// Creates [`Vpc`] `name` with `subnet` (v4 or v6 CIDR) and the router at `router_ip`.
pub fn create_vpc(central: &OvnCentral, name: &str, subnet: &str, router_ip: &str) -> Vpc {
    let plen = subnet
        .rsplit_once('/')
        .map(|(_, p)| p)
        .expect("subnet is a CIDR");
    let n = next_id();
    let vpc = Vpc {
        router: name.to_string(),
        switch: format!("{name}-ls"),
        router_port: format!("{name}-rp"),
        router_mac: format!("0a:00:00:{:02x}:{:02x}:01", (n >> 8) & 0xff, n & 0xff),
        router_ip: router_ip.to_string(),
        subnet: subnet.to_string(),
    };
    let lsp = format!("{name}-ls-rp");
    let network = format!("{router_ip}/{plen}");
    let router_port_opt = format!("router-port={}", vpc.router_port);
    central.nbctl([
        "lr-add",
        &vpc.router,
        "--",
        "ls-add",
        &vpc.switch,
        "--",
        "lrp-add",
        &vpc.router,
        &vpc.router_port,
        &vpc.router_mac,
        &network,
        "--",
        "lsp-add",
        &vpc.switch,
        &lsp,
        "--",
        "lsp-set-type",
        &lsp,
        "router",
        "--",
        "lsp-set-addresses",
        &lsp,
        "router",
        "--",
        "lsp-set-options",
        &lsp,
        &router_port_opt,
    ]);
    vpc
}

/// Gives the VPC another subnet on the same switch (dual stack: an IPv6 subnet next to the
/// IPv4 one): `router_ip` (in `subnet`) is added to the router port's `networks`.
pub fn add_vpc_network(central: &OvnCentral, vpc: &Vpc, subnet: &str, router_ip: &str) {
    let plen = subnet
        .rsplit_once('/')
        .map(|(_, p)| p)
        .expect("subnet is a CIDR");
    let network = format!("\"{router_ip}/{plen}\"");
    central.nbctl([
        "add",
        "logical_router_port",
        &vpc.router_port,
        "networks",
        &network,
    ]);
}

/// The ICMP echo request a pod sends to a host outside its subnet, as `ovn-trace` microflow
/// text: from logical switch port `inport` (`src_mac`, `src_ip`) to the router's MAC, TTL 64.
pub fn echo_microflow(
    inport: &str,
    src_mac: &str,
    router_mac: &str,
    src_ip: &str,
    dst_ip: &str,
) -> String {
    let (src, dst, proto) = if src_ip.contains(':') {
        ("ip6.src", "ip6.dst", "icmp6.type == 128 && ip.ttl == 64")
    } else {
        ("ip4.src", "ip4.dst", "icmp4.type == 8 && ip.ttl == 64")
    };
    format!(
        "inport == \"{inport}\" && eth.src == {src_mac} && eth.dst == {router_mac} && \
         {src} == {src_ip} && {dst} == {dst_ip} && {proto}"
    )
}

/// Adds logical switch port `lsp` for a pod to the VPC's switch, with addresses "MAC IP..."
/// (`ips` without prefix lengths, space-separated for dual stack).
pub fn add_pod_port(central: &OvnCentral, vpc: &Vpc, lsp: &str, mac: &str, ips: &str) {
    let addresses = format!("{mac} {ips}");
    central.nbctl([
        "lsp-add",
        &vpc.switch,
        lsp,
        "--",
        "lsp-set-addresses",
        lsp,
        &addresses,
    ]);
}
