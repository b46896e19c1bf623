//! TLS for the public listener (http-api.md T1, config.md §4.1): with `STARCITE_TLS_CERT` and
//! `STARCITE_TLS_KEY` set the listener speaks HTTPS/WSS only, TLS 1.2 and 1.3, through rustls
//! with the `ring` provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Paths of the public listener's certificate chain and private key (PEM; the key in PKCS#8,
/// PKCS#1 or SEC1 form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// `STARCITE_TLS_CERT`.
    pub cert_path: PathBuf,
    /// `STARCITE_TLS_KEY`.
    pub key_path: PathBuf,
}

/// A file of [`TlsConfig`] that could not be used. Displays as the contract's startup message
/// `cannot load STARCITE_TLS_CERT: <path>: <reason>` (or `STARCITE_TLS_KEY`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot load {variable}: {}: {reason}", path.display())]
pub struct TlsLoadError {
    /// `STARCITE_TLS_CERT` or `STARCITE_TLS_KEY`.
    pub variable: &'static str,
    /// The path as configured.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

fn load_error(variable: &'static str, path: &Path, reason: impl ToString) -> TlsLoadError {
    TlsLoadError {
        variable,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Read both files and build the server configuration. A key that does not match the
/// certificate is reported against `STARCITE_TLS_KEY`.
pub fn load_tls(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsLoadError> {
    const CERT: &str = "STARCITE_TLS_CERT";
    const KEY: &str = "STARCITE_TLS_KEY";
    let cert_path = &config.cert_path;
    let key_path = &config.key_path;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|error| load_error(CERT, cert_path, error))?
        .collect::<Result<_, _>>()
        .map_err(|error| load_error(CERT, cert_path, error))?;
    if certificates.is_empty() {
        return Err(load_error(CERT, cert_path, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|error| {
        let reason = match error {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key found".to_owned(),
            other => other.to_string(),
        };
        load_error(KEY, key_path, reason)
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|error| load_error(CERT, cert_path, error))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| load_error(KEY, key_path, error))?;
    Ok(Arc::new(server_config))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn loads_the_fixture_pair() {
        let loaded = load_tls(&TlsConfig {
            cert_path: fixture("tls_cert.pem"),
            key_path: fixture("tls_key.pem"),
        });
        assert!(loaded.is_ok(), "{loaded:?}");
    }

    #[test]
    fn failures_name_the_variable_and_path() {
        let missing = load_tls(&TlsConfig {
            cert_path: fixture("absent.pem"),
            key_path: fixture("tls_key.pem"),
        });
        let message = missing.map(|_| ()).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!(
                "cannot load STARCITE_TLS_CERT: {}: ",
                fixture("absent.pem").display()
            )),
            "{message}"
        );
        let swapped = load_tls(&TlsConfig {
            cert_path: fixture("tls_cert.pem"),
            key_path: fixture("tls_cert.pem"),
        });
        let message = swapped.map(|_| ()).unwrap_err().to_string();
        assert!(
            message.starts_with("cannot load STARCITE_TLS_KEY: "),
            "{message}"
        );
        let mismatched = load_tls(&TlsConfig {
            cert_path: fixture("tls_cert.pem"),
            key_path: fixture("rsa_jwks_one.pem"),
        });
        assert!(mismatched.is_err());
    }
}
