//! TLS for clients, with certificates made at run time (rcgen): async-nats
//! connects with `tls://`, plain clients learn from INFO that TLS is
//! required, and with `verify` a client certificate signed by the
//! configured CA is required.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tern_tests::{Launch, RawClient, TernServer};

/// A CA, a server certificate for localhost and a client certificate,
/// written as PEM files into `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["client.example".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", server_cert.pem()),
        server_key: write("server-key.pem", server_key.serialize_pem()),
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client-key.pem", client_key.serialize_pem()),
    }
}

fn tls_url(server: &TernServer) -> String {
    format!("tls://localhost:{}", server.addr.port())
}

#[tokio::test]
async fn clients_connect_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let config = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let server = TernServer::launch(Launch::default().config(&config));
    // INFO says TLS is required, in the clear, before the handshake.
    let raw = RawClient::connect(server.addr);
    assert_eq!(raw.info_json()["tls_required"], true);

    let options = || {
        async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(pki.ca.clone())
    };
    let client = tokio::time::timeout(Duration::from_secs(10), options().connect(tls_url(&server)))
        .await
        .unwrap()
        .expect("TLS connect");
    let mut sub = client.subscribe("secure").await.unwrap();
    tern_tests::round_trip(&client).await;
    client.publish("secure", "over tls".into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, bytes::Bytes::from("over tls"));

    // A client that does not trust the CA cannot connect.
    let untrusted = async_nats::ConnectOptions::new()
        .require_tls(true)
        .max_reconnects(1);
    let failed =
        tokio::time::timeout(Duration::from_secs(10), untrusted.connect(tls_url(&server))).await;
    assert!(
        matches!(failed, Ok(Err(_))),
        "an untrusted certificate is refused"
    );
}

#[tokio::test]
async fn verify_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let args = [
        "--tlscert",
        pki.server_cert.to_str().unwrap(),
        "--tlskey",
        pki.server_key.to_str().unwrap(),
        "--tlscacert",
        pki.ca.to_str().unwrap(),
        "--tlsverify",
    ];
    let server = TernServer::launch(Launch::default().args(&args));
    assert_eq!(
        RawClient::connect(server.addr).info_json()["tls_verify"],
        true
    );
    let with_cert = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone());
    let client = tokio::time::timeout(Duration::from_secs(10), with_cert.connect(tls_url(&server)))
        .await
        .unwrap()
        .expect("connect with a client certificate");
    tern_tests::round_trip(&client).await;
    let without = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(pki.ca.clone())
        .max_reconnects(1);
    let failed =
        tokio::time::timeout(Duration::from_secs(10), without.connect(tls_url(&server))).await;
    assert!(
        matches!(failed, Ok(Err(_))),
        "no client certificate, no connection"
    );
}

#[test]
fn bad_tls_files_stop_the_server_before_it_listens() {
    let err =
        TernServer::try_launch(Launch::default().config(
            "tls { cert_file: \"/nonexistent.pem\", key_file: \"/nonexistent-key.pem\" }\n",
        ))
        .err()
        .expect("refused");
    assert!(err.contains("/nonexistent.pem"), "{err}");
}
