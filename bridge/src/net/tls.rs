//! TLS (rustls, with ALPN so browsers get HTTP/2) over the guarded plain listener: the
//! acceptor from PEM files, and handshakes in their own tasks within a deadline.

use std::{io, path::Path, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
    server::TlsStream,
};

use super::listener::{Gate, PlainIo, Queued, admit, plain};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert_file {path}: {message}")]
    Cert { path: String, message: String },
    #[error("tls.key_file {path}: {message}")]
    Key { path: String, message: String },
    #[error("tls: {0}")]
    Config(String),
}

/// A rustls acceptor from PEM files, offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert { path: cert.display().to_string(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Cert { path: cert.display().to_string(), message: "no certificate in the file".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key { path: key.display().to_string(), message: e.to_string() })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A client gets this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS over guarded TCP. Handshakes run in their own tasks.
pub fn tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    stall: Duration,
    pending: Gate,
    open: Gate,
) -> io::Result<Queued<TlsStream<PlainIo>>> {
    let local = listener.local_addr()?;
    let (tx, ready) = mpsc::channel(1024);
    let mut plain = plain(listener, stall, None, pending.clone(), open)?;
    tokio::spawn(async move {
        loop {
            let (io, addr) = axum::serve::Listener::accept(&mut plain).await;
            if tx.is_closed() {
                return;
            }
            let acceptor = acceptor.clone();
            admit(&pending, addr, &tx, async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => Some(tls),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %addr, "TLS handshake failed");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "TLS handshake timed out");
                        None
                    }
                }
            });
        }
    });
    Ok(Queued { ready, local })
}
