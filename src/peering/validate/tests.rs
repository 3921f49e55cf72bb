//! Unit tests of request validation: one refused field per rule, every violation collected.

use super::*;

/// The API's policy values as the API edge hands them over.
const POLICY_UNSPECIFIED: Result<RoutePolicy, i32> = Ok(RoutePolicy::DstIp);
const POLICY_DST_IP: Result<RoutePolicy, i32> = Ok(RoutePolicy::DstIp);
const POLICY_SRC_IP: Result<RoutePolicy, i32> = Ok(RoutePolicy::SrcIp);

fn ok_input() -> UncheckedPeering {
    UncheckedPeering {
        name: "vpc-1-to-vpc-2".into(),
        local_vpc: "vpc-1".into(),
        remote_vpc: "vpc-2".into(),
        local_connect_ip: "169.254.0.1/30".into(),
        remote_connect_ip: "169.254.0.2/30".into(),
        local_routes: vec![route("172.31.0.0/16", POLICY_UNSPECIFIED)],
        remote_routes: vec![],
    }
}

fn route(cidr: &str, policy: Result<RoutePolicy, i32>) -> UncheckedRoute {
    UncheckedRoute {
        cidr: cidr.into(),
        policy,
    }
}

/// The fields named by the refusal of `input` (asserting it is INVALID_ARGUMENT).
fn fields(input: &UncheckedPeering) -> Vec<String> {
    let refusal = validate_spec(input).expect_err("should be refused");
    assert_eq!(refusal.kind, RefusalKind::InvalidArgument);
    refusal.violations.into_iter().map(|v| v.field).collect()
}

fn refused_on(field: &str, f: impl FnOnce(&mut UncheckedPeering)) {
    let mut input = ok_input();
    f(&mut input);
    assert_eq!(fields(&input), vec![field.to_string()], "input: {input:?}");
}

#[test]
fn accepts_seed_example() {
    let p = validate_spec(&ok_input()).unwrap();
    let spec = p.spec().unwrap();
    assert_eq!(spec.local_connect.to_string(), "169.254.0.1/30");
    assert_eq!(
        spec.local_routes,
        vec![RouteSpec::dst("172.31.0.0/16".parse().unwrap())]
    );
    assert_eq!(p.link_families(), vec![Family::V4]);
}

#[test]
fn accepts_dual_stack_and_point_to_point() {
    let mut i = ok_input();
    i.local_connect_ip = "169.254.0.0/31,fd00::/127".into();
    i.remote_connect_ip = "fd00::1/127,169.254.0.1/31".into();
    i.remote_routes = vec![route("fd10::/64", POLICY_SRC_IP)];
    let p = validate_spec(&i).unwrap();
    assert_eq!(p.link_families(), vec![Family::V4, Family::V6]);
    assert_eq!(p.remote_routes[0].policy, RoutePolicy::SrcIp);
}

#[test]
fn accepts_link_local_links() {
    let mut i = ok_input();
    i.local_connect_ip = "fe80::a:1/64".into();
    i.remote_connect_ip = "fe80::a:2/64".into();
    i.local_routes = vec![route("fd32::/64", POLICY_DST_IP)];
    let p = validate_spec(&i).unwrap();
    assert_eq!(p.link_families(), vec![Family::V6]);
    // Dual stack: IPv4 in the default pool's space, IPv6 link-local; automatic routes.
    i.local_connect_ip = "169.254.0.1/30,fe80::a:1/64".into();
    i.remote_connect_ip = "169.254.0.2/30,fe80::a:2/64".into();
    i.local_routes.clear();
    let p = validate_spec(&i).unwrap();
    assert_eq!(p.link_families(), vec![Family::V4, Family::V6]);
}

#[test]
fn refuses_link_local_links_that_cannot_work() {
    // One end link-local, the other not: not one subnet.
    refused_on("peering.remote_connect_ip", |i| {
        i.local_connect_ip = "fe80::a:1/64".into();
        i.remote_connect_ip = "fd00::2/64".into();
        i.local_routes.clear();
    });
    // The same address on both ends.
    refused_on("peering.remote_connect_ip", |i| {
        i.local_connect_ip = "fe80::a:1/64".into();
        i.remote_connect_ip = "fe80::a:1/64".into();
        i.local_routes.clear();
    });
    // Two different link-local /64s.
    refused_on("peering.remote_connect_ip", |i| {
        i.local_connect_ip = "fe80::a:1/64".into();
        i.remote_connect_ip = "fe80:0:0:1::2/64".into();
        i.local_routes.clear();
    });
    // The subnet-router anycast address of the link.
    refused_on("peering.local_connect_ip", |i| {
        i.local_connect_ip = "fe80::/64".into();
        i.remote_connect_ip = "fe80::2/64".into();
        i.local_routes.clear();
    });
}

