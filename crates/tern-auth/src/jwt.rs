//! Decoding and verifying NATS JWTs (nats-io/jwt v2).
//!
//! A NATS JWT is `header.payload.signature`, each part base64url without
//! padding. The header is `{"typ":"JWT","alg":"ed25519-nkey"}`; the signature
//! is Ed25519 over `header.payload` by the key in the `iss` claim (a public
//! nkey). NATS-specific claims sit under `nats`, tagged by `nats.type`.
//! No JWT crate on crates.io verifies `ed25519-nkey`, hence this module.

use std::collections::HashMap;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use nkeys::{KeyPair, KeyPairType};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::{AuthError, JwtError};
use crate::permissions::{Permissions, ResponsePermission, SubjectPermission};

/// The only algorithm NATS v2 JWTs use.
pub(crate) const ALGORITHM: &str = "ed25519-nkey";

/// base64url, with or without padding (nats-io/jwt writes none).
const BASE64_URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Standard base64, with or without padding (nats-server's fallback for `sig`).
const BASE64_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes a nonce signature as clients send it: base64url without padding
/// (nats.go, async-nats), falling back to standard base64 as nats-server does.
pub(crate) fn decode_signature(sig: &str) -> Option<Vec<u8>> {
    BASE64_URL
        .decode(sig)
        .or_else(|_| BASE64_STD.decode(sig))
        .ok()
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    typ: String,
    #[serde(default)]
    alg: String,
}

/// The registered claims NATS uses, plus the `nats` section `N`.
#[derive(Debug, Deserialize)]
pub(crate) struct Claims<N> {
    #[serde(default)]
    pub(crate) iss: String,
    #[serde(default)]
    pub(crate) sub: String,
    #[serde(default)]
    pub(crate) iat: i64,
    #[serde(default)]
    pub(crate) exp: i64,
    #[serde(default)]
    pub(crate) nbf: i64,
    pub(crate) nats: N,
}

/// A `nats` section, tagged by `type`.
pub(crate) trait NatsSection: DeserializeOwned {
    /// The claim type: `operator`, `account` or `user`.
    const TYPE: &'static str;
    fn claim_type(&self) -> &str;
}

#[derive(Debug, Deserialize)]
pub(crate) struct OperatorNats {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) signing_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AccountNats {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) signing_keys: Vec<SigningKey>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) revocations: HashMap<String, i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) limits: AccountLimits,
}

/// An account signing key: a bare public key, or a scoped key whose template
/// replaces the permissions of every user it issues.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum SigningKey {
    Plain(String),
    Scoped {
        key: String,
        #[serde(default)]
        template: UserLimits,
    },
}

