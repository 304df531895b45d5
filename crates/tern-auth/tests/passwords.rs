//! No auth, tokens, users with plain and bcrypt passwords, TLS identity mapping.

use tern_auth::{
    tls_identity_matches, AuthConfig, AuthError, Authenticator, ConfigError, Credentials, Password,
    Permissions, SubjectPermission, User, UsersConfig, DEFAULT_ACCOUNT,
};

const NONCE: &[u8] = b"nonce";

fn token(value: &str) -> Credentials {
    Credentials {
        auth_token: Some(value.into()),
        ..Default::default()
    }
}

fn login(user: &str, pass: &str) -> Credentials {
    Credentials {
        user: Some(user.into()),
        pass: Some(pass.into()),
        ..Default::default()
    }
}

fn user(name: &str, password: Password, account: &str) -> User {
    User {
        name: name.into(),
        password,
        permissions: None,
        account: account.into(),
    }
}

fn users(list: Vec<User>, tls_map: bool) -> Authenticator {
    Authenticator::new(AuthConfig::Users(UsersConfig {
        users: list,
        nkeys: vec![],
        tls_map,
    }))
    .unwrap()
}

#[test]
fn no_auth_admits_everyone_to_the_default_account() {
    let auth = Authenticator::new(AuthConfig::None).unwrap();
    assert!(!auth.auth_required());
    let client = auth.authenticate(&login("x", "y"), NONCE, &[], 0).unwrap();
    assert_eq!(client.account, DEFAULT_ACCOUNT);
    assert_eq!(client.permissions, None);
}

#[test]
fn plain_token() {
    let auth = Authenticator::new(AuthConfig::Token(Password::from_config("s3cr3t"))).unwrap();
    assert!(auth.auth_required());
    assert!(!auth.needs_nonce());
    assert!(auth.authenticate(&token("s3cr3t"), NONCE, &[], 0).is_ok());
    assert_eq!(
        auth.authenticate(&token("s3cr3"), NONCE, &[], 0),
        Err(AuthError::BadToken)
    );
    assert_eq!(
        auth.authenticate(&token("s3cr3t "), NONCE, &[], 0),
        Err(AuthError::BadToken)
    );
    assert_eq!(
        auth.authenticate(&Credentials::default(), NONCE, &[], 0),
        Err(AuthError::MissingCredential("auth_token"))
    );
    // A user/password is not a token.
    assert!(auth
        .authenticate(&login("s3cr3t", "s3cr3t"), NONCE, &[], 0)
        .is_err());
}

#[test]
fn bcrypt_token() {
    let hash = bcrypt::hash("s3cr3t", 4).unwrap();
    let password = Password::from_config(hash);
    assert!(matches!(password, Password::Bcrypt(_)));
    let auth = Authenticator::new(AuthConfig::Token(password)).unwrap();
    assert!(auth.authenticate(&token("s3cr3t"), NONCE, &[], 0).is_ok());
    assert_eq!(
        auth.authenticate(&token("wrong"), NONCE, &[], 0),
        Err(AuthError::BadToken)
    );
}

#[test]
fn users_with_plain_and_bcrypt_passwords() {
    let perms = Permissions {
        publish: SubjectPermission {
            allow: vec!["a.>".into()],
            deny: vec![],
        },
        ..Default::default()
    };
    let mut bob = user(
        "bob",
        Password::from_config(bcrypt::hash("hunter2", 4).unwrap()),
        "B",
    );
    bob.permissions = Some(perms.clone());
    let auth = users(
        vec![user("alice", Password::Plain("pw".into()), "A"), bob],
        false,
    );

    let alice = auth
        .authenticate(&login("alice", "pw"), NONCE, &[], 0)
        .unwrap();
    assert_eq!(
        (alice.user.as_str(), alice.account.as_str()),
        ("alice", "A")
    );
    let bob = auth
        .authenticate(&login("bob", "hunter2"), NONCE, &[], 0)
        .unwrap();
    assert_eq!((bob.user.as_str(), bob.account.as_str()), ("bob", "B"));
    assert_eq!(bob.permissions, Some(perms));

    assert_eq!(
        auth.authenticate(&login("alice", "hunter2"), NONCE, &[], 0),
        Err(AuthError::BadPassword("alice".into()))
    );
    assert_eq!(
        auth.authenticate(&login("bob", "pw"), NONCE, &[], 0),
        Err(AuthError::BadPassword("bob".into()))
    );
    assert_eq!(
        auth.authenticate(&login("carol", "pw"), NONCE, &[], 0),
        Err(AuthError::UnknownUser("carol".into()))
    );
    let no_pass = Credentials {
        user: Some("alice".into()),
        ..Default::default()
    };
    assert!(auth.authenticate(&no_pass, NONCE, &[], 0).is_err());
}

