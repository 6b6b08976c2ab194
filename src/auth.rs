//! Who may do what: JWT claims, verified once at the edge into a [`Principal`].
//!
//! Tokens are JWTs (HS256 with a shared secret; RS256/ES256 with public keys).
//! Claims: `tenant` (or `*` for system tokens such as a remote bridge), `channels`
//! (globs; empty means all), `role` (`subscribe` < `publish` < `admin`), `exp`,
//! optional `nbf`. The tenant always comes from the token: no request field a
//! client controls can widen it.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use sha2::{Digest, Sha256};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::names::{Channel, Tenant, TenantSel};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Subscribe,
    Publish,
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Subscribe => "subscribe",
            Role::Publish => "publish",
            Role::Admin => "admin",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "subscribe" => Ok(Role::Subscribe),
            "publish" => Ok(Role::Publish),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("role must be subscribe, publish or admin, not {s:?}")),
        }
    }
}

/// The JWT body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Who the token was issued to; shows up in logs and per-token limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// A tenant name, or `*` (admin only) for every tenant.
    pub tenant: String,
    /// Channel globs (`dashboard`, `jobs/*`); empty means every channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    pub role: Role,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Token id, for per-token connection limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TenantScope {
    One(Tenant),
    /// System tokens (remote bridges, operators) that act across tenants.
    All,
}

/// The tenant's name, or `*` for all: how limits and logs label a caller.
impl fmt::Display for TenantScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantScope::One(t) => f.write_str(t.as_str()),
            TenantScope::All => f.write_str("*"),
        }
    }
}

/// A verified token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantScope,
    pub role: Role,
    channels: Option<GlobSet>,
    /// `jti`, else `sub`, else the tenant: what per-token limits count by.
    pub token_id: String,
    /// When the token expires (Unix seconds): streams opened with it end then.
    pub expires: u64,
    /// The verified claims (none for [`Principal::system`]): what a ticket carries.
    claims: Option<Arc<Claims>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send 'Authorization: Bearer <token>'")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
    #[error("token revoked")]
    Revoked,
    #[error("this needs the {needed} role; the token has {has}")]
    Role { needed: Role, has: Role },
    #[error("the token does not allow channel '{0}'")]
    Channel(String),
    #[error("the token is for tenant '{has}', not '{wanted}'")]
    Tenant { has: String, wanted: String },
}

impl AuthError {
    /// Whether the caller has no valid token (missing, malformed, expired, revoked: HTTP 401,
    /// gRPC UNAUTHENTICATED) rather than one short of a permission (403, PERMISSION_DENIED).
    /// One rule for both transports.
    pub fn unauthenticated(&self) -> bool {
        matches!(self, Self::Missing | Self::Invalid(_) | Self::Expired | Self::Revoked)
    }

    /// The error code on the wire, the same over HTTP (`error.code`) and gRPC (per-event results;
    /// the status code says the same): `unauthenticated` or `permission_denied`.
    pub fn code(&self) -> &'static str {
        if self.unauthenticated() { "unauthenticated" } else { "permission_denied" }
    }
}

