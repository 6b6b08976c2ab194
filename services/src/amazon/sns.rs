//! AWS SNS message verification, for SP-API notifications routed EventBridge → SNS → HTTPS.
//!
//! SNS signs a canonical `Key\nValue\n` string with RSA (SignatureVersion 1 = SHA1, 2 = SHA256)
//! and names the certificate by URL. The URL is checked before anything is fetched (https, a
//! `sns.<region>.amazonaws.com[.cn]` host, a `.pem` path, nothing else), so a forged message can
//! never make us fetch from a host of its choosing; the same rule guards `SubscribeURL`. Rules
//! and field order follow AWS's own validators (aws-php-sns-message-validator, aws-js-sns-message-
//! validator, aws-sdk-ruby MessageVerifier); see docs/webhooks.md.
//!
//! Fetching is behind [`Fetch`] so tests serve their own certificates; keys are cached by URL.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use rsa::{
    RsaPublicKey,
    pkcs1v15::{Signature, VerifyingKey},
    pkcs8::DecodePublicKey,
    signature::Verifier as _,
};
use serde::Deserialize;
use x509_cert::der::{DecodePem, Encode};

use crate::webhook::Fetch;

/// Certificates kept at once; AWS rotates them rarely, so a handful is plenty.
const CACHE_CAP: usize = 64;

/// One SNS HTTP(S) message, as posted. Lambda-style `…Url` casing is accepted too.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub message: String,
    pub timestamp: String,
    #[serde(default)]
    pub token: Option<String>,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL", alias = "SigningCertUrl")]
    pub signing_cert_url: String,
    #[serde(default, rename = "SubscribeURL", alias = "SubscribeUrl")]
    pub subscribe_url: Option<String>,
}

/// Why a message was refused. Each maps to one HTTP answer in [`super::webhook`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("SignatureVersion '{0}' is not supported (1 or 2)")]
    Version(String),
    #[error("{field} is not an https URL on an sns.<region>.amazonaws.com host: {url}")]
    Url { field: &'static str, url: String },
    #[error("signature does not match")]
    Signature,
    #[error("signing certificate could not be used: {0}")]
    Certificate(String),
    /// Our side: AWS could not be reached. The sender should retry.
    #[error("signing certificate could not be fetched: {0}")]
    Fetch(String),
    /// Older than SNS keeps retrying a delivery, or from the future: a replay, not a delivery.
    #[error("Timestamp '{0}' is not within the last hour")]
    Stale(String),
}

/// How old a message may be: SNS retries an HTTP(S) delivery for at most an hour.
const MAX_AGE_MS: u64 = 3_600_000 + 5 * 60_000;
/// How far ahead a sender's clock may be.
const MAX_AHEAD_MS: u64 = 5 * 60_000;
/// New signing certificates fetched per minute at most, per topic: an attacker can name many
/// `.pem` URLs on AWS's hosts, and each fetch is an outbound request made on their behalf; one
/// topic's messages spending the budget must not stop another's certificate being fetched.
const FETCHES_PER_MINUTE: u32 = 10;
/// A certificate URL whose fetch failed is not fetched again for this long (the message is
/// refused at once, and SNS retries): a bad URL costs one request, not one per message.
const FAILED_FETCH_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// The longest signature an RSA key SNS signs with gives, base64 (4,096-bit: 684 characters).
const MAX_SIGNATURE_B64: usize = 700;

