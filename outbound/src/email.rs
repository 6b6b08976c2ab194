//! E-mail through the operator's SMTP relay, with lettre: STARTTLS by default, implicit TLS or
//! (for a relay on the same host) none, as configured.

use std::{path::PathBuf, time::Duration};

use futures::future::BoxFuture;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};
use serde::Deserialize;
use switchyard::secret::Secret;

use crate::transport::{Outcome, Reason};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on a trusted network.
    None,
}

/// `[outbound.smtp]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default)]
    pub security: Security,
    pub from: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// A PEM CA certificate to trust beside the public roots (a relay with a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_port() -> u16 {
    587
}

fn default_timeout() -> u64 {
    15
}

/// A configured relay.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(c: &SmtpConfig) -> Result<Self, String> {
        let from: Mailbox = c.from.parse().map_err(|e| format!("outbound.smtp.from: {e}"))?;
        let mut tls = TlsParameters::builder(c.host.clone());
        if let Some(path) = &c.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("outbound.smtp.ca_file {}: {e}", path.display()))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| format!("outbound.smtp.ca_file: {e}"))?;
            tls = tls.add_root_certificate(cert);
        }
        let tls = tls.build_rustls().map_err(|e| format!("outbound.smtp: {e}"))?;
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host)
            .port(c.port)
            .timeout(Some(Duration::from_secs(c.timeout_secs)))
            .tls(match c.security {
                Security::Starttls => Tls::Required(tls),
                Security::Tls => Tls::Wrapper(tls),
                Security::None => Tls::None,
            });
        if let (Some(user), Some(pass)) = (&c.username, &c.password) {
            b = b.credentials(Credentials::new(user.clone(), pass.to_string()));
        }
        Ok(Self { transport: b.build(), from })
    }

    /// Validates recipient addresses (at endpoint creation).
    pub fn check_recipients(to: &[String]) -> Result<(), String> {
        for t in to {
            t.parse::<Mailbox>().map_err(|e| format!("{t:?}: {e}"))?;
        }
        Ok(())
    }

    pub fn send(&self, to: &[String], subject: &str, text: String, id: &str) -> BoxFuture<'static, Outcome> {
        let mut m = Message::builder().from(self.from.clone()).subject(subject).header(ContentType::TEXT_PLAIN);
        for t in to {
            match t.parse::<Mailbox>() {
                Ok(mb) => m = m.to(mb),
                Err(e) => return Box::pin(futures::future::ready(smtp_failed(format!("{t:?}: {e}")))),
            }
        }
        let message = m.message_id(Some(format!("<{id}@switchyard>"))).body(text);
        let transport = self.transport.clone();
        Box::pin(async move {
            let message = match message {
                Ok(m) => m,
                Err(e) => return smtp_failed(e.to_string()),
            };
            match transport.send(message).await {
                Ok(r) => Outcome::Delivered { status: u16::from(r.code()) },
                Err(e) => smtp_failed(e.to_string()),
            }
        })
    }
}

fn smtp_failed(detail: String) -> Outcome {
    Outcome::failed(Reason::Smtp, detail)
}
