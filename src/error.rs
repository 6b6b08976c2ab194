//! Why a publish was refused, as one closed set of kinds: the wire code (`kind().as_str()`)
//! is the same over HTTP (`error.code`), gRPC per-event acks and the TypeScript client, and a
//! new refusal is added here, once, instead of as a string at its call site.

use crate::auth::AuthError;

/// Every reason a publish can be refused. `as_str` is the stable wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishErrorKind {
    /// A streamed publish message without an event.
    MissingEvent,
    /// No payload, or a payload field (or JSON `type`) the catalog does not have.
    UnknownType,
    /// A custom type that is not `namespace:name`.
    InvalidType,
    /// A custom type that names a catalog type.
    ReservedType,
    /// A body or custom payload that is not the JSON it must be.
    InvalidJson,
    InvalidKey,
    /// A snapshot without the key that names what it is the whole state of.
    MissingKey,
    InvalidSource,
    /// A `source` only the bridge itself may set (`webhook:*`, `connector:*`).
    ReservedSource,
    InvalidTenant,
    InvalidChannel,
    /// A custom channel that is neither the catalog's nor configured.
    UnknownChannel,
    TooManyChannels,
    InvalidIdempotencyKey,
    /// `trace` that is not a W3C trace context (or a `tracestate` over its size).
    InvalidTrace,
    PayloadTooLarge,
    /// More events in one batch than [`crate::bus::MAX_BATCH`].
    BatchTooLarge,
    /// No valid token (missing, malformed, expired, revoked).
    Unauthenticated,
    /// A valid token short of a permission (role, tenant, channel).
    PermissionDenied,
    /// The log could not store it; retry.
    Unavailable,
    /// Over the tenant's publish rate; retry after the wait given.
    RateLimited,
    /// At a storage quota; waiting alone does not help.
    QuotaExceeded,
}

impl PublishErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingEvent => "missing_event",
            Self::UnknownType => "unknown_type",
            Self::InvalidType => "invalid_type",
            Self::ReservedType => "reserved_type",
            Self::InvalidJson => "invalid_json",
            Self::InvalidKey => "invalid_key",
            Self::MissingKey => "missing_key",
            Self::InvalidSource => "invalid_source",
            Self::ReservedSource => "reserved_source",
            Self::InvalidTenant => "invalid_tenant",
            Self::InvalidChannel => "invalid_channel",
            Self::UnknownChannel => "unknown_channel",
            Self::TooManyChannels => "too_many_channels",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::InvalidTrace => "invalid_trace",
            Self::PayloadTooLarge => "payload_too_large",
            Self::BatchTooLarge => "batch_too_large",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::Unavailable => "unavailable",
            Self::RateLimited => "rate_limited",
            Self::QuotaExceeded => "quota_exceeded",
        }
    }
}

impl std::fmt::Display for PublishErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an event was refused: a [`PublishErrorKind`], and for the client's mistakes the field
/// to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The event itself is wrong; `kind` is one of the invalid-input kinds.
    #[error("{field}: {message}")]
    Invalid { kind: PublishErrorKind, field: &'static str, message: String },
    #[error("{0}")]
    Denied(#[from] AuthError),
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
    /// The tenant is over its publish rate; retry after this long.
    #[error("publishing faster than this tenant's rate; retry after {0:?}")]
    Throttled(std::time::Duration),
    /// The tenant is at a storage quota (state keys, jobs); waiting does not help by itself.
    #[error("{field}: {message}")]
    Quota { field: &'static str, message: String },
}

impl PublishError {
    pub fn invalid(kind: PublishErrorKind, field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid { kind, field, message: message.into() }
    }

    pub fn kind(&self) -> PublishErrorKind {
        match self {
            Self::Invalid { kind, .. } => *kind,
            Self::Denied(a) if a.unauthenticated() => PublishErrorKind::Unauthenticated,
            Self::Denied(_) => PublishErrorKind::PermissionDenied,
            Self::Unavailable(_) => PublishErrorKind::Unavailable,
            Self::Throttled(_) => PublishErrorKind::RateLimited,
            Self::Quota { .. } => PublishErrorKind::QuotaExceeded,
        }
    }

    /// The wire code: `self.kind().as_str()`.
    pub fn code(&self) -> &'static str {
        self.kind().as_str()
    }

    pub fn field(&self) -> &'static str {
        match self {
            Self::Invalid { field, .. } | Self::Quota { field, .. } => field,
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{PublishError, PublishErrorKind as K};
    use crate::auth::{AuthError, Role};

    #[test]
    fn a_denial_has_the_code_its_transport_status_says() {
        assert_eq!(PublishError::Denied(AuthError::Expired).code(), "unauthenticated");
        let short = AuthError::Role { needed: Role::Publish, has: Role::Subscribe };
        assert_eq!(PublishError::Denied(short).kind(), K::PermissionDenied);
        assert_eq!(PublishError::Throttled(std::time::Duration::from_secs(1)).code(), "rate_limited");
    }

    #[test]
    fn every_wire_code_is_distinct_snake_case() {
        let all = [
            K::MissingEvent,
            K::UnknownType,
            K::InvalidType,
            K::ReservedType,
            K::InvalidJson,
            K::InvalidKey,
            K::MissingKey,
            K::InvalidSource,
            K::ReservedSource,
            K::InvalidTenant,
            K::InvalidChannel,
            K::UnknownChannel,
            K::TooManyChannels,
            K::InvalidIdempotencyKey,
            K::InvalidTrace,
            K::PayloadTooLarge,
            K::Unauthenticated,
            K::PermissionDenied,
            K::Unavailable,
            K::RateLimited,
            K::QuotaExceeded,
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(|k| k.as_str()).collect();
        assert_eq!(codes.len(), all.len());
        assert!(codes.iter().all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }
}
