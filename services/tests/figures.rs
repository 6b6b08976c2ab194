//! The figures each connector publishes, against fakes of the platforms' documented APIs
//! (wiremock on 127.0.0.1:0), checked against values this file computes itself from the fixture
//! data: whole snapshots per period and per currency, pages at the platforms' maximum sizes,
//! throttles with and without Retry-After, expiring tokens, 500s and truncated bodies, a quiet
//! second run that leaves every figure as it was, a run where every store fails (no snapshot, no
//! zero), and a run where one side endpoint fails (the rest published, that figure unavailable).

mod common;

use std::{collections::BTreeMap, str::FromStr, sync::Arc};

use common::{Recorder, Signed, acme, first, http, owned, run, shopify_config, type_names, xero_config, xero_report};
use jiff::{SignedDuration, Timestamp, tz::TimeZone};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use switchyard::proto::v1::{Money, OrderFigures, event::Payload};
use switchyard_services::{
    amazon::{Amazon, AmazonConfig},
    connector::Scope,
    period::Zone,
    scheduler::{Health, Schedule, run_once},
    shopify::Shopify,
    state::StateFile,
    unleashed::{Unleashed, UnleashedConfig},
    xero::Xero,
};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_string_contains, method, path, query_param},
};

/// A fixture order: when, how much, in what, refunded, and whether it counts.
#[derive(Clone)]
struct Fixture {
    id: String,
    created: Timestamp,
    total: (&'static str, String),
    refunded: Option<String>,
    counts: bool,
    status: &'static str,
}

/// Independently of the connector: orders created in `[from, to]` that count, their totals per
/// currency and totals net of refunds.
fn expected(orders: &[Fixture], figures: &OrderFigures) -> (u32, Vec<String>, Vec<String>) {
    let p = figures.period.as_ref().expect("a period");
    let at = |t: &pbjson_types::Timestamp| Timestamp::new(t.seconds, t.nanos).unwrap();
    let (from, to) = (at(p.from.as_ref().unwrap()), at(p.to.as_ref().unwrap()));
    let mut n = 0;
    let (mut gross, mut net) = (BTreeMap::<&str, Decimal>::new(), BTreeMap::<&str, Decimal>::new());
    for o in orders.iter().filter(|o| o.counts && from <= o.created && o.created <= to) {
        n += 1;
        let amount = Decimal::from_str(&o.total.1).unwrap();
        *gross.entry(o.total.0).or_default() += amount;
        let refund = o.refunded.as_deref().map(|r| Decimal::from_str(r).unwrap()).unwrap_or_default();
        *net.entry(o.total.0).or_default() += amount - refund;
    }
    let show = |m: BTreeMap<&str, Decimal>| m.into_iter().map(|(c, v)| format!("{:.2} {c}", v)).collect();
    (n, show(gross), show(net))
}

fn shown(list: &[Money]) -> Vec<String> {
    list.iter().map(|m| format!("{} {}", m.amount, m.currency)).collect()
}

fn check(orders: &[Fixture], f: &OrderFigures, what: &str) {
    let (n, gross, net) = expected(orders, f);
    assert_eq!(f.orders, n, "{what}: orders");
    assert_eq!(shown(&f.revenue), gross, "{what}: revenue per currency");
    if !f.net_revenue.is_empty() {
        assert_eq!(shown(&f.net_revenue), net, "{what}: net revenue per currency");
    }
}

/// The tenant's local midnight, computed here from the calendar date (not with the connector's code).
fn local_midnight(now: Timestamp, tz: &str) -> Timestamp {
    let tz = TimeZone::get(tz).unwrap();
    let date = now.to_zoned(tz.clone()).date();
    date.to_zoned(tz).unwrap().timestamp()
}

// ---------- Shopify ----------

fn shopify_node(o: &Fixture, test: bool) -> Value {
    json!({"node": {"id": format!("gid://shopify/Order/{}", o.id), "legacyResourceId": o.id, "name": format!("#{}", o.id),
        "createdAt": o.created.to_string(), "test": test, "cancelledAt": if o.status == "cancelled" { json!(o.created.to_string()) } else { Value::Null },
        "displayFinancialStatus": "PAID", "displayFulfillmentStatus": "UNFULFILLED",
        "totalPriceSet": {"shopMoney": {"amount": o.total.1, "currencyCode": o.total.0}},
        "totalRefundedSet": {"shopMoney": {"amount": o.refunded.clone().unwrap_or("0.00".into()), "currencyCode": o.total.0}}}})
}

fn shopify_page(orders: &[Fixture], next: Option<&str>) -> Value {
    let edges: Vec<Value> = orders.iter().map(|o| shopify_node(o, o.status == "test")).collect();
    json!({"data": {"orders": {"edges": edges, "pageInfo": {"hasNextPage": next.is_some(), "endCursor": next}}},
        "extensions": {"cost": {"requestedQueryCost": 252, "actualQueryCost": 252,
            "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 1500, "restoreRate": 100.0}}}})
}

/// 260 UK orders in GBP over the last ~39 hours (one test order, one cancelled, some refunds),
/// and EU orders in EUR and USD.
fn shopify_orders(now: Timestamp) -> (Vec<Fixture>, Vec<Fixture>) {
    let uk = (0..260)
        .map(|i: i64| Fixture {
            id: (5_000_000_000_000_000 + i).to_string(),
            created: now - SignedDuration::from_secs(i * 9 * 60 + 37),
            total: ("GBP", format!("{}.{:02}", 10 + i % 7, i % 100)),
            refunded: (i % 10 == 0).then(|| "1.05".to_owned()),
            counts: i != 3 && i != 4,
            status: match i {
                3 => "test",
                4 => "cancelled",
                _ => "open",
            },
        })
        .collect();
    let eu = [(1, "EUR", "20.00"), (7, "EUR", "5.50"), (20, "USD", "99.99"), (30, "EUR", "1.00")]
        .into_iter()
        .enumerate()
        .map(|(i, (hours, c, a))| Fixture {
            id: (900 + i).to_string(),
            created: now - SignedDuration::from_hours(hours) - SignedDuration::from_secs(11),
            total: (c, a.to_owned()),
            refunded: None,
            counts: true,
            status: "open",
        })
        .collect();
    (uk, eu)
}

async fn mount_shopify(server: &MockServer, uk: &[Fixture], eu: &[Fixture]) {
    let uk_path = "/acme-uk.myshopify.com/graphql.json";
    let eu_path = "/acme-eu.myshopify.com/graphql.json";
    // UK: throttled once (query cost), then a full page of 250, then a 429 with Retry-After, then the rest.
    Mock::given(method("POST")).and(path(uk_path))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": {"cost": {"requestedQueryCost": 252, "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 2, "restoreRate": 100.0}}}})))
        .up_to_n_times(1).mount(server).await;
    Mock::given(method("POST"))
        .and(path(uk_path))
        .and(body_string_contains("\"after\":\"p2\""))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "2"))
        .up_to_n_times(1)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(uk_path))
        .and(body_string_contains("\"after\":null"))
        .and(body_string_contains("\"first\":250"))
        .respond_with(ResponseTemplate::new(200).set_body_json(shopify_page(&uk[..250], Some("p2"))))
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(uk_path))
        .and(body_string_contains("\"after\":\"p2\""))
        .respond_with(ResponseTemplate::new(200).set_body_json(shopify_page(&uk[250..], None)))
        .mount(server)
        .await;
    // EU: a 500, then a body cut short, then the page.
    Mock::given(method("POST"))
        .and(path(eu_path))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(eu_path))
        .respond_with(
            ResponseTemplate::new(200).set_body_string("{\"data\": {\"orders\": {\"edges\": [{\"node\": {\"id\""),
        )
        .up_to_n_times(1)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(eu_path))
        .respond_with(ResponseTemplate::new(200).set_body_json(shopify_page(eu, None)))
        .mount(server)
        .await;
}

