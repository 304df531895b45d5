//! Account exports and imports: a stream export lets messages published in
//! one account reach subscribers of another; a service export lets an
//! account's requests reach responders of another, with the replies routed
//! back.
//!
//! Set up once at start from the configuration (every import is checked
//! against an export that allows it). The router applies the links on the
//! node where a message is published, never again on a node it was
//! forwarded to, and a message delivered through an import is not passed on
//! through further imports, so links cannot loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::account::Account;
use crate::options::{ExportKind, ExportOptions, ImportOptions};
use crate::server::ServerShared;

/// How long a service reply route stays open, as nats-server's default
/// `response_threshold`.
const RESPONSE_TTL: Duration = Duration::from_secs(120);
/// Reply routes kept per exporting account at most; beyond it, expired
/// ones are swept and, if still full, the request's reply cannot return.
const MAX_RESPONSES: usize = 1_000_000;
/// The prefix of the reply subjects made in an exporting account.
pub(crate) const REPLY_PREFIX: &[u8] = b"_R_.";

/// Whether `to` has the wildcards of `from` in the same places (literal
/// tokens may differ), so subjects can be mapped token by token.
pub(crate) fn same_shape(from: &str, to: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (from.split('.').collect(), to.split('.').collect());
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            let wild = |t: &str| t == "*" || t == ">";
            if wild(x) || wild(y) {
                x == y
            } else {
                true
            }
        })
}

/// Maps `subject` (which matches `from`) onto `to`: wildcard tokens carry
/// the subject's tokens over, literal ones are replaced.
fn map_subject(subject: &[u8], from: &str, to: &str) -> Vec<u8> {
    let tokens: Vec<&[u8]> = subject.split(|b| *b == b'.').collect();
    let mut out = Vec::with_capacity(subject.len() + to.len());
    for (i, (f, t)) in from.split('.').zip(to.split('.')).enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        match f {
            "*" => out.extend_from_slice(tokens.get(i).copied().unwrap_or_default()),
            ">" => {
                out.extend_from_slice(&tokens[i.min(tokens.len())..].join(&b'.'));
                break;
            }
            _ => out.extend_from_slice(t.as_bytes()),
        }
    }
    out
}

