//! The `.creds` file format (`nsc generate creds`), read and written.

use serde_json::json;
use tern_auth::nkeys::KeyPair;
use tern_auth::testing::{account_claims, encode_jwt, operator_claims, sign_nonce, user_claims};
use tern_auth::{
    format_creds, parse_creds, AuthConfig, Authenticator, Credentials, CredsError, OperatorConfig,
};

/// As `nsc` writes it (JWT and seed shortened; the parser does not decode them).
const NSC_CREDS: &str = "-----BEGIN NATS USER JWT-----
eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJ4In0.c2ln
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM
------END USER NKEY SEED------

*************************************************************
";

#[test]
fn parses_the_nsc_format() {
    let (jwt, seed) = parse_creds(NSC_CREDS).unwrap();
    assert_eq!(
        jwt,
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.eyJqdGkiOiJ4In0.c2ln"
    );
    assert_eq!(
        seed,
        "SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM"
    );
}

#[test]
fn parses_crlf_and_indented_files() {
    let text = NSC_CREDS
        .replace('\n', "\r\n")
        .replace("-----BEGIN", "   -----BEGIN");
    let (jwt, seed) = parse_creds(&text).unwrap();
    assert!(jwt.starts_with("eyJ0eXAi") && seed.starts_with("SUAI"));
}

#[test]
fn missing_blocks_are_errors() {
    assert_eq!(parse_creds(""), Err(CredsError::MissingJwt));
    let jwt_only = "-----BEGIN NATS USER JWT-----\na.b.c\n------END NATS USER JWT------\n";
    assert_eq!(parse_creds(jwt_only), Err(CredsError::MissingSeed));
}

#[test]
fn written_creds_round_trip_and_authenticate() {
    let operator = KeyPair::new_operator();
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let jwt = encode_jwt(&account, &user_claims(&user.public_key(), json!({})));
    let text = format_creds(&jwt, &user.seed().unwrap());

    let (read_jwt, read_seed) = parse_creds(&text).unwrap();
    assert_eq!(read_jwt, jwt);
    let key = KeyPair::from_seed(&read_seed).unwrap();
    assert_eq!(key.public_key(), user.public_key());

    let auth = Authenticator::new(AuthConfig::Decentralized(OperatorConfig {
        operators: vec![encode_jwt(&operator, &operator_claims(&operator, &[]))],
        resolver: [(
            account.public_key(),
            encode_jwt(&operator, &account_claims(&account.public_key(), json!([]))),
        )]
        .into_iter()
        .collect(),
    }))
    .unwrap();
    let creds = Credentials {
        jwt: Some(read_jwt),
        sig: Some(sign_nonce(&key, b"nonce")),
        ..Default::default()
    };
    assert!(auth.authenticate(&creds, b"nonce", &[], 0).is_ok());
}

#[test]
fn async_nats_reads_the_files_we_write() {
    let account = KeyPair::new_account();
    let user = KeyPair::new_user();
    let jwt = encode_jwt(&account, &user_claims(&user.public_key(), json!({})));
    let text = format_creds(&jwt, &user.seed().unwrap());
    assert!(async_nats::ConnectOptions::with_credentials(&text).is_ok());
    assert!(async_nats::ConnectOptions::with_credentials("not a creds file").is_err());
}