#[tokio::test]
async fn shopify_figures_are_whole_per_period_and_currency_and_a_quiet_run_keeps_them() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let (uk, eu) = shopify_orders(now);
    mount_shopify(&server, &uk, &eu).await;
    let (config, state) = shopify_config(&server.uri(), dir.path(), 250);
    let zone = Zone::new("Europe/London").unwrap();
    let sink = Arc::new(Recorder::default());
    let scope = Scope { zone: zone.clone(), ..acme(switchyard_services::shopify::SOURCE) };
    let mut shopify = Shopify::new(config.clone(), http(), state.clone());
    run(&scope, &mut shopify, &sink).await.unwrap();
    let run1 = sink.take();
    let stores = owned(&run1, |p| match p {
        Payload::ShopifyStoreSynced(s) => Some(s),
        _ => None,
    });
    assert_eq!(stores.len(), 2);
    let uk_figures = stores[0].today.as_ref().unwrap();
    assert_eq!(uk_figures.period.as_ref().unwrap().timezone, "Europe/London");
    assert_eq!(
        uk_figures.period.as_ref().unwrap().from.as_ref().unwrap().seconds,
        local_midnight(now, "Europe/London").as_second(),
        "today starts at local midnight"
    );
    check(&uk, uk_figures, "UK today");
    check(&uk, stores[0].last_24h.as_ref().unwrap(), "UK 24 h");
    check(&eu, stores[1].today.as_ref().unwrap(), "EU today");
    check(&eu, stores[1].last_24h.as_ref().unwrap(), "EU 24 h");
    assert!(stores[1].last_24h.as_ref().unwrap().revenue.len() == 2, "EUR and USD kept apart");
    let eu_today = &stores[1].today.as_ref().unwrap().revenue;
    assert_eq!(stores[1].revenue.is_some(), eu_today.len() == 1, "a single total only within one currency");
    let done = first(&run1, |p| match p {
        Payload::ShopifySyncCompleted(s) => Some(s),
        _ => None,
    });
    let both: Vec<Fixture> = uk.iter().chain(&eu).cloned().collect();
    check(&both, done.today.as_ref().unwrap(), "consolidated today");
    check(&both, done.last_24h.as_ref().unwrap(), "consolidated 24 h");
    assert_eq!((done.success_count, done.total_stores), (2, 2));
    assert!(done.failed_stores.is_empty());
    let facts = owned(&run1, |p| match p {
        Payload::ShopifyOrderCreated(o) => Some(&o.order_id),
        _ => None,
    });
    let window = done
        .last_24h
        .as_ref()
        .unwrap()
        .period
        .as_ref()
        .unwrap()
        .from
        .as_ref()
        .unwrap()
        .seconds
        .min(done.today.as_ref().unwrap().period.as_ref().unwrap().from.as_ref().unwrap().seconds);
    let in_window = uk.iter().chain(&eu).filter(|o| o.created.as_second() >= window).count();
    assert_eq!(facts.len(), in_window, "every order of the periods not published before is a fact");
    // UK: throttled, page 1, 429, page 2; EU: 500, a truncated body, the page. Each asked again.
    assert_eq!(server.received_requests().await.unwrap().len(), 7);

    // A quiet second run (restart, no new orders): the same figures, not zeros; no repeated facts.
    let mut again = Shopify::new(config, http(), state);
    run(&scope, &mut again, &sink).await.unwrap();
    let second = sink.take();
    assert!(type_names(&second).iter().all(|t| t != "shopify:order-created"), "nothing re-published");
    let stores2 = owned(&second, |p| match p {
        Payload::ShopifyStoreSynced(s) => Some(s),
        _ => None,
    });
    for (a, b) in stores.iter().zip(&stores2) {
        let strip = |f: &OrderFigures| (f.orders, f.revenue.clone(), f.net_revenue.clone());
        assert_eq!(
            strip(a.today.as_ref().unwrap()),
            strip(b.today.as_ref().unwrap()),
            "{} today unchanged",
            a.store_id
        );
        assert_eq!(strip(a.last_24h.as_ref().unwrap()), strip(b.last_24h.as_ref().unwrap()));
    }
    let status = first(&second, |p| match p {
        Payload::ShopifySyncStatus(s) => Some(s),
        _ => None,
    });
    assert!(status.ok && status.last_success.is_some() && status.failing_since.is_none());
}

