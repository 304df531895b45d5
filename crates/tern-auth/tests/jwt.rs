//! Decentralized auth: operator → account → user JWTs, nonce signed with the
//! user's key, memory resolver.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use tern_auth::nkeys::KeyPair;
use tern_auth::testing::{account_claims, encode_jwt, operator_claims, sign_nonce, user_claims};
use tern_auth::{
    AuthConfig, AuthError, Authenticator, ConfigError, Credentials, JwtError, MemoryResolver,
    OperatorConfig, ResponsePermission,
};

const NONCE: &[u8] = b"nonce-from-info";
const NOW: u64 = 1_700_000_000;

/// Operator with a signing key; account with a signing key; one user.
struct World {
    operator: KeyPair,
    operator_signer: KeyPair,
    account: KeyPair,
    account_signer: KeyPair,
    user: KeyPair,
}

impl World {
    fn new() -> Self {
        Self {
            operator: KeyPair::new_operator(),
            operator_signer: KeyPair::new_operator(),
            account: KeyPair::new_account(),
            account_signer: KeyPair::new_account(),
            user: KeyPair::new_user(),
        }
    }

    fn operator_jwt(&self) -> String {
        encode_jwt(
            &self.operator,
            &operator_claims(&self.operator, &[self.operator_signer.public_key()]),
        )
    }

    fn account_claims(&self) -> Value {
        account_claims(
            &self.account.public_key(),
            json!([self.account_signer.public_key()]),
        )
    }

    /// The account JWT signed by the operator's signing key.
    fn account_jwt(&self) -> String {
        encode_jwt(&self.operator_signer, &self.account_claims())
    }

    fn authenticator_with(&self, account_jwt: String) -> Authenticator {
        let resolver: MemoryResolver = [(self.account.public_key(), account_jwt)]
            .into_iter()
            .collect();
        Authenticator::new(AuthConfig::Decentralized(OperatorConfig {
            operators: vec![self.operator_jwt()],
            resolver,
        }))
        .unwrap()
    }

    fn authenticator(&self) -> Authenticator {
        self.authenticator_with(self.account_jwt())
    }

    fn user_claims(&self, nats: Value) -> Value {
        user_claims(&self.user.public_key(), nats)
    }

    /// A user JWT issued directly by the account.
    fn user_jwt(&self, nats: Value) -> String {
        encode_jwt(&self.account, &self.user_claims(nats))
    }

