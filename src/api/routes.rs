//! ListRoutes: every static route of a VPC's router as NB holds it now, plus
//! the routes ovn-peerd wants there but has not installed yet, derived by the
//! worker's own derivation ([`crate::reconciler::derive`]) so the two never
//! disagree. A route the worker will repair in place (say its `output_port` was
//! cleared) shows twice: as installed, and as wanted with the port it will get.
//!
//! A hub with thousands of peerings: only the peerings whose wanted routes reach the page are
//! judged (against one index of the other peerings, [`crate::reconciler::derive::Judge`]),
//! and that CPU work runs on a blocking thread, not on the async workers.

use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};

use super::convert;
use super::error::ApiError;
use super::page_token;
use super::PeeringApi;
use crate::ovsdb::{LogicalRouter, LogicalRouterStaticRoute, NbCache, Table};
use crate::peering::desired::DesiredRoute;
use crate::peering::topology::effective_routes;
use crate::peering::{is_ours, port_name, Family, PeeringSpec, PEERING_KEY};
use crate::proto::v1::{ListRoutesRequest, ListRoutesResponse, Route};
use crate::reconciler::derive::{subnets_as_judged, Judge};
use crate::store::{PeeringRecord, PeeringState};
use ipnet::IpNet;
use uuid::Uuid;

use crate::peering::MAX_VPC_LEN;

