//! Checking a client's credentials against the configuration.

use std::collections::HashMap;

use nkeys::{KeyPair, KeyPairType};

use crate::config::{AuthConfig, NkeyUser, OperatorConfig, Password, User, DEFAULT_ACCOUNT};
use crate::credentials::Credentials;
use crate::error::{AuthError, ConfigError, JwtError};
use crate::jwt::{self, AccountNats, Claims, OperatorNats, SigningKey, UserNats};
use crate::permissions::Permissions;
use crate::tls_map::tls_identity_matches;

/// A client the server admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user name, public nkey or (JWT) user public key; empty with no
    /// auth or a token.
    pub user: String,
    /// The account: a configured name, [`DEFAULT_ACCOUNT`], or (JWT) the
    /// account public key.
    pub account: String,
    /// `None` allows everything.
    pub permissions: Option<Permissions>,
    /// When the credentials stop being valid (Unix seconds; the earlier of
    /// the user and account JWT `exp`). The server disconnects the client
    /// then, as nats-server does. `None` for credentials that do not expire.
    pub expires_at: Option<i64>,
}

impl Authenticated {
    fn new(user: &str, account: &str, permissions: Option<&Permissions>) -> Self {
        Self {
            user: user.to_owned(),
            account: account.to_owned(),
            permissions: permissions.cloned(),
            expires_at: None,
        }
    }
}

/// Checks `CONNECT` credentials. Built once from an [`AuthConfig`] (which
/// validates keys, hashes and JWT signatures up front), then shared.
#[derive(Debug)]
pub struct Authenticator {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    None,
    Token(Password),
    Users {
        users: HashMap<String, User>,
        nkeys: HashMap<String, NkeyUser>,
        tls_map: bool,
    },
    Decentralized(Trust),
}

#[derive(Debug)]
struct Trust {
    operators: Vec<Claims<OperatorNats>>,
    accounts: HashMap<String, Claims<AccountNats>>,
}

impl Authenticator {
    /// Validates `config`: nkeys parse, bcrypt hashes parse, operator JWTs are
    /// self-signed, account JWTs carry valid signatures. Whether an account is
    /// trusted, and whether JWTs have expired, is checked per connection.
    pub fn new(config: AuthConfig) -> Result<Self, ConfigError> {
        let mode = match config {
            AuthConfig::None => Mode::None,
            AuthConfig::Token(token) => {
                check_bcrypt(&token, "token")?;
                Mode::Token(token)
            }
            AuthConfig::Users(config) => {
                let mut users = HashMap::new();
                for user in config.users {
                    check_bcrypt(&user.password, &user.name)?;
                    if users.contains_key(&user.name) {
                        return Err(ConfigError::DuplicateUser(user.name));
                    }
                    users.insert(user.name.clone(), user);
                }
                let mut nkeys = HashMap::new();
                for user in config.nkeys {
                    if jwt::public_key(&user.public_key, "nkey", KeyPairType::User).is_err() {
                        return Err(ConfigError::InvalidNkey(user.public_key));
                    }
                    if nkeys.contains_key(&user.public_key) {
                        return Err(ConfigError::DuplicateUser(user.public_key));
                    }
                    nkeys.insert(user.public_key.clone(), user);
                }
                Mode::Users {
                    users,
                    nkeys,
                    tls_map: config.tls_map,
                }
            }
            AuthConfig::Decentralized(config) => Mode::Decentralized(Trust::new(config)?),
        };
        Ok(Self { mode })
    }

    /// Whether clients must present credentials (`auth_required` in `INFO`).
    pub fn auth_required(&self) -> bool {
        !matches!(self.mode, Mode::None)
    }

    /// Whether the server must send a `nonce` in `INFO` (nkey or JWT users).
    pub fn needs_nonce(&self) -> bool {
        match &self.mode {
            Mode::Users { nkeys, .. } => !nkeys.is_empty(),
            Mode::Decentralized(_) => true,
            Mode::None | Mode::Token(_) => false,
        }
    }