impl SigningKey {
    pub(crate) fn key(&self) -> &str {
        match self {
            SigningKey::Plain(key) | SigningKey::Scoped { key, .. } => key,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AccountLimits {
    #[serde(default)]
    pub(crate) disallow_bearer: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct UserNats {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    pub(crate) issuer_account: String,
    #[serde(flatten)]
    pub(crate) limits: UserLimits,
}

/// nats-io/jwt `UserPermissionLimits`, the parts Tern enforces.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UserLimits {
    #[serde(rename = "pub", default, deserialize_with = "null_as_default")]
    publish: JwtPermission,
    #[serde(rename = "sub", default, deserialize_with = "null_as_default")]
    subscribe: JwtPermission,
    #[serde(default)]
    resp: Option<JwtResponse>,
    #[serde(default)]
    pub(crate) bearer_token: bool,
}

#[derive(Debug, Default, Deserialize)]
struct JwtPermission {
    #[serde(default, deserialize_with = "null_as_default")]
    allow: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    deny: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct JwtResponse {
    #[serde(default)]
    max: i64,
    /// Nanoseconds, as Go's `time.Duration`.
    #[serde(default)]
    ttl: i64,
}

impl UserLimits {
    pub(crate) fn has_permissions(&self) -> bool {
        !self.publish.allow.is_empty()
            || !self.publish.deny.is_empty()
            || !self.subscribe.allow.is_empty()
            || !self.subscribe.deny.is_empty()
            || self.resp.is_some()
    }

    /// `None` when the JWT sets no permission, i.e. everything is allowed.
    pub(crate) fn permissions(&self) -> Option<Permissions> {
        if !self.has_permissions() {
            return None;
        }
        let list = |p: &JwtPermission| SubjectPermission {
            allow: p.allow.clone(),
            deny: p.deny.clone(),
        };
        Some(Permissions {
            publish: list(&self.publish),
            subscribe: list(&self.subscribe),
            allow_responses: self
                .resp
                .as_ref()
                .map(|r| ResponsePermission::from_nats(r.max, r.ttl)),
        })
    }
}

macro_rules! nats_section {
    ($ty:ty, $name:literal) => {
        impl NatsSection for $ty {
            const TYPE: &'static str = $name;
            fn claim_type(&self) -> &str {
                &self.kind
            }
        }
    };
}
nats_section!(OperatorNats, "operator");
nats_section!(AccountNats, "account");
nats_section!(UserNats, "user");

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn malformed(what: impl Into<String>) -> JwtError {
    JwtError::Malformed(what.into())
}

/// Decodes `token`, checks its header, claim type and the key kinds of `sub`
/// and `iss`, and verifies its signature with the key in `iss`. Does not check
/// time validity or whether the issuer is trusted: callers do.
pub(crate) fn decode<N: NatsSection>(
    token: &str,
    subject_kind: KeyPairType,
    issuer_kind: KeyPairType,
) -> Result<Claims<N>, JwtError> {
    let mut parts = token.trim().split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("expected three dot-separated parts"));
    };

    let header_json = BASE64_URL
        .decode(header)
        .map_err(|_| malformed("header is not base64url"))?;
    let header_fields: Header =
        serde_json::from_slice(&header_json).map_err(|e| malformed(format!("header: {e}")))?;
    if !header_fields.typ.eq_ignore_ascii_case("jwt") {
        return Err(malformed(format!("typ {:?} is not JWT", header_fields.typ)));
    }
    if header_fields.alg != ALGORITHM {
        return Err(JwtError::Algorithm(header_fields.alg));
    }

    let payload_json = BASE64_URL
        .decode(payload)
        .map_err(|_| malformed("payload is not base64url"))?;
    let claims: Claims<N> =
        serde_json::from_slice(&payload_json).map_err(|e| malformed(format!("claims: {e}")))?;
    let signature = BASE64_URL
        .decode(signature)
        .map_err(|_| malformed("signature is not base64url"))?;

    let issuer = public_key(&claims.iss, "iss", issuer_kind)?;
    public_key(&claims.sub, "sub", subject_kind)?;
    let signed_len = header.len() + 1 + payload.len();
    issuer
        .verify(&token.trim().as_bytes()[..signed_len], &signature)
        .map_err(|_| JwtError::BadSignature)?;

    if claims.nats.claim_type() != N::TYPE {
        return Err(JwtError::WrongType {
            expected: N::TYPE,
            found: claims.nats.claim_type().to_owned(),
        });
    }
    Ok(claims)
}

/// Parses a public nkey and checks its kind.
pub(crate) fn public_key(
    key: &str,
    field: &'static str,
    kind: KeyPairType,
) -> Result<KeyPair, JwtError> {
    let bad = || JwtError::BadKey {
        field,
        key: key.to_owned(),
        expected: kind_name(&kind),
    };
    let pair = KeyPair::from_public_key(key).map_err(|_| bad())?;
    if pair.key_pair_type() != kind {
        return Err(bad());
    }
    Ok(pair)
}

fn kind_name(kind: &KeyPairType) -> &'static str {
    match kind {
        KeyPairType::Operator => "operator",
        KeyPairType::Account => "account",
        KeyPairType::User => "user",
        _ => "other",
    }
}

impl<N> Claims<N> {
    /// Checks `exp` and `nbf` against `now` (Unix seconds), as nats-io/jwt:
    /// expired when `now > exp`, not yet valid when `now < nbf`; zero is unset.
    pub(crate) fn check_time(&self, kind: &'static str, now: u64) -> Result<(), AuthError> {
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        if self.exp > 0 && now > self.exp {
            return Err(AuthError::Expired {
                kind,
                exp: self.exp,
            });
        }
        if self.nbf > 0 && now < self.nbf {
            return Err(AuthError::NotYetValid {
                kind,
                nbf: self.nbf,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_decoding_accepts_url_and_standard_base64() {
        // 0xfb 0xff encodes to "+/8" / "-_8" — distinguishes the alphabets.
        for encoded in ["-_8", "-_8=", "+/8", "+/8="] {
            assert_eq!(
                decode_signature(encoded),
                Some(vec![0xfb, 0xff]),
                "{encoded}"
            );
        }
        assert_eq!(decode_signature("not base64!"), None);
    }

    #[test]
    fn signing_keys_may_be_plain_or_scoped() {
        let nats: AccountNats = serde_json::from_str(
            r#"{"type":"account","signing_keys":["AKEY1",
                {"kind":"user_scope","key":"AKEY2","role":"r","template":{"pub":{"allow":["x"]}}}]}"#,
        )
        .unwrap();
        let keys: Vec<&str> = nats.signing_keys.iter().map(SigningKey::key).collect();
        assert_eq!(keys, ["AKEY1", "AKEY2"]);
        assert!(matches!(nats.signing_keys[1], SigningKey::Scoped { .. }));
    }

    #[test]
    fn null_lists_read_as_empty() {
        let nats: UserNats =
            serde_json::from_str(r#"{"type":"user","pub":null,"sub":{"allow":null}}"#).unwrap();
        assert!(!nats.limits.has_permissions());
        assert_eq!(nats.limits.permissions(), None);
    }
}