/// Whether `host` is `sns.<region>.amazonaws.com` or its China form, as AWS's validators check.
fn is_sns_host(host: &str) -> bool {
    let rest = host.strip_suffix(".amazonaws.com").or_else(|| host.strip_suffix(".amazonaws.com.cn"));
    let Some(region) = rest.and_then(|r| r.strip_prefix("sns.")) else { return false };
    region.len() >= 3 && region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Checks an AWS URL before it is ever fetched: https, default port, no credentials, an SNS host;
/// certificates additionally need a `.pem` path and no query.
pub fn check_url(field: &'static str, raw: &str) -> Result<url::Url, Reject> {
    let bad = || Reject::Url { field, url: raw.chars().take(200).collect() };
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    let host_ok = url.host_str().is_some_and(is_sns_host);
    let plain =
        url.scheme() == "https" && url.port().is_none() && url.username().is_empty() && url.password().is_none();
    let cert_ok = field != "SigningCertURL" || (url.path().ends_with(".pem") && url.query().is_none());
    if host_ok && plain && cert_ok { Ok(url) } else { Err(bad()) }
}

/// The bytes SNS signed: each present key of this fixed list, as `Key\nValue\n`.
pub fn string_to_sign(m: &Message) -> String {
    let notification = m.kind == "Notification";
    let fields: [(&str, Option<&str>); 8] = [
        ("Message", Some(&m.message)),
        ("MessageId", Some(&m.message_id)),
        ("Subject", m.subject.as_deref().filter(|_| notification)),
        ("SubscribeURL", m.subscribe_url.as_deref().filter(|_| !notification)),
        ("Timestamp", Some(&m.timestamp)),
        ("Token", m.token.as_deref().filter(|_| !notification)),
        ("TopicArn", Some(&m.topic_arn)),
        ("Type", Some(&m.kind)),
    ];
    let mut out = String::with_capacity(m.message.len() + 256);
    for (key, value) in fields {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.push_str(key);
            out.push('\n');
            out.push_str(v);
            out.push('\n');
        }
    }
    out
}

/// The RSA key of a PEM certificate.
pub fn public_key(pem: &[u8]) -> Result<RsaPublicKey, Reject> {
    let bad = |e: &dyn std::fmt::Display| Reject::Certificate(e.to_string());
    let cert = x509_cert::Certificate::from_pem(pem).map_err(|e| bad(&e))?;
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().map_err(|e| bad(&e))?;
    RsaPublicKey::from_public_key_der(&spki).map_err(|e| bad(&e))
}

/// Verifies the message's signature with `key`.
pub fn verify_with(key: &RsaPublicKey, m: &Message) -> Result<(), Reject> {
    let sig = STANDARD.decode(m.signature.trim()).map_err(|_| Reject::Signature)?;
    let sig = Signature::try_from(sig.as_slice()).map_err(|_| Reject::Signature)?;
    let signed = string_to_sign(m);
    let ok = match m.signature_version.as_str() {
        "1" => VerifyingKey::<sha1::Sha1>::new(key.clone()).verify(signed.as_bytes(), &sig).is_ok(),
        "2" => VerifyingKey::<sha2::Sha256>::new(key.clone()).verify(signed.as_bytes(), &sig).is_ok(),
        other => return Err(Reject::Version(other.chars().take(16).collect())),
    };
    if ok { Ok(()) } else { Err(Reject::Signature) }
}

/// Verifies messages, fetching and caching signing certificates through an [`Fetch`].
pub struct Verifier {
    https: Arc<dyn Fetch>,
    keys: Mutex<HashMap<String, Arc<RsaPublicKey>>>,
    /// Per topic (configured ones only reach here): the current minute's start and the
    /// certificates fetched in it.
    fetches: Mutex<HashMap<String, (std::time::Instant, u32)>>,
    /// Certificate URLs whose fetch failed, and when, at most [`CACHE_CAP`].
    failed: Mutex<HashMap<String, (std::time::Instant, String)>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("sns::Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(https: Arc<dyn Fetch>) -> Self {
        Self { https, keys: Mutex::default(), fetches: Mutex::default(), failed: Mutex::default() }
    }

    /// The fetcher, for subscription confirmations.
    pub fn https(&self) -> &dyn Fetch {
        self.https.as_ref()
    }

