//! The VPC seed of a phase's fresh NB (one standalone `ovsdb-server` per phase, from
//! `ovn-peerd-test-support`), and the rows of one peering written the way the baselines write
//! them.

use std::time::Duration;

use ovn_peerd::ovsdb::{Client, ClientConfig, Condition, Datum, Mutation, Operation, Row};
use uuid::Uuid;

pub use ovn_peerd_test_support::ovsdb::NbServer;

/// A client of the NB database with its own monitor (not ovn-peerd's).
pub async fn client(remote: &str) -> Client {
    let mut config = ClientConfig::new(remote, "OVN_Northbound")
        .expect("remote")
        .with_owner_key(ovn_peerd::peering::PEERING_KEY);
    // ovsdb-server answers no echo while it commits the 40,000-row seed transaction,
    // which takes more than the default 5 s probe on a busy 2-core machine.
    config.probe_interval = None;
    let c = Client::start(config).expect("client");
    c.wait_synced(Duration::from_secs(60))
        .await
        .expect("NB in sync");
    c
}

pub fn vpc(i: usize) -> String {
    format!("vpc-{i}")
}

pub fn router_uuid(i: usize) -> Uuid {
    Uuid::from_u128(0x6265_6e63_6800_4000_8000_0000_0000_0000 | i as u128)
}

fn lan_uuid(i: usize) -> Uuid {
    Uuid::from_u128(0x6265_6e63_6800_4000_8001_0000_0000_0000 | i as u128)
}

/// VPC `i`'s one subnet: 10.(i/256).(i%256).0/24 (i < 65536), gateway .1.
pub fn subnet(i: usize) -> String {
    format!("10.{}.{}.0/24", (i >> 8) & 0xff, i & 0xff)
}

fn gateway(i: usize) -> String {
    format!("10.{}.{}.1/24", (i >> 8) & 0xff, i & 0xff)
}

/// Routers `vpc-1..=vpc-count`, each with one subnet port, in transactions of at most
/// [`SEED_CHUNK`] routers (one of 20,000 routers took ovsdb-server longer than a reply's
/// timeout on a loaded machine).
pub async fn seed_vpcs(nb: &Client, count: usize) {
    assert!(count < 65536, "subnets are 10.x.y.0/24");
    for first in (1..=count).step_by(SEED_CHUNK) {
        seed_vpc_range(nb, first, (first + SEED_CHUNK - 1).min(count)).await;
    }
}

const SEED_CHUNK: usize = 4096;

async fn seed_vpc_range(nb: &Client, first: usize, last: usize) {
    let mut ops = Vec::with_capacity(2 * (last + 1 - first));
    for i in first..=last {
        let port = format!("lan_{i}");
        let mut lrp = Row::new();
        lrp.insert("name".into(), Datum::from(format!("vpc-{i}-lan").as_str()));
        lrp.insert("mac".into(), Datum::from(mac(0x0e, i).as_str()));
        lrp.insert("networks".into(), Datum::set([gateway(i)]));
        ops.push(Operation::Insert {
            table: "Logical_Router_Port".into(),
            row: lrp,
            uuid_name: Some(port.clone()),
            uuid: Some(lan_uuid(i)),
        });
        let mut lr = Row::new();
        lr.insert("name".into(), Datum::from(vpc(i).as_str()));
        lr.insert("ports".into(), Datum::named_uuid(&port));
        ops.push(Operation::Insert {
            table: "Logical_Router".into(),
            row: lr,
            uuid_name: None,
            uuid: Some(router_uuid(i)),
        });
    }
    nb.transact(ops).await.expect("seed VPCs");
}

/// `count` foreign (not ovn-peerd's) static routes in router `i`, in one transaction.
pub async fn add_foreign_routes(nb: &Client, i: usize, count: usize) {
    let mut ops = Vec::with_capacity(count + 1);
    let mut names = Vec::with_capacity(count);
    for k in 0..count {
        let name = format!("fr_{k}");
        let mut row = Row::new();
        row.insert(
            "ip_prefix".into(),
            Datum::from(format!("172.16.{}.{}/32", k >> 8, k & 0xff).as_str()),
        );
        row.insert("nexthop".into(), Datum::from("10.255.255.254"));
        row.insert(
            "external_ids".into(),
            Datum::map([("owner", "someone-else")]),
        );
        ops.push(Operation::Insert {
            table: "Logical_Router_Static_Route".into(),
            row,
            uuid_name: Some(name.clone()),
            uuid: None,
        });
        names.push(name);
    }
    ops.push(Operation::Mutate {
        table: "Logical_Router".into(),
        conditions: vec![Condition::uuid(router_uuid(i))],
        mutations: vec![Mutation::insert(
            "static_routes",
            Datum::Set(
                names
                    .iter()
                    .map(|n| ovn_peerd::ovsdb::Atom::NamedUuid(n.clone()))
                    .collect(),
            ),
        )],
    });
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

    /// The same rows as OVSDB operations (for the one-transaction floor).
    pub fn ops(&self, ops: &mut Vec<Operation>) {
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
            let mut lrp = Row::new();
            lrp.insert("name".into(), Datum::from(name.as_str()));
            lrp.insert(
                "mac".into(),
                Datum::from(mac(0x0a, 2 * k + 1 + side).as_str()),
            );
            lrp.insert("networks".into(), Datum::set([net]));
            lrp.insert("peer".into(), Datum::set([peer]));
            ops.push(Operation::Insert {
                table: "Logical_Router_Port".into(),
                row: lrp,
                uuid_name: Some(pn.clone()),
                uuid: None,
            });
            let mut sr = Row::new();
            sr.insert("ip_prefix".into(), Datum::from(route_prefix.as_str()));
            sr.insert("nexthop".into(), Datum::from(nexthop.as_str()));
            ops.push(Operation::Insert {
                table: "Logical_Router_Static_Route".into(),
                row: sr,
                uuid_name: Some(rn.clone()),
                uuid: None,
            });
            ops.push(Operation::Mutate {
                table: "Logical_Router".into(),
                conditions: vec![Condition::uuid(router_uuid(router))],
                mutations: vec![
                    Mutation::insert("ports", Datum::named_uuid(&pn)),
                    Mutation::insert("static_routes", Datum::named_uuid(&rn)),
                ],
            });
        }
    }
}