    fn creds(&self, jwt: String) -> Credentials {
        Credentials {
            jwt: Some(jwt),
            sig: Some(sign_nonce(&self.user, NONCE)),
            ..Default::default()
        }
    }
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

#[test]
fn user_issued_by_the_account_is_accepted() {
    let w = World::new();
    let auth = w.authenticator();
    assert!(auth.auth_required() && auth.needs_nonce());
    let client = auth
        .authenticate(&w.creds(w.user_jwt(json!({}))), NONCE, &[], NOW)
        .unwrap();
    assert_eq!(client.user, w.user.public_key());
    assert_eq!(client.account, w.account.public_key());
    assert_eq!(client.permissions, None);
    assert_eq!(client.expires_at, None);
}

#[test]
fn account_signed_by_the_operator_identity_key_is_accepted() {
    let w = World::new();
    let auth = w.authenticator_with(encode_jwt(&w.operator, &w.account_claims()));
    assert!(auth
        .authenticate(&w.creds(w.user_jwt(json!({}))), NONCE, &[], NOW)
        .is_ok());
}

#[test]
fn user_issued_by_an_account_signing_key_is_accepted() {
    let w = World::new();
    let claims = w.user_claims(json!({ "issuer_account": w.account.public_key() }));
    let jwt = encode_jwt(&w.account_signer, &claims);
    let client = w
        .authenticator()
        .authenticate(&w.creds(jwt), NONCE, &[], NOW)
        .unwrap();
    assert_eq!(client.account, w.account.public_key());
}

#[test]
fn user_issued_by_an_unlisted_key_is_rejected() {
    let w = World::new();
    let rogue = KeyPair::new_account();
    let claims = w.user_claims(json!({ "issuer_account": w.account.public_key() }));
    let jwt = encode_jwt(&rogue, &claims);
    assert_eq!(
        w.authenticator()
            .authenticate(&w.creds(jwt), NONCE, &[], NOW),
        Err(AuthError::UntrustedUserIssuer {
            issuer: rogue.public_key(),
            account: w.account.public_key()
        })
    );
    // Without issuer_account the rogue key names itself as the account.
    let jwt = encode_jwt(&rogue, &w.user_claims(json!({})));
    assert_eq!(
        w.authenticator()
            .authenticate(&w.creds(jwt), NONCE, &[], NOW),
        Err(AuthError::UnknownAccount(rogue.public_key()))
    );
}

#[test]
fn account_signed_by_a_wrong_operator_is_rejected() {
    let w = World::new();
    let stranger = KeyPair::new_operator();
    let auth = w.authenticator_with(encode_jwt(&stranger, &w.account_claims()));
    assert_eq!(
        auth.authenticate(&w.creds(w.user_jwt(json!({}))), NONCE, &[], NOW),
        Err(AuthError::UntrustedAccount(w.account.public_key()))
    );
}

#[test]
fn account_missing_from_the_resolver_is_rejected() {
    let w = World::new();
    let other = World::new();
    let jwt = encode_jwt(&other.account, &w.user_claims(json!({})));
    assert_eq!(
        w.authenticator()
            .authenticate(&w.creds(jwt), NONCE, &[], NOW),
        Err(AuthError::UnknownAccount(other.account.public_key()))
    );
}

#[test]
fn expired_and_not_yet_valid_jwts_are_rejected() {
    let w = World::new();
    let auth = w.authenticator();
    let exp = NOW as i64 - 1;
    let jwt = encode_jwt(
        &w.account,
        &with(w.user_claims(json!({})), "exp", json!(exp)),
    );
    assert_eq!(
        auth.authenticate(&w.creds(jwt), NONCE, &[], NOW),
        Err(AuthError::Expired { kind: "user", exp })
    );

    let nbf = NOW as i64 + 60;
    let jwt = encode_jwt(
        &w.account,
        &with(w.user_claims(json!({})), "nbf", json!(nbf)),
    );
    assert_eq!(
        auth.authenticate(&w.creds(jwt), NONCE, &[], NOW),
        Err(AuthError::NotYetValid { kind: "user", nbf })
    );

    // Valid until exactly exp; reported so the server can disconnect then.
    let exp = NOW as i64 + 3600;
    let jwt = encode_jwt(
        &w.account,
        &with(w.user_claims(json!({})), "exp", json!(exp)),
    );
    let client = auth
        .authenticate(&w.creds(jwt.clone()), NONCE, &[], NOW)
        .unwrap();
    assert_eq!(client.expires_at, Some(exp));
    assert!(auth
        .authenticate(&w.creds(jwt.clone()), NONCE, &[], exp as u64)
        .is_ok());
    assert!(auth
        .authenticate(&w.creds(jwt), NONCE, &[], exp as u64 + 1)
        .is_err());
}

#[test]
fn expired_account_rejects_its_users() {
    let w = World::new();
    let exp = NOW as i64 - 10;
    let auth = w.authenticator_with(encode_jwt(
        &w.operator_signer,
        &with(w.account_claims(), "exp", json!(exp)),
    ));
    assert_eq!(
        auth.authenticate(&w.creds(w.user_jwt(json!({}))), NONCE, &[], NOW),
        Err(AuthError::Expired {
            kind: "account",
            exp
        })
    );
}

#[test]
fn tampered_payload_is_rejected() {
    let w = World::new();
    let jwt = w.user_jwt(json!({ "pub": { "allow": ["only.this"] } }));
    let mut parts: Vec<String> = jwt.split('.').map(str::to_owned).collect();
    let payload = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
    let tampered = String::from_utf8(payload)
        .unwrap()
        .replace("only.this", ">");
    parts[1] = URL_SAFE_NO_PAD.encode(tampered);
    assert_eq!(
        w.authenticator()
            .authenticate(&w.creds(parts.join(".")), NONCE, &[], NOW),
        Err(AuthError::Jwt {
            kind: "user",
            source: JwtError::BadSignature
        })
    );
}

#[test]
fn malformed_jwts_are_rejected() {
    let w = World::new();
    let auth = w.authenticator();
    let good = w.user_jwt(json!({}));
    let (_, rest) = good.split_once('.').unwrap();
    let hs256 = format!(
        "{}.{rest}",
        URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"HS256"}"#)
    );
    let none = format!(
        "{}.{rest}",
        URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"none"}"#)
    );
    for (jwt, what) in [
        ("".to_owned(), "empty"),
        ("a.b".to_owned(), "two parts"),
        (format!("{good}.x"), "four parts"),
        ("!!.!!.!!".to_owned(), "not base64"),
        (hs256, "hs256"),
        (none, "alg none"),
    ] {
        let result = auth.authenticate(&w.creds(jwt), NONCE, &[], NOW);
        assert!(
            matches!(result, Err(AuthError::Jwt { .. })),
            "{what}: {result:?}"
        );
    }
}