impl Principal {
    pub fn from_claims(claims: &Claims) -> Result<Self, AuthError> {
        let tenant = if claims.tenant == "*" {
            if claims.role != Role::Admin {
                return Err(AuthError::Invalid("tenant '*' is only allowed with role admin".into()));
            }
            TenantScope::All
        } else {
            TenantScope::One(Tenant::new(&claims.tenant).map_err(|e| AuthError::Invalid(e.to_string()))?)
        };
        let channels = if claims.channels.is_empty() {
            None
        } else {
            let mut b = GlobSetBuilder::new();
            for g in &claims.channels {
                let glob = GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| AuthError::Invalid(format!("channels: {e}")))?;
                b.add(glob);
            }
            Some(b.build().map_err(|e| AuthError::Invalid(format!("channels: {e}")))?)
        };
        let token_id = claims.jti.clone().or_else(|| claims.sub.clone()).unwrap_or_else(|| claims.tenant.clone());
        Ok(Self {
            tenant,
            role: claims.role,
            channels,
            token_id,
            expires: claims.exp,
            claims: Some(Arc::new(claims.clone())),
        })
    }

    /// The claims this principal was verified from (none for in-process system callers).
    pub fn claims(&self) -> Option<&Claims> {
        self.claims.as_deref()
    }

    /// A principal for in-process callers that act for the whole system (webhook ingress, connectors).
    pub fn system() -> Self {
        Self {
            tenant: TenantScope::All,
            role: Role::Admin,
            channels: None,
            token_id: "system".into(),
            expires: u64::MAX,
            claims: None,
        }
    }

    /// Whether the token has expired by now.
    pub fn expired(&self) -> bool {
        now_secs() >= self.expires
    }

    pub fn require(&self, needed: Role) -> Result<(), AuthError> {
        if self.role >= needed { Ok(()) } else { Err(AuthError::Role { needed, has: self.role }) }
    }

    pub fn allows_channel(&self, channel: &Channel) -> bool {
        self.channels.as_ref().is_none_or(|g| g.is_match(channel.as_str()))
    }

    /// Whether the token names channels (so "all channels" means "all of these").
    pub fn channel_limited(&self) -> bool {
        self.channels.is_some()
    }

    /// The tenant this principal acts for, given a requested one (empty = the token's).
    pub fn resolve_tenant(&self, requested: &str) -> Result<Option<Tenant>, AuthError> {
        match (&self.tenant, TenantSel::parse(requested)) {
            (_, Ok(sel)) => self.select_tenant(&sel),
            (TenantScope::One(t), Err(_)) => {
                Err(AuthError::Tenant { has: t.to_string(), wanted: requested.to_owned() })
            }
            (TenantScope::All, Err(e)) => Err(AuthError::Invalid(e.to_string())),
        }
    }

    /// The tenant this principal reads for a selection: `None` is every tenant.
    pub fn select_tenant(&self, sel: &TenantSel) -> Result<Option<Tenant>, AuthError> {
        match (&self.tenant, sel) {
            (TenantScope::One(t), TenantSel::Own) => Ok(Some(t.clone())),
            (TenantScope::One(t), TenantSel::One(r)) if r == t => Ok(Some(t.clone())),
            (TenantScope::One(t), TenantSel::One(r)) => {
                Err(AuthError::Tenant { has: t.to_string(), wanted: r.to_string() })
            }
            (TenantScope::One(t), TenantSel::All) => Err(AuthError::Tenant { has: t.to_string(), wanted: "*".into() }),
            (TenantScope::All, TenantSel::All) => Ok(None),
            (TenantScope::All, TenantSel::Own) => Err(AuthError::Invalid("a system token must name the tenant".into())),
            (TenantScope::All, TenantSel::One(r)) => Ok(Some(r.clone())),
        }
    }
}

/// Checks tokens. Built from config: an HS256 secret and/or public keys.
///
/// Verified tokens are remembered until they expire (keyed by their SHA-256, so
/// lookups never compare token bytes), because callers such as unary gRPC publishers
/// present the same token on every call and signature checks dominate a small RPC.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    leeway: u64,
    cache: Arc<Mutex<TokenCache>>,
    revoked: Revocations,
}

/// Tokens revoked before they expire, by (tenant, `jti`): verification refuses them and open
/// streams end at their next check. An entry is dropped once its token would have expired anyway,
/// so the set is bounded by the tokens alive. Filled by whoever stores revocations (the bridge's
/// ledger, which shares them across nodes).
#[derive(Clone, Default)]
pub struct Revocations(Arc<RwLock<HashMap<String, HashMap<String, u64>>>>, Arc<AtomicU64>);

impl Revocations {
    pub fn insert(&self, tenant: &str, jti: &str, exp: u64) {
        let mut set = self.0.write().unwrap_or_else(|e| e.into_inner());
        set.entry(tenant.to_owned()).or_default().insert(jti.to_owned(), exp);
        self.1.fetch_add(1, Ordering::Release);
    }

    /// Changes each time a revocation is added: an open stream looks the set up again only
    /// when this moved since its last look.
    pub fn generation(&self) -> u64 {
        self.1.load(Ordering::Acquire)
    }

    /// Looked up by `&str` (tenant, then jti): no allocation per check, which every verification
    /// and every open stream's heartbeat makes.
    pub fn is_revoked(&self, who: &Principal) -> bool {
        let Some(c) = who.claims() else { return false };
        let Some(jti) = &c.jti else { return false };
        let set = self.0.read().unwrap_or_else(|e| e.into_inner());
        set.get(c.tenant.as_str()).is_some_and(|jtis| jtis.contains_key(jti.as_str()))
    }

    /// Drops entries whose tokens have expired by `now`.
    pub fn prune(&self, now: u64) {
        let mut set = self.0.write().unwrap_or_else(|e| e.into_inner());
        set.retain(|_, jtis| {
            jtis.retain(|_, exp| *exp > now);
            !jtis.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).values().map(HashMap::len).sum()
    }

    /// Revocations outstanding for `tenant`.
    pub fn count(&self, tenant: &str) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).get(tenant).map_or(0, HashMap::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry: (tenant, jti, exp).
    pub fn entries(&self) -> Vec<(String, String, u64)> {
        let set = self.0.read().unwrap_or_else(|e| e.into_inner());
        set.iter().flat_map(|(t, jtis)| jtis.iter().map(|(j, e)| (t.clone(), j.clone(), *e))).collect()
    }
}

/// Why a subscriber's credential no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lapse {
    Expired,
    Revoked,
}

