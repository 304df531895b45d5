//! Nkey users: an Ed25519 signature over the `INFO` nonce.

use base64::Engine as _;
use tern_auth::nkeys::KeyPair;
use tern_auth::testing::sign_nonce;
use tern_auth::{
    AuthConfig, AuthError, Authenticator, ConfigError, Credentials, NkeyUser, Password, User,
    UsersConfig,
};

const NONCE: &[u8] = b"PXoWU7zWAMt75FY";

fn nkey_user(key: &KeyPair) -> NkeyUser {
    NkeyUser {
        public_key: key.public_key(),
        permissions: None,
        account: "ACME".into(),
    }
}

fn creds(key: &KeyPair, sig: String) -> Credentials {
    Credentials {
        nkey: Some(key.public_key()),
        sig: Some(sig),
        ..Default::default()
    }
}

fn authenticator(keys: &[&KeyPair]) -> Authenticator {
    Authenticator::new(AuthConfig::Users(UsersConfig {
        users: vec![User {
            name: "alice".into(),
            password: Password::Plain("pw".into()),
            permissions: None,
            account: "OTHER".into(),
        }],
        nkeys: keys.iter().map(|k| nkey_user(k)).collect(),
        tls_map: false,
    }))
    .unwrap()
}

#[test]
fn signed_nonce_is_accepted() {
    let key = KeyPair::new_user();
    let auth = authenticator(&[&key]);
    assert!(auth.needs_nonce());
    let client = auth
        .authenticate(&creds(&key, sign_nonce(&key, NONCE)), NONCE, &[], 0)
        .unwrap();
    assert_eq!(client.user, key.public_key());
    assert_eq!(client.account, "ACME");
}

#[test]
fn signature_encodings_clients_send() {
    let key = KeyPair::new_user();
    let auth = authenticator(&[&key]);
    let raw = key.sign(NONCE).unwrap();
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    for sig in [
        URL_SAFE_NO_PAD.encode(&raw),
        URL_SAFE.encode(&raw),
        STANDARD.encode(&raw),
        STANDARD_NO_PAD.encode(&raw),
    ] {
        assert!(
            auth.authenticate(&creds(&key, sig.clone()), NONCE, &[], 0)
                .is_ok(),
            "{sig}"
        );
    }
}

#[test]
fn wrong_signatures_are_rejected() {
    let key = KeyPair::new_user();
    let other = KeyPair::new_user();
    let auth = authenticator(&[&key]);
    let bad = AuthError::BadNonceSignature(key.public_key());

    // Signed by another key.
    assert_eq!(
        auth.authenticate(&creds(&key, sign_nonce(&other, NONCE)), NONCE, &[], 0),
        Err(bad.clone())
    );
    // Signed over another nonce (replay from an earlier connection).
    assert_eq!(
        auth.authenticate(&creds(&key, sign_nonce(&key, b"old-nonce")), NONCE, &[], 0),
        Err(bad)
    );
    // Not base64 / wrong length.
    assert_eq!(
        auth.authenticate(&creds(&key, "!!!".into()), NONCE, &[], 0),
        Err(AuthError::MalformedSignature)
    );
    assert!(auth
        .authenticate(&creds(&key, "AAAA".into()), NONCE, &[], 0)
        .is_err());
    // No signature at all.
    let no_sig = Credentials {
        nkey: Some(key.public_key()),
        ..Default::default()
    };
    assert_eq!(
        auth.authenticate(&no_sig, NONCE, &[], 0),
        Err(AuthError::MissingCredential("sig"))
    );
}

#[test]
fn unknown_nkey_is_rejected_even_with_a_valid_signature() {
    let key = KeyPair::new_user();
    let stranger = KeyPair::new_user();
    let auth = authenticator(&[&key]);
    assert_eq!(
        auth.authenticate(
            &creds(&stranger, sign_nonce(&stranger, NONCE)),
            NONCE,
            &[],
            0
        ),
        Err(AuthError::UnknownNkey(stranger.public_key()))
    );
}

#[test]
fn password_users_still_work_beside_nkey_users() {
    let key = KeyPair::new_user();
    let auth = authenticator(&[&key]);
    let login = Credentials {
        user: Some("alice".into()),
        pass: Some("pw".into()),
        ..Default::default()
    };
    assert_eq!(
        auth.authenticate(&login, NONCE, &[], 0).unwrap().account,
        "OTHER"
    );
}

#[test]
fn non_user_keys_are_a_config_error() {
    let account = KeyPair::new_account();
    let config = AuthConfig::Users(UsersConfig {
        nkeys: vec![nkey_user(&account)],
        ..Default::default()
    });
    assert_eq!(
        Authenticator::new(config).unwrap_err(),
        ConfigError::InvalidNkey(account.public_key())
    );
    let config = AuthConfig::Users(UsersConfig {
        nkeys: vec![NkeyUser {
            public_key: "UNOTAKEY".into(),
            permissions: None,
            account: "A".into(),
        }],
        ..Default::default()
    });
    assert!(Authenticator::new(config).is_err());
}
