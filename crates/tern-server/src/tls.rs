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
    let builder = if opts.verify || opts.verify_and_map {
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

/// The identities of a client certificate, in the order nats-server tries
/// them for `verify_and_map`: SAN e-mail addresses, SAN DNS names, SAN URIs,
/// then the subject DN (RFC 2253: most specific attribute first). Empty if
/// the certificate does not parse.
pub(crate) fn certificate_identities(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut emails = Vec::new();
    let mut dns = Vec::new();
    let mut uris = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::RFC822Name(e) => emails.push((*e).to_owned()),
                GeneralName::DNSName(d) => dns.push((*d).to_owned()),
                GeneralName::URI(u) => uris.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    let mut out = emails;
    out.extend(dns);
    out.extend(uris);
    // RFC 2253 lists the RDNs last-to-first of their order in the
    // certificate.
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let kind = x509_parser::objects::oid2abbrev(
                        attr.attr_type(),
                        x509_parser::objects::oid_registry(),
                    )
                    .map(str::to_owned)
                    .unwrap_or_else(|_| attr.attr_type().to_id_string());
                    let value = attr.as_str().unwrap_or_default();
                    format!("{kind}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    if !rdns.is_empty() {
        out.push(rdns.into_iter().rev().collect::<Vec<_>>().join(","));
    }
    out
}
