//! rustls for the db driver: ring as the crypto provider (chosen explicitly, so a
//! binary that also links aws-lc-rs does not panic), the CA file, the client
//! configuration of each PostgreSQL `sslmode`, and reading a TLS failure out of a
//! client library's error.
//!
//! rustls verifies chain and name together; `sslmode` needs two more verifiers:
//! [`ChainOnly`] (`verify-ca`, and `prefer`/`require` with a root file: the chain is
//! checked, the name is not) and [`AnyCertificate`] (`prefer`/`require` without one:
//! encryption only). Both still check the handshake signatures, so the session is
//! bound to the certificate the server presented.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The crypto provider of every TLS connection the driver makes: ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider when none is installed yet. For
/// client libraries that call `ClientConfig::builder()` themselves (mysql_async):
/// with two providers linked into one binary that call panics otherwise.
#[cfg(feature = "mysql")]
pub(crate) fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Another thread may win the race; either way a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A CA file that cannot be used, naming the option it came from.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the CA file {path} ({option}): {why}")]
pub(crate) struct BadCaFile {
    option: String,
    path: String,
    why: String,
}

/// The trust anchors of `ca` (a PEM file of one or more certificates), or the
/// built-in ones (webpki-roots, Mozilla's list) when `ca` is `None`. `option` names
/// where the path came from, for the error.
pub(crate) fn roots(ca: Option<&Path>, option: &str) -> Result<RootCertStore, BadCaFile> {
    let Some(path) = ca else {
        return Ok(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        });
    };
    let bad = |why: String| BadCaFile {
        option: option.to_owned(),
        path: path.display().to_string(),
        why,
    };
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(pem_error(e)))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(pem_error(e)))?;
        store
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    if store.is_empty() {
        return Err(bad("it holds no PEM certificate".to_owned()));
    }
    Ok(store)
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not a PEM file: {other:?}"),
    }
}

/// The rustls client configuration of a PostgreSQL `sslmode` (`disable` gets one
/// too: tokio-postgres then never uses it).
#[cfg(feature = "postgres")]
pub(crate) fn pg_client_config(
    tls: &super::Tls<super::PgSslMode>,
) -> Result<rustls::ClientConfig, BadCaFile> {
    use super::PgSslMode;
    let provider = provider();
    let option = tls.ca_option.as_str();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions");
    let config = if tls.mode == PgSslMode::VerifyFull {
        builder
            .with_root_certificates(roots(tls.ca.as_deref(), option)?)
            .with_no_client_auth()
    } else if tls.mode.checks_chain(tls.ca.is_some()) {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly {
                roots: Arc::new(roots(tls.ca.as_deref(), option)?),
                provider,
            }))
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
            .with_no_client_auth()
    };
    Ok(config)
}

/// Checks the server's certificate chain against the roots, not its names.
#[derive(Debug)]
pub(crate) struct ChainOnly {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Accepts any certificate (encryption without authentication: `prefer` and
/// `require` without a root file, as libpq does), still checking the handshake
/// signatures made with it.
#[derive(Debug)]
pub(crate) struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls error somewhere in `error`'s source chain (also inside an
/// `io::Error`, where tokio-rustls puts it), if any.
pub(crate) fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = find_rustls_error(inner) {
                return Some(found);
            }
        }
        next = e.source();
    }
    None
}

/// The message of a failed TLS handshake: `TLS verification failed (OPTIONS): WHY`
/// for a certificate that was refused, `TLS handshake failed (OPTIONS): WHY`
/// otherwise. `options` names the options in force.
pub(crate) fn tls_failure(options: &str, error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(_) => {
            format!("TLS verification failed ({options}): {error}")
        }
        _ => format!("TLS handshake failed ({options}): {error}"),
    }
}

/// A name the refused certificate is valid for, usable as a server name, when it
/// was refused for its name only. rustls reports the presented names as webpki
/// writes them (`DnsName("db.example")`, `IpAddress(10.0.0.1)`); a wildcard name
/// gives a name it covers.
#[cfg(feature = "mysql")]
pub(crate) fn presented_name(error: &rustls::Error) -> Option<String> {
    let rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
        presented,
        ..
    }) = error
    else {
        return None;
    };
    presented.iter().find_map(|p| {
        let name = if let Some(dns) = p
            .strip_prefix("DnsName(\"")
            .and_then(|r| r.strip_suffix("\")"))
        {
            dns.replacen("*.", "any.", 1)
        } else {
            p.strip_prefix("IpAddress(")?.strip_suffix(')')?.to_owned()
        };
        let valid = ServerName::try_from(name.as_str()).is_ok();
        valid.then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError;

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let err = roots(Some(Path::new("/nonexistent/ca.pem")), "sslrootcert").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("cannot use the CA file /nonexistent/ca.pem (sslrootcert): "),
            "{msg}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let msg = roots(Some(&empty), "db.ssl_ca").unwrap_err().to_string();
        assert!(
            msg.contains("(db.ssl_ca)") && msg.contains("holds no PEM certificate"),
            "{msg}"
        );
        assert!(!roots(None, "sslrootcert").unwrap().is_empty());
    }

    #[test]
    fn rustls_errors_are_found_inside_io_errors() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner.clone());
        assert_eq!(find_rustls_error(&io), Some(&inner));
        assert_eq!(
            tls_failure("sslmode=verify-full, sslrootcert=/ca.pem", &inner),
            "TLS verification failed (sslmode=verify-full, sslrootcert=/ca.pem): invalid peer certificate: UnknownIssuer"
        );
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn a_name_the_certificate_carries_is_read_from_the_refusal() {
        let refusal = |presented: &[&str]| {
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("127.0.0.1").unwrap(),
                presented: presented.iter().map(|p| (*p).to_owned()).collect(),
            })
        };
        assert_eq!(
            presented_name(&refusal(&["DnsName(\"localhost\")"])).as_deref(),
            Some("localhost")
        );
        assert_eq!(
            presented_name(&refusal(&["Unsupported(0x01)", "IpAddress(10.0.0.1)"])).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            presented_name(&refusal(&["DnsName(\"*.db.example\")"])).as_deref(),
            Some("any.db.example")
        );
        assert_eq!(presented_name(&refusal(&[])), None);
        assert_eq!(
            presented_name(&rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            )),
            None
        );
    }
}
