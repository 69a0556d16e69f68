//! TLS for the runner's connections to an `https://` server (its websocket and its
//! artifact uploads): rustls with the system's trusted roots plus, with `--ca-file`, the
//! certificates of a private CA (PEM). A server whose certificate none of them vouches
//! for is refused, with a message that says what to do.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The client configuration for `https://`/`wss://`; `ca_file` adds trusted CAs.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--ca-file {} is not PEM certificates: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("--ca-file {} holds no certificate", path.display()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A connection error, with advice when the server's certificate was not trusted.
pub fn explain(error: &str) -> String {
    if error.contains("invalid peer certificate") || error.contains("UnknownIssuer") || error.contains("certificate") {
        format!("{error} — the server's TLS certificate is not trusted; pass --ca-file with the CA that signed it")
    } else {
        error.to_string()
    }
}