/// Whether an open stream's credential still holds, looked at before each write: expiry by the
/// clock (whole seconds, like `exp`), revocation only when the revocation set changed since the
/// last look (an atomic load, not a lock). Every transport's stream holds one.
#[derive(Clone)]
pub struct Standing {
    who: Principal,
    revocations: Revocations,
    /// The revocation generation last looked at; `u64::MAX` until the first look, so a
    /// revocation made between verifying the token and opening the stream is seen.
    seen: u64,
}

impl Standing {
    pub fn new(who: Principal, revocations: Revocations) -> Self {
        Self { who, revocations, seen: u64::MAX }
    }

    /// `None` while the credential holds at `now` (Unix seconds).
    pub fn check(&mut self, now: u64) -> Option<Lapse> {
        if now >= self.who.expires {
            return Some(Lapse::Expired);
        }
        self.revoked().then_some(Lapse::Revoked)
    }

    /// Whether the token was revoked: an atomic load, and the set looked up only when it changed.
    pub fn revoked(&mut self) -> bool {
        let generation = self.revocations.generation();
        if generation == self.seen {
            return false;
        }
        self.seen = generation;
        self.revocations.is_revoked(&self.who)
    }
}

/// SHA-256 of a verified token → its principal and `exp`.
type TokenCache = HashMap<[u8; 32], (Principal, u64)>;

/// Verified tokens remembered at most; the cache is cleared when full.
// Small: it pays off for callers that repeat a token (unary publishers); a browser presents
// its token once per connection, and 10,000 browsers must not each keep an entry.
const TOKEN_CACHE: usize = 1_024;

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("Verifier").field("keys", &self.keys.len()).finish()
    }
}

impl Verifier {
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            keys: vec![(Algorithm::HS256, DecodingKey::from_secret(secret))],
            leeway: 5,
            cache: Arc::default(),
            revoked: Revocations::default(),
        }
    }

    /// Adds an RS256 or ES256 public key (PEM).
    pub fn add_public_pem(&mut self, pem: &[u8]) -> Result<(), AuthError> {
        if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            self.keys.push((Algorithm::RS256, k));
            return Ok(());
        }
        let k = DecodingKey::from_ec_pem(pem).map_err(|e| AuthError::Invalid(format!("public key: {e}")))?;
        self.keys.push((Algorithm::ES256, k));
        Ok(())
    }

    /// Adds every RS256/ES256 key of a JWKS document.
    pub fn add_jwks(&mut self, json: &str) -> Result<(), AuthError> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(json).map_err(|e| AuthError::Invalid(format!("jwks: {e}")))?;
        for jwk in &set.keys {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Invalid(format!("jwks: {e}")))?;
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => continue,
            };
            self.keys.push((alg, key));
        }
        Ok(())
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now_secs();
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((p, exp)) = cache.get(&digest)
                && now < *exp
            {
                return self.unless_revoked(p.clone());
            }
        }
        let (principal, exp) = self.verify_uncached(token)?;
        let principal = self.unless_revoked(principal)?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= TOKEN_CACHE {
            cache.clear();
        }
        cache.insert(digest, (principal.clone(), exp));
        Ok(principal)
    }

    fn unless_revoked(&self, p: Principal) -> Result<Principal, AuthError> {
        if self.revoked.is_revoked(&p) { Err(AuthError::Revoked) } else { Ok(p) }
    }

    /// The revoked tokens this verifier refuses.
    pub fn revocations(&self) -> &Revocations {
        &self.revoked
    }

    fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let mut last = AuthError::Invalid(format!("no key for algorithm {:?}", header.alg));
        for (alg, key) in self.keys.iter().filter(|(alg, _)| *alg == header.alg) {
            let mut v = Validation::new(*alg);
            v.leeway = self.leeway;
            v.validate_nbf = true;
            v.required_spec_claims = ["exp".to_owned()].into();
            match jsonwebtoken::decode::<Claims>(token, key, &v) {
                // A revocation is kept until `exp`: a token living longer could outlast it.
                Ok(data) if data.claims.exp > now_secs() + MAX_TOKEN_LIFETIME_SECS + self.leeway => {
                    return Err(AuthError::Invalid("exp is more than 366 days away".into()));
                }
                Ok(data) => return Ok((Principal::from_claims(&data.claims)?, data.claims.exp)),
                Err(e) => {
                    last = match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                        _ => AuthError::Invalid(e.to_string()),
                    }
                }
            }
        }
        Err(last)
    }
}

