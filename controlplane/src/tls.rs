//! The MCP listener's TLS: a rustls config whose certificate can be replaced while serving.
//!
//! The shards hold one `Arc<ServerConfig>` for their whole life; its certificate resolver
//! reads the current certified key from an `ArcSwap`, so a renewed certificate is served to
//! every new handshake at once while established connections keep the session they have.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;

/// The current certificate chain and key of the listener.
pub struct CertCell(ArcSwap<CertifiedKey>);

impl fmt::Debug for CertCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertCell(...)")
    }
}

impl CertCell {
    pub fn store(&self, ck: Arc<CertifiedKey>) {
        self.0.store(ck);
    }
}

impl ResolvesServerCert for CertCell {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Why the listener's certificate cannot be used (the operator's files).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file cannot be read or parsed.
    #[error("{}: {source}", path.display())]
    Pem {
        path: std::path::PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: no certificate", .0.display())]
    NoCertificate(std::path::PathBuf),
    /// The key does not belong to the certificate, or is unusable.
    #[error("{} and {}: {source}", cert.display(), key.display())]
    Mismatch {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        source: rustls::Error,
    },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// Read the PEM chain and key and check that they belong together.
pub fn load_certified(t: &TlsConfig) -> Result<Arc<CertifiedKey>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let pem = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| TlsError::Pem { path, source }
    };
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(&t.cert)
        .map_err(pem(&t.cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(&t.cert))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(t.cert.clone()));
    }
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&t.key).map_err(pem(&t.key))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let ck =
        CertifiedKey::from_der(certs, key, &provider).map_err(|source| TlsError::Mismatch {
            cert: t.cert.clone(),
            key: t.key.clone(),
            source,
        })?;
    Ok(Arc::new(ck))
}

/// The listener's rustls config (TLS 1.2/1.3 safe defaults, `http/1.1`) and the cell that
/// reloads replace its certificate through.
pub fn server_config(
    t: &TlsConfig,
) -> Result<(Arc<rustls::ServerConfig>, Arc<CertCell>), TlsError> {
    let cell = Arc::new(CertCell(ArcSwap::new(load_certified(t)?)));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cell.clone());
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(sc), cell))
}
