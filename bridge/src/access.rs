//! Who is calling: the token from `Authorization: Bearer`, the `switchyard_token`
//! cookie, a single-use `ticket` (for EventSource, which cannot set headers), or
//! `access_token` in the query when explicitly enabled.
//!
//! Tickets exist because long-lived tokens in URLs leak into proxy and access
//! logs (RFC 9700): `POST /api/sse/ticket` trades a bearer token for a ticket
//! that lives at most [`TICKET_TTL`] and works once.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;
use switchyard::auth::{AuthError, Principal, Verifier, bearer, random_id};

pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Outstanding tickets kept at most; older ones are dropped first.
const MAX_TICKETS: usize = 100_000;
pub const COOKIE: &str = "switchyard_token";

pub struct Access {
    pub verifier: Verifier,
    pub allow_query_token: bool,
    // std Mutex: short critical sections, no await inside.
    tickets: Mutex<HashMap<String, (Principal, Instant)>>,
}

/// Credentials a request may carry outside headers.
#[derive(Debug, Default, serde::Deserialize)]
pub struct QueryCredentials {
    pub ticket: Option<String>,
    pub access_token: Option<String>,
}

impl Access {
    pub fn new(verifier: Verifier, allow_query_token: bool) -> Self {
        Self { verifier, allow_query_token, tickets: Mutex::new(HashMap::new()) }
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
    pub fn from_request(&self, headers: &HeaderMap, query: &QueryCredentials) -> Result<Principal, AuthError> {
        if let Some(t) = token_from_headers(headers) {
            return self.verifier.verify(t);
        }
        if let Some(ticket) = &query.ticket {
            return self.redeem(ticket);
        }
        if let Some(t) = &query.access_token {
            if !self.allow_query_token {
                return Err(AuthError::Invalid(
                    "access_token in the URL is disabled; use a ticket (POST /api/sse/ticket) or a header".into(),
                ));
            }
            return self.verifier.verify(t);
        }
        Err(AuthError::Missing)
    }

    pub fn issue_ticket(&self, who: Principal) -> String {
        let ticket = random_id();
        let now = Instant::now();
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        t.retain(|_, (_, at)| now.duration_since(*at) < TICKET_TTL);
        if t.len() >= MAX_TICKETS
            && let Some(oldest) = t.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone())
        {
            t.remove(&oldest);
        }
        t.insert(ticket.clone(), (who, now));
        ticket
    }

    fn redeem(&self, ticket: &str) -> Result<Principal, AuthError> {
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        // Constant-time match so response timing says nothing about near-miss tickets.
        let key = t.keys().find(|k| k.as_bytes().ct_eq(ticket.as_bytes()).into()).cloned();
        let (who, at) =
            key.and_then(|k| t.remove(&k)).ok_or_else(|| AuthError::Invalid("unknown or used ticket".into()))?;
        // A ticket never outlives the token it was issued for.
        if at.elapsed() >= TICKET_TTL || who.expired() {
            return Err(AuthError::Expired);
        }
        Ok(who)
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
    use switchyard::auth::{Role, Signer};

    #[test]
    fn tickets_are_single_use_and_query_tokens_off_by_default() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let access = Access::new(Verifier::hs256(secret), false);
        let token = Signer::hs256(secret).mint("acme", Role::Subscribe, vec![], 60);
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("a=b; {COOKIE}={token}").parse().unwrap());
        let who = access.from_headers(&h).unwrap();
        let ticket = access.issue_ticket(who);
        let q = QueryCredentials { ticket: Some(ticket), access_token: None };
        assert!(access.from_request(&HeaderMap::new(), &q).is_ok());
        assert!(access.from_request(&HeaderMap::new(), &q).is_err(), "second use");
        let q = QueryCredentials { ticket: None, access_token: Some(token) };
        assert!(access.from_request(&HeaderMap::new(), &q).is_err());
        assert_eq!(
            access.from_request(&HeaderMap::new(), &QueryCredentials::default()).unwrap_err(),
            AuthError::Missing
        );
    }
}
