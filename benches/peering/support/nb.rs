//! The VPC seed of a phase's fresh NB (one standalone `ovsdb-server` per phase, from
//! `ovn-peerd-test-support`), and the rows of one peering written the way the baselines write
//! them. Everything here speaks raw OVSDB ([`super::raw`]) with JSON written by hand.

use serde_json::{json, Value};
use uuid::Uuid;

pub use ovn_peerd_test_support::ovsdb::NbServer;

use super::raw::RawConn;

/// A raw connection to the NB database, for writes (not ovn-peerd's client).
pub async fn client(remote: &str) -> RawConn {
    let c = RawConn::connect(remote, None);
    // One round trip proves the server answers.
    c.request("list_dbs", json!([])).await;
    c
}

pub fn vpc(i: usize) -> String {
    format!("vpc-{i}")
}

/// Router `i`'s explicit uuid. `i` is in the first 32 bits: ovsdb-server hashes a uuid by
/// those alone (`uuid_hash` in OVS), so uuids that differ only in their last bits, as these
/// once did, land in one hash bucket and make every insert and lookup linear in the table:
/// loading 20,000 such routers took 29 s instead of 1.9 s, and the seed's transactions went
/// unanswered for minutes.
pub fn router_uuid(i: usize) -> Uuid {
    assert!(i <= u32::MAX as usize);
    Uuid::from_u128((i as u128) << 96 | 0x6265_4000_8000_6e63_6800_0000)
}

fn lan_uuid(i: usize) -> Uuid {
    assert!(i <= u32::MAX as usize);
    Uuid::from_u128((i as u128) << 96 | 0x6265_4000_8001_6e63_6800_0000)
}

/// The first three octets of VPC `i`'s /24: 10.x.y for i < 65,536, then 11.x.y, 12.x.y, ...
/// (test addresses in an NB that routes nothing; 200,000 VPCs reach 13.x.y).
fn net24(i: usize) -> String {
    format!("{}.{}.{}", 10 + (i >> 16), (i >> 8) & 0xff, i & 0xff)
}

/// VPC `i`'s one subnet, a /24 (see `net24`), gateway .1.
pub fn subnet(i: usize) -> String {
    format!("{}.0/24", net24(i))
}

fn gateway(i: usize) -> String {
    format!("{}.1/24", net24(i))
}

/// Most VPCs a seed may hold (the subnets stay below 224.0.0.0).
const MAX_VPCS: usize = (223 - 10) << 16;

/// Routers `vpc-1..=vpc-count`, each with one subnet port, through `nb` in transactions of
/// [`SEED_CHUNK`] routers (one of 20,000 routers took ovsdb-server longer than a reply's
/// timeout on a loaded machine; 4,096 went unanswered for 60 s once, mostly the uuids' fault:
/// see [`router_uuid`]). The raw client waits for each reply as long as it takes.
pub async fn seed_vpcs(nb: &RawConn, count: usize) {
    assert!(count <= MAX_VPCS);
    for first in (1..=count).step_by(SEED_CHUNK) {
        let last = (first + SEED_CHUNK - 1).min(count);
        let mut ops = Vec::with_capacity(2 * (last + 1 - first));
        for i in first..=last {
            let port = format!("lan_{i}");
            ops.push(json!({"op": "insert", "table": "Logical_Router_Port",
                "uuid-name": port, "uuid": lan_uuid(i).to_string(), "row": lan_row(i)}));
            ops.push(json!({"op": "insert", "table": "Logical_Router",
                "uuid": router_uuid(i).to_string(),
                "row": {"name": vpc(i), "ports": ["named-uuid", port]}}));
        }
        nb.transact(ops).await.expect("seed VPCs");
    }
}

const SEED_CHUNK: usize = 5000;

fn lan_row(i: usize) -> Value {
    json!({"name": format!("vpc-{i}-lan"), "mac": mac(0x0e, i), "networks": gateway(i)})
}