impl PeeringApi {
    pub(super) async fn routes(
        &self,
        req: ListRoutesRequest,
    ) -> Result<ListRoutesResponse, ApiError> {
        if req.vpc.is_empty() {
            return Err(ApiError::invalid("vpc", "required"));
        }
        if req.vpc.len() > MAX_VPC_LEN {
            return Err(ApiError::invalid(
                "vpc",
                format!("longer than {MAX_VPC_LEN} bytes"),
            ));
        }
        let limit = page_token::page_size(req.page_size)? as usize;
        let after = page_token::decode(&req.page_token, &req.vpc)?;
        if let Some((routes, next_page_token)) =
            self.page_by_keyset(&req.vpc, &after, limit).await?
        {
            return Ok(ListRoutesResponse {
                routes,
                next_page_token,
            });
        }
        // A peering of the page wants a route NB lacks: it is judged as the worker judges it,
        // against every peering of its VPCs. One read: the VPC's peerings, and every peering
        // of the VPCs they join (the context the worker's pass reads for them).
        let context = self
            .inner
            .store
            .peering_list_touching_neighbours(&req.vpc)
            .await?;
        let protected = self.inner.settings.protected_vpcs.clone();
        let instance = self.inner.settings.instance.clone();
        let nb = self.synced_nb()?;
        let vpc = req.vpc.clone();
        // Reading NB and judging peerings is CPU work growing with the hub's peerings: off
        // the async workers.
        let (routes, next_page_token) = tokio::task::spawn_blocking(move || {
            let cache = nb.cache();
            let instance = instance.as_deref();
            page(&cache, &vpc, &context, &protected, instance, after, limit)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Ok(ListRoutesResponse {
            routes,
            next_page_token,
        })
    }

    fn synced_nb(&self) -> Result<crate::ovsdb::Client, ApiError> {
        if !self.inner.nb.state().borrow().is_synced() {
            return Err(ApiError::nb_unavailable());
        }
        Ok(self.inner.nb.clone())
    }

    /// The page read by keyset: the VPC's peerings from the cursor on, `limit + 1` at a time
    /// by name in SQL (with the peerings of their other VPCs, which their automatic routes
    /// are read from), until the page is full; then, if it is not, the router's other routes
    /// (for which only the VPC's peering names are read). `None` when a peering on the way
    /// wants a route NB lacks: judging it needs every peering of its VPCs (the caller's full
    /// read). A converged hub's first page reads about `limit` peerings, not all of them.
    async fn page_by_keyset(
        &self,
        vpc: &str,
        after: &Option<String>,
        limit: usize,
    ) -> Result<Option<(Vec<Route>, String)>, ApiError> {
        let store = &self.inner.store;
        let mut pager = Pager {
            after: after.clone(),
            limit,
            routes: Vec::with_capacity(limit),
            last_key: String::new(),
        };
        // The first peering name to list (inclusive), or none left to list.
        let mut from: Option<Option<String>> = match after.as_deref().map(Cursor::parse) {
            None => Some(None),
            Some(Cursor::Peering(name)) => Some(Some(name.to_string())),
            Some(Cursor::Rest) => None,
            Some(Cursor::Bad) => return Err(bad_token()),
        };
        // A peering already walked (the last of the previous batch), skipped in the next.
        let mut done: Option<String> = None;
        // Every peering the batches read as the VPC's: not "other routes" below even if it
        // is gone from the later read of the VPC's names (hard-deleted in between).
        let mut read_as_peerings: Vec<String> = Vec::new();
        let mut batch = limit + 1;
        while let Some(start) = from.take() {
            let records = store
                .peering_list_vpc_page(vpc, start.as_deref(), batch as i64)
                .await?;
            let mut names: Vec<String> = records
                .iter()
                .filter(|r| r.local_vpc == vpc || r.remote_vpc == vpc)
                .filter(|r| start.as_deref().is_none_or(|s| r.name.as_str() >= s))
                .map(|r| r.name.clone())
                .collect();
            names.sort_unstable();
            names.dedup();
            names.truncate(batch);
            let more = names.len() == batch;
            let last = names.last().cloned();
            read_as_peerings.extend(names.iter().cloned());
            names.retain(|n| done.as_ref() != Some(n));
            let nb = self.synced_nb()?;
            let vpc_owned = vpc.to_string();
            let instance = self.inner.settings.instance.clone();
            let (walked, p) = tokio::task::spawn_blocking(move || {
                let cache = nb.cache();
                let instance = instance.as_deref();
                let walked = walk(&cache, &vpc_owned, instance, &records, &names, &mut pager);
                (walked, pager)
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            pager = p;
            match walked? {
                Walked::Full => return Ok(Some(pager.full(vpc))),
                Walked::NeedsJudging => return Ok(None),
                Walked::On if more => {
                    from = Some(last.clone());
                    done = last;
                    batch = next_batch(batch);
                }
                Walked::On => {}
            }
        }
        let mut listed = store.peering_names_of_vpc(vpc).await?;
        listed.extend(read_as_peerings);
        let nb = self.synced_nb()?;
        let vpc = vpc.to_string();
        let instance = self.inner.settings.instance.clone();
        let page = tokio::task::spawn_blocking(move || {
            let cache = nb.cache();
            let router = one_router(&cache, &vpc)?;
            let listed: HashSet<&str> = listed.iter().map(String::as_str).collect();
            let instance = instance.as_deref();
            Ok::<_, ApiError>(other_routes(&cache, &vpc, instance, router, &listed, pager))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Ok(Some(page))
    }
}

/// Peerings read by one keyset batch, at most: a run of peerings without routes (spokes
/// without subnets, peerings not yet judged in) longer than a page is read in batches that
/// double from `page_size + 1` up to this, so a page of 1 over 10,000 of them costs 18 reads,
/// not 5,000.
const MAX_KEYSET_BATCH: usize = 1024;

/// The size of the keyset batch after one of `batch` peerings that did not fill the page.
fn next_batch(batch: usize) -> usize {
    batch
        .saturating_mul(2)
        .clamp(batch, MAX_KEYSET_BATCH.max(batch))
}

fn bad_token() -> ApiError {
    ApiError::invalid("page_token", "not a page token from a previous response")
}

/// Exactly one router of that name, as the rules resolve it (without copying its rows).
fn one_router<'c>(cache: &'c NbCache, vpc: &str) -> Result<&'c LogicalRouter, ApiError> {
    match cache.router_by_name(vpc).as_slice() {
        [r] => Ok(*r),
        _ => Err(ApiError::NotFound {
            resource: "vpc",
            name: vpc.to_string(),
        }),
    }
}

/// How a walk over some of the VPC's peerings ended.
enum Walked {
    /// The page is full.
    Full,
    /// A peering wants a route NB lacks: it must be judged against the whole context.
    NeedsJudging,
    /// Every peering given was listed; the page wants more.
    On,
}

/// Offers the routes of the peerings `names` of `vpc` (in name order) to the pager, without
/// judging any: `records` holds them and the peerings of their other VPCs.
fn walk(
    cache: &NbCache,
    vpc: &str,
    instance: Option<&str>,
    records: &[PeeringRecord],
    names: &[String],
    pager: &mut Pager,
) -> Result<Walked, ApiError> {
    let router = one_router(cache, vpc)?;
    let view = RouterRoutes::new(cache, vpc, instance, router);
    let (by_name, by_vpc) = by_name_and_vpc(records);
    for name in names {
        let Some(rows) = view.peering(name, by_name.get(name.as_str()).copied(), &by_vpc, |_| None)
        else {
            return Ok(Walked::NeedsJudging);
        };
        for (k, r) in rows {
            if pager.offer(k, r) {
                return Ok(Walked::Full);
            }
        }
    }
    Ok(Walked::On)
}

#[allow(clippy::type_complexity)]
fn by_name_and_vpc(
    records: &[PeeringRecord],
) -> (
    HashMap<&str, &PeeringRecord>,
    HashMap<&str, Vec<&PeeringRecord>>,
) {
    let by_name = records.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut by_vpc: HashMap<&str, Vec<&PeeringRecord>> = HashMap::new();
    for r in records {
        by_vpc.entry(&r.local_vpc).or_default().push(r);
        if r.remote_vpc != r.local_vpc {
            by_vpc.entry(&r.remote_vpc).or_default().push(r);
        }
    }
    (by_name, by_vpc)
}

/// The router of the listed VPC and what listing a peering's routes in it reads.
struct RouterRoutes<'a> {
    cache: &'a NbCache,
    vpc: &'a str,
    /// This deployment's id: another deployment's rows are foreign, whatever their name.
    instance: Option<&'a str>,
    router_id: String,
    in_router: HashSet<Uuid>,
}

impl<'a> RouterRoutes<'a> {
    fn new(
        cache: &'a NbCache,
        vpc: &'a str,
        instance: Option<&'a str>,
        router: &LogicalRouter,
    ) -> Self {
        RouterRoutes {
            cache,
            vpc,
            instance,
            router_id: router.uuid.to_string(),
            in_router: router.static_routes.iter().copied().collect(),
        }
    }

    /// The routes of peering `name` in the router, keyed by cursor and in cursor order: those
    /// installed, and those it would install (if it passes the rules) that NB lacks, as far
    /// as `judged` (the keys of its routes here as the worker derives them) keeps them;
    /// `None` when some are left to judge and `judged` cannot judge (returns `None`).
    fn peering(
        &self,
        name: &str,
        rec: Option<&PeeringRecord>,
        by_vpc: &HashMap<&str, Vec<&PeeringRecord>>,
        judged: impl FnOnce(&str) -> Option<HashSet<RouteKey>>,
    ) -> Option<Vec<(String, Route)>> {
        let cache = self.cache;
        let installed: Vec<Route> = cache
            .rows_with_external_id(PEERING_KEY, name)
            .into_iter()
            .filter(|(table, uuid)| {
                *table == Table::LogicalRouterStaticRoute && self.in_router.contains(uuid)
            })
            .filter_map(|(_, uuid)| cache.static_route(uuid))
            .filter(|r| is_ours(&r.external_ids, self.instance))
            .map(|r| installed_route(self.vpc, self.instance, r))
            .collect();
        let installed_keys: HashSet<RouteKey> = installed.iter().map(route_key).collect();
        // What it would install if it passes the rules, less what NB holds: judged only when
        // something is left (a converged peering is not judged at all).
        let mut wanted: Vec<Route> = rec
            .map(|r| candidates(r, by_vpc, cache, self.vpc, self.instance))
            .unwrap_or_default();
        wanted.retain(|r| !installed_keys.contains(&route_key(r)));
        if !wanted.is_empty() {
            let judged = judged(name)?;
            wanted.retain(|r| judged.contains(&route_key(r)));
        }
        let mut rows: Vec<(String, Route)> = installed
            .into_iter()
            .chain(wanted)
            .map(|r| (Cursor::peering_key(name, &r), r))
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Some(rows)
    }
}

/// One page of `vpc`'s routes after the cursor `after`, in the order the proto states: the
/// VPC's peerings by name, each with its routes (installed, and those it wants there but NB
/// lacks) by route; then the router's other routes (foreign ones, or owned by a peering no
/// longer stored) by route. A page costs the peerings it shows, not the VPC's: a peering's
/// installed routes come from the replica's index by peering, and only a peering with wanted
/// routes NB lacks is judged, against the index of `context` (the same rules and other
/// peerings as the worker's pass).
fn page(
    cache: &NbCache,
    vpc: &str,
    context: &[PeeringRecord],
    protected: &[String],
    instance: Option<&str>,
    after: Option<String>,
    limit: usize,
) -> Result<(Vec<Route>, String), ApiError> {
    let going = Judge::going(context);
    // The judge of the whole context (O(N log N) to build at a hub of N): only when one of the
    // page's peerings wants a route NB lacks.
    let full: OnceCell<Judge<'_>> = OnceCell::new();
    let judge = || full.get_or_init(|| Judge::new(context, &going, cache, protected, instance));
    let (by_name, by_vpc) = by_name_and_vpc(context);
    let router = one_router(cache, vpc)?;
    let view = RouterRoutes::new(cache, vpc, instance, router);
    let mut names: Vec<&str> = context
        .iter()
        .filter(|r| r.local_vpc == vpc || r.remote_vpc == vpc)
        .map(|r| r.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    let first = match after.as_deref().map(Cursor::parse) {
        None => 0,
        Some(Cursor::Peering(name)) => names.partition_point(|n| *n < name),
        Some(Cursor::Rest) => names.len(),
        Some(Cursor::Bad) => return Err(bad_token()),
    };
    let mut pager = Pager {
        after,
        limit,
        routes: Vec::with_capacity(limit),
        last_key: String::new(),
    };
    for name in &names[first..] {
        let judged = |name: &str| {
            Some(
                judge()
                    .rows(name)
                    .map(|d| {
                        d.routes
                            .iter()
                            .filter(|w| w.router_id == view.router_id)
                            .map(|w| derived_key(&d.name, w))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        };
        let rows = view
            .peering(name, by_name.get(name).copied(), &by_vpc, judged)
            .unwrap_or_default();
        for (k, r) in rows {
            if pager.offer(k, r) {
                return Ok(pager.full(vpc));
            }
        }
    }
    let listed: HashSet<&str> = names.iter().copied().collect();
    Ok(other_routes(cache, vpc, instance, router, &listed, pager))
}

/// The rest of a page: the router's other routes, foreign or owned by a peering not stored any
/// more (not one of `listed`, the VPC's peerings).
fn other_routes(
    cache: &NbCache,
    vpc: &str,
    instance: Option<&str>,
    router: &LogicalRouter,
    listed: &HashSet<&str>,
    mut pager: Pager,
) -> (Vec<Route>, String) {
    let mut rest: Vec<(String, Route)> = router
        .static_routes
        .iter()
        .filter_map(|u| cache.static_route(*u))
        .filter(|r| {
            !(is_ours(&r.external_ids, instance)
                && r.external_ids
                    .get(PEERING_KEY)
                    .is_some_and(|p| listed.contains(p)))
        })
        .map(|r| installed_route(vpc, instance, r))
        .map(|r| (Cursor::rest_key(&r), r))
        .collect();
    rest.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (k, r) in rest {
        if pager.offer(k, r) {
            return pager.full(vpc);
        }
    }
    (pager.routes, String::new())
}

/// A route of `vpc`'s router as NB holds it.
fn installed_route(vpc: &str, instance: Option<&str>, r: &LogicalRouterStaticRoute) -> Route {
    Route {
        vpc: vpc.to_string(),
        cidr: r.ip_prefix.to_string(),
        nexthop: r.nexthop.to_string(),
        policy: convert::policy_of_ovn(r.policy.as_deref()),
        route_table: r.route_table.to_string(),
        peering: if is_ours(&r.external_ids, instance) {
            r.external_ids
                .get(PEERING_KEY)
                .map(str::to_owned)
                .unwrap_or_default()
        } else {
            String::new()
        },
        installed: true,
        output_port: r.output_port.as_deref().unwrap_or_default().to_owned(),
    }
}

/// Fills a page from routes offered in cursor order, skipping those up to the cursor.
struct Pager {
    after: Option<String>,
    limit: usize,
    routes: Vec<Route>,
    last_key: String,
}

impl Pager {
    /// Takes `r` (keyed `key`) if it comes after the cursor; true when the page is full and
    /// `r` is one more: the page ends before it.
    fn offer(&mut self, key: String, r: Route) -> bool {
        if self.after.as_ref().is_some_and(|a| key <= *a) {
            return false;
        }
        if self.routes.len() == self.limit {
            return true;
        }
        self.last_key = key;
        self.routes.push(r);
        false
    }

    /// The full page and the token for the next one.
    fn full(self, vpc: &str) -> (Vec<Route>, String) {
        (self.routes, page_token::encode(vpc, &self.last_key))
    }
}

/// The position of a listed route, also the page cursor (a string compared as a whole:
/// segment, then peering name, then route; `\0` separates the parts, which none contains).
enum Cursor<'a> {
    /// In (or after) the routes of this peering.
    Peering(&'a str),
    /// In the router's other routes.
    Rest,
    /// Not a key this listing writes.
    Bad,
}

impl<'a> Cursor<'a> {
    fn peering_key(peering: &str, r: &Route) -> String {
        format!("0\0{peering}\0{}", sort_key(r))
    }

    fn rest_key(r: &Route) -> String {
        format!("1\0{}", sort_key(r))
    }

    fn parse(key: &'a str) -> Cursor<'a> {
        match key.split('\0').collect::<Vec<_>>().as_slice() {
            ["0", peering, _] => Cursor::Peering(peering),
            ["1", _] => Cursor::Rest,
            _ => Cursor::Bad,
        }
    }
}

/// The routes the live peering `rec` would install in `vpc` if it passes the rules, read as
/// the whole context's judge reads them: the other VPC's subnets depend only on the peerings
/// of that VPC (`by_vpc`: which of its ports leave with a tombstone), read without indexing
/// them (an index of a spoke's peerings reads the subnets of the hub too: 10,000 ports, for
/// each peering of the page).
fn candidates(
    rec: &PeeringRecord,
    by_vpc: &HashMap<&str, Vec<&PeeringRecord>>,
    cache: &NbCache,
    vpc: &str,
    instance: Option<&str>,
) -> Vec<Route> {
    if rec.state == PeeringState::Deleting {
        return Vec::new();
    }
    let Ok(spec) = rec.spec() else {
        return Vec::new();
    };
    let Some(side) = spec.side_of(vpc) else {
        return Vec::new();
    };
    let other = spec.vpc(side.other());
    let few: Vec<PeeringRecord> = by_vpc
        .get(other)
        .into_iter()
        .flatten()
        .map(|r| (*r).clone())
        .collect();
    wanted_unjudged(&subnets_as_judged(&few, cache, other, instance), &spec, vpc)
}

/// The routes peering `spec` would install in `vpc` if it passes the rules, as
/// [`crate::peering::desired::desired_from_facts`] writes them (the other VPC's subnets as the
/// rules read them), before judging it.
fn wanted_unjudged(other_subnets: &[IpNet], spec: &PeeringSpec, vpc: &str) -> Vec<Route> {
    let Some(side) = spec.side_of(vpc) else {
        return Vec::new();
    };
    let other = spec.vpc(side.other());
    let via = spec.connect(side.other());
    effective_routes(spec.routes(side), other_subnets, via)
        .into_iter()
        .filter_map(|r| {
            let nexthop = via.host(Family::of(&r.prefix))?;
            Some(Route {
                vpc: vpc.to_string(),
                cidr: r.prefix.trunc().to_string(),
                nexthop: nexthop.to_string(),
                policy: convert::policy(r.policy),
                route_table: String::new(),
                peering: spec.name.clone(),
                installed: false,
                output_port: port_name(vpc, other),
            })
        })
        .collect()
}

/// What makes two listed routes the same row: (cidr, nexthop, policy, table, peering, port).
type RouteKey = (String, String, i32, String, String, String);

fn route_key(r: &Route) -> RouteKey {
    (
        r.cidr.clone(),
        r.nexthop.clone(),
        r.policy,
        r.route_table.clone(),
        r.peering.clone(),
        r.output_port.clone(),
    )
}

fn derived_key(peering: &str, r: &DesiredRoute) -> RouteKey {
    (
        r.ip_prefix.clone(),
        r.nexthop.clone(),
        convert::policy(r.policy),
        r.route_table.clone(),
        peering.to_string(),
        r.output_port.clone(),
    )
}

/// A total order on the routes of one segment of the listing.
fn sort_key(r: &Route) -> String {
    let policy = convert::policy_from_api(r.policy)
        .unwrap_or_default()
        .as_ovn_str();
    format!(
        "{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}\u{1}{}",
        r.route_table,
        r.cidr,
        policy,
        r.nexthop,
        r.peering,
        u8::from(!r.installed),
        r.output_port
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyset_batches_double_up_to_the_cap_and_never_shrink() {
        assert_eq!(next_batch(2), 4);
        assert_eq!(next_batch(600), MAX_KEYSET_BATCH);
        assert_eq!(next_batch(MAX_KEYSET_BATCH), MAX_KEYSET_BATCH);
        // A page larger than the cap keeps its own size.
        assert_eq!(next_batch(1001 + MAX_KEYSET_BATCH), 1001 + MAX_KEYSET_BATCH);
        let (mut batch, mut read, mut reads) = (2, 0, 0);
        while read < 10_000 {
            read += batch;
            batch = next_batch(batch);
            reads += 1;
        }
        assert_eq!(reads, 18, "reads of a page of 1 over 10,000 peerings");
    }
}
