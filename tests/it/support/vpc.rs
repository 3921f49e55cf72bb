//! Building VPCs (routers with subnet ports) in an NB database with ovn-nbctl.

use std::sync::atomic::{AtomicU32, Ordering};

use super::nb::NbServer;

static MAC_SEQ: AtomicU32 = AtomicU32::new(1);

/// A locally administered MAC unique within the test process.
pub fn next_mac() -> String {
    let n = MAC_SEQ.fetch_add(1, Ordering::Relaxed);
    format!(
        "0e:00:00:{:02x}:{:02x}:{:02x}",
        (n >> 16) & 0xff,
        (n >> 8) & 0xff,
        n & 0xff
    )
}

/// A router named `name` with one port per subnet gateway address (`"10.1.0.1/24"`).
pub fn create_vpc(nb: &NbServer, name: &str, gateways: &[&str]) {
    nb.nbctl(&["lr-add", name]);
    for (i, gw) in gateways.iter().enumerate() {
        add_subnet(nb, name, &format!("{name}-s{i}"), gw);
    }
}

/// Adds a subnet port to a router.
pub fn add_subnet(nb: &NbServer, router: &str, port: &str, gateway: &str) {
    let mac = next_mac();
    nb.nbctl(&["lrp-add", router, port, &mac, gateway]);
}