    /// Checks the version, the certificate URL, the message's age and the signature's shape
    /// first (all free), then fetches (or reuses) the key, at most [`FETCHES_PER_MINUTE`] new
    /// ones a minute per topic, and a URL that failed not again for [`FAILED_FETCH_TTL`].
    pub async fn verify(&self, m: &Message) -> Result<(), Reject> {
        if !matches!(m.signature_version.as_str(), "1" | "2") {
            return Err(Reject::Version(m.signature_version.chars().take(16).collect()));
        }
        let url = check_url("SigningCertURL", &m.signing_cert_url)?;
        fresh(&m.timestamp, switchyard::log::now_ms())?;
        let signature = m.signature.trim();
        if signature.len() > MAX_SIGNATURE_B64 || STANDARD.decode(signature).map_or(true, |s| s.len() < 128) {
            return Err(Reject::Signature);
        }
        let cached = self.keys.lock().expect("cert cache lock").get(url.as_str()).cloned();
        let key = match cached {
            Some(key) => key,
            None => {
                self.failed_recently(url.as_str())?;
                self.may_fetch(&m.topic_arn)?;
                let fetched = self.https.get(url.as_str()).await.map_err(Reject::Fetch);
                let key = match fetched.and_then(|pem| public_key(&pem)) {
                    Ok(key) => Arc::new(key),
                    Err(e) => {
                        let mut failed = self.failed.lock().expect("failed cache lock");
                        if failed.len() >= CACHE_CAP {
                            failed.clear();
                        }
                        failed.insert(url.to_string(), (std::time::Instant::now(), e.to_string()));
                        return Err(e);
                    }
                };
                let mut keys = self.keys.lock().expect("cert cache lock");
                if keys.len() >= CACHE_CAP {
                    keys.clear();
                }
                keys.insert(url.to_string(), key.clone());
                key
            }
        };
        verify_with(&key, m)
    }
}

impl Verifier {
    fn may_fetch(&self, topic: &str) -> Result<(), Reject> {
        let mut fetches = self.fetches.lock().expect("fetch counter lock");
        let f = fetches.entry(topic.to_owned()).or_insert_with(|| (std::time::Instant::now(), 0));
        if f.0.elapsed() >= std::time::Duration::from_secs(60) {
            *f = (std::time::Instant::now(), 0);
        }
        if f.1 >= FETCHES_PER_MINUTE {
            return Err(Reject::Fetch("too many new signing certificates this minute; retry later".into()));
        }
        f.1 += 1;
        Ok(())
    }

    /// Refuses at once a URL whose fetch failed within [`FAILED_FETCH_TTL`].
    fn failed_recently(&self, url: &str) -> Result<(), Reject> {
        let failed = self.failed.lock().expect("failed cache lock");
        match failed.get(url) {
            Some((at, why)) if at.elapsed() < FAILED_FETCH_TTL => {
                Err(Reject::Fetch(format!("this certificate could not be fetched a moment ago ({why}); retry later")))
            }
            _ => Ok(()),
        }
    }
}