/// Whether every subject `inner` matches is matched by `outer`.
fn covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('.');
    let mut i = inner.split('.');
    loop {
        match (o.next(), i.next()) {
            (Some(">"), Some(_)) => return true,
            (Some(_), Some(">")) => return false,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// How a stream import names subjects in the importing account.
#[derive(Debug, Clone)]
enum Naming {
    Same,
    Prefix(String),
    To(String),
}

/// An exporting account's stream, imported by another.
#[derive(Clone)]
pub(crate) struct StreamLink {
    /// The import's subject, in the exporting account.
    pattern: String,
    naming: Naming,
    pub(crate) importer: Arc<Account>,
}

impl StreamLink {
    pub(crate) fn matches(&self, subject: &[u8]) -> bool {
        tern_protocol::subject::matches(self.pattern.as_bytes(), subject)
    }

    /// The subject in the importing account.
    pub(crate) fn local_subject(&self, subject: &[u8]) -> Vec<u8> {
        match &self.naming {
            Naming::Same => subject.to_vec(),
            Naming::Prefix(p) => {
                let mut out = Vec::with_capacity(p.len() + 1 + subject.len());
                out.extend_from_slice(p.as_bytes());
                out.push(b'.');
                out.extend_from_slice(subject);
                out
            }
            Naming::To(to) => map_subject(subject, &self.pattern, to),
        }
    }
}

/// A service an importing account reaches in an exporting one.
#[derive(Clone)]
pub(crate) struct ServiceLink {
    /// The subject requests are published on, in the importing account.
    local: String,
    /// The subject in the exporting account.
    remote: String,
    pub(crate) exporter: Arc<Account>,
    multiple: bool,
}

impl ServiceLink {
    pub(crate) fn matches(&self, subject: &[u8]) -> bool {
        tern_protocol::subject::matches(self.local.as_bytes(), subject)
    }

    /// The request subject in the exporting account.
    pub(crate) fn remote_subject(&self, subject: &[u8]) -> Vec<u8> {
        map_subject(subject, &self.local, &self.remote)
    }

    /// Whether more than one reply may come back per request.
    pub(crate) fn multiple(&self) -> bool {
        self.multiple
    }
}

/// Where a reply published in an exporting account goes.
pub(crate) struct ResponseRoute {
    pub(crate) importer: Arc<Account>,
    /// The requester's reply subject, in the importing account.
    pub(crate) reply: Vec<u8>,
    expires: Instant,
    multiple: bool,
}

/// The links of one account, set at start.
#[derive(Default)]
pub(crate) struct Links {
    /// Importers of this account's streams.
    /// Set once at start; the router takes the `Arc`, not a copy, per
    /// message.
    pub(crate) streams_out: RwLock<Arc<Vec<StreamLink>>>,
    /// Services this account imports.
    pub(crate) services_in: RwLock<Arc<Vec<ServiceLink>>>,
    /// Reply routes opened for requests delivered into this account.
    responses: Mutex<Responses>,
    any: AtomicBool,
    has_responses: AtomicBool,
}

/// Open reply routes, and the order they expire in (the time to live is
/// the same for all, so opening order is expiry order).
#[derive(Default)]
struct Responses {
    routes: std::collections::HashMap<Vec<u8>, ResponseRoute>,
    expiry: std::collections::VecDeque<(Instant, Vec<u8>)>,
}

/// Makes reply subjects unique per server.
static NEXT_REPLY: AtomicU64 = AtomicU64::new(1);

impl Links {
    /// Whether the account exports or imports anything.
    pub(crate) fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// Whether reply routes may exist (the account exports a service).
    pub(crate) fn has_responses(&self) -> bool {
        self.has_responses.load(Ordering::Relaxed)
    }

    /// Opens a reply route for a request delivered into this (exporting)
    /// account; returns the reply subject to use in it, or `None` when the
    /// table is full.
    pub(crate) fn open_response(
        &self,
        server_token: &str,
        importer: &Arc<Account>,
        reply: &[u8],
        multiple: bool,
    ) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut responses = self.responses.lock();
        let Responses { routes, expiry } = &mut *responses;
        // Expired routes leave in order, a few per call: no full scans.
        while let Some((when, _)) = expiry.front() {
            if *when > now {
                break;
            }
            if let Some((_, subject)) = expiry.pop_front() {
                if routes.get(&subject).is_some_and(|r| r.expires <= now) {
                    routes.remove(&subject);
                }
            }
        }
        if routes.len() >= MAX_RESPONSES {
            return None;
        }
        // Routes closed early leave their expiry entry behind; drop those
        // once they outnumber the open routes (amortized, rare).
        if expiry.len() > 2 * MAX_RESPONSES.min(routes.len() + 1024) {
            expiry.retain(|(_, subject)| routes.contains_key(subject));
        }
        let n = NEXT_REPLY.fetch_add(1, Ordering::Relaxed);
        let subject = format!("_R_.{server_token}.{n}").into_bytes();
        let expires = now + RESPONSE_TTL;
        routes.insert(
            subject.clone(),
            ResponseRoute {
                importer: importer.clone(),
                reply: reply.to_vec(),
                expires,
                multiple,
            },
        );
        expiry.push_back((expires, subject.clone()));
        Some(subject)
    }

    /// The route of a reply published on `subject`, if one is open; a
    /// singleton route closes with its first reply.
    pub(crate) fn take_response(&self, subject: &[u8]) -> Option<(Arc<Account>, Vec<u8>)> {
        let mut responses = self.responses.lock();
        let routes = &mut responses.routes;
        let route = routes.get(subject)?;
        if route.expires <= Instant::now() {
            routes.remove(subject);
            return None;
        }
        if route.multiple {
            return Some((route.importer.clone(), route.reply.clone()));
        }
        let route = routes.remove(subject)?;
        Some((route.importer, route.reply))
    }

    /// Closes a reply route that will not be used (nobody received the
    /// request).
    pub(crate) fn close_response(&self, subject: &[u8]) {
        self.responses.lock().routes.remove(subject);
    }
}

/// A random token that tells this server's reply subjects apart from
/// other servers' in a cluster.
pub(crate) fn server_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..10)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// Checks every import against the exports and links the accounts.
pub(crate) fn install(
    server: &ServerShared,
    exports: &[(String, ExportOptions)],
    imports: &[(String, ImportOptions)],
) -> anyhow::Result<()> {
    for (importer_name, import) in imports {
        let export = exports
            .iter()
            .filter(|(owner, e)| *owner == import.account && e.kind == import.kind)
            .map(|(_, e)| e)
            .find(|e| covers(&e.subject, &import.subject));
        let kind = match import.kind {
            ExportKind::Stream => "stream",
            ExportKind::Service => "service",
        };
        let Some(export) = export else {
            anyhow::bail!(
                "account {importer_name} imports {kind} {:?} from {}, which exports no {kind} covering it",
                import.subject,
                import.account
            );
        };
        if !export.accounts.is_empty() && !export.accounts.iter().any(|a| a == importer_name) {
            anyhow::bail!(
                "account {importer_name} may not import {kind} {:?}: {} exports it only to {:?}",
                import.subject,
                import.account,
                export.accounts
            );
        }
        if *importer_name == import.account {
            anyhow::bail!("account {importer_name} imports from itself");
        }
        let importer = server.account(importer_name);
        let exporter = server.account(&import.account);
        match import.kind {
            ExportKind::Stream => {
                let naming = match (&import.prefix, &import.to) {
                    (Some(p), _) => Naming::Prefix(p.clone()),
                    (None, Some(to)) => Naming::To(to.clone()),
                    (None, None) => Naming::Same,
                };
                Arc::make_mut(&mut exporter.links.streams_out.write()).push(StreamLink {
                    pattern: import.subject.clone(),
                    naming,
                    importer: importer.clone(),
                });
                exporter.links.any.store(true, Ordering::Relaxed);
            }
            ExportKind::Service => {
                Arc::make_mut(&mut importer.links.services_in.write()).push(ServiceLink {
                    local: import.to.clone().unwrap_or_else(|| import.subject.clone()),
                    remote: import.subject.clone(),
                    exporter: exporter.clone(),
                    multiple: export.multiple_responses,
                });
                importer.links.any.store(true, Ordering::Relaxed);
                exporter.links.has_responses.store(true, Ordering::Relaxed);
                exporter.links.any.store(true, Ordering::Relaxed);
                // In a cluster, replies made on another node must come back
                // here: announce interest in this server's reply subjects.
                if let Some(interest) = &server.interest {
                    interest.add(
                        &exporter.name,
                        &format!("_R_.{}.>", server.reply_token),
                        None,
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_mapping() {
        assert!(same_shape("help.>", "ahelp.>"));
        assert!(same_shape("a.*.c", "x.*.z"));
        assert!(!same_shape("a.*", "a.>"));
        assert!(!same_shape("a.*", "a.b"));
        assert_eq!(map_subject(b"help.x.y", "help.>", "ahelp.>"), b"ahelp.x.y");
        assert_eq!(map_subject(b"a.q.c", "a.*.c", "x.*.z"), b"x.q.z");
        assert_eq!(map_subject(b"a.b", "a.b", "c.d"), b"c.d");
    }

    #[test]
    fn covering() {
        assert!(covers("events.>", "events.*"));
        assert!(covers("events.>", "events.a.b"));
        assert!(covers("events.*", "events.a"));
        assert!(!covers("events.*", "events.>"));
        assert!(!covers("events.a", "events.*"));
        assert!(covers("a.b", "a.b"));
        assert!(!covers("a.b", "a.b.c"));
    }
}
