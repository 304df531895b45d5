//! What a client presents: the credential fields of `CONNECT`, and the
//! `.creds` file format NATS clients read them from.

use std::fmt;

use tern_protocol::ConnectInfo;

/// The credential fields of a `CONNECT`. `Debug` hides `pass` and `auth_token`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `user`.
    pub user: Option<String>,
    /// `pass`.
    pub pass: Option<String>,
    /// `auth_token`.
    pub auth_token: Option<String>,
    /// `nkey`: the client's public nkey (nkey users).
    pub nkey: Option<String>,
    /// `sig`: the nonce signed with the client's nkey, base64url.
    pub sig: Option<String>,
    /// `jwt`: the user JWT (decentralized auth).
    pub jwt: Option<String>,
}

impl From<&ConnectInfo> for Credentials {
    fn from(connect: &ConnectInfo) -> Self {
        Self {
            user: connect.user.clone(),
            pass: connect.pass.clone(),
            auth_token: connect.auth_token.clone(),
            nkey: connect.nkey.clone(),
            sig: connect.sig.clone(),
            jwt: connect.jwt.clone(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("pass", &hidden(&self.pass))
            .field("auth_token", &hidden(&self.auth_token))
            .field("nkey", &self.nkey)
            .field("sig", &self.sig.as_ref().map(|_| "<present>"))
            .field("jwt", &self.jwt.as_ref().map(|_| "<present>"))
            .finish()
    }
}

/// Why a `.creds` file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredsError {
    /// No `-----BEGIN NATS USER JWT-----` block.
    #[error("no user jwt block in credentials")]
    MissingJwt,
    /// No `-----BEGIN USER NKEY SEED-----` block.
    #[error("no nkey seed block in credentials")]
    MissingSeed,
}

/// Reads a `.creds` file: returns `(jwt, seed)`.
///
/// As nats.go and async-nats, the first block between two dashed lines
/// (`---…---`) is the JWT and the second the seed, so the exact banner text
/// does not matter.
pub fn parse_creds(text: &str) -> Result<(String, String), CredsError> {
    let mut blocks = decorated_blocks(text);
    let jwt = blocks.next().ok_or(CredsError::MissingJwt)?;
    let seed = blocks.next().ok_or(CredsError::MissingSeed)?;
    Ok((jwt.to_owned(), seed.to_owned()))
}

/// Writes a `.creds` file as `nsc` does.
pub fn format_creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// Lines of the form `---…---`, a single-token line, `---…---`.
fn decorated_blocks(text: &str) -> impl Iterator<Item = &str> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 2 < lines.len() {
        let token = lines[i + 1];
        if is_dash_line(lines[i]) && is_dash_line(lines[i + 2]) && is_token(token) {
            found.push(token);
            i += 3;
        } else {
            i += 1;
        }
    }
    found.into_iter()
}

fn is_dash_line(line: &str) -> bool {
    line.len() >= 6 && line.starts_with("---") && line.ends_with("---")
}

fn is_token(line: &str) -> bool {
    !line.is_empty()
        && line
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'='))
}