/// Whether an SNS `Timestamp` is recent enough to be a delivery (SNS retries for an hour).
pub fn fresh(timestamp: &str, now_ms: u64) -> Result<(), Reject> {
    let stale = || Reject::Stale(timestamp.chars().take(40).collect());
    let at = switchyard::names::parse_time_ms(timestamp).map_err(|_| stale())?;
    if at + MAX_AGE_MS < now_ms || at > now_ms + MAX_AHEAD_MS {
        return Err(stale());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts fetches; every one fails.
    #[derive(Default)]
    struct Failing(std::sync::atomic::AtomicUsize);

    impl Fetch for Failing {
        fn get<'a>(&'a self, _url: &'a str) -> futures::future::BoxFuture<'a, Result<Vec<u8>, String>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Box::pin(async { Err("HTTP 404".to_owned()) })
        }
    }

    fn message(topic: &str, cert: &str, signature: &str) -> Message {
        Message {
            kind: "Notification".into(),
            message_id: "m".into(),
            topic_arn: topic.into(),
            subject: None,
            message: "{}".into(),
            timestamp: now_rfc3339(),
            token: None,
            signature_version: "2".into(),
            signature: signature.into(),
            signing_cert_url: format!("https://sns.us-east-1.amazonaws.com/{cert}.pem"),
            subscribe_url: None,
        }
    }

    fn now_rfc3339() -> String {
        crate::period::rfc3339(jiff::Timestamp::now())
    }

    /// A malformed signature costs no fetch; a failed fetch is not repeated; one topic spending
    /// its budget leaves another's.
    #[tokio::test]
    async fn fetches_are_budgeted_per_topic_failures_cached_and_cheap_checks_first() {
        let fetch = Arc::new(Failing::default());
        let v = Verifier::new(fetch.clone());
        let sig = STANDARD.encode([7u8; 256]);
        let fetched = || fetch.0.load(std::sync::atomic::Ordering::Relaxed);
        assert!(matches!(v.verify(&message("t1", "a", "not base64!")).await, Err(Reject::Signature)));
        assert!(matches!(v.verify(&message("t1", "a", &STANDARD.encode([1u8; 8]))).await, Err(Reject::Signature)));
        assert_eq!(fetched(), 0, "a signature of the wrong shape fetches nothing");
        assert!(matches!(v.verify(&message("t1", "a", &sig)).await, Err(Reject::Fetch(_))));
        assert!(matches!(v.verify(&message("t1", "a", &sig)).await, Err(Reject::Fetch(_))));
        assert_eq!(fetched(), 1, "a failed certificate is not fetched again at once");
        for i in 0..20 {
            let _ = v.verify(&message("t1", &format!("n{i}"), &sig)).await;
        }
        assert_eq!(fetched(), FETCHES_PER_MINUTE as usize, "t1's budget is spent");
        let _ = v.verify(&message("t2", "b", &sig)).await;
        assert_eq!(fetched(), FETCHES_PER_MINUTE as usize + 1, "t2 still has its own");
    }

    #[test]
    fn only_recent_messages_are_deliveries() {
        let now = switchyard::names::parse_time_ms("2026-11-30T10:00:00Z").unwrap();
        assert!(fresh("2026-11-30T09:30:00.000Z", now).is_ok());
        assert!(fresh("2026-11-30T10:03:00.000Z", now).is_ok(), "a little clock skew");
        assert!(fresh("2026-11-30T08:30:00.000Z", now).is_err(), "an hour and a half old");
        assert!(fresh("2026-11-30T10:30:00.000Z", now).is_err(), "from the future");
        assert!(fresh("yesterday", now).is_err());
    }

    #[test]
    fn certificate_urls_are_checked_like_awss_validators() {
        let ok = [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
        ];
        for u in ok {
            assert!(check_url("SigningCertURL", u).is_ok(), "{u}");
        }
        let refused = [
            "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/SimpleNotificationService-abc.pem",
            "https://s3.amazonaws.com/bucket/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.txt",
            "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-abc.pem",
            "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.us-east-1.amazonaws.com/x.pem?redirect=https://evil.com",
            "https://sns.ab.amazonaws.com/x.pem",
            "https://evil.com/sns.us-east-1.amazonaws.com/x.pem",
            "not a url",
        ];
        for u in refused {
            assert!(check_url("SigningCertURL", u).is_err(), "{u}");
        }
        assert!(
            check_url(
                "SubscribeURL",
                "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123:t&Token=abc"
            )
            .is_ok()
        );
        assert!(check_url("SubscribeURL", "https://169.254.169.254/latest/meta-data/").is_err());
    }

    #[test]
    fn string_to_sign_follows_the_documented_field_order() {
        let m = Message {
            kind: "Notification".into(),
            message_id: "id-1".into(),
            topic_arn: "arn:aws:sns:us-east-1:123:t".into(),
            subject: Some("s".into()),
            message: "line one\nline two".into(),
            timestamp: "2026-11-23T10:00:00.000Z".into(),
            token: Some("ignored for notifications".into()),
            ..Default::default()
        };
        assert_eq!(
            string_to_sign(&m),
            "Message\nline one\nline two\nMessageId\nid-1\nSubject\ns\nTimestamp\n2026-11-23T10:00:00.000Z\nTopicArn\narn:aws:sns:us-east-1:123:t\nType\nNotification\n"
        );
        let c = Message {
            kind: "SubscriptionConfirmation".into(),
            subscribe_url: Some("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription".into()),
            token: Some("tok".into()),
            subject: Some("not signed here".into()),
            ..m
        };
        assert_eq!(
            string_to_sign(&c),
            "Message\nline one\nline two\nMessageId\nid-1\nSubscribeURL\nhttps://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription\nTimestamp\n2026-11-23T10:00:00.000Z\nToken\ntok\nTopicArn\narn:aws:sns:us-east-1:123:t\nType\nSubscriptionConfirmation\n"
        );
    }
}
