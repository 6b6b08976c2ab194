//! Who is calling: the token from `Authorization: Bearer`, the `switchyard_token`
//! cookie, a single-use `ticket` (for EventSource, which cannot set headers), or
//! `access_token` in the query when explicitly enabled.
//!
//! Tickets exist because long-lived tokens in URLs leak into proxy and access
//! logs (RFC 9700): `POST /api/sse/ticket` trades a bearer token for a ticket
//! that lives at most [`TICKET_TTL`] (never past its token) and works once.
//!
//! A ticket is self-contained: `<payload>.<mac>` (base64url), the payload the token's claims,
//! the ticket's expiry and a nonce; the MAC an HMAC-SHA256 under a key derived from the signing
//! secret every node shares. Any node can check one without asking the node that issued it, in
//! constant work; the [`Ledger`] makes it single-use (cluster-wide on a backplane). A revoked
//! token's tickets are refused with it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::http::{HeaderMap, header};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use switchyard::{
    auth::{AuthError, Claims, Principal, Verifier, bearer, now_secs, random_id},
    ledger::{Ledger, LedgerError},
};

use crate::http::error::ApiError;

pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Longest ticket accepted: claims with 64 channel globs fit well within it.
const MAX_TICKET: usize = 8 * 1024;
pub const COOKIE: &str = "switchyard_token";

pub struct Access {
    pub verifier: Verifier,
    pub allow_query_token: bool,
    ticket_key: [u8; 32],
    pub ledger: Arc<dyn Ledger>,
    pub tickets: TicketCounts,
}

/// Tickets issued, redeemed, and refused by reason (`forged`, `expired`, `revoked`, `used`).
#[derive(Debug, Default)]
pub struct TicketCounts {
    pub issued: AtomicU64,
    pub redeemed: AtomicU64,
    pub refused: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

/// Credentials a request may carry outside headers.
#[derive(Debug, Default, serde::Deserialize)]
pub struct QueryCredentials {
    pub ticket: Option<String>,
    pub access_token: Option<String>,
}

/// What a ticket says.
#[derive(Serialize, Deserialize)]
struct TicketBody {
    claims: Claims,
    /// The ticket's own expiry, Unix seconds: at most [`TICKET_TTL`] away, never past the token's.
    exp: u64,
    nonce: String,
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Unavailable(m) => ApiError::unavailable(m),
            LedgerError::Full(m) => ApiError { code: "ledger_full", ..ApiError::too_many(m, 1) },
        }
    }
}

impl Access {
    /// `secret` is the HS256 signing secret the cluster shares; tickets use a key derived from
    /// it, so a ticket is never a valid token nor a token a valid ticket.
    pub fn new(verifier: Verifier, allow_query_token: bool, secret: &[u8], ledger: Arc<dyn Ledger>) -> Self {
        let mut mac = <Hmac<Sha256>>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(b"switchyard ticket key v1");
        let ticket_key = mac.finalize().into_bytes().into();
        Self { verifier, allow_query_token, ticket_key, ledger, tickets: TicketCounts::default() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256>>::new_from_slice(&self.ticket_key).expect("HMAC takes keys of any length")
    }

    /// Header or cookie only: for everything but SSE/polling GETs.
    pub fn from_headers(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        self.verifier.verify(token_from_headers(headers).ok_or(AuthError::Missing)?)
    }

    /// For requests that change something (publish, broadcast): the Authorization header, or the
    /// cookie only on a same-origin JSON request. A cross-site form can send the cookie but
    /// neither a JSON content type (without a CORS preflight) nor this origin.
    pub fn for_write(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        if let Some(t) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer) {
            return self.verifier.verify(t);
        }
        let Some(cookie) = token_from_headers(headers) else { return Err(AuthError::Missing) };
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let same_origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .and_then(|o| o.split_once("://").map(|(_, h)| h))
            .is_some_and(|origin_host| Some(origin_host) == host);
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.trim_start().to_ascii_lowercase().starts_with("application/json"));
        if !(same_origin && json) {
            return Err(AuthError::Invalid(
                "a cookie authenticates only same-origin JSON requests here; send Authorization: Bearer <token>".into(),
            ));
        }
        self.verifier.verify(cookie)
    }

    /// Header, cookie, ticket, or (if enabled) `access_token`.
    pub async fn from_request(&self, headers: &HeaderMap, query: &QueryCredentials) -> Result<Principal, ApiError> {
        if let Some(t) = token_from_headers(headers) {
            return Ok(self.verifier.verify(t)?);
        }
        if let Some(ticket) = &query.ticket {
            return self.redeem(ticket).await;
        }
        if let Some(t) = &query.access_token {
            if !self.allow_query_token {
                return Err(AuthError::Invalid(
                    "access_token in the URL is disabled; use a ticket (POST /api/sse/ticket) or a header".into(),
                )
                .into());
            }
            return Ok(self.verifier.verify(t)?);
        }
        Err(AuthError::Missing.into())
    }

    /// A ticket for `who`, valid on any node that shares the signing secret.
    pub fn issue_ticket(&self, who: &Principal) -> Result<String, AuthError> {
        let claims =
            who.claims().ok_or_else(|| AuthError::Invalid("only a token can be traded for a ticket".into()))?;
        let exp = (now_secs() + TICKET_TTL.as_secs()).min(claims.exp);
        let body = TicketBody { claims: claims.clone(), exp, nonce: random_id() };
        let payload = B64.encode(serde_json::to_vec(&body).map_err(|e| AuthError::Invalid(e.to_string()))?);
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        self.tickets.issued.fetch_add(1, Ordering::Relaxed);
        Ok(format!("{payload}.{}", B64.encode(mac.finalize().into_bytes())))
    }

    async fn redeem(&self, ticket: &str) -> Result<Principal, ApiError> {
        match self.check_ticket(ticket).await {
            Ok(who) => {
                self.tickets.redeemed.fetch_add(1, Ordering::Relaxed);
                Ok(who)
            }
            Err((reason, e)) => {
                if let Ok(mut m) = self.tickets.refused.lock() {
                    *m.entry(reason).or_default() += 1;
                }
                Err(e)
            }
        }
    }

    /// The ticket's principal, or why it is refused (a metric label) and the answer.
    async fn check_ticket(&self, ticket: &str) -> Result<Principal, (&'static str, ApiError)> {
        let bad = |reason| (reason, AuthError::Invalid("unknown, forged or used ticket".into()).into());
        if ticket.len() > MAX_TICKET {
            return Err(bad("forged"));
        }
        let (payload, tag) = ticket.split_once('.').ok_or_else(|| bad("forged"))?;
        let tag = B64.decode(tag).map_err(|_| bad("forged"))?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        // Constant time: response timing says nothing about near-miss MACs.
        mac.verify_slice(&tag).map_err(|_| bad("forged"))?;
        let body: TicketBody =
            B64.decode(payload).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(|| bad("forged"))?;
        // A ticket never outlives its own expiry nor the token it was issued for.
        if now_secs() >= body.exp.min(body.claims.exp) {
            return Err(("expired", AuthError::Expired.into()));
        }
        let who = Principal::from_claims(&body.claims).map_err(|e| ("forged", e.into()))?;
        if self.verifier.revocations().is_revoked(&who) {
            return Err(("revoked", AuthError::Revoked.into()));
        }
        match self.ledger.first_use(&body.claims.tenant, &body.nonce, body.exp).await {
            Ok(true) => Ok(who),
            Ok(false) => Err(bad("used")),
            Err(e) => Err(("unavailable", e.into())),
        }
    }
}