    /// Checks `creds` from a `CONNECT`.
    ///
    /// * `nonce`: the nonce string exactly as sent in `INFO` (clients sign its
    ///   bytes, not a decoding of it).
    /// * `tls_identities`: the verified client certificate's identities, in
    ///   the order described at [`tls_identity_matches`]; empty without one.
    /// * `now_unix_secs`: the current time, for JWT `exp`/`nbf`.
    pub fn authenticate(
        &self,
        creds: &Credentials,
        nonce: &[u8],
        tls_identities: &[String],
        now_unix_secs: u64,
    ) -> Result<Authenticated, AuthError> {
        match &self.mode {
            Mode::None => Ok(Authenticated::new("", DEFAULT_ACCOUNT, None)),
            Mode::Token(token) => {
                let given = creds
                    .auth_token
                    .as_deref()
                    .ok_or(AuthError::MissingCredential("auth_token"))?;
                if token.verify(given) {
                    Ok(Authenticated::new("", DEFAULT_ACCOUNT, None))
                } else {
                    Err(AuthError::BadToken)
                }
            }
            Mode::Users {
                users,
                nkeys,
                tls_map,
            } => {
                // As nats-server: an nkey in CONNECT selects nkey auth when
                // nkey users exist; otherwise fall through to users.
                if let Some(key) = creds.nkey.as_deref().filter(|_| !nkeys.is_empty()) {
                    let user = nkeys
                        .get(key)
                        .ok_or_else(|| AuthError::UnknownNkey(key.to_owned()))?;
                    let pair = KeyPair::from_public_key(key)
                        .map_err(|_| AuthError::UnknownNkey(key.to_owned()))?;
                    verify_nonce(&pair, key, nonce, creds.sig.as_deref())?;
                    return Ok(Authenticated::new(
                        key,
                        &user.account,
                        user.permissions.as_ref(),
                    ));
                }
                if *tls_map {
                    return map_tls_user(users, tls_identities);
                }
                let name = creds
                    .user
                    .as_deref()
                    .ok_or(AuthError::MissingCredential("user"))?;
                let user = users
                    .get(name)
                    .ok_or_else(|| AuthError::UnknownUser(name.to_owned()))?;
                if user.password.verify(creds.pass.as_deref().unwrap_or("")) {
                    Ok(Authenticated::new(
                        &user.name,
                        &user.account,
                        user.permissions.as_ref(),
                    ))
                } else {
                    Err(AuthError::BadPassword(name.to_owned()))
                }
            }
            Mode::Decentralized(trust) => trust.authenticate(creds, nonce, now_unix_secs),
        }
    }
}

fn check_bcrypt(password: &Password, owner: &str) -> Result<(), ConfigError> {
    match password {
        Password::Bcrypt(hash) if hash.parse::<bcrypt::HashParts>().is_err() => {
            Err(ConfigError::InvalidBcrypt(owner.to_owned()))
        }
        _ => Ok(()),
    }
}

fn verify_nonce(
    key: &KeyPair,
    public: &str,
    nonce: &[u8],
    sig: Option<&str>,
) -> Result<(), AuthError> {
    let sig = sig.ok_or(AuthError::MissingCredential("sig"))?;
    let sig = jwt::decode_signature(sig).ok_or(AuthError::MalformedSignature)?;
    key.verify(nonce, &sig)
        .map_err(|_| AuthError::BadNonceSignature(public.to_owned()))
}

fn map_tls_user(
    users: &HashMap<String, User>,
    identities: &[String],
) -> Result<Authenticated, AuthError> {
    for identity in identities {
        let user = users.get(identity.as_str()).or_else(|| {
            users
                .values()
                .find(|user| tls_identity_matches(identity, &user.name))
        });
        if let Some(user) = user {
            return Ok(Authenticated::new(
                &user.name,
                &user.account,
                user.permissions.as_ref(),
            ));
        }
    }
    Err(AuthError::NoTlsUser)
}

