//! Optional mutual TLS for peer connections (`STARCITE_PEER_TLS_CERT/KEY/CA`).
//!
//! Both directions require TLS. A dialling node checks the listener's certificate against the
//! CA and the host part of the node id it dialled; a listening node checks the dialler's
//! certificate against the CA during the TLS handshake and, once the peer handshake has named
//! the node, against the host part of that node id. Names are matched against the certificate's
//! subject alternative names (DNS or IP).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_rustls::{TlsAcceptor, TlsConnector};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::config::unbracketed_host;

/// Environment variable of the node certificate chain.
pub const PEER_TLS_CERT_VARIABLE: &str = "STARCITE_PEER_TLS_CERT";
/// Environment variable of the node private key.
pub const PEER_TLS_KEY_VARIABLE: &str = "STARCITE_PEER_TLS_KEY";
/// Environment variable of the CA certificates that peer certificates must chain to.
pub const PEER_TLS_CA_VARIABLE: &str = "STARCITE_PEER_TLS_CA";

/// Paths of the peer TLS files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTlsConfig {
    /// PEM certificate chain of this node, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key of this node (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// PEM CA certificates.
    pub ca_path: PathBuf,
}

/// A file that could not be loaded. Displays as config.md's
/// `cannot load STARCITE_PEER_TLS_CERT: <path>: <reason>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot load {variable}: {}: {reason}", path.display())]
pub struct PeerTlsLoadError {
    /// The variable naming the file.
    pub variable: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// Loaded TLS settings, ready for both directions. Cheap to clone.
#[derive(Clone)]
pub struct PeerTls {
    pub(crate) connector: TlsConnector,
    pub(crate) acceptor: TlsAcceptor,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PeerTls { .. }")
    }
}

/// Load and check the three files; the error names the first file that is unusable.
pub fn load_peer_tls(config: &PeerTlsConfig) -> Result<PeerTls, PeerTlsLoadError> {
    let certificates = load_certificates(PEER_TLS_CERT_VARIABLE, &config.cert_path)?;
    let key_error = |reason: String| PeerTlsLoadError {
        variable: PEER_TLS_KEY_VARIABLE,
        path: config.key_path.clone(),
        reason,
    };
    let key = PrivateKeyDer::from_pem_file(&config.key_path)
        .map_err(|error| key_error(pem_reason(error)))?;
    let ca_certificates = load_certificates(PEER_TLS_CA_VARIABLE, &config.ca_path)?;
    let ca_error = |reason: String| PeerTlsLoadError {
        variable: PEER_TLS_CA_VARIABLE,
        path: config.ca_path.clone(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for certificate in ca_certificates {
        roots
            .add(certificate)
            .map_err(|error| ca_error(error.to_string()))?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|error| ca_error(error.to_string()))?;
    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| ca_error(error.to_string()))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(certificates.clone(), key.clone_key())
        .map_err(|error| key_error(error.to_string()))?;

    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|error| ca_error(error.to_string()))?;
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ca_error(error.to_string()))?
        .with_webpki_verifier(server_verifier)
        .with_client_auth_cert(certificates, key)
        .map_err(|error| key_error(error.to_string()))?;

    Ok(PeerTls {
        connector: TlsConnector::from(Arc::new(client_config)),
        acceptor: TlsAcceptor::from(Arc::new(server_config)),
    })
}

fn load_certificates(
    variable: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, PeerTlsLoadError> {
    let error = |reason: String| PeerTlsLoadError {
        variable,
        path: path.to_path_buf(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|failure| error(pem_reason(failure)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|failure| error(pem_reason(failure)))?;
    if certificates.is_empty() {
        return Err(error("no certificate found".to_string()));
    }
    Ok(certificates)
}

fn pem_reason(error: rustls::pki_types::pem::Error) -> String {
    match error {
        rustls::pki_types::pem::Error::Io(io_error) => io_error.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM item of the expected kind found".to_string()
        }
        other => format!("invalid PEM: {other:?}"),
    }
}

/// The TLS server name to expect when dialling a node whose host part is `host`.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(unbracketed_host(host).to_owned())
        .map_err(|error| format!("host {host:?} is not a valid TLS name: {error}"))
}

/// Check that `certificate` carries a subject alternative name matching `host`.
pub(crate) fn certificate_matches_host(
    certificate: &CertificateDer<'_>,
    host: &str,
) -> Result<(), String> {
    let name = server_name(host)?;
    let end_entity = webpki::EndEntityCert::try_from(certificate)
        .map_err(|error| format!("unreadable peer certificate: {error}"))?;
    end_entity
        .verify_is_valid_for_subject_name(&name)
        .map_err(|error| format!("peer certificate is not valid for {host}: {error}"))
}
