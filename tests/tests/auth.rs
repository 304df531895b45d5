//! Users, bcrypt passwords, nkeys and permissions from the configuration
//! file, through `async-nats` and raw sockets.

use std::time::Duration;

use tern_tests::{connect_with, Launch, RawClient, TernServer};

fn connect_fails(url: &str, options: async_nats::ConnectOptions) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        matches!(
            tokio::time::timeout(Duration::from_secs(10), options.connect(url)).await,
            Ok(Err(_))
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn users_with_plain_and_bcrypt_passwords() {
    let hash = bcrypt::hash("hashed-secret", 4).unwrap();
    let config = format!(
        "authorization {{\n  users = [\n    {{ user: alice, password: plain-secret }}\n    {{ user: bob, password: \"{hash}\" }}\n  ]\n}}\n"
    );
    let server = TernServer::launch(Launch::default().config(&config));
    let url = server.url();
    let alice = connect_with(
        &url,
        async_nats::ConnectOptions::with_user_and_password("alice".into(), "plain-secret".into()),
    )
    .await;
    alice.publish("hello", "x".into()).await.unwrap();
    alice.flush().await.unwrap();
    connect_with(
        &url,
        async_nats::ConnectOptions::with_user_and_password("bob".into(), "hashed-secret".into()),
    )
    .await;
    let wrong = async_nats::ConnectOptions::with_user_and_password("bob".into(), "nope".into())
        .max_reconnects(1);
    let url2 = url.clone();
    assert!(
        tokio::task::spawn_blocking(move || connect_fails(&url2, wrong))
            .await
            .unwrap()
    );
    assert!(
        !server.log().contains("plain-secret"),
        "passwords never reach the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn nkey_users_sign_the_nonce() {
    let user = tern_auth::nkeys::KeyPair::new_user();
    let config = format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
        user.public_key()
    );
    let server = TernServer::launch(Launch::default().config(&config));
    let raw = RawClient::connect(server.addr);
    let nonce = raw.info_json()["nonce"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!nonce.is_empty(), "INFO carries a nonce for nkey users");
    let seed = user.seed().unwrap();
    let client = connect_with(&server.url(), async_nats::ConnectOptions::with_nkey(seed)).await;
    client.publish("signed", "x".into()).await.unwrap();
    client.flush().await.unwrap();
    let stranger = tern_auth::nkeys::KeyPair::new_user().seed().unwrap();
    let url = server.url();
    let options = async_nats::ConnectOptions::with_nkey(stranger).max_reconnects(1);
    assert!(
        tokio::task::spawn_blocking(move || connect_fails(&url, options))
            .await
            .unwrap()
    );
}

#[test]
fn permissions_are_enforced_and_keep_the_connection() {
    let config = "authorization {\n  users = [\n    { user: app, password: pw, permissions: {\n        publish: { allow: [\"orders.>\"], deny: [\"orders.secret\"] }\n        subscribe: \"updates.*\"\n    } }\n    { user: admin, password: pw2 }\n  ]\n}\n";
    let server = TernServer::launch(Launch::default().config(config));
    let mut c = RawClient::connect_with(
        server.addr,
        r#"{"verbose":false,"pedantic":false,"user":"app","pass":"pw"}"#,
    );
    c.send(b"SUB updates.a 1\r\nSUB other 2\r\nSUB updates.> 3\r\n");
    assert_eq!(
        String::from_utf8_lossy(&c.ping_pong()),
        "-ERR 'Permissions Violation for Subscription to \"other\"'\r\n\
         -ERR 'Permissions Violation for Subscription to \"updates.>\"'\r\nPONG\r\n"
    );
    c.send(b"PUB orders.new 1\r\nx\r\nPUB orders.secret 1\r\nx\r\nPUB payments 1\r\nx\r\n");
    assert_eq!(
        String::from_utf8_lossy(&c.ping_pong()),
        "-ERR 'Permissions Violation for Publish to \"orders.secret\"'\r\n\
         -ERR 'Permissions Violation for Publish to \"payments\"'\r\nPONG\r\n"
    );
    // Allowed traffic flows (admin has no restrictions).
    let mut other = RawClient::connect_with(
        server.addr,
        r#"{"verbose":false,"pedantic":false,"user":"admin","pass":"pw2"}"#,
    );
    other.send(b"PUB updates.a 2\r\nhi\r\n");
    other.ping_pong();
    assert_eq!(
        String::from_utf8_lossy(&c.ping_pong()),
        "MSG updates.a 1 2\r\nhi\r\nPONG\r\n"
    );
}

#[test]
fn bad_users_config_is_refused() {
    let err = TernServer::try_launch(
        Launch::default().config("authorization { users = [ { password: x } ] }\n"),
    )
    .err()
    .expect("refused");
    assert!(err.contains("authorization.users[0]"), "{err}");
    let err = TernServer::try_launch(
        Launch::default().config("authorization { users = [ { nkey: SUABC } ] }\n"),
    )
    .err()
    .expect("refused");
    assert!(err.contains("nkey"), "{err}");
}

#[test]
fn allow_responses_and_filtered_wildcard_deliveries() {
    let config = "authorization {\n  users = [\n    { user: svc, password: pw, permissions: {\n        subscribe: { allow: [\"svc.>\", \"secret.*\"], deny: [\"secret.x\"] }\n        allow_responses: true\n    } }\n    { user: admin, password: pw2 }\n  ]\n}\n";
    let server = TernServer::launch(Launch::default().config(config));
    let mut svc = RawClient::connect_with(
        server.addr,
        r#"{"verbose":false,"pedantic":false,"user":"svc","pass":"pw"}"#,
    );
    svc.send(b"SUB svc.echo 1\r\nSUB secret.* 2\r\n");
    assert_eq!(String::from_utf8_lossy(&svc.ping_pong()), "PONG\r\n");
    let mut admin = RawClient::connect_with(
        server.addr,
        r#"{"verbose":false,"pedantic":false,"user":"admin","pass":"pw2"}"#,
    );
    admin.send(b"SUB _INBOX.a 9\r\nPUB svc.echo _INBOX.a 2\r\nhi\r\nPUB secret.x 1\r\nx\r\nPUB secret.y 1\r\ny\r\n");
    admin.ping_pong();
    // The denied subject is filtered out of the wildcard subscription.
    assert_eq!(
        String::from_utf8_lossy(&svc.ping_pong()),
        "MSG svc.echo 1 _INBOX.a 2\r\nhi\r\nMSG secret.y 2 1\r\ny\r\nPONG\r\n"
    );
    // One reply to the request is allowed; a second one, or anything else, is not.
    svc.send(b"PUB _INBOX.a 2\r\nok\r\nPUB _INBOX.a 5\r\nagain\r\nPUB elsewhere 1\r\nx\r\n");
    assert_eq!(
        String::from_utf8_lossy(&svc.ping_pong()),
        "-ERR 'Permissions Violation for Publish to \"_INBOX.a\"'\r\n\
         -ERR 'Permissions Violation for Publish to \"elsewhere\"'\r\nPONG\r\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&admin.ping_pong()),
        "MSG _INBOX.a 9 2\r\nok\r\nPONG\r\n"
    );
}

#[test]
fn accounts_keep_their_subjects_apart() {
    let config = "accounts {\n  A { users = [ { user: a1, password: p }, { user: a2, password: p } ] }\n  B { users = [ { user: b1, password: p } ] }\n}\n";
    let server = TernServer::launch(Launch::default().config(config));
    let login = |user: &str| {
        RawClient::connect_with(
            server.addr,
            &format!(r#"{{"verbose":false,"pedantic":false,"user":"{user}","pass":"p"}}"#),
        )
    };
    let mut a1 = login("a1");
    let mut b1 = login("b1");
    a1.send(b"SUB orders 1\r\n");
    b1.send(b"SUB orders 1\r\n");
    a1.ping_pong();
    b1.ping_pong();
    let mut a2 = login("a2");
    a2.send(b"PUB orders 4\r\nfrom\r\n");
    a2.ping_pong();
    assert_eq!(
        String::from_utf8_lossy(&a1.ping_pong()),
        "MSG orders 1 4\r\nfrom\r\nPONG\r\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&b1.ping_pong()),
        "PONG\r\n",
        "account B sees nothing of A"
    );
    b1.send(b"PUB orders 1\r\nb\r\n");
    assert_eq!(
        String::from_utf8_lossy(&b1.ping_pong()),
        "MSG orders 1 1\r\nb\r\nPONG\r\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&a1.ping_pong()),
        "PONG\r\n",
        "account A sees nothing of B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn jwt_operator_mode_with_creds_files() {
    use tern_auth::nkeys::KeyPair;
    use tern_auth::testing::{account_claims, encode_jwt, operator_claims, user_claims};
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let other_account = KeyPair::new_account();
    let operator_jwt = encode_jwt(&operator, &operator_claims(&operator, &[]));
    let account_jwt = encode_jwt(
        &operator,
        &account_claims(&account.public_key(), serde_json::json!([])),
    );
    let other_jwt = encode_jwt(
        &operator,
        &account_claims(&other_account.public_key(), serde_json::json!([])),
    );
    let config = format!(
        "operator: {operator_jwt}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {account_jwt}\n  {}: {other_jwt}\n}}\n",
        account.public_key(),
        other_account.public_key()
    );
    let server = TernServer::launch(Launch::default().config(&config));
    let dir = tempfile::tempdir().unwrap();
    let creds_for = |acct: &KeyPair, name: &str, permissions: serde_json::Value| {
        let user = KeyPair::new_user();
        let jwt = encode_jwt(acct, &user_claims(&user.public_key(), permissions));
        let path = dir.path().join(format!("{name}.creds"));
        std::fs::write(&path, tern_auth::format_creds(&jwt, &user.seed().unwrap())).unwrap();
        path
    };
    let alice = creds_for(&account, "alice", serde_json::json!({}));
    let bob = creds_for(
        &account,
        "bob",
        serde_json::json!({ "pub": { "deny": ["secret"] } }),
    );
    let eve = creds_for(&other_account, "eve", serde_json::json!({}));

    let url = server.url();
    let connect = |path: std::path::PathBuf| {
        let url = url.clone();
        async move {
            async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .unwrap()
                .connect(url)
                .await
        }
    };
    let a = connect(alice)
        .await
        .expect("alice connects with her .creds");
    let b = connect(bob).await.expect("bob connects");
    let e = connect(eve)
        .await
        .expect("eve connects, in another account");
    let mut sub = a.subscribe("news").await.unwrap();
    tern_tests::round_trip(&a).await;
    b.publish("news", "same account".into()).await.unwrap();
    e.publish("news", "other account".into()).await.unwrap();
    tern_tests::round_trip(&b).await;
    tern_tests::round_trip(&e).await;
    let msg = tokio::time::timeout(Duration::from_secs(10), futures::StreamExt::next(&mut sub))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload, bytes::Bytes::from("same account"));
    assert!(tokio::time::timeout(
        Duration::from_millis(300),
        futures::StreamExt::next(&mut sub)
    )
    .await
    .is_err());

    // A user signed by an account the operator does not know is refused.
    let stranger = KeyPair::new_account();
    let bad = creds_for(&stranger, "mallory", serde_json::json!({}));
    let url = server.url();
    let options = async_nats::ConnectOptions::with_credentials_file(bad)
        .await
        .unwrap()
        .max_reconnects(1);
    assert!(
        tokio::task::spawn_blocking(move || connect_fails(&url, options))
            .await
            .unwrap()
    );
}

#[test]
fn connections_close_when_their_jwt_expires() {
    use tern_auth::nkeys::KeyPair;
    use tern_auth::testing::{
        account_claims, encode_jwt, operator_claims, sign_nonce, user_claims,
    };
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let operator_jwt = encode_jwt(&operator, &operator_claims(&operator, &[]));
    let account_jwt = encode_jwt(
        &operator,
        &account_claims(&account.public_key(), serde_json::json!([])),
    );
    let config = format!(
        "operator: {operator_jwt}\nresolver: MEMORY\nresolver_preload: {{ {}: {account_jwt} }}\n",
        account.public_key()
    );
    let server = TernServer::launch(Launch::default().config(&config));
    let user = KeyPair::new_user();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = user_claims(&user.public_key(), serde_json::json!({}));
    claims["exp"] = serde_json::json!(now + 2);
    let jwt = encode_jwt(&account, &claims);
    let mut c = RawClient::connect(server.addr);
    let nonce = c.info_json()["nonce"].as_str().unwrap().to_owned();
    let sig = sign_nonce(&user, nonce.as_bytes());
    c.send(format!("CONNECT {{\"verbose\":false,\"pedantic\":false,\"jwt\":\"{jwt}\",\"sig\":\"{sig}\"}}\r\n").as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&c.ping_pong()),
        "PONG\r\n",
        "valid until it expires"
    );
    assert!(
        c.is_closed_within(Duration::from_secs(10)),
        "closed at expiry"
    );
    let rest = String::from_utf8_lossy(&c.read_for(Duration::from_millis(100))).into_owned();
    assert!(
        rest.ends_with("-ERR 'User Authentication Expired'\r\n"),
        "{rest:?}"
    );
}