#[test]
fn refuses_a_route_to_link_local_space() {
    for cidr in ["fe80::/64", "fe80:1::/32", "febf::/16"] {
        refused_on("peering.local_routes[0].cidr", |i| {
            i.local_connect_ip = "fd00::1/126".into();
            i.remote_connect_ip = "fd00::2/126".into();
            i.local_routes = vec![route(cidr, POLICY_DST_IP)];
        });
    }
    // A prefix that merely contains link-local space is fine.
    let mut i = ok_input();
    i.local_connect_ip = "fd00::1/126".into();
    i.remote_connect_ip = "fd00::2/126".into();
    i.local_routes = vec![route("fe00::/7", POLICY_DST_IP)];
    assert!(validate_spec(&i).is_ok());
}

#[test]
fn empty_link_means_allocate_with_families_from_routes() {
    let mut i = ok_input();
    i.local_connect_ip.clear();
    i.remote_connect_ip.clear();
    let p = validate_spec(&i).unwrap();
    assert!(p.link.is_none() && p.spec().is_none());
    assert_eq!(p.link_families(), vec![Family::V4]);
    i.remote_routes = vec![route("fd10::/64", POLICY_DST_IP)];
    assert_eq!(
        validate_spec(&i).unwrap().link_families(),
        vec![Family::V4, Family::V6]
    );
}

#[test]
fn name_rules() {
    for bad in [
        "",
        "Upper",
        "under_score",
        "-lead",
        "trail-",
        "dot.ted",
        &"a".repeat(64),
    ] {
        refused_on("peering.name", |i| i.name = bad.to_string());
    }
    for good in ["a", "0", "a-b", &"a".repeat(63)] {
        let mut i = ok_input();
        i.name = good.to_string();
        assert!(validate_spec(&i).is_ok(), "{good}");
    }
}

#[test]
fn vpc_rules() {
    refused_on("peering.local_vpc", |i| i.local_vpc.clear());
    refused_on("peering.remote_vpc", |i| {
        i.remote_vpc = "x".repeat(MAX_VPC_LEN + 1)
    });
    refused_on("peering.local_vpc", |i| i.local_vpc = "a,b".into());
    refused_on("peering.remote_vpc", |i| i.remote_vpc = "a\nb".into());
}

#[test]
fn self_peering() {
    refused_on("peering.remote_vpc", |i| i.remote_vpc = "vpc-1".into());
}

#[test]
fn malformed_connect_address() {
    refused_on("peering.local_connect_ip", |i| {
        i.local_connect_ip = "169.254.0.1".into()
    });
    refused_on("peering.remote_connect_ip", |i| {
        i.remote_connect_ip = "nonsense/30".into()
    });
}

#[test]
fn only_one_connect_address() {
    refused_on("peering.remote_connect_ip", |i| i.remote_connect_ip.clear());
    refused_on("peering.local_connect_ip", |i| i.local_connect_ip.clear());
}

#[test]
fn connect_addresses_in_different_subnets() {
    refused_on("peering.remote_connect_ip", |i| {
        i.remote_connect_ip = "169.254.0.6/30".into()
    });
    refused_on("peering.remote_connect_ip", |i| {
        i.remote_connect_ip = "169.254.0.2/29".into()
    });
}

#[test]
fn connect_addresses_equal() {
    refused_on("peering.remote_connect_ip", |i| {
        i.remote_connect_ip = "169.254.0.1/30".into()
    });
}

#[test]
fn connect_network_and_broadcast_addresses() {
    refused_on("peering.local_connect_ip", |i| {
        i.local_connect_ip = "169.254.0.0/30".into()
    });
    refused_on("peering.local_connect_ip", |i| {
        i.local_connect_ip = "169.254.0.3/30".into()
    });
    refused_on("peering.remote_connect_ip", |i| {
        i.local_connect_ip = "fd00::1/126".into();
        i.remote_connect_ip = "fd00::/126".into();
        i.local_routes.clear();
    });
}