#[test]
fn account_jwt_presented_as_user_jwt_is_rejected() {
    let w = World::new();
    let creds = w.creds(w.account_jwt());
    assert!(matches!(
        w.authenticator().authenticate(&creds, NONCE, &[], NOW),
        Err(AuthError::Jwt { kind: "user", .. })
    ));
}

#[test]
fn nonce_must_be_signed_by_the_user_key() {
    let w = World::new();
    let auth = w.authenticator();
    let jwt = w.user_jwt(json!({}));
    let mut creds = w.creds(jwt);
    creds.sig = Some(sign_nonce(&KeyPair::new_user(), NONCE));
    assert_eq!(
        auth.authenticate(&creds, NONCE, &[], NOW),
        Err(AuthError::BadNonceSignature(w.user.public_key()))
    );
    creds.sig = None;
    assert_eq!(
        auth.authenticate(&creds, NONCE, &[], NOW),
        Err(AuthError::MissingCredential("sig"))
    );
    // Replaying a signature over another connection's nonce fails.
    let creds = w.creds(w.user_jwt(json!({})));
    assert!(auth
        .authenticate(&creds, b"another-nonce", &[], NOW)
        .is_err());
}

#[test]
fn bearer_tokens_skip_the_nonce_unless_the_account_disallows_them() {
    let w = World::new();
    let creds = Credentials {
        jwt: Some(w.user_jwt(json!({ "bearer_token": true }))),
        ..Default::default()
    };
    assert!(w
        .authenticator()
        .authenticate(&creds, NONCE, &[], NOW)
        .is_ok());

    let mut account = w.account_claims();
    account["nats"]["limits"] = json!({ "disallow_bearer": true });
    let auth = w.authenticator_with(encode_jwt(&w.operator, &account));
    assert_eq!(
        auth.authenticate(&creds, NONCE, &[], NOW),
        Err(AuthError::BearerNotAllowed(w.account.public_key()))
    );
}

#[test]
fn revoked_users_are_rejected() {
    let w = World::new();
    let mut account = w.account_claims();
    account["nats"]["revocations"] = json!({ w.user.public_key(): 5 });
    let auth = w.authenticator_with(encode_jwt(&w.operator, &account));
    // Issued (iat 1) before the revocation (5).
    assert_eq!(
        auth.authenticate(&w.creds(w.user_jwt(json!({}))), NONCE, &[], NOW),
        Err(AuthError::Revoked(w.user.public_key()))
    );
    // Reissued after it.
    let jwt = encode_jwt(&w.account, &with(w.user_claims(json!({})), "iat", json!(6)));
    assert!(auth.authenticate(&w.creds(jwt), NONCE, &[], NOW).is_ok());
}

