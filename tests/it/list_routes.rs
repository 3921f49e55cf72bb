//! ListRoutes' keyset paging under concurrent creates: paging through a hub while spokes are
//! added lists every route that existed when the listing started exactly once.

use std::collections::BTreeSet;

use ovn_peerd::proto::v1::{CreatePeeringRequest, ListRoutesRequest, Peering};

use crate::support::peerd::TestPeerd;
use crate::support::vpc::create_vpc;

fn create(name: &str, local: &str, remote: &str) -> CreatePeeringRequest {
    CreatePeeringRequest {
        peering: Some(Peering {
            name: name.into(),
            local_vpc: local.into(),
            remote_vpc: remote.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pages of 2 through a hub with 8 spokes (some converged, some only wanted) and a foreign
/// route, a new spoke created between every two pages, with names that sort before, between
/// and after the ones listed: no route of the starting set is skipped, none is listed twice.
#[tokio::test]
async fn list_routes_pages_stay_stable_while_peerings_are_added() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "hub", &["10.0.0.1/24"]);
    t.nb.nbctl(&["lr-route-add", "hub", "192.168.0.0/16", "10.0.0.254"]);
    let mut c = t.client().await;
    for k in 1..=40 {
        create_vpc(&t.nb, &format!("s{k}"), &[&format!("10.{k}.1.1/24")]);
    }
    for k in [10, 20, 30, 40] {
        c.create_peering(create(&format!("h{k}"), "hub", &format!("s{k}")))
            .await
            .unwrap();
    }
    t.converge().await;
    for k in [12, 22, 32, 38] {
        c.create_peering(create(&format!("h{k}"), "hub", &format!("s{k}")))
            .await
            .unwrap();
    }
    let key = |r: &ovn_peerd::proto::v1::Route| (r.cidr.clone(), r.peering.clone());
    let start: BTreeSet<(String, String)> = c
        .list_routes(ListRoutesRequest {
            vpc: "hub".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .routes
        .iter()
        .map(key)
        .collect();
    assert_eq!(start.len(), 9, "{start:?}");

    // Spokes added while paging: before the first name, between names, after the last.
    let mut added = [1, 11, 21, 31, 39, 15, 25, 35, 5].into_iter();
    let (mut seen, mut token) = (Vec::new(), String::new());
    for _ in 0..100 {
        let page = c
            .list_routes(ListRoutesRequest {
                vpc: "hub".into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.routes.iter().map(key));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        if let Some(k) = added.next() {
            c.create_peering(create(&format!("h{k}"), "hub", &format!("s{k}")))
                .await
                .unwrap();
        }
    }
    let listed: BTreeSet<(String, String)> = seen.iter().cloned().collect();
    assert_eq!(listed.len(), seen.len(), "a route listed twice: {seen:?}");
    let skipped: Vec<_> = start.difference(&listed).collect();
    assert!(skipped.is_empty(), "skipped {skipped:?} of {seen:?}");
}

/// ListRoutes reads a VPC's peerings a batch at a time (page size + 1, by name, doubling while
/// the page is not full): a run of
/// peerings with no routes (their spokes have no subnets) longer than a batch does not end
/// the listing early, and the router's other routes follow, its owned routes not listed twice.
#[tokio::test]
async fn list_routes_reads_past_peerings_without_routes() {
    let t = TestPeerd::start().await;
    create_vpc(&t.nb, "hub", &["10.0.0.1/24"]);
    t.nb.nbctl(&["lr-route-add", "hub", "192.168.0.0/16", "10.0.0.254"]);
    let mut c = t.client().await;
    // 12 of them: pages of 1, 2 and 3 read batches that grow (2, 4, 8; 3, 6, 12; 4, 8, 16)
    // across the run, each batch starting at the last name of the one before.
    for k in 1..=12 {
        create_vpc(&t.nb, &format!("bare{k:02}"), &[]);
        c.create_peering(create(&format!("a{k:02}"), "hub", &format!("bare{k:02}")))
            .await
            .unwrap();
    }
    create_vpc(&t.nb, "s1", &["10.1.1.1/24"]);
    c.create_peering(create("h1", "hub", "s1")).await.unwrap();
    t.converge().await;
    let want = vec![
        ("10.1.1.0/24".to_string(), "h1".to_string()),
        ("192.168.0.0/16".to_string(), String::new()),
    ];
    for size in [1, 2, 3, 100] {
        let (mut seen, mut token) = (Vec::new(), String::new());
        for _ in 0..20 {
            let page = c
                .list_routes(ListRoutesRequest {
                    vpc: "hub".into(),
                    page_size: size,
                    page_token: token,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.routes.len() <= size as usize);
            seen.extend(
                page.routes
                    .iter()
                    .map(|r| (r.cidr.clone(), r.peering.clone())),
            );
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen, want, "pages of {size}");
    }
}

/// ListRoutes pages by name in byte order, in SQL as in Rust, whatever the database's
/// collation: in `en_US` `'pa' < 'p-b'` (the '-' ignored at the first level) while byte order
/// puts `p-b` first. Pages of 1 through peerings pa, p-b, pc list each route once.
#[tokio::test]
async fn list_routes_pages_in_byte_order_in_an_en_us_database() {
    let t = TestPeerd::start_en_us().await;
    create_vpc(&t.nb, "hub", &["10.0.0.1/24"]);
    let mut c = t.client().await;
    for (k, name) in ["pa", "p-b", "pc"].into_iter().enumerate() {
        let spoke = format!("v{k}");
        create_vpc(&t.nb, &spoke, &[&format!("10.{}.1.1/24", k + 1)]);
        c.create_peering(create(name, "hub", &spoke)).await.unwrap();
    }
    t.converge().await;
    let (mut seen, mut token) = (Vec::new(), String::new());
    for _ in 0..20 {
        let page = c
            .list_routes(ListRoutesRequest {
                vpc: "hub".into(),
                page_size: 1,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.routes.iter().map(|r| r.peering.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["p-b", "pa", "pc"]);
}