/// Mints HS256 tokens (the `switchyard token` command, the token `serve` prints, tests).
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub fn hs256(secret: &[u8]) -> Self {
        Self { key: EncodingKey::from_secret(secret) }
    }

    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.key)
            .expect("HS256 signing of serializable claims cannot fail")
    }

    /// A token for `tenant` with `role`, valid for `ttl_secs`.
    pub fn mint(&self, tenant: &str, role: Role, channels: Vec<String>, ttl_secs: u64) -> String {
        self.sign(&Claims {
            sub: None,
            tenant: tenant.to_owned(),
            channels,
            role,
            exp: now_secs() + ttl_secs,
            nbf: None,
            jti: Some(random_id()),
        })
    }
}

/// The longest a token may live: one with `exp` further away is refused, so a revocation
/// never needs keeping longer than this.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 366 * 24 * 3600;

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// 128 random bits, hex: token ids, tickets, generated secrets.
pub fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Extracts the token from an `authorization` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-test-secret-test-secret";

    #[test]
    fn round_trip_and_scope() {
        let token = Signer::hs256(SECRET).mint("acme", Role::Subscribe, vec!["dashboard".into(), "jobs/*".into()], 60);
        let p = Verifier::hs256(SECRET).verify(&token).unwrap();
        assert_eq!(p.tenant, TenantScope::One(Tenant::new("acme").unwrap()));
        assert!(p.allows_channel(&Channel::new("dashboard").unwrap()));
        assert!(p.allows_channel(&Channel::new("jobs/9").unwrap()));
        assert!(!p.allows_channel(&Channel::new("alerts").unwrap()));
        assert!(p.require(Role::Publish).is_err());
        assert!(p.resolve_tenant("other").is_err());
        assert_eq!(p.resolve_tenant("").unwrap().unwrap().as_str(), "acme");
    }

    #[test]
    fn a_tenant_selection_is_the_tokens_own_or_for_system_tokens_any_or_all() {
        let sel = |s: &str| TenantSel::parse(s).unwrap();
        assert_eq!((sel(""), sel("*")), (TenantSel::Own, TenantSel::All));
        assert!(TenantSel::parse("Not a tenant!").is_err());
        let acme = Tenant::new("acme").unwrap();
        let tenant =
            Verifier::hs256(SECRET).verify(&Signer::hs256(SECRET).mint("acme", Role::Admin, vec![], 60)).unwrap();
        assert_eq!(tenant.select_tenant(&TenantSel::Own).unwrap(), Some(acme.clone()));
        assert_eq!(tenant.select_tenant(&TenantSel::One(acme.clone())).unwrap(), Some(acme));
        assert!(matches!(tenant.select_tenant(&sel("globex")), Err(AuthError::Tenant { .. })));
        assert!(matches!(tenant.select_tenant(&TenantSel::All), Err(AuthError::Tenant { .. })));
        // The string form keeps its answers: a malformed name from a tenant token is another tenant.
        assert!(matches!(tenant.resolve_tenant("Not a tenant!"), Err(AuthError::Tenant { .. })));
        let system = Verifier::hs256(SECRET).verify(&Signer::hs256(SECRET).mint("*", Role::Admin, vec![], 60)).unwrap();
        assert_eq!(system.select_tenant(&TenantSel::All).unwrap(), None);
        assert_eq!(system.select_tenant(&sel("globex")).unwrap().unwrap().as_str(), "globex");
        assert!(matches!(system.select_tenant(&TenantSel::Own), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn rejects_forged_expired_and_alg_none() {
        let v = Verifier::hs256(SECRET);
        let wrong = Signer::hs256(b"another-secret-another-secret").mint("acme", Role::Admin, vec![], 60);
        assert!(matches!(v.verify(&wrong), Err(AuthError::Invalid(_))));
        let expired = Signer::hs256(SECRET).sign(&Claims {
            sub: None,
            tenant: "acme".into(),
            channels: vec![],
            role: Role::Admin,
            exp: now_secs() - 3600,
            nbf: None,
            jti: None,
        });
        assert_eq!(v.verify(&expired).unwrap_err(), AuthError::Expired);
        // {"alg":"none","typ":"JWT"}.{"tenant":"acme","role":"admin","exp":9999999999}.
        let none =
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJ0ZW5hbnQiOiJhY21lIiwicm9sZSI6ImFkbWluIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(v.verify(none).is_err());
        assert!(v.verify("garbage").is_err());
    }

    #[test]
    fn star_tenant_needs_admin() {
        let t = Signer::hs256(SECRET).mint("*", Role::Subscribe, vec![], 60);
        assert!(Verifier::hs256(SECRET).verify(&t).is_err());
        let t = Signer::hs256(SECRET).mint("*", Role::Admin, vec![], 60);
        let p = Verifier::hs256(SECRET).verify(&t).unwrap();
        assert_eq!(p.resolve_tenant("*").unwrap(), None);
        assert!(p.resolve_tenant("").is_err());
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
