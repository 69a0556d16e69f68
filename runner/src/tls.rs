//! TLS for the runner's connections to an `https://` server (its websocket and its
//! artifact uploads) and the `usher` client's: rustls with the system's trusted roots
//! plus, with `--ca-file`, the certificates of a private CA (PEM) — or the server's own
//! self-signed certificate, trusted as exactly itself. A server whose certificate none of
//! them vouches for is refused, with a message that names the cause and what to do.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_name};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// The client configuration for `https://`/`wss://`; `ca_file` adds trusted CAs.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    let mut pinned = Vec::new();
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--ca-file {} is not PEM certificates: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("--ca-file {} holds no certificate", path.display()));
        }
        for cert in certs {
            roots.add(cert.clone()).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
            pinned.push(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chained = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier = PinnedOrChained {
        chained,
        pinned,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server's certificate is trusted when it chains to a trusted root (the system's,
/// or a CA of `--ca-file`), as usual; or when it is exactly a certificate of `--ca-file`
/// — a server's self-signed certificate, which webpki refuses as its own issuer when it
/// says it is a CA (as the usual `openssl req -x509` one does) — for the name the client
/// asked for. Its validity period has been checked by then either way (webpki checks it
/// before it looks for an issuer).
#[derive(Debug)]
struct PinnedOrChained {
    chained: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedOrChained {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // No issuer found, or webpki's CaUsedAsEndEntity (which rustls passes on as
        // `Other`): the chain is the problem, not the certificate's dates or name.
        let no_chain = |e: &CertificateError| match e {
            CertificateError::UnknownIssuer => true,
            CertificateError::Other(other) => other.to_string().contains("CaUsedAsEndEntity"),
            _ => false,
        };
        match self.chained.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(e)) if no_chain(&e) && self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A connection error, with its real cause in words when the server's certificate was
/// refused, and what to do.
pub fn explain(error: &str) -> String {
    // rustls words some of its errors, and debug-prints others.
    let advice = if ["Expired", "NotValidYet", "certificate expired", "certificate not valid yet"]
        .iter()
        .any(|w| error.contains(w))
    {
        "the server's TLS certificate is not trusted: it has expired or is not valid yet (check it, and the clocks)"
    } else if error.contains("NotValidForName") || error.contains("not valid for name") {
        "the server's TLS certificate is not trusted: it is not for this host name (use the name it was made for in the URL)"
    } else if error.contains("CaUsedAsEndEntity") {
        "the server's TLS certificate is not trusted: it is a self-signed certificate: pass that certificate itself with --ca-file"
    } else if error.contains("UnknownIssuer") || error.contains("invalid peer certificate") {
        "the server's TLS certificate is not trusted: no CA this machine trusts signed it; pass --ca-file with \
         the CA that signed it (or the server's self-signed certificate)"
    } else {
        return error.to_string();
    };
    format!("{error} — {advice}")
}

/// An error with every cause under it (`reqwest` keeps the TLS refusal two levels down).
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = e.source();
    }
    text
}
