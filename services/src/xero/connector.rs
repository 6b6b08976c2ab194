//! Xero, through the Accounting API. OAuth2: a refresh token (standard apps; Xero rotates it on
//! every use, so the new one is persisted before anything else) or client credentials (custom
//! connections). Every call carries `xero-tenant-id`. Per run, recomputed whole: the balance sheet
//! at today's date (bank, current assets, current liabilities, receivables, payables → working
//! capital with and without bank: Xero reports bank accounts in their own "Bank" section, and
//! cash is a current asset), profit and loss for the month to date in the tenant's timezone
//! (revenue, net profit), and the invoices changed since the last run (If-Modified-Since). The
//! balance sheet is the snapshot's core: without it the run fails. Profit and loss or the
//! invoice count failing leaves those figures out, listed as unavailable.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard::proto::v1::{XeroSyncCompleted, event::Payload};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    connector::{Connector, Run, SyncError, partial},
    http::Http,
    money::{self, decimal},
    state::StateFile,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XeroConfig {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    /// Standard apps: the refresh token from the first authorisation (later ones are persisted).
    /// Without one, client credentials (custom connections) are used.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// The Xero organisation (`tenantId` from GET /connections).
    pub xero_tenant_id: String,
    #[serde(default = "token_url")]
    pub token_url: String,
    #[serde(default = "api_url")]
    pub api_url: String,
}

fn token_url() -> String {
    "https://identity.xero.com/connect/token".into()
}
fn api_url() -> String {
    "https://api.xero.com/api.xro/2.0".into()
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The latest refresh token: Xero invalidates the previous one when it issues a new one.
    refresh_token: Option<String>,
    /// When the previous run started (RFC 3339): invoices modified since then are "changed".
    invoices_since: Option<String>,
}

pub struct Xero {
    config: XeroConfig,
    http: Http,
    state: StateFile,
    access: Option<(String, Instant)>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
    #[serde(default)]
    refresh_token: Option<String>,
}

impl Xero {
    pub fn new(config: XeroConfig, http: Http, state: StateFile) -> Self {
        Self { config, http, state, access: None }
    }

    async fn token(&mut self, state: &mut State) -> Result<String, SyncError> {
        if let Some((t, until)) = &self.access
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let refresh = state.refresh_token.clone().or_else(|| self.config.refresh_token.clone());
        let form: Vec<(&str, &str)> = match &refresh {
            Some(r) => vec![("grant_type", "refresh_token"), ("refresh_token", r)],
            None => vec![("grant_type", "client_credentials")],
        };
        let t: TokenResponse = self
            .http
            .json("Xero token", || {
                self.http
                    .client()
                    .post(&self.config.token_url)
                    .basic_auth(&self.config.client_id, Some(&self.config.client_secret))
                    .form(&form)
            })
            .await
            .map_err(|e| match e {
                SyncError::Upstream { status: 400, message } => {
                    SyncError::Unauthorized(format!("{message} (re-authorise the Xero connection)"))
                }
                other => other,
            })?;
        if let Some(new) = t.refresh_token.filter(|_| refresh.is_some()) {
            state.refresh_token = Some(new);
            self.state.save(state).map_err(SyncError::State)?;
        }
        // A minute early, so a token never expires mid-run.
        let ttl = Duration::from_secs(t.expires_in.max(120) - 60);
        self.access = Some((t.access_token.clone(), Instant::now() + ttl));
        Ok(t.access_token)
    }

    /// GET `path` with the tenant header; on 401 the token is refreshed once and the call retried.
    async fn get(
        &mut self,
        state: &mut State,
        what: &str,
        path: &str,
        since: Option<&str>,
    ) -> Result<Value, SyncError> {
        for attempt in 0..2 {
            let token = self.token(state).await?;
            let url = format!("{}{path}", self.config.api_url);
            let r = self
                .http
                .json::<Value>(what, || {
                    let mut req = self
                        .http
                        .client()
                        .get(&url)
                        .bearer_auth(&token)
                        .header("xero-tenant-id", &self.config.xero_tenant_id)
                        .header("Accept", "application/json");
                    if let Some(s) = since {
                        req = req.header("If-Modified-Since", s);
                    }
                    req
                })
                .await;
            match r {
                Err(SyncError::Unauthorized(_)) if attempt == 0 => self.access = None,
                other => return other,
            }
        }
        unreachable!("the second attempt returns")
    }
}

/// The cells of every row in a Xero report, flattened: (first cell, second cell).
fn report_rows(report: &Value) -> Vec<(String, Value)> {
    fn walk(rows: &Value, out: &mut Vec<(String, Value)>) {
        for row in rows.as_array().into_iter().flatten() {
            if let Some(cells) = row["Cells"].as_array()
                && let (Some(label), Some(value)) = (cells.first(), cells.get(1))
            {
                out.push((label["Value"].as_str().unwrap_or_default().trim().to_owned(), value["Value"].clone()));
            }
            walk(&row["Rows"], out);
        }
    }
    let mut out = Vec::new();
    walk(&report["Reports"][0]["Rows"], &mut out);
    out
}