pub fn token_from_headers(headers: &HeaderMap) -> Option<&str> {
    if let Some(t) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer) {
        return Some(t);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard::{
        auth::{Role, Signer},
        ledger::LocalLedger,
    };

    fn access(secret: &[u8]) -> Access {
        let dir = std::env::temp_dir().join(format!("switchyard-access-{}", random_id()));
        let ledger = LocalLedger::open(dir.with_extension("json"), Default::default()).unwrap();
        Access::new(Verifier::hs256(secret), false, secret, Arc::new(ledger))
    }

    #[tokio::test]
    async fn tickets_are_single_use_self_contained_and_query_tokens_off_by_default() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let access = access(secret);
        let token = Signer::hs256(secret).mint("acme", Role::Subscribe, vec![], 60);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("a=b; {COOKIE}={token}").parse().unwrap());
        let who = access.from_headers(&h).unwrap();
        let ticket = access.issue_ticket(&who).unwrap();
        // Another node with the same secret accepts it (once across both only with a shared ledger).
        let other = self::access(secret);
        let q = QueryCredentials { ticket: Some(ticket.clone()), access_token: None };
        assert!(other.from_request(&HeaderMap::new(), &q).await.is_ok());
        assert!(access.from_request(&HeaderMap::new(), &q).await.is_ok());
        assert_eq!(access.from_request(&HeaderMap::new(), &q).await.unwrap_err().status, 401, "second use");
        // A forged payload, a wrong key, a truncated MAC: refused.
        let (payload, tag) = ticket.split_once('.').unwrap();
        for forged in [format!("{payload}x.{tag}"), format!("{payload}.{}", &tag[1..]), "a.b".into(), "x".repeat(9000)]
        {
            let q = QueryCredentials { ticket: Some(forged), access_token: None };
            assert_eq!(access.from_request(&HeaderMap::new(), &q).await.unwrap_err().status, 401);
        }
        let q = QueryCredentials {
            ticket: Some(self::access(b"another-secret-another-secret!!!").issue_ticket(&who).unwrap()),
            access_token: None,
        };
        assert_eq!(access.from_request(&HeaderMap::new(), &q).await.unwrap_err().status, 401);
        // A revoked token's tickets go with it.
        let fresh = access.issue_ticket(&who).unwrap();
        let c = who.claims().unwrap();
        access.verifier.revocations().insert(&c.tenant, c.jti.as_deref().unwrap(), c.exp);
        let q = QueryCredentials { ticket: Some(fresh), access_token: None };
        assert_eq!(access.from_request(&HeaderMap::new(), &q).await.unwrap_err().message, "token revoked");
        let q = QueryCredentials { ticket: None, access_token: Some(token) };
        assert!(access.from_request(&HeaderMap::new(), &q).await.is_err());
        let e = access.from_request(&HeaderMap::new(), &QueryCredentials::default()).await.unwrap_err();
        assert_eq!(e.code, "unauthenticated");
    }

    #[tokio::test]
    async fn a_ticket_never_outlives_its_token() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let access = access(secret);
        let mut claims = Claims {
            sub: None,
            tenant: "acme".into(),
            channels: vec![],
            role: Role::Subscribe,
            exp: now_secs() + 2,
            nbf: None,
            jti: Some("t1".into()),
        };
        let who = Principal::from_claims(&claims).unwrap();
        let ticket = access.issue_ticket(&who).unwrap();
        let body: TicketBody = serde_json::from_slice(&B64.decode(ticket.split_once('.').unwrap().0).unwrap()).unwrap();
        assert_eq!(body.exp, claims.exp, "capped at the token's expiry, not 30 s");
        claims.exp = now_secs() - 1;
        let gone = Principal::from_claims(&claims).unwrap();
        let q = QueryCredentials { ticket: Some(access.issue_ticket(&gone).unwrap()), access_token: None };
        assert_eq!(access.from_request(&HeaderMap::new(), &q).await.unwrap_err().message, "token expired");
    }
}
