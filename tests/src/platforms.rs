//! Fakes of the platforms' APIs for connector tests: one wiremock server answering as Shopify
//! (two paid orders a minute ago) and Xero (token, organisation, balance sheet, P&L, invoices)
//! do, and the ingest config sections that point at it.

use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

/// The `[xero]` section of an ingest config pointing at the fake.
pub fn xero_section(fake: &MockServer) -> String {
    format!(
        "[xero]\ntenant = \"acme\"\nclient_id = \"client\"\nclient_secret = \"secret\"\nxero_tenant_id = \"org-1\"\n\
         token_url = \"{fake}/xero/token\"\napi_url = \"{fake}/xero/api\"\n",
        fake = fake.uri()
    )
}

/// RFC 3339 for a minute ago.
fn pbjson_types_now_minus_minute() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 - 60;
    let t = switchyard::proto::Timestamp { seconds: secs, nanos: 0 };
    serde_json::to_value(t).unwrap().as_str().unwrap().replace("+00:00", "Z")
}

pub async fn fakes() -> MockServer {
    let fake = MockServer::start().await;
    // A minute ago: inside the rolling 24 hours whatever the time of day.
    let created = pbjson_types_now_minus_minute();
    let order = |id: u64, total: &str| {
        json!({"node": {"id": format!("gid://shopify/Order/{id}"), "legacyResourceId": id.to_string(), "name": format!("#{id}"),
        "createdAt": created, "test": false, "displayFinancialStatus": "PAID", "displayFulfillmentStatus": "FULFILLED",
        "totalPriceSet": {"shopMoney": {"amount": total, "currencyCode": "GBP"}},
        "totalRefundedSet": {"shopMoney": {"amount": "0.00", "currencyCode": "GBP"}}}})
    };
    Mock::given(method("POST"))
        .and(path("/shop/graphql.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {"orders": {
            "edges": [order(1, "120.00"), order(2, "30.50")], "pageInfo": {"hasNextPage": false, "endCursor": null}}}})))
        .mount(&fake)
        .await;
    Mock::given(path("/xero/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "at", "expires_in": 1800})))
        .mount(&fake)
        .await;
    Mock::given(path("/xero/api/Organisation"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Organisations": [{"BaseCurrency": "GBP"}]})))
        .mount(&fake)
        .await;
    let report = |rows: Value| json!({"Reports": [{"Rows": rows}]});
    Mock::given(path("/xero/api/Reports/BalanceSheet"))
        .respond_with(ResponseTemplate::new(200).set_body_json(report(json!([
            {"RowType": "Section", "Rows": [{"RowType": "SummaryRow", "Cells": [{"Value": "Total Current Assets"}, {"Value": "1000.00"}]}]},
            {"RowType": "Section", "Rows": [{"RowType": "SummaryRow", "Cells": [{"Value": "Total Current Liabilities"}, {"Value": "400.00"}]}]}]))))
        .mount(&fake)
        .await;
    Mock::given(path("/xero/api/Reports/ProfitAndLoss"))
        .respond_with(ResponseTemplate::new(200).set_body_json(report(json!([
            {"RowType": "Section", "Rows": [{"RowType": "SummaryRow", "Cells": [{"Value": "Total Income"}, {"Value": "50.00"}]},
                {"RowType": "Row", "Cells": [{"Value": "Net Profit"}, {"Value": "5.00"}]}]}]))))
        .mount(&fake)
        .await;
    Mock::given(path("/xero/api/Invoices"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Invoices": []})))
        .mount(&fake)
        .await;
    fake
}