fn find(rows: &[(String, Value)], label: &str, what: &str) -> Result<rust_decimal::Decimal, SyncError> {
    let (_, v) = rows
        .iter()
        .find(|(l, _)| l.eq_ignore_ascii_case(label))
        .ok_or_else(|| SyncError::Malformed(format!("{what}: no '{label}' row")))?;
    decimal(v).ok_or_else(|| SyncError::Malformed(format!("{what}: '{label}' is not a number: {v}")))
}

/// A row that a report may omit (an organisation with no payables has no such line): zero.
fn find_or_zero(rows: &[(String, Value)], label: &str) -> rust_decimal::Decimal {
    rows.iter().find(|(l, _)| l.eq_ignore_ascii_case(label)).and_then(|(_, v)| decimal(v)).unwrap_or_default()
}

impl Connector for Xero {
    async fn sync(&mut self, run: &Run) -> Result<(), SyncError> {
        let mut state: State = self.state.load().map_err(SyncError::State)?;
        let started = OffsetDateTime::now_utc();
        let periods = &run.periods;
        let today = run.zone.date(periods.today.to);
        let month_start = run.zone.date(periods.month_to_date.from);
        let mut unavailable = Vec::new();

        run.jobs.progress("organisation", 10, "reading the organisation").await;
        let currency = self.base_currency(&mut state).await?;

        run.jobs.progress("balance-sheet", 30, "reading the balance sheet").await;
        let bs =
            self.get(&mut state, "Xero balance sheet", &format!("/Reports/BalanceSheet?date={today}"), None).await?;
        let rows = report_rows(&bs);
        let assets = find(&rows, "Total Current Assets", "Xero balance sheet")?;
        let liabilities = find(&rows, "Total Current Liabilities", "Xero balance sheet")?;
        // An organisation without bank accounts has no Bank section: its bank balance is nil.
        let bank = find_or_zero(&rows, "Total Bank");
        let receivables = find_or_zero(&rows, "Accounts Receivable");
        let payables = find_or_zero(&rows, "Accounts Payable");

        run.jobs.progress("profit-and-loss", 55, "reading profit and loss").await;
        let path = format!("/Reports/ProfitAndLoss?fromDate={month_start}&toDate={today}");
        let pl = self.profit_and_loss(&mut state, &path).await;
        let profit = partial(pl, "revenue, net_profit", &mut unavailable)?;

        run.jobs.progress("invoices", 75, "counting changed invoices").await;
        let changed = partial(self.count_changed_invoices(&mut state).await, "invoices_changed", &mut unavailable)?;

        let m = |d| Some(money::money(d, &currency));
        let figures = XeroSyncCompleted {
            run_id: run.run_id.clone(),
            working_capital: m(bank + assets - liabilities),
            current_assets: m(assets),
            current_liabilities: m(liabilities),
            receivables: m(receivables),
            payables: m(payables),
            revenue: profit.and_then(|(r, _)| m(r)),
            net_profit: profit.and_then(|(_, n)| m(n)),
            invoices_changed: changed,
            as_of: Some(pbjson_types::Timestamp {
                seconds: started.unix_timestamp(),
                nanos: started.nanosecond() as i32,
            }),
            bank: m(bank),
            working_capital_excluding_bank: m(assets - liabilities),
            period: Some(periods.proto(&periods.month_to_date)),
            unavailable,
        };
        run.publish(vec![run.event("xero", Payload::XeroSyncCompleted(figures))]).await?;
        if changed.is_some() {
            state.invoices_since = started.format(&Rfc3339).ok();
        }
        self.state.save(&state).map_err(SyncError::State)?;
        Ok(())
    }
}

impl Xero {
    /// The organisation's base currency: every figure is in it.
    async fn base_currency(&mut self, state: &mut State) -> Result<String, SyncError> {
        let org = self.get(state, "Xero organisation", "/Organisation", None).await?;
        let currency = org["Organisations"][0]["BaseCurrency"].as_str();
        Ok(currency.ok_or_else(|| SyncError::Malformed("Xero organisation: no BaseCurrency".into()))?.to_owned())
    }

    /// Income and net profit over the report `path` names.
    async fn profit_and_loss(
        &mut self,
        state: &mut State,
        path: &str,
    ) -> Result<(rust_decimal::Decimal, rust_decimal::Decimal), SyncError> {
        let pl = self.get(state, "Xero profit and loss", path, None).await?;
        let rows = report_rows(&pl);
        Ok((find(&rows, "Total Income", "Xero profit and loss")?, find(&rows, "Net Profit", "Xero profit and loss")?))
    }

    /// Invoices created or changed since the previous run, counted over every page.
    async fn count_changed_invoices(&mut self, state: &mut State) -> Result<u32, SyncError> {
        let since = state.invoices_since.clone();
        let since_http = since
            .as_deref()
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            .and_then(|t| t.format(&Rfc3339).ok());
        let mut changed = 0u32;
        for page in 1.. {
            let body = self
                .get(state, "Xero invoices", &format!("/Invoices?page={page}&summaryOnly=true"), since_http.as_deref())
                .await?;
            let invoices = body["Invoices"]
                .as_array()
                .ok_or_else(|| SyncError::Malformed("Xero invoices: no Invoices array".into()))?;
            changed += invoices.len() as u32;
            // Xero pages hold up to 100; a short page is the last.
            if invoices.len() < 100 {
                break;
            }
        }
        Ok(changed)
    }
}