#[tokio::test]
async fn shopify_when_every_store_fails_no_figure_is_published_and_the_status_says_why() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    Mock::given(path("/acme-uk.myshopify.com/graphql.json"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"errors": "[API] Invalid API key or access token"})),
        )
        .mount(&server)
        .await;
    Mock::given(path("/acme-eu.myshopify.com/graphql.json"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let (config, state) = shopify_config(&server.uri(), dir.path(), 250);
    let sink = Arc::new(Recorder::default());
    let mut health = Health::new(Default::default());
    let err = run_once(
        &mut Shopify::new(config.clone(), http(), state.clone()),
        &acme(switchyard_services::shopify::SOURCE),
        sink.clone(),
        &mut health,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "unauthorized");
    let events = sink.take();
    let names = type_names(&events);
    assert!(
        !names.iter().any(|n| n == "shopify:store-synced" || n == "shopify:sync-completed"),
        "no invented zeros: {names:?}"
    );
    let errors = owned(&events, |p| match p {
        Payload::ShopifySyncError(e) => Some(e),
        _ => None,
    });
    let scopes: Vec<&str> = errors.iter().map(|e| e.scope.as_str()).collect();
    assert_eq!(scopes, ["acme-uk.myshopify.com", "acme-eu.myshopify.com"], "one error per store, nothing twice");
    assert!(errors.iter().all(|e| e.missing == ["shopify:store-synced"]));
    assert!(!errors[0].error.contains("shpat_uk"), "credentials never appear in errors");
    let status = first(&events, |p| match p {
        Payload::ShopifySyncStatus(s) => Some(s),
        _ => None,
    });
    assert!(!status.ok && status.failing_since.is_some() && status.last_success.is_none());
    assert!(status.missing.contains(&"shopify:sync-completed".to_owned()), "{:?}", status.missing);
    // How long it took, and when it runs again: after a failure, the retry delay.
    assert!(status.duration.is_some_and(|d| d.seconds >= 0 && d.seconds < 60), "{:?}", status.duration);
    let next = status.next_run.expect("the next run is announced");
    let retry = Schedule::default().retry.as_secs() as i64;
    let until = next.seconds - Timestamp::now().as_second();
    assert!((retry - 2..=retry).contains(&until), "next run in {until} s, retry is {retry} s");
    assert_eq!(health.wait, Schedule::default().retry);

    // One store back: its figures and a consolidated snapshot that names the store still failing.
    server.reset().await;
    Mock::given(path("/acme-uk.myshopify.com/graphql.json"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let now = Timestamp::now();
    let (_, eu) = shopify_orders(now);
    Mock::given(path("/acme-eu.myshopify.com/graphql.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(shopify_page(&eu, None)))
        .mount(&server)
        .await;
    let err = run_once(
        &mut Shopify::new(config, http(), state),
        &acme(switchyard_services::shopify::SOURCE),
        sink.clone(),
        &mut health,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), "partial");
    let events = sink.take();
    let done = first(&events, |p| match p {
        Payload::ShopifySyncCompleted(s) => Some(s),
        _ => None,
    });
    assert_eq!((done.success_count, done.total_stores), (1, 2));
    assert_eq!(done.failed_stores, ["acme-uk.myshopify.com"]);
    check(&eu, done.today.as_ref().unwrap(), "only the store that synced");
    let status = first(&events, |p| match p {
        Payload::ShopifySyncStatus(s) => Some(s),
        _ => None,
    });
    assert!(!status.ok);
    assert_eq!(status.missing, ["shopify:store-synced acme-uk.myshopify.com"]);
}

// ---------- Amazon ----------

fn amazon_config(server: &MockServer) -> AmazonConfig {
    AmazonConfig {
        tenant: "acme".into(),
        client_id: "amzn1.application-oa2-client.x".into(),
        client_secret: "s".into(),
        refresh_token: "Atzr|test".into(),
        marketplace_id: "A1F83G8C2ARO7P".into(),
        api_url: server.uri(),
        lwa_url: format!("{}/auth/o2/token", server.uri()),
        reorder_point: 10,
        open_order_days: 7,
        sqs: None,
    }
}

#[tokio::test]
async fn amazon_units_orders_and_an_inbound_call_that_fails_is_unavailable_not_zero() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Two access tokens: the first expires under the connector (401), the second works.
    for (n, token) in [(1, "Atza|old"), (2, "Atza|new")] {
        Mock::given(method("POST"))
            .and(path("/auth/o2/token"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"access_token": token, "token_type": "bearer", "expires_in": 3600})),
            )
            .up_to_n_times(1)
            .named(format!("token {n}"))
            .mount(&server)
            .await;
    }
    Mock::given(wiremock::matchers::header("x-amz-access-token", "Atza|old"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    // Inventory: units Amazon holds (totalQuantity) are more than the fulfillable ones.
    let skus: Vec<(String, i64, i64)> =
        (0..60).map(|i| (format!("SKU-{i}"), (i * 7) % 23, (i * 7) % 23 + i % 4)).collect();
    let summary = |(sku, fulfillable, total): &(String, i64, i64)| {
        json!({"sellerSku": sku, "productName": format!("{sku} name"), "totalQuantity": total,
            "inventoryDetails": {"fulfillableQuantity": fulfillable, "inboundWorkingQuantity": total - fulfillable}})
    };
    Mock::given(path("/fba/inventory/v1/summaries"))
        .and(wiremock::matchers::query_param_is_missing("nextToken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"payload": {"inventorySummaries": skus[..50].iter().map(summary).collect::<Vec<_>>()}, "pagination": {"nextToken": "p2"}}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/fba/inventory/v1/summaries"))
        .and(query_param("nextToken", "p2"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/fba/inventory/v1/summaries"))
        .and(query_param("nextToken", "p2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"payload": {"inventorySummaries": skus[50..].iter().map(summary).collect::<Vec<_>>()}}),
        ))
        .mount(&server)
        .await;
    // Orders over the last 7 days, 100 to a page, every status.
    let now = Timestamp::now();
    let statuses = ["SHIPPED", "UNSHIPPED", "PARTIALLY_SHIPPED", "PENDING", "CANCELED"];
    let orders: Vec<Fixture> = (0..130)
        .map(|i: i64| Fixture {
            id: format!("202-{i:07}"),
            created: now - SignedDuration::from_secs(i * 71 * 60 + 13),
            total: (if i % 9 == 0 { "EUR" } else { "GBP" }, format!("{}.{:02}", 5 + i % 11, (i * 3) % 100)),
            refunded: None,
            counts: statuses[i as usize % 5] != "CANCELED",
            status: statuses[i as usize % 5],
        })
        .collect();
    let order_json = |o: &Fixture| {
        json!({"orderId": o.id, "createdTime": o.created.to_string(), "fulfillment": {"fulfillmentStatus": o.status},
            "proceeds": {"grandTotal": {"amount": o.total.1, "currencyCode": o.total.0}}})
    };
    Mock::given(path("/orders/2026-01-01/orders"))
        .and(wiremock::matchers::query_param_is_missing("paginationToken"))
        .and(query_param("maxResultsPerPage", "100"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"orders": orders[..100].iter().map(order_json).collect::<Vec<_>>(), "pagination": {"nextToken": "o2"}}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/orders/2026-01-01/orders"))
        .and(query_param("paginationToken", "o2"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"orders": orders[100..].iter().map(order_json).collect::<Vec<_>>()})),
        )
        .mount(&server)
        .await;
    // The inbound shipments role is not granted: 404 (after the token refresh, every time).
    Mock::given(path("/fba/inbound/v0/shipments"))
        .and(wiremock::matchers::header("x-amz-access-token", "Atza|new"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"errors": [{"code": "NotFound"}]})))
        .mount(&server)
        .await;

    let state = StateFile::new(dir.path(), "amazon");
    let sink = Arc::new(Recorder::default());
    let zone = Zone::new("America/New_York").unwrap();
    run(
        &Scope { zone: zone.clone(), ..acme(switchyard_services::amazon::SOURCE) },
        &mut Amazon::new(amazon_config(&server), http(), state.clone()),
        &sink,
    )
    .await
    .unwrap();
    let events = sink.take();
    let a = first(&events, |p| match p {
        Payload::AmazonSyncCompleted(a) => Some(a),
        _ => None,
    });
    assert_eq!(a.total_skus, 60);
    assert_eq!(a.total_units, Some(skus.iter().map(|s| s.2 as u64).sum()), "every unit Amazon holds");
    assert_eq!(a.fulfillable_units, skus.iter().map(|s| s.1 as u64).sum::<u64>(), "units available to sell");
    assert_eq!(a.low_stock_skus, skus.iter().filter(|s| s.1 < 10).count() as u32, "low stock by fulfillable");
    let count = |st: &[&str]| orders.iter().filter(|o| st.contains(&o.status)).count() as u32;
    assert_eq!(a.unshipped_orders, count(&["UNSHIPPED", "PARTIALLY_SHIPPED"]), "ready to ship");
    assert_eq!(a.pending_orders, count(&["PENDING"]), "not yet payable, counted apart");
    check(&orders, a.today.as_ref().unwrap(), "Amazon today");
    check(&orders, a.last_24h.as_ref().unwrap(), "Amazon 24 h");
    assert_eq!(
        a.today.as_ref().unwrap().period.as_ref().unwrap().from.as_ref().unwrap().seconds,
        local_midnight(now, "America/New_York").as_second()
    );
    assert_eq!(a.inbound_shipments, None, "a failed side figure is absent, not zero");
    assert_eq!(a.unavailable.len(), 1);
    assert_eq!(a.unavailable[0].figure, "inbound_shipments");
    assert!(a.unavailable[0].reason.contains("404"), "{}", a.unavailable[0].reason);
    let json = switchyard::json::event_to_json(
        &events.iter().find(|e| matches!(e.payload, Some(Payload::AmazonSyncCompleted(_)))).unwrap().clone(),
    );
    assert!(!json.contains("inboundShipments"), "absent on the wire too: {json}");

    // Quiet second run (a restart, so a fresh token): the same figures; no order facts or alert again.
    Mock::given(path("/auth/o2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "Atza|new", "expires_in": 3600})))
        .mount(&server)
        .await;
    run(
        &Scope { zone, ..acme(switchyard_services::amazon::SOURCE) },
        &mut Amazon::new(amazon_config(&server), http(), state),
        &sink,
    )
    .await
    .unwrap();
    let events = sink.take();
    let names = type_names(&events);
    assert!(!names.iter().any(|n| n == "amazon:order-created" || n == "amazon:low-stock-alert"), "{names:?}");
    let b = first(&events, |p| match p {
        Payload::AmazonSyncCompleted(a) => Some(a),
        _ => None,
    });
    assert_eq!(
        (b.total_units, b.unshipped_orders, b.pending_orders),
        (a.total_units, a.unshipped_orders, a.pending_orders)
    );
    assert_eq!(b.today.as_ref().unwrap().orders, a.today.as_ref().unwrap().orders);
}

// ---------- Xero ----------

#[tokio::test]
async fn xero_working_capital_includes_bank_and_a_failing_profit_and_loss_is_unavailable() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    Mock::given(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"access_token": "at", "expires_in": 1800, "token_type": "Bearer", "refresh_token": "rt-2"}),
        ))
        .mount(&server)
        .await;
    Mock::given(path("/api/Organisation"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Organisations": [{"BaseCurrency": "AUD"}]})))
        .mount(&server)
        .await;
    // Xero's standard layout: bank accounts in their own section, before current assets.
    let (bank, assets, liabilities) = ("18250.75", "42500.40", "15000.15");
    Mock::given(path("/api/Reports/BalanceSheet"))
        .respond_with(ResponseTemplate::new(200).set_body_json(xero_report(json!([
        {"RowType": "Header", "Cells": [{"Value": ""}, {"Value": "30 Nov 2026"}]},
        {"RowType": "Section", "Title": "Bank", "Rows": [
            {"RowType": "Row", "Cells": [{"Value": "Business Cheque"}, {"Value": "18000.00"}]},
            {"RowType": "Row", "Cells": [{"Value": "Business Savings"}, {"Value": "250.75"}]},
            {"RowType": "SummaryRow", "Cells": [{"Value": "Total Bank"}, {"Value": bank}]}]},
        {"RowType": "Section", "Title": "Current Assets", "Rows": [
            {"RowType": "Row", "Cells": [{"Value": "Accounts Receivable"}, {"Value": "12500.40"}]},
            {"RowType": "SummaryRow", "Cells": [{"Value": "Total Current Assets"}, {"Value": assets}]}]},
        {"RowType": "Section", "Title": "Current Liabilities", "Rows": [
            {"RowType": "Row", "Cells": [{"Value": "Accounts Payable"}, {"Value": "8000.15"}]},
            {"RowType": "SummaryRow", "Cells": [{"Value": "Total Current Liabilities"}, {"Value": liabilities}]}]}]))))
        .mount(&server)
        .await;
    Mock::given(path("/api/Reports/ProfitAndLoss")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    Mock::given(path("/api/Invoices"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"Invoices": [{"InvoiceID": "a"}, {"InvoiceID": "b"}]})),
        )
        .mount(&server)
        .await;
    let config = xero_config(&server.uri(), "rt-1");
    let sink = Arc::new(Recorder::default());
    let zone = Zone::new("Australia/Sydney").unwrap();
    run(
        &Scope { zone, ..acme(switchyard_services::xero::SOURCE) },
        &mut Xero::new(config, http(), StateFile::new(dir.path(), "xero")),
        &sink,
    )
    .await
    .unwrap();
    let events = sink.take();
    let x = first(&events, |p| match p {
        Payload::XeroSyncCompleted(x) => Some(x),
        _ => None,
    });
    let d = |s: &str| Decimal::from_str(s).unwrap();
    let amount = |m: &Option<Money>| m.as_ref().map(|m| (d(&m.amount), m.currency.clone()));
    assert_eq!(
        amount(&x.working_capital),
        Some((d(bank) + d(assets) - d(liabilities), "AUD".into())),
        "cash is a current asset"
    );
    assert_eq!(amount(&x.working_capital_excluding_bank), Some((d(assets) - d(liabilities), "AUD".into())));
    assert_eq!(amount(&x.bank), Some((d(bank), "AUD".into())));
    assert_eq!((x.revenue.clone(), x.net_profit.clone()), (None, None), "no profit figures it could not read");
    assert_eq!(x.unavailable.iter().map(|u| u.figure.as_str()).collect::<Vec<_>>(), ["revenue, net_profit"]);
    assert_eq!(x.invoices_changed, Some(2));
    let period = x.period.as_ref().unwrap();
    assert_eq!((period.name.as_str(), period.timezone.as_str()), ("month_to_date", "Australia/Sydney"));
    // The profit and loss was asked for from the first of the month, in Sydney.
    let asked: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/api/Reports/ProfitAndLoss")
        .map(|r| r.url.query().unwrap_or_default().to_owned())
        .collect();
    let sydney = Timestamp::now().to_zoned(TimeZone::get("Australia/Sydney").unwrap()).date();
    assert!(
        asked[0].starts_with(&format!("fromDate={}-{:02}-01&toDate={sydney}", sydney.year(), sydney.month())),
        "{asked:?}"
    );
}

// ---------- Unleashed ----------

fn one_page(items: Value) -> Signed {
    Signed(
        json!({"Pagination": {"NumberOfItems": 1, "PageSize": 1000, "PageNumber": 1, "NumberOfPages": 1}, "Items": items}),
    )
}

fn unleashed(server: &MockServer) -> UnleashedConfig {
    UnleashedConfig {
        daily_capacity: Some(40),
        assembly_link: Some("https://unleashed.example/Assembly/{guid}".into()),
        ..common::unleashed_config(&server.uri(), 1000)
    }
}

#[tokio::test]
async fn unleashed_yield_counts_wastage_and_short_quantities_and_a_missing_date_is_said_not_zeroed() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Stock on hand over two pages at Unleashed's maximum page size (1,000), minimum levels for some.
    let rows: Vec<(String, i64, String)> =
        (0..1005).map(|i: i64| (format!("P{i:04}"), i % 17, format!("{}.{:02}", i % 50, (i * 7) % 100))).collect();
    let minimums: Vec<(String, i64)> = rows.iter().step_by(3).map(|r| (r.0.clone(), 8)).collect();
    let products: Vec<Value> =
        minimums.iter().map(|(code, min)| json!({"ProductCode": code, "MinStockAlertLevel": min})).collect();
    Mock::given(path("/Products/1")).respond_with(one_page(json!(products))).mount(&server).await;
    let stock = |r: &(String, i64, String)| json!({"ProductCode": r.0, "QtyOnHand": r.1, "TotalCost": r.2});
    let page = |items: &[(String, i64, String)], n: u64| {
        Signed(json!({"Pagination": {"NumberOfItems": 1005, "PageSize": 1000, "PageNumber": n, "NumberOfPages": 2},
            "Items": items.iter().map(stock).collect::<Vec<_>>()}))
    };
    Mock::given(path("/StockOnHand/1"))
        .and(query_param("pageSize", "1000"))
        .respond_with(page(&rows[..1000], 1))
        .mount(&server)
        .await;
    Mock::given(path("/StockOnHand/2")).respond_with(page(&rows[1000..], 2)).mount(&server).await;
    let now_ms = Timestamp::now().as_millisecond();
    let date = |ms: i64| format!("/Date({ms})/");
    let assemblies = json!([
        // Completed just now (the alternative field name), with wastage on a component line.
        {"Guid": "g-1", "AssemblyNumber": "ASM-1", "AssemblyStatus": "Completed", "Quantity": 10, "CompletedDate": date(now_ms - 1000),
         "AssemblyLines": [{"WastageQuantity": 2}, {"WastageQuantity": 0}], "Product": {"ProductCode": "W"}},
        // Completed just now, short: 15 of 20 produced.
        {"Guid": "g-2", "AssemblyNumber": "ASM-2", "AssemblyStatus": "Completed", "Quantity": 20, "AssembledQuantity": 15,
         "AssembledDate": date(now_ms - 2000), "Product": {"ProductCode": "W"}},
        // Completed just now, the date only as the platform's Assembly Date.
        {"Guid": "g-6", "AssemblyNumber": "ASM-6", "AssemblyStatus": "Completed", "Quantity": 5, "AssemblyDate": date(now_ms - 3000), "Product": {"ProductCode": "W"}},
        // Assembled two days ago, though its Assembly Date says today: the assembled date wins.
        {"Guid": "g-7", "AssemblyNumber": "ASM-7", "AssemblyStatus": "Completed", "Quantity": 9, "AssembledDate": date(now_ms - 2 * 86_400_000),
         "AssemblyDate": date(now_ms - 4000), "Product": {"ProductCode": "W"}},
        // Completed two days ago: not today's.
        {"Guid": "g-3", "AssemblyNumber": "ASM-3", "AssemblyStatus": "Completed", "Quantity": 7, "AssembledDate": date(now_ms - 2 * 86_400_000), "Product": {"ProductCode": "W"}},
        // Overdue, and not yet due.
        {"Guid": "g-4", "AssemblyNumber": "ASM-4", "AssemblyStatus": "Parked", "Quantity": 3, "AssembleBy": date(now_ms - 86_400_000), "Product": {"ProductCode": "W"}},
        {"Guid": "g-5", "AssemblyNumber": "ASM-5", "AssemblyStatus": "Parked", "Quantity": 3, "AssembleBy": date(now_ms + 86_400_000), "Product": {"ProductCode": "W"}}
    ]);
    Mock::given(path("/Assemblies/1")).respond_with(one_page(assemblies.clone())).up_to_n_times(2).mount(&server).await;
    let state = StateFile::new(dir.path(), "unleashed");
    let sink = Arc::new(Recorder::default());
    let sync = || async {
        let mut connector = Unleashed::new(unleashed(&server), http(), state.clone());
        run(&acme(switchyard_services::unleashed::SOURCE), &mut connector, &sink).await.unwrap();
    };
    sync().await;
    let events = sink.take();
    let u = first(&events, |p| match p {
        Payload::UnleashedSyncCompleted(u) => Some(u),
        _ => None,
    });
    // Independently: the stock value and the products under their minimum, from the fixture rows.
    let value: Decimal = rows.iter().map(|r| Decimal::from_str(&r.2).unwrap()).sum();
    assert_eq!(u.stock_value.as_ref().map(|m| Decimal::from_str(&m.amount).unwrap()), Some(value));
    assert_eq!(u.stock_items, 1005, "both pages");
    let low = rows.iter().filter(|r| minimums.iter().any(|(c, min)| *c == r.0 && r.1 < *min)).count();
    assert_eq!(u.low_stock_items, low as u32);
    // Today's completed assemblies are ASM-1 (10 of 10), ASM-2 (15 of 20) and ASM-6 (5 of 5).
    assert_eq!(u.completed_today, Some(3));
    assert_eq!(u.yield_percent, format!("{:.1}", (10.0 + 15.0 + 5.0) * 100.0 / (10.0 + 20.0 + 5.0)));
    assert_eq!(u.utilization_percent, format!("{:.1}", 30.0 * 100.0 / 40.0));
    assert_eq!((u.active_assemblies, u.overdue_assemblies, u.quality_alerts), (2, 1, 2));
    let q = first(&events, |p| match p {
        Payload::UnleashedQualityAlert(q) => Some(q),
        _ => None,
    });
    let issues: Vec<(&str, &str, i64, i64, &str)> = q
        .issues
        .iter()
        .map(|i| (i.assembly_id.as_str(), i.kind.as_str(), i.planned, i.produced, i.link.as_str()))
        .collect();
    assert_eq!(
        issues,
        [
            ("ASM-1", "wastage", 10, 10, "https://unleashed.example/Assembly/g-1"),
            ("ASM-2", "short", 20, 15, "https://unleashed.example/Assembly/g-2")
        ]
    );
    // Second run, same assemblies: no repeated quality alert, same figures.
    sync().await;
    let events = sink.take();
    assert!(!type_names(&events).iter().any(|n| n == "unleashed:quality-alert"));

    // A completed assembly with no completion date under any known name: the figure is
    // unavailable and a visible sync error says which field is missing.
    Mock::given(path("/Assemblies/1"))
        .respond_with(one_page(json!([{"Guid": "g-9", "AssemblyNumber": "ASM-9", "AssemblyStatus": "Completed", "Quantity": 4, "Product": {"ProductCode": "W"}}])))
        .mount(&server)
        .await;
    run(&acme(switchyard_services::unleashed::SOURCE), &mut Unleashed::new(unleashed(&server), http(), state), &sink)
        .await
        .unwrap();
    let events = sink.take();
    let u = first(&events, |p| match p {
        Payload::UnleashedSyncCompleted(u) => Some(u),
        _ => None,
    });
    assert_eq!(u.completed_today, None, "not a silent 0");
    assert_eq!(u.unavailable[0].figure, "completed_today");
    let e = first(&events, |p| match p {
        Payload::UnleashedSyncError(e) => Some(e),
        _ => None,
    });
    assert_eq!((e.code.as_str(), e.scope.as_str()), ("missing_field", "completed_today"));
    assert!(e.error.contains("ASM-9") && e.error.contains("AssembledDate"), "{}", e.error);
}