#[test]
fn user_permissions_come_from_the_jwt() {
    let w = World::new();
    let jwt = w.user_jwt(json!({
        "pub": { "allow": ["req.>"], "deny": ["req.admin"] },
        "sub": { "allow": ["_INBOX.>", "jobs.* workers"], "deny": null },
        "resp": { "max": 3, "ttl": 2_000_000_000i64 },
    }));
    let client = w
        .authenticator()
        .authenticate(&w.creds(jwt), NONCE, &[], NOW)
        .unwrap();
    let perms = client.permissions.unwrap();
    assert_eq!(perms.publish.allow, ["req.>"]);
    assert_eq!(perms.publish.deny, ["req.admin"]);
    assert_eq!(perms.subscribe.allow, ["_INBOX.>", "jobs.* workers"]);
    assert!(perms.subscribe.deny.is_empty());
    assert_eq!(
        perms.allow_responses,
        Some(ResponsePermission::from_nats(3, 2_000_000_000))
    );
    assert!(perms.can_publish("req.x") && !perms.can_publish("req.admin"));
    assert!(perms.can_subscribe("jobs.a", Some("workers")));
    assert!(!perms.can_subscribe("jobs.a", None));
}

#[test]
fn scoped_signing_key_template_replaces_user_permissions() {
    let w = World::new();
    let scoped = KeyPair::new_account();
    let mut account = w.account_claims();
    account["nats"]["signing_keys"] = json!([{
        "kind": "user_scope",
        "key": scoped.public_key(),
        "role": "readers",
        "template": { "pub": { "deny": [">"] }, "sub": { "allow": ["news.>"] } },
    }]);
    let auth = w.authenticator_with(encode_jwt(&w.operator, &account));

    let claims = w.user_claims(json!({ "issuer_account": w.account.public_key() }));
    let client = auth
        .authenticate(&w.creds(encode_jwt(&scoped, &claims)), NONCE, &[], NOW)
        .unwrap();
    let perms = client.permissions.unwrap();
    assert!(!perms.can_publish("news.today"));
    assert!(perms.can_subscribe("news.*", None));

    // A scoped user may not bring its own permissions.
    let claims = w.user_claims(json!({
        "issuer_account": w.account.public_key(),
        "pub": { "allow": [">"] },
    }));
    assert_eq!(
        auth.authenticate(&w.creds(encode_jwt(&scoped, &claims)), NONCE, &[], NOW),
        Err(AuthError::ScopedUserWithPermissions(w.user.public_key()))
    );
}

#[test]
fn config_validates_operator_and_account_jwts() {
    let w = World::new();
    let config = |operators: Vec<String>, account_key: String, account_jwt: String| {
        Authenticator::new(AuthConfig::Decentralized(OperatorConfig {
            operators,
            resolver: [(account_key, account_jwt)].into_iter().collect(),
        }))
    };
    assert_eq!(
        Authenticator::new(AuthConfig::Decentralized(OperatorConfig::default())).unwrap_err(),
        ConfigError::NoOperator
    );
    // Operator JWT signed by another operator key.
    let forged = encode_jwt(&w.operator_signer, &operator_claims(&w.operator, &[]));
    assert!(matches!(
        config(vec![forged], w.account.public_key(), w.account_jwt()),
        Err(ConfigError::Operator(_))
    ));
    // Account JWT stored under another key.
    let other = KeyPair::new_account().public_key();
    assert!(matches!(
        config(vec![w.operator_jwt()], other, w.account_jwt()),
        Err(ConfigError::AccountKeyMismatch { .. })
    ));
    // Tampered account JWT.
    let jwt = w.account_jwt();
    let (signed, signature) = jwt.rsplit_once('.').unwrap();
    let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    signature[10] ^= 1;
    let jwt = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature));
    assert_eq!(
        config(vec![w.operator_jwt()], w.account.public_key(), jwt).unwrap_err(),
        ConfigError::Account {
            key: w.account.public_key(),
            source: JwtError::BadSignature
        }
    );
}