/// `count` foreign (not ovn-peerd's) static routes in router `i`, in one transaction.
pub async fn add_foreign_routes(nb: &RawConn, i: usize, count: usize) {
    let mut ops = Vec::with_capacity(count + 1);
    let mut names = Vec::with_capacity(count);
    for k in 0..count {
        let name = format!("fr_{k}");
        ops.push(
            json!({"op": "insert", "table": "Logical_Router_Static_Route",
            "uuid-name": name, "row": {
                "ip_prefix": format!("172.16.{}.{}/32", k >> 8, k & 0xff),
                "nexthop": "10.255.255.254",
                "external_ids": ["map", [["owner", "someone-else"]]],
            }}),
        );
        names.push(json!(["named-uuid", name]));
    }
    ops.push(json!({"op": "mutate", "table": "Logical_Router",
        "where": [["_uuid", "==", ["uuid", router_uuid(i).to_string()]]],
        "mutations": [["static_routes", "insert", ["set", names]]]}));
    nb.transact(ops).await.expect("foreign routes");
}

fn mac(first: u8, i: usize) -> String {
    format!(
        "{first:02x}:00:00:{:02x}:{:02x}:{:02x}",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

/// What the baselines write for one peering: VPC `a` with VPC `b` over link number `link`.
#[derive(Debug, Clone)]
pub struct Peering {
    pub a: usize,
    pub b: usize,
    pub link: usize,
}

impl Peering {
    /// Link `link` is the `link`-th /30 of 169.254.0.0/16; ports on .1 and .2.
    fn addr(&self, host: usize) -> (String, String) {
        let base = self.link * 4;
        let ip = format!("169.254.{}.{}", (base >> 8) & 0xff, (base & 0xff) + host);
        (format!("{ip}/30"), ip)
    }

    fn port(&self, side: usize) -> (String, String) {
        let (this, other) = if side == 0 {
            (self.a, self.b)
        } else {
            (self.b, self.a)
        };
        (
            format!("vpc-{this}-vpc-{other}"),
            format!("vpc-{other}-vpc-{this}"),
        )
    }

    /// `ovn-nbctl` arguments: two `lrp-add` with `peer=`, two `lr-route-add`, chained by `--`.
    pub fn nbctl_args(&self) -> Vec<String> {
        let (a_net, a_ip) = self.addr(1);
        let (b_net, b_ip) = self.addr(2);
        let (pa, pb) = self.port(0);
        let mut v: Vec<String> = Vec::new();
        let mut push = |args: &[String]| {
            if !v.is_empty() {
                v.push("--".into());
            }
            v.extend(args.iter().cloned());
        };
        push(&[
            "lrp-add".into(),
            vpc(self.a),
            pa.clone(),
            mac(0x0a, 2 * self.link + 1),
            a_net,
            format!("peer={pb}"),
        ]);
        push(&[
            "lrp-add".into(),
            vpc(self.b),
            pb,
            mac(0x0a, 2 * self.link + 2),
            b_net,
            format!("peer={pa}"),
        ]);
        push(&["lr-route-add".into(), vpc(self.a), subnet(self.b), b_ip]);
        push(&["lr-route-add".into(), vpc(self.b), subnet(self.a), a_ip]);
        v
    }

    /// The same rows as OVSDB operations (for the one-transaction floor), written by hand.
    pub fn ops(&self, ops: &mut Vec<Value>) {
        let (a_net, a_ip) = self.addr(1);
        let (b_net, b_ip) = self.addr(2);
        let k = self.link;
        for side in 0..2 {
            let (name, peer) = self.port(side);
            let (router, net, route_prefix, nexthop) = if side == 0 {
                (self.a, a_net.clone(), subnet(self.b), b_ip.clone())
            } else {
                (self.b, b_net.clone(), subnet(self.a), a_ip.clone())
            };
            let (pn, rn) = (format!("p{k}_{side}"), format!("r{k}_{side}"));
            ops.push(
                json!({"op": "insert", "table": "Logical_Router_Port", "uuid-name": pn,
                "row": {"name": name, "mac": mac(0x0a, 2 * k + 1 + side),
                        "networks": net, "peer": peer}}),
            );
            ops.push(
                json!({"op": "insert", "table": "Logical_Router_Static_Route",
                "uuid-name": rn, "row": {"ip_prefix": route_prefix, "nexthop": nexthop}}),
            );
            ops.push(json!({"op": "mutate", "table": "Logical_Router",
                "where": [["_uuid", "==", ["uuid", router_uuid(router).to_string()]]],
                "mutations": [["ports", "insert", ["named-uuid", pn]],
                              ["static_routes", "insert", ["named-uuid", rn]]]}));
        }
    }
}