#[test]
fn connect_not_unicast() {
    refused_on("peering.local_connect_ip", |i| {
        i.local_connect_ip = "224.0.0.1/30".into()
    });
}

#[test]
fn connect_prefix_range() {
    refused_on("peering.local_connect_ip", |i| {
        i.local_connect_ip = "169.254.0.1/32".into();
    });
    refused_on("peering.local_connect_ip", |i| {
        i.local_connect_ip = "10.0.0.1/8".into()
    });
    refused_on("peering.local_connect_ip", |i| {
        i.local_connect_ip = "fd00::1/128".into();
        i.remote_connect_ip = "fd00::2/126".into();
        i.local_routes.clear();
    });
    // Both sides wrong: both named.
    let mut i = ok_input();
    i.local_connect_ip = "169.254.0.1/32".into();
    i.remote_connect_ip = "169.254.0.2/32".into();
    assert_eq!(
        fields(&i),
        vec!["peering.local_connect_ip", "peering.remote_connect_ip"]
    );
}

#[test]
fn connect_family_mismatch() {
    refused_on("peering.remote_connect_ip", |i| {
        i.remote_connect_ip = "fd00::2/126".into();
    });
    refused_on("peering.remote_connect_ip", |i| {
        i.local_connect_ip = "169.254.0.1/30,fd00::1/126".into();
    });
}

#[test]
fn connect_two_of_one_family() {
    refused_on("peering.local_connect_ip", |i| {
        i.local_connect_ip = "169.254.0.1/30,169.254.0.5/30".into();
    });
}

#[test]
fn malformed_route_cidr() {
    refused_on("peering.local_routes[0].cidr", |i| {
        i.local_routes[0].cidr = "10.0.0.0".into()
    });
    refused_on("peering.local_routes[0].cidr", |i| {
        i.local_routes[0].cidr.clear()
    });
}

#[test]
fn route_host_bits() {
    refused_on("peering.remote_routes[1].cidr", |i| {
        i.remote_routes = vec![
            route("10.0.0.0/16", POLICY_UNSPECIFIED),
            route("10.1.0.1/16", POLICY_UNSPECIFIED),
        ];
    });
}

#[test]
fn route_unknown_policy() {
    refused_on("peering.local_routes[0].policy", |i| {
        i.local_routes[0].policy = Err(7)
    });
}

#[test]
fn route_family_without_link_address() {
    refused_on("peering.local_routes[0].cidr", |i| {
        i.local_routes[0].cidr = "fd10::/64".into()
    });
}

#[test]
fn route_overlapping_own_link() {
    refused_on("peering.local_routes[0].cidr", |i| {
        i.local_routes[0].cidr = "169.254.0.0/16".into()
    });
}

#[test]
fn duplicate_route() {
    refused_on("peering.local_routes[1].cidr", |i| {
        i.local_routes.push(route("172.31.0.0/16", POLICY_DST_IP));
    });
    // Same prefix, other policy: two distinct routes.
    let mut i = ok_input();
    i.local_routes.push(route("172.31.0.0/16", POLICY_SRC_IP));
    assert!(validate_spec(&i).is_ok());
}

#[test]
fn too_many_routes() {
    refused_on("peering.remote_routes", |i| {
        i.remote_routes = (0..=MAX_ROUTES_PER_SIDE)
            .map(|n| {
                route(
                    &format!("10.{}.{}.0/24", n / 256, n % 256),
                    POLICY_UNSPECIFIED,
                )
            })
            .collect();
    });
}

#[test]
fn collects_every_violation() {
    let input = UncheckedPeering {
        name: "Bad".into(),
        local_vpc: "".into(),
        remote_vpc: "v".into(),
        local_connect_ip: "169.254.0.1/30".into(),
        remote_connect_ip: "".into(),
        local_routes: vec![route("x", POLICY_UNSPECIFIED), route("10.0.0.1/8", Err(9))],
        remote_routes: vec![],
    };
    assert_eq!(
        fields(&input),
        vec![
            "peering.name",
            "peering.local_vpc",
            "peering.remote_connect_ip",
            "peering.local_routes[0].cidr",
            "peering.local_routes[1].policy",
            "peering.local_routes[1].cidr",
        ]
    );
}