#[test]
fn bcrypt_prefixes_are_recognised() {
    for prefix in ["$2a$", "$2b$", "$2x$", "$2y$"] {
        let hash = bcrypt::hash("pw", 4).unwrap().replacen("$2b$", prefix, 1);
        let password = Password::from_config(hash);
        assert!(matches!(password, Password::Bcrypt(_)), "{prefix}");
        assert!(password.verify("pw"), "{prefix}");
        assert!(!password.verify("pW"), "{prefix}");
    }
    assert!(matches!(
        Password::from_config("$2c$10$x"),
        Password::Plain(_)
    ));
    assert!(matches!(Password::from_config("plain"), Password::Plain(_)));
}

#[test]
fn malformed_bcrypt_is_a_config_error() {
    let config = AuthConfig::Users(UsersConfig {
        users: vec![user("a", Password::Bcrypt("$2a$10$short".into()), "A")],
        ..Default::default()
    });
    assert_eq!(
        Authenticator::new(config).unwrap_err(),
        ConfigError::InvalidBcrypt("a".into())
    );
}

#[test]
fn duplicate_users_are_a_config_error() {
    let config = AuthConfig::Users(UsersConfig {
        users: vec![
            user("a", Password::Plain("1".into()), "A"),
            user("a", Password::Plain("2".into()), "A"),
        ],
        ..Default::default()
    });
    assert_eq!(
        Authenticator::new(config).unwrap_err(),
        ConfigError::DuplicateUser("a".into())
    );
}

#[test]
fn secrets_stay_out_of_debug_and_errors() {
    let creds = login("alice", "topsecret");
    let creds = Credentials {
        auth_token: Some("tokensecret".into()),
        ..creds
    };
    let shown = format!("{creds:?}");
    assert!(
        !shown.contains("topsecret") && !shown.contains("tokensecret"),
        "{shown}"
    );
    assert!(!format!("{:?}", Password::Plain("topsecret".into())).contains("topsecret"));

    let auth = users(
        vec![user("alice", Password::Plain("pw".into()), "A")],
        false,
    );
    let err = auth.authenticate(&creds, NONCE, &[], 0).unwrap_err();
    assert!(!err.to_string().contains("topsecret"), "{err}");
}

#[test]
fn tls_map_picks_the_user_from_certificate_identities() {
    let auth = users(
        vec![
            user("alice@example.com", Password::Plain(String::new()), "A"),
            user("CN=bob,OU=eng,O=Acme", Password::Plain(String::new()), "B"),
        ],
        true,
    );
    let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let alice = auth
        .authenticate(
            &Credentials::default(),
            NONCE,
            &ids(&["alice@example.com"]),
            0,
        )
        .unwrap();
    assert_eq!(
        (alice.user.as_str(), alice.account.as_str()),
        ("alice@example.com", "A")
    );

    // DN in another RDN order and spacing; first mapping identity wins.
    let bob = auth
        .authenticate(
            &Credentials::default(),
            NONCE,
            &ids(&["bob.example.com", "O=Acme, CN=bob, OU=eng"]),
            0,
        )
        .unwrap();
    assert_eq!(bob.user, "CN=bob,OU=eng,O=Acme");

    assert_eq!(
        auth.authenticate(&Credentials::default(), NONCE, &ids(&["CN=mallory"]), 0),
        Err(AuthError::NoTlsUser)
    );
    // No certificate: a password does not help.
    assert_eq!(
        auth.authenticate(&login("alice@example.com", ""), NONCE, &[], 0),
        Err(AuthError::NoTlsUser)
    );
}

#[test]
fn tls_identity_matching() {
    assert!(tls_identity_matches("a@b.c", "a@b.c"));
    assert!(!tls_identity_matches("a@b.c", "A@b.c"));
    assert!(tls_identity_matches("CN=x,O=y", "o=y, cn=x"));
    assert!(!tls_identity_matches("CN=x,O=y", "CN=x,O=z"));
    assert!(!tls_identity_matches("CN=x,O=y", "CN=x"));
    assert!(tls_identity_matches(r"CN=a\,b,O=y", r"O=y,CN=a\,b"));
    assert!(!tls_identity_matches(r"CN=a\,b,O=y", "CN=a,CN=b,O=y"));
}