impl Trust {
    fn new(config: OperatorConfig) -> Result<Self, ConfigError> {
        if config.operators.is_empty() {
            return Err(ConfigError::NoOperator);
        }
        let mut operators = Vec::new();
        for token in &config.operators {
            let claims: Claims<OperatorNats> =
                jwt::decode(token, KeyPairType::Operator, KeyPairType::Operator)
                    .map_err(ConfigError::Operator)?;
            // An operator JWT is signed by the operator's identity key.
            if claims.iss != claims.sub {
                return Err(ConfigError::Operator(JwtError::Malformed(
                    "operator jwt is not self-signed".to_owned(),
                )));
            }
            operators.push(claims);
        }
        let mut accounts = HashMap::new();
        for (key, token) in config.resolver.iter() {
            let claims: Claims<AccountNats> =
                jwt::decode(token, KeyPairType::Account, KeyPairType::Operator).map_err(
                    |source| ConfigError::Account {
                        key: key.to_owned(),
                        source,
                    },
                )?;
            if claims.sub != key {
                return Err(ConfigError::AccountKeyMismatch {
                    key: key.to_owned(),
                    subject: claims.sub,
                });
            }
            accounts.insert(key.to_owned(), claims);
        }
        Ok(Self {
            operators,
            accounts,
        })
    }

    fn authenticate(
        &self,
        creds: &Credentials,
        nonce: &[u8],
        now: u64,
    ) -> Result<Authenticated, AuthError> {
        let token = creds
            .jwt
            .as_deref()
            .ok_or(AuthError::MissingCredential("jwt"))?;
        let user: Claims<UserNats> = jwt::decode(token, KeyPairType::User, KeyPairType::Account)
            .map_err(|source| AuthError::Jwt {
                kind: "user",
                source,
            })?;
        user.check_time("user", now)?;

        // A user issued by an account signing key names its account in
        // `issuer_account`; otherwise the issuer is the account itself.
        let account_key = if user.nats.issuer_account.is_empty() {
            user.iss.as_str()
        } else {
            user.nats.issuer_account.as_str()
        };
        let account = self
            .accounts
            .get(account_key)
            .ok_or_else(|| AuthError::UnknownAccount(account_key.to_owned()))?;
        self.check_account(account, now)?;

        let scope = if user.iss == account.sub {
            None
        } else {
            let key = account
                .nats
                .signing_keys
                .iter()
                .find(|k| k.key() == user.iss)
                .ok_or_else(|| AuthError::UntrustedUserIssuer {
                    issuer: user.iss.clone(),
                    account: account.sub.clone(),
                })?;
            match key {
                SigningKey::Plain(_) => None,
                SigningKey::Scoped { template, .. } => Some(template),
            }
        };
        // A scoped key's template replaces the user's own permissions.
        let limits = match scope {
            Some(_) if user.nats.limits.has_permissions() => {
                return Err(AuthError::ScopedUserWithPermissions(user.sub.clone()));
            }
            Some(template) => template,
            None => &user.nats.limits,
        };

        if is_revoked(&account.nats.revocations, &user.sub, user.iat) {
            return Err(AuthError::Revoked(user.sub.clone()));
        }

        if user.nats.limits.bearer_token {
            if account.nats.limits.disallow_bearer {
                return Err(AuthError::BearerNotAllowed(account.sub.clone()));
            }
        } else {
            let pair = KeyPair::from_public_key(&user.sub)
                .map_err(|_| AuthError::BadNonceSignature(user.sub.clone()))?;
            verify_nonce(&pair, &user.sub, nonce, creds.sig.as_deref())?;
        }

        let expires_at = [user.exp, account.exp].into_iter().filter(|&e| e > 0).min();
        Ok(Authenticated {
            user: user.sub.clone(),
            account: account.sub.clone(),
            permissions: limits.permissions(),
            expires_at,
        })
    }

    /// The account must be issued by a trusted operator (its identity key or
    /// one of its signing keys), and both must be within their validity.
    fn check_account(&self, account: &Claims<AccountNats>, now: u64) -> Result<(), AuthError> {
        let operator = self
            .operators
            .iter()
            .find(|op| op.sub == account.iss || op.nats.signing_keys.contains(&account.iss))
            .ok_or_else(|| AuthError::UntrustedAccount(account.sub.clone()))?;
        operator.check_time("operator", now)?;
        account.check_time("account", now)
    }
}

/// As nats-server: a user is revoked if the account revoked its key, or all
/// keys (`*`), at or after the user JWT was issued.
fn is_revoked(revocations: &HashMap<String, i64>, user: &str, issued_at: i64) -> bool {
    [user, "*"]
        .iter()
        .any(|key| revocations.get(*key).is_some_and(|&at| at >= issued_at))
}
