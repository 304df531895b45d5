//! TLS for clients, with certificates made at run time (rcgen): async-nats
//! connects with `tls://`, plain clients learn from INFO that TLS is
//! required, and with `verify` a client certificate signed by the
//! configured CA is required.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use tern_tests::pki::make_pki;
use tern_tests::{Launch, RawClient, TernServer};

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

#[tokio::test]
async fn certificates_are_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let old = tern_tests::pki::make_pki_named(dir.path(), "old-");
    let new = tern_tests::pki::make_pki_named(dir.path(), "new-");
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server-key.pem");
    std::fs::copy(&old.server_cert, &cert).unwrap();
    std::fs::copy(&old.server_key, &key).unwrap();
    let config = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
        cert.display(),
        key.display()
    );
    let server = TernServer::launch(Launch::default().config(&config));
    let trusting = |ca: std::path::PathBuf| {
        let url = tls_url(&server);
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                async_nats::ConnectOptions::new()
                    .require_tls(true)
                    .add_root_certificates(ca)
                    .max_reconnects(Some(1))
                    .connect(url),
            )
            .await
        }
    };
    let before = trusting(old.ca.clone())
        .await
        .unwrap()
        .expect("old CA before reload");
    std::fs::copy(&new.server_cert, &cert).unwrap();
    std::fs::copy(&new.server_key, &key).unwrap();
    server.signal("HUP");
    assert!(tern_tests::eventually(Duration::from_secs(5), || server
        .log()
        .contains("Reloaded TLS certificates")));
    trusting(new.ca.clone())
        .await
        .unwrap()
        .expect("new CA after reload");
    assert!(
        !matches!(trusting(old.ca.clone()).await, Ok(Ok(_))),
        "the old certificate is no longer served"
    );
    // The connection made before the reload carries on.
    tern_tests::round_trip(&before).await;

    // A broken file is refused and the working certificates stay.
    std::fs::write(&cert, "not a certificate").unwrap();
    server.signal("HUP");
    assert!(tern_tests::eventually(Duration::from_secs(5), || server
        .log()
        .contains("Reloading TLS certificates failed")));
    trusting(new.ca.clone())
        .await
        .unwrap()
        .expect("still serving the last good certificate");
}

/// `GET path` over TLS, trusting `ca`: the status line and the body.
async fn https_get(
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
    path: &str,
) -> (String, String) {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the monitoring port");
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

#[tokio::test]
async fn monitoring_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let config = format!(
        "https_port: -1\ntls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let server = TernServer::launch(Launch::default().config(&config));
    let port: u16 = server
        .log()
        .lines()
        .find_map(|l| {
            l.split("Starting https monitor on ")
                .nth(1)
                .map(str::to_owned)
        })
        .and_then(|a| a.trim().rsplit(':').next().and_then(|p| p.parse().ok()))
        .expect("https monitor port in the log");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (status, body) = https_get(addr, &pki.ca, "/varz").await;
    assert!(status.contains("200"), "{status}");
    let varz: serde_json::Value = serde_json::from_str(&body).expect("varz JSON");
    assert_eq!(varz["https_port"], port);
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = tokio::task::spawn_blocking(move || tern_tests::http_get(addr, "/varz"));
    let plain = tokio::time::timeout(Duration::from_secs(10), plain).await;
    assert!(
        !matches!(&plain, Ok(Ok(r)) if r.status == 200),
        "plain HTTP must not be served on the HTTPS port"
    );
}

#[test]
fn https_port_needs_tls() {
    let err = TernServer::try_launch(Launch::default().config("https_port: -1\n"))
        .err()
        .expect("refused without tls");
    assert!(err.contains("https_port needs the tls settings"), "{err}");
}

/// A CA, a server certificate for localhost and client certificates for
/// `alice` (SAN e-mail) and `bob` (subject DN only) and `mallory` (a DNS
/// name nobody maps), as PEM files: (ca, server cert, server key, clients).
fn mapped_pki(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf, Vec<(PathBuf, PathBuf)>) {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
        SanType,
    };
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let mut clients = Vec::new();
    for (name, san, cn) in [
        (
            "alice",
            Some(SanType::Rfc822Name("alice@example.com".try_into().unwrap())),
            "alice",
        ),
        ("bob", None, "bob"),
        (
            "mallory",
            Some(SanType::DnsName("mallory.example".try_into().unwrap())),
            "mallory",
        ),
    ] {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = san.into_iter().collect();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Acme");
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        clients.push((
            write(&format!("{name}.pem"), cert.pem()),
            write(&format!("{name}-key.pem"), key.serialize_pem()),
        ));
    }
    (
        write("ca.pem", ca.pem()),
        write("server.pem", server.pem()),
        write("server-key.pem", server_key.serialize_pem()),
        clients,
    )
}

#[tokio::test]
async fn verify_and_map_picks_the_user_from_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key, clients) = mapped_pki(dir.path());
    let config = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify_and_map: true\n}}\n\
         authorization {{\n  users = [\n    {{ user: \"alice@example.com\", permissions: {{ publish: \"alice.>\", subscribe: \">\" }} }}\n    {{ user: \"CN=bob, O=Acme\" }}\n  ]\n}}\n",
        cert.display(),
        key.display(),
        ca.display()
    );
    let server = TernServer::launch(Launch::default().config(&config));
    let as_client = |i: usize| {
        let (cert, key) = clients[i].clone();
        let url = tls_url(&server);
        let ca = ca.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                async_nats::ConnectOptions::new()
                    .require_tls(true)
                    .add_root_certificates(ca)
                    .add_client_certificate(cert, key)
                    .max_reconnects(Some(1))
                    .connect(url),
            )
            .await
            .unwrap()
        }
    };
    // alice by her SAN e-mail, with her permissions.
    let alice = as_client(0).await.expect("alice is mapped by e-mail");
    // (Her permissions allow no inbox requests: subscribe, then publish on
    // the same connection, which the server handles in order.)
    let mut own = alice.subscribe("alice.ok").await.unwrap();
    alice.publish("alice.ok", "yes".into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), own.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, bytes::Bytes::from("yes"));
    // bob by his subject DN (attribute order and spacing do not matter).
    let bob = as_client(1).await.expect("bob is mapped by DN");
    let mut bobs = bob.subscribe("bob.x").await.unwrap();
    tern_tests::round_trip(&bob).await;
    // alice's permissions are hers: her publish to bob.x is refused.
    alice.publish("bob.x", "denied".into()).await.unwrap();
    alice.publish("alice.ok", "after".into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), own.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, bytes::Bytes::from("after"));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), bobs.next())
            .await
            .is_err(),
        "a publish outside alice's permissions must not be delivered"
    );
    // A verified certificate that names no user is refused.
    assert!(as_client(2).await.is_err(), "mallory maps to no user");
}

#[test]
fn verify_and_map_needs_users() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let config = format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify_and_map: true }}\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    );
    let err = TernServer::try_launch(Launch::default().config(&config))
        .err()
        .expect("refused without users");
    assert!(err.contains("verify_and_map needs users"), "{err}");
}
