//! Building NATS JWTs and nonce signatures in tests (feature `test-util`).
//! Tern never issues JWTs itself; operators do, with `nsc`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nkeys::KeyPair;
use serde_json::{json, Value};

/// Signs `claims` as a NATS v2 JWT with `signer`, setting `iss` to the
/// signer's public key unless `claims` already has one.
pub fn encode_jwt(signer: &KeyPair, claims: &Value) -> String {
    let mut claims = claims.clone();
    if let Some(map) = claims.as_object_mut() {
        map.entry("iss")
            .or_insert_with(|| Value::String(signer.public_key()));
    }
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signature = signer.sign(signed.as_bytes()).expect("signer has a seed");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Claims of a self-signed operator JWT with extra `signing_keys`.
pub fn operator_claims(operator: &KeyPair, signing_keys: &[String]) -> Value {
    json!({
        "jti": "tern-test", "iat": 1, "name": "test-operator",
        "sub": operator.public_key(),
        "nats": { "type": "operator", "version": 2, "signing_keys": signing_keys },
    })
}

/// Claims of an account JWT; `signing_keys` may hold strings or scoped
/// (`{"kind":"user_scope","key":…,"template":{…}}`) entries.
pub fn account_claims(account: &str, signing_keys: Value) -> Value {
    json!({
        "jti": "tern-test", "iat": 1, "name": "test-account",
        "sub": account,
        "nats": { "type": "account", "version": 2, "signing_keys": signing_keys },
    })
}

/// Claims of a user JWT; `permissions` is merged into the `nats` section
/// (e.g. `{"pub":{"allow":["foo"]}}`, `{"issuer_account":"A…"}`).
pub fn user_claims(user: &str, permissions: Value) -> Value {
    let mut nats = json!({ "type": "user", "version": 2 });
    if let (Some(nats), Some(extra)) = (nats.as_object_mut(), permissions.as_object()) {
        nats.extend(extra.clone());
    }
    json!({ "jti": "tern-test", "iat": 1, "name": "test-user", "sub": user, "nats": nats })
}

/// Signs `nonce` as clients put it in `CONNECT` `sig`: base64url, no padding.
pub fn sign_nonce(key: &KeyPair, nonce: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(key.sign(nonce).expect("key has a seed"))
}
