//! TLS for client connections with rustls: the acceptor built from the
//! configured certificate, key and (for `verify`) client CA.

use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::options::TlsOptions;

/// Builds the acceptor; every file problem is an error naming the file.
pub(crate) fn acceptor(opts: &TlsOptions) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&opts.cert_file)
        .and_then(|certs| certs.collect())
        .with_context(|| {
            format!(
                "can not read TLS certificates from {}",
                opts.cert_file.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", opts.cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(&opts.key_file).with_context(|| {
        format!(
            "can not read the TLS private key from {}",
            opts.key_file.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if opts.verify {
        let ca_file = opts
            .ca_file
            .as_ref()
            .context("tls.verify needs tls.ca_file")?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file)
            .with_context(|| format!("can not read the client CA from {}", ca_file.display()))?
        {
            let cert = cert.with_context(|| format!("bad certificate in {}", ca_file.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("unusable CA certificate in {}", ca_file.display()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .context("client certificate verifier")?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
