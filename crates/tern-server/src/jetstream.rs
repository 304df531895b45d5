//! JetStream: streams on `tern-storage`, consumers (`crate::consumer`), the
//! `$JS.API`, and publish acknowledgements after the write is on disk.
//!
//! The service is one of the server's internal clients: it subscribes to
//! `$JS.API.>` and to every stream's subjects, so requests and publishes
//! reach it through the same routing as any subscriber, and it answers
//! through a [`Router`] like any publisher. Messages for streams that arrive
//! together are written with one `apply_batch` — one fsync — per stream:
//! that is the group commit that keeps the safe default fast.
//!
//! Consumer APIs Tern does not have (pausing, say) answer with an error
//! saying so, instead of timing out.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};
use tern_protocol::jetstream::{
    AccountInfo, ApiError, ApiErrorCode, DiscardPolicy, MsgDeleteRequest, MsgGetRequest,
    MsgGetResponse, PubAck, PubAckResponse, StorageType, StoredMessage, StreamConfig, StreamInfo,
    StreamInfoRequest, StreamNamesRequest, StreamPurgeRequest, StreamPurgeResponse, StreamState,
    Timestamp,
};
use tern_protocol::Headers;
use tern_routing::RoutingError;
use tern_storage::{
    Append, MemoryStore, PurgeRequest, StorageError, StreamLimits, StreamOp, StreamStore,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{info, warn};

use crate::account::Account;
use crate::client::{ClientShared, InternalMsg, SubRef};
use crate::consumer::{AckKind, Consumer};
use crate::router::Router;
use crate::server::ServerShared;

/// The sid of the service's `$JS.API.>` subscription.
const API_SID: &[u8] = b"api";
/// The sid of the service's `$JS.ACK.>` subscription.
const ACK_SID: &[u8] = b"ack";
/// The sid of the service's `$JS.FC.>` subscription (flow control replies).
const FC_SID: &[u8] = b"fc";
/// Sids of stream subject subscriptions start with this, then the stream name.
const STREAM_SID_PREFIX: &str = "stream:";
/// An ephemeral consumer without `inactive_threshold` goes after this long unused.
const EPHEMERAL_INACTIVE_NS: u64 = 5_000_000_000;
/// How often redelivery deadlines, request expiry and heartbeats are checked.
const CONSUMER_TICK: Duration = Duration::from_millis(50);
/// Deletes of retired messages waiting in one stream that have them
/// written at the end of the turn, before [`CONSUMER_TICK`] is up: a
/// bigger batch of deletes holds the stream longer, and takes more memory.
const RETIRED_MAX: usize = 1024;
/// How many queued messages the service still looks at once the server is
/// stopping (it applies the acks among them), at most.
const SHUTDOWN_DRAIN_MAX: usize = 65_536;
/// How many queued messages one turn of the service takes at most.
const BATCH_MAX: usize = 4096;
/// Page size of `STREAM.NAMES` and `STREAM.LIST`, as nats-server's.
const NAMES_PAGE: usize = 1024;
const LIST_PAGE: usize = 256;

/// Messages of one stream [`JetStream::recheck_interest`] looks at per
/// tick, and the bytes it reads at most doing so.
const RECHECK_PER_TICK: u64 = 1_000;
const RECHECK_BYTES_PER_TICK: usize = 4 << 20;

impl Stream {
    /// A consumer went (or its filters changed; or, after a restart, the
    /// ephemeral ones are gone): on an interest stream, what only it wanted
    /// goes too. Messages stored later are checked as they come.
    fn consumer_removed(&mut self) {
        if self.config.retention != tern_protocol::jetstream::RetentionPolicy::Interest {
            return;
        }
        let Ok(state) = self.store.state() else {
            // Unreadable for now: the whole range, as far as it goes.
            self.recheck = Some((1, u64::MAX));
            return;
        };
        if state.messages == 0 {
            return;
        }
        match &mut self.recheck {
            // Checking already: on to the new end, then once more from the
            // start for what the cursor passed.
            Some((_, to)) => {
                *to = (*to).max(state.last_seq);
                self.recheck_again = true;
            }
            None => self.recheck = Some((state.first_seq.max(1), state.last_seq)),
        }
    }
}

/// One stream: its configuration, its store and its publish state.
struct Stream {
    config: StreamConfig,
    created_ns: i64,
    store: Arc<dyn StreamStore>,
    subs: Vec<SubRef>,
    /// `Nats-Msg-Id`s seen within the duplicate window: id → (seq, time).
    dedupe: HashMap<String, (u64, u64)>,
    /// The last `Nats-Msg-Id` stored, for `Nats-Expected-Last-Msg-Id`.
    last_msg_id: Option<String>,
    consumers: BTreeMap<String, Consumer>,
    /// Messages consumed under workqueue/interest retention, to delete.
    retired: Vec<u64>,
    /// Interest retention, after a consumer went: the sequences still to
    /// check for messages no remaining consumer wants (a few per tick), and
    /// whether another consumer went meanwhile (check again from the start).
    recheck: Option<(u64, u64)>,
    recheck_again: bool,
    /// `republish`: where stored messages go next.
    republish: Option<crate::transform::Transform>,
    /// `subject_transform` (2.10): the subject a message is stored under.
    subject_transform: Option<crate::transform::Transform>,
    /// `sources`: where each origin stream is copied from next.
    sources: Vec<SourceCursor>,
}

/// How far a stream has copied one of its `sources`.
#[derive(Debug, Clone)]
struct SourceCursor {
    /// The origin stream.
    name: String,
    /// Its `filter_subject` (`>` for all).
    filter: String,
    /// The next origin sequence to copy.
    next_seq: u64,
    /// When a message was last copied (unix ns; 0 for never).
    active_ns: u64,
}

/// The consumer-record name a source's position is saved under in the
/// sourcing stream's store (a '.' no consumer name can have).
fn source_record(origin: &str) -> String {
    format!("$SRC.{origin}")
}

/// The op that saves where copying `origin` goes on (`next_seq`).
fn source_position(origin: &str, next_seq: u64) -> StreamOp {
    StreamOp::SaveConsumerConfig {
        name: source_record(origin),
        config: serde_json::to_vec(&json!({ "next_seq": next_seq }))
            .unwrap_or_default()
            .into(),
    }
}

/// Messages (and bytes) copied from one source per tick at most.
const SOURCE_BATCH: usize = 256;
const SOURCE_BATCH_BYTES: usize = 1 << 20;

/// The JetStream service of one account (the default account, and every
/// account configured with `jetstream: enabled`).
pub(crate) struct JetStream {
    server: Arc<ServerShared>,
    account: Arc<Account>,
    client: Arc<ClientShared>,
    storage: tern_storage::Storage,
    streams: BTreeMap<String, Stream>,
    router: Router,
    api_total: u64,
    api_errors: u64,
    /// The figures this service last added to the server's JetStream
    /// totals, so several services (one per account) add up.
    published: [u64; 9],
    /// Nanosecond timestamps handed to appends only grow, even if the clock
    /// steps back.
    last_ts: u64,
    /// When consumer positions were last written to the store.
    last_consumer_save: std::time::Instant,
    /// An answer in this batch may tell a client about consumer positions
    /// (an API reply, an ack that asked for confirmation): they are written
    /// before it leaves.
    positions_owed: bool,
}

/// Where JetStream keeps its data under the store directory, as nats-server.
pub(crate) fn data_dir(store_dir: &std::path::Path) -> PathBuf {
    store_dir.join("jetstream")
}

/// Where the JetStream of account `name` (other than the default one) keeps
/// its data: a store of its own, so one account's streams are invisible to
/// every other. Names are used as they are when they are plain, hex-encoded
/// otherwise.
pub(crate) fn account_data_dir(store_dir: &std::path::Path, name: &str) -> PathBuf {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let dir = if plain {
        name.to_owned()
    } else {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        format!("hex-{hex}")
    };
    store_dir.join("jetstream-accounts").join(dir)
}

impl JetStream {
    /// Opens the store, reopens every stream and subscribes; the returned
    /// future serves until the server shuts down.
    pub(crate) fn start(
        server: Arc<ServerShared>,
        store_dir: PathBuf,
        account: Arc<Account>,
    ) -> anyhow::Result<impl std::future::Future<Output = ()>> {
        let dir = if account.name == crate::account::GLOBAL_ACCOUNT {
            data_dir(&store_dir)
        } else {
            account_data_dir(&store_dir, &account.name)
        };
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!("can not create JetStream directory {}: {e}", dir.display())
        })?;
        let sync = match server.opts.jetstream.sync_interval {
            None => tern_storage::SyncPolicy::Always,
            Some(every) => {
                warn!(
                    "sync_interval is {every:?}: acknowledged writes of the last interval can be lost on power loss"
                );
                tern_storage::SyncPolicy::Interval(every)
            }
        };
        let options = tern_storage::StorageOptions {
            sync,
            ..tern_storage::StorageOptions::default()
        };
        let storage = tern_storage::Storage::open_with(&dir, options).map_err(|e| {
            anyhow::anyhow!("can not open JetStream store in {}: {e}", dir.display())
        })?;
        let (client, rx) = ClientShared::new_internal(
            server.next_client_id(),
            "$JS",
            server.opts.max_pending.max(256 << 20),
        );
        client
            .subscribe(&account, "$JS.API.>", None, "api")
            .map_err(|e| anyhow::anyhow!("can not subscribe to the JetStream API: {e}"))?;
        client
            .subscribe(&account, "$JS.ACK.>", None, "ack")
            .map_err(|e| anyhow::anyhow!("can not subscribe to JetStream acks: {e}"))?;
        client
            .subscribe(&account, "$JS.FC.>", None, "fc")
            .map_err(|e| anyhow::anyhow!("can not subscribe to JetStream flow control: {e}"))?;
        let mut js = JetStream {
            router: Router::new(server.clone(), account.clone()),
            server,
            account,
            client,
            storage,
            streams: BTreeMap::new(),
            api_total: 0,
            api_errors: 0,
            published: [0; 9],
            last_ts: 0,
            last_consumer_save: std::time::Instant::now(),
            positions_owed: false,
        };
        js.restore_streams()?;
        js.server
            .js
            .enabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
        *js.server.js.store_dir.lock() = Some(store_dir.clone());
        js.publish_stats();
        info!("Starting JetStream");
        info!("  Account:         {}", js.account.name);
        info!("  Store Directory: \"{}\"", dir.display());
        info!("  Streams restored: {}", js.streams.len());
        Ok(js.run(rx))
    }

    /// Reopens the streams saved in the store.
    fn restore_streams(&mut self) -> anyhow::Result<()> {
        for name in self.storage.list_streams()? {
            let store = self.storage.open_stream(&name)?;
            let Some(blob) = store.stream_config()? else {
                warn!(stream = %name, "stream without a saved configuration, skipped");
                continue;
            };
            let saved: SavedStream = match serde_json::from_slice(&blob) {
                Ok(saved) => saved,
                Err(e) => {
                    warn!(stream = %name, error = %e, "unreadable stream configuration, skipped");
                    continue;
                }
            };
            let consumers = store.load_consumers()?;
            self.install(saved.config, saved.created_ns, store)?;
            let now = self.now_ns();
            let Some(stream) = self.streams.get_mut(&name) else {
                continue;
            };
            rebuild_dedupe(stream, now);
            let mut saved_sources: Vec<(String, u64)> = Vec::new();
            for (consumer_name, stored) in consumers {
                if let Some(origin) = consumer_name.strip_prefix("$SRC.") {
                    let next = serde_json::from_slice::<Value>(&stored.config)
                        .ok()
                        .and_then(|v| v["next_seq"].as_u64())
                        .unwrap_or(1);
                    saved_sources.push((origin.to_owned(), next));
                    continue;
                }
                let Ok(saved) = serde_json::from_slice::<SavedConsumer>(&stored.config) else {
                    warn!(stream = %name, consumer = %consumer_name, "unreadable consumer configuration, skipped");
                    continue;
                };
                let mut consumer = Consumer::restore(
                    consumer_name.clone(),
                    saved.config,
                    saved.created_ns,
                    &stored.state,
                );
                consumer.initial_upto = saved.initial_upto;
                if saved.initial_upto > consumer.delivered_stream_seq {
                    // Stopped before handing out every subject's last message:
                    // those after the last one it did hand out are still owed
                    // (a subject since written to gets its newer message).
                    consumer.initial = last_per_subject(
                        stream.store.as_ref(),
                        &consumer.filters(),
                        consumer.delivered_stream_seq,
                        saved.initial_upto,
                    );
                    consumer.next_seq = consumer.next_seq.max(saved.initial_upto + 1);
                }
                stream.consumers.insert(consumer_name, consumer);
            }
            // Ephemeral consumers did not survive the restart: on an
            // interest stream, what only they wanted goes.
            stream.consumer_removed();
            restore_sources(stream, &saved_sources);
        }
        Ok(())
    }

    /// Registers an open stream and subscribes to its subjects.
    fn install(
        &mut self,
        config: StreamConfig,
        created_ns: i64,
        store: Arc<dyn StreamStore>,
    ) -> Result<(), RoutingError> {
        let subs = self.subscribe_subjects(&config.name, &config.subjects)?;
        let republish = republish_of(&config);
        let subject_transform = transform_of(&config);
        let sources = source_cursors(&config, &[], &self.streams);
        self.streams.insert(
            config.name.clone(),
            Stream {
                config,
                created_ns,
                store,
                subs,
                dedupe: HashMap::new(),
                last_msg_id: None,
                consumers: BTreeMap::new(),
                retired: Vec::new(),
                recheck: None,
                recheck_again: false,
                republish,
                subject_transform,
                sources,
            },
        );
        Ok(())
    }

    async fn run(mut self, mut rx: UnboundedReceiver<InternalMsg>) {
        let mut shutdown = self.server.shutdown_signal();
        let mut expiry = tokio::time::interval(Duration::from_secs(1));
        let mut consumer_timer = tokio::time::interval(CONSUMER_TICK);
        consumer_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = expiry.tick() => self.expire().await,
                _ = consumer_timer.tick() => {
                    self.copy_sources().await;
                    self.recheck_interest();
                    self.tick_consumers();
                    let now = self.now_ns();
                    self.push_heartbeats_and_cleanup(now);
                    self.router.finish_batch();
                    self.save_consumers(true).await;
                    // Deletes the save wrote show in /jsz without a publish.
                    self.publish_stats();
                }
                first = rx.recv() => {
                    let Some(first) = first else { break };
                    let mut batch = vec![first];
                    while batch.len() < BATCH_MAX {
                        match rx.try_recv() {
                            Ok(msg) => batch.push(msg),
                            Err(_) => break,
                        }
                    }
                    self.handle_batch(batch).await;
                    self.serve_all_consumers();
                    // Figures first: whoever gets an ack may ask /jsz next.
                    self.publish_stats();
                    // Positions a reply speaks of are on disk before it goes.
                    let owed = std::mem::take(&mut self.positions_owed);
                    if owed {
                        self.save_consumers(true).await;
                    }
                    self.router.finish_batch();
                    if !owed {
                        self.save_consumers(false).await;
                    }
                }
            }
        }
        // Acks clients sent before the stop are applied, not dropped, so a
        // graceful stop does not deliver their messages again; until the
        // clients are gone (they close on the same signal), or 5 s. Nothing
        // else is served: its answers would not arrive.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut drained = 0;
        loop {
            let last = self.server.num_clients() == 0;
            let mut acks = Vec::new();
            while drained < SHUTDOWN_DRAIN_MAX {
                match rx.try_recv() {
                    Ok(msg) => {
                        drained += 1;
                        if msg.sid.as_ref() == ACK_SID {
                            acks.push(msg);
                        }
                    }
                    Err(_) => break,
                }
            }
            if !acks.is_empty() {
                self.handle_batch(acks).await;
            }
            if last || drained >= SHUTDOWN_DRAIN_MAX || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.save_consumers(true).await;
        for stream in self.streams.values() {
            let _ = stream.store.flush();
        }
        info!("JetStream Shutdown");
    }

    /// Updates the figures `/jsz` and `/metrics` show.
    fn publish_stats(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let (mut messages, mut bytes, mut memory, mut storage) = (0, 0, 0, 0);
        // (Not `state()`: that reads each stream's first message.)
        for stream in self.streams.values() {
            if let Ok((msgs, stream_bytes)) = stream.store.totals() {
                messages += msgs;
                bytes += stream_bytes;
                match stream.config.storage {
                    StorageType::Memory => memory += stream_bytes,
                    StorageType::File => storage += stream_bytes,
                }
            }
        }
        let js = &self.server.js;
        let now = [
            self.streams.len() as u64,
            messages,
            bytes,
            memory,
            storage,
            self.api_total,
            self.api_errors,
            self.streams
                .values()
                .map(|s| s.consumers.len() as u64)
                .sum(),
            // This account's service.
            1,
        ];
        let totals = [
            &js.streams,
            &js.messages,
            &js.bytes,
            &js.memory,
            &js.storage,
            &js.api_total,
            &js.api_errors,
            &js.consumers,
            &js.accounts,
        ];
        // Each account's service adds its change since it last published;
        // the atomics wrap, so a decrease is a wrapping add.
        for ((total, now), before) in totals.iter().zip(now).zip(self.published.iter_mut()) {
            total.fetch_add(now.wrapping_sub(*before), Relaxed);
            *before = now;
        }
    }

    /// Handles a batch in order; publishes are collected per stream and
    /// written together before the next API request is answered.
    async fn handle_batch(&mut self, batch: Vec<InternalMsg>) {
        // Each publish with how many retired messages its stream had when
        // it came: those deletes are written before it.
        let mut appends: Vec<(InternalMsg, usize)> = Vec::new();
        for msg in batch {
            if msg.sid.as_ref() == ACK_SID {
                self.positions_owed |= msg.reply.is_some();
                self.handle_ack(&msg);
            } else if msg.sid.as_ref() == FC_SID {
                self.handle_flow_control(&msg);
            } else if msg.sid.as_ref() == API_SID {
                // A pull request's answer is messages, not positions.
                let pull = msg.subject.starts_with(b"$JS.API.CONSUMER.MSG.NEXT.");
                self.positions_owed |= !pull;
                if !appends.is_empty() {
                    self.store_messages(std::mem::take(&mut appends)).await;
                }
                // Other requests may look at a stream: the messages acks
                // retired are deleted first.
                if !pull && self.streams.values().any(|s| !s.retired.is_empty()) {
                    self.save_consumers(true).await;
                }
                self.handle_api(msg).await;
            } else {
                let retired = self
                    .streams
                    .get(stream_of(&msg))
                    .map_or(0, |s| s.retired.len());
                appends.push((msg, retired));
            }
        }
        if !appends.is_empty() {
            self.store_messages(appends).await;
        }
    }

    fn now_ns(&mut self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.last_ts = now.max(self.last_ts + 1);
        self.last_ts
    }

    /// Publishes a reply through the server's routing.
    fn reply(&mut self, subject: &[u8], body: &[u8]) {
        self.router.route(None, subject, None, None, body);
    }

    fn reply_json<T: Serialize>(&mut self, subject: &[u8], body: &T) {
        let text = serde_json::to_vec(body).unwrap_or_default();
        self.reply(subject, &text);
    }

    /// Stores the publishes of one batch, one `apply_batch` per stream, and
    /// acknowledges each after the store reports it durable.
    async fn store_messages(&mut self, msgs: Vec<(InternalMsg, usize)>) {
        self.store_messages_with(msgs, BTreeMap::new()).await;
    }

    /// [`JetStream::store_messages`], with `extra` ops written in the same
    /// batch (so in the same fsync, all or nothing) after each stream's
    /// messages: a source's position with the copies it covers.
    /// Returns the streams whose write failed as a whole (a disk error or an
    /// aborted batch): nothing of theirs, `extra` included, was written.
    async fn store_messages_with(
        &mut self,
        msgs: Vec<(InternalMsg, usize)>,
        mut extra: BTreeMap<String, Vec<StreamOp>>,
    ) -> std::collections::BTreeSet<String> {
        let mut failed = std::collections::BTreeSet::new();
        let mut by_stream: BTreeMap<String, Vec<(InternalMsg, usize)>> = BTreeMap::new();
        for (msg, retired) in msgs {
            let name = stream_of(&msg).to_owned();
            by_stream.entry(name).or_default().push((msg, retired));
        }
        let mut prepared: Vec<PreparedWrite> = by_stream
            .into_iter()
            .filter_map(|(name, msgs)| self.prepare_writes(&name, msgs))
            .collect();
        // Every stream's write at once: the store shares one fsync among
        // the batches that reach it together (group commit across streams).
        let writes: Vec<_> = prepared
            .iter_mut()
            .map(|p| {
                let stream = self.streams.get_mut(&p.name)?;
                // The deletes of messages acks retired before a publish
                // came go before it, in the same fsync, so each publish finds
                // the stream as the acks before it left it. The positions go
                // at the end, and with them every waiting delete (later
                // acks' after the last publish): a position never says acked
                // of a message whose delete it left behind.
                let marks = std::mem::take(&mut p.marks);
                let carry = if marks.last().is_some_and(|&m| m > 0) {
                    stream.retired.len()
                } else {
                    0
                };
                let (retired, owed) = consumers_owe(stream, carry, false);
                let owed_ops = owed.len();
                let (mut ops, is_owed) =
                    interleave(std::mem::take(&mut p.ops), &marks, retired.len(), owed);
                // After every op the results are matched with: their results
                // are not looked at.
                ops.extend(extra.remove(&p.name).unwrap_or_default());
                let store = stream.store.clone();
                (!ops.is_empty()).then(|| {
                    let write = tokio::task::spawn_blocking(move || store.apply_batch(ops));
                    (retired, owed_ops, is_owed, write)
                })
            })
            .collect();
        for (p, write) in prepared.into_iter().zip(writes) {
            // Durability: apply_batch returns after the batch is flushed per
            // the store's sync policy (fsync by default); acks are sent only
            // after it returns.
            let results = match write {
                None => Vec::new(),
                Some((retired, owed_ops, is_owed, write)) => {
                    let all = write.await.unwrap_or_else(|e| {
                        warn!(stream = %p.name, error = %e, "stream write task failed");
                        Vec::new()
                    });
                    let whole_failure = all.is_empty()
                        || all.iter().any(|r| {
                            r.as_ref().is_err_and(|e| {
                                e.is_backend() || matches!(e, StorageError::BatchAborted)
                            })
                        });
                    if whole_failure {
                        failed.insert(p.name.clone());
                    }
                    if is_owed.is_empty() {
                        all // publishes only
                    } else {
                        let (mut owed, mut results) = (Vec::new(), Vec::new());
                        for (result, owed_op) in all.into_iter().zip(is_owed) {
                            if owed_op {
                                owed.push(result);
                            } else {
                                results.push(result);
                            }
                        }
                        if let Some(stream) = self.streams.get_mut(&p.name) {
                            still_owed(stream, &retired, owed_ops, &owed);
                        }
                        results
                    }
                }
            };
            self.finish_writes(p, results).await;
        }
        failed
    }

    /// Checks one stream's publishes of a batch: each either becomes an op
    /// (answered once the batch is written) or is answered now.
    fn prepare_writes(
        &mut self,
        name: &str,
        msgs: Vec<(InternalMsg, usize)>,
    ) -> Option<PreparedWrite> {
        let now = self.now_ns();
        let stream = self.streams.get_mut(name)?;
        let window = u64::try_from(stream.config.duplicate_window.max(0)).unwrap_or(0);
        stream
            .dedupe
            .retain(|_, (_, ts)| now.saturating_sub(*ts) < window);
        let mut ops = Vec::new();
        let mut pending: Vec<(Option<Bytes>, Option<String>)> = Vec::new();
        let mut replies: Vec<(Bytes, PubAckResponse)> = Vec::new();
        let mut batch_ids: HashMap<String, ()> = HashMap::new();
        // For each entry of `pending`: the purge its `Nats-Rollup` asks for.
        let mut rollups: Vec<Option<PurgeRequest>> = Vec::new();
        let mut subjects: Vec<Bytes> = Vec::new();
        let mut marks = Vec::new();
        let mut republish: Vec<(Option<Bytes>, Bytes)> = Vec::new();
        let mut last_seqs: HashMap<Bytes, u64> = HashMap::new();
        for (msg, retired) in msgs {
            // The stream's subject transform (2.10) names what is stored.
            let subject = match &stream.subject_transform {
                Some(t) => t
                    .apply(&String::from_utf8_lossy(&msg.subject))
                    .map_or_else(|| msg.subject.clone(), Bytes::from),
                None => msg.subject.clone(),
            };
            let headers = msg.headers.as_ref().and_then(|h| Headers::decode(h).ok());
            let header = |name: &str| {
                headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(str::to_owned)
            };
            let reject = |error: ApiError| PubAckResponse::err(name, error);
            if stream.config.sealed {
                if let Some(reply) = &msg.reply {
                    replies.push((reply.clone(), reject(ApiErrorCode::STREAM_SEALED.into())));
                }
                continue;
            }
            if let Some(expected) = header("Nats-Expected-Stream") {
                if expected != name {
                    if let Some(reply) = &msg.reply {
                        replies
                            .push((reply.clone(), reject(ApiErrorCode::STREAM_NOT_MATCH.into())));
                    }
                    continue;
                }
            }
            let msg_id = header("Nats-Msg-Id").filter(|id| !id.is_empty());
            if let Some(id) = &msg_id {
                if let Some((seq, _)) = stream.dedupe.get(id) {
                    if let Some(reply) = &msg.reply {
                        let ack = PubAck {
                            stream: name.to_owned(),
                            seq: *seq,
                            duplicate: true,
                            ..PubAck::default()
                        };
                        replies.push((reply.clone(), PubAckResponse::ok(ack)));
                    }
                    continue;
                }
                if batch_ids.insert(id.clone(), ()).is_some() {
                    // A duplicate within this very batch: acked once the
                    // first copy is written (below), as a duplicate.
                    pending.push((msg.reply.clone(), Some(format!("\0dup:{id}"))));
                    rollups.push(None);
                    subjects.push(subject.clone());
                    if stream.republish.is_some() {
                        republish.push((None, Bytes::new()));
                    }
                    continue;
                }
            }
            if let Some(expected) = header("Nats-Expected-Last-Msg-Id") {
                if stream.last_msg_id.as_deref().unwrap_or("") != expected {
                    if let Some(reply) = &msg.reply {
                        let last = stream.last_msg_id.clone().unwrap_or_default();
                        replies.push((
                            reply.clone(),
                            reject(ApiErrorCode::STREAM_WRONG_LAST_MSG_ID.with(&[&last])),
                        ));
                    }
                    continue;
                }
            }
            let mut append = Append::new(subject.clone(), msg.payload.clone(), now);
            if let Some(h) = &msg.headers {
                append = append.with_headers(h.clone());
            }
            if let Some(seq) = header("Nats-Expected-Last-Sequence").and_then(|v| v.parse().ok()) {
                append = append.expect_last_seq(seq);
            }
            if let Some(seq) =
                header("Nats-Expected-Last-Subject-Sequence").and_then(|v| v.parse().ok())
            {
                append = append.expect_last_subject_seq(seq);
            }
            let rollup = match header("Nats-Rollup").as_deref() {
                None => None,
                Some(_) if !stream.config.allow_rollup_hdrs => {
                    if let Some(reply) = &msg.reply {
                        replies.push((
                            reply.clone(),
                            reject(
                                ApiErrorCode::STREAM_ROLLUP_FAILED.with(&[&"rollup not permitted"]),
                            ),
                        ));
                    }
                    continue;
                }
                Some("sub") => Some(PurgeRequest {
                    filter: Some(subject.clone()),
                    up_to_seq: None,
                    keep: Some(1),
                }),
                Some("all") => Some(PurgeRequest {
                    filter: None,
                    up_to_seq: None,
                    keep: Some(1),
                }),
                Some(_) => {
                    if let Some(reply) = &msg.reply {
                        replies.push((
                            reply.clone(),
                            reject(
                                ApiErrorCode::STREAM_ROLLUP_FAILED.with(&[&"rollup value invalid"]),
                            ),
                        ));
                    }
                    continue;
                }
            };
            if stream.republish.is_some() {
                republish.push((append.headers.clone(), append.payload.clone()));
                if !last_seqs.contains_key(&subject) {
                    let last = stream
                        .store
                        .last_by_subject(&subject)
                        .ok()
                        .flatten()
                        .map_or(0, |m| m.seq);
                    last_seqs.insert(subject.clone(), last);
                }
            }
            ops.push(StreamOp::Append(append));
            marks.push(retired);
            pending.push((msg.reply.clone(), msg_id));
            rollups.push(rollup);
            subjects.push(subject.clone());
        }
        Some(PreparedWrite {
            name: name.to_owned(),
            now,
            ops,
            marks,
            pending,
            replies,
            rollups,
            subjects,
            republish,
            last_seqs,
        })
    }

    /// Answers one stream's publishes of a batch from what the store did.
    async fn finish_writes(
        &mut self,
        p: PreparedWrite,
        results: Vec<Result<tern_storage::OpResult, StorageError>>,
    ) {
        let PreparedWrite {
            name,
            now,
            pending,
            mut replies,
            rollups,
            subjects,
            republish,
            mut last_seqs,
            ..
        } = p;
        let mut republish = republish.into_iter();
        // Stored messages to republish: (subject, headers, payload, seq,
        // the subject's previous sequence).
        let mut to_republish: Vec<Republished> = Vec::new();
        let name = name.as_str();
        // On an interest stream, streams that source it want what they have
        // not copied yet.
        let interest = self.streams.get(name).is_some_and(|s| {
            s.config.retention == tern_protocol::jetstream::RetentionPolicy::Interest
        });
        let sourced = if interest {
            source_interest(&self.streams, name)
        } else {
            Vec::new()
        };
        let Some(stream) = self.streams.get_mut(name) else {
            return;
        };
        let mut results = results.into_iter();
        let mut stored_ids: HashMap<String, u64> = HashMap::new();
        // Rollups run after their message is stored, and only if it was: a
        // purge for a rejected message would throw away what it was to replace.
        let mut purges = Vec::new();
        let mut stored: Vec<(u64, Bytes)> = Vec::new();
        for (((reply, id), rollup), subject) in pending.into_iter().zip(rollups).zip(subjects) {
            let content = republish.next();
            if let Some(dup_of) = id.as_deref().and_then(|i| i.strip_prefix("\0dup:")) {
                if let Some(reply) = reply {
                    let response = match stored_ids.get(dup_of) {
                        Some(seq) => PubAckResponse::ok(PubAck {
                            stream: name.to_owned(),
                            seq: *seq,
                            duplicate: true,
                            ..PubAck::default()
                        }),
                        None => PubAckResponse::err(
                            name,
                            ApiErrorCode::STREAM_STORE_FAILED
                                .with(&[&"duplicate of a message that was not stored"]),
                        ),
                    };
                    replies.push((reply, response));
                }
                continue;
            }
            let response = match results.next() {
                Some(Ok(tern_storage::OpResult::Appended { seq, timestamp_ns })) => {
                    if let Some((headers, payload)) = content {
                        let previous = last_seqs.insert(subject.clone(), seq).unwrap_or(0);
                        to_republish.push((
                            subject.clone(),
                            headers,
                            payload,
                            seq,
                            previous,
                            timestamp_ns,
                        ));
                    }
                    stored.push((seq, subject));
                    if let Some(purge) = rollup {
                        purges.push(StreamOp::Purge(PurgeRequest {
                            // Keep this message and nothing older.
                            up_to_seq: Some(seq),
                            keep: None,
                            ..purge
                        }));
                    }
                    if let Some(id) = &id {
                        stream.dedupe.insert(id.clone(), (seq, now));
                        stored_ids.insert(id.clone(), seq);
                    }
                    // As nats-server: the last message's id, none if it had none.
                    stream.last_msg_id = id.clone();
                    PubAckResponse::ok(PubAck {
                        stream: name.to_owned(),
                        seq,
                        ..PubAck::default()
                    })
                }
                Some(Ok(_)) | None => PubAckResponse::err(
                    name,
                    ApiErrorCode::STREAM_STORE_FAILED.with(&[&"store did not append"]),
                ),
                Some(Err(e)) => PubAckResponse::err(name, publish_error(&e)),
            };
            if let Some(reply) = reply {
                replies.push((reply, response));
            }
        }
        if stream.config.retention == tern_protocol::jetstream::RetentionPolicy::Interest {
            // Nobody to keep them for: messages no consumer takes go at once.
            for &(seq, ref subject) in &stored {
                let wanted = stream.consumers.values().any(|c| c.takes(subject))
                    || sourced.iter().any(|(filter, next)| {
                        seq >= *next && tern_protocol::subject::matches(filter.as_bytes(), subject)
                    });
                if !wanted {
                    stream.retired.push(seq);
                }
            }
        }
        if !purges.is_empty() {
            let store = stream.store.clone();
            let _ = tokio::task::spawn_blocking(move || store.apply_batch(purges)).await;
        }
        self.republish(name, to_republish);
        if self.streams.get(name).is_some_and(|s| s.config.no_ack) {
            return;
        }
        for (reply, response) in replies {
            self.reply_json(&reply, &response);
        }
    }

    /// An advisory on `subject` (`$JS.EVENT.ADVISORY.…`), stamped with an id
    /// and the time, built only when someone listens.
    fn advise(&mut self, subject: &str, mut body: Value) {
        let listened = self
            .router
            .lookup(subject.as_bytes())
            .is_some_and(|r| !r.is_empty());
        if !listened {
            return;
        }
        if let Some(object) = body.as_object_mut() {
            let id: String = (0..22).map(|_| fastrand::alphanumeric()).collect();
            object.insert("id".into(), json!(id));
            object.insert(
                "timestamp".into(),
                json!(timestamp(self.now_ns_peek()).to_rfc3339()),
            );
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        self.router
            .route(None, subject.as_bytes(), None, None, &bytes);
    }

    fn stream_action(&mut self, stream: &str, action: &str, event: &str) {
        self.advise(
            &format!("$JS.EVENT.ADVISORY.STREAM.{event}.{stream}"),
            json!({"type": "io.nats.jetstream.advisory.v1.stream_action", "stream": stream, "action": action}),
        );
    }

    fn consumer_action(&mut self, stream: &str, consumer: &str, action: &str, event: &str) {
        self.advise(
            &format!("$JS.EVENT.ADVISORY.CONSUMER.{event}.{stream}.{consumer}"),
            json!({"type": "io.nats.jetstream.advisory.v1.consumer_action", "stream": stream,
                "consumer": consumer, "action": action}),
        );
    }

    /// `republish`: each stored message that its source matches, to its
    /// destination, with `Nats-Stream`, `Nats-Subject`, `Nats-Sequence` and
    /// `Nats-Last-Sequence` (the subject's previous message) added to its
    /// headers; only the headers and `Nats-Msg-Size` with `headers_only`.
    fn republish(&mut self, name: &str, stored: Vec<Republished>) {
        let Some(stream) = self.streams.get(name) else {
            return;
        };
        let (Some(transform), Some(config)) = (&stream.republish, &stream.config.republish) else {
            return;
        };
        let headers_only = config.headers_only;
        let own_subjects = stream.config.subjects.clone();
        let mut sends = Vec::new();
        // (nats-server 2.9 adds no Nats-Time-Stamp here; 2.10 does.)
        for (subject, headers, payload, seq, previous, _stored_ns) in stored {
            let Some(dest) = transform.apply(&String::from_utf8_lossy(&subject)) else {
                continue;
            };
            // A destination the stream itself takes would store, republish,
            // store ... for ever: not sent.
            if own_subjects
                .iter()
                .any(|s| tern_protocol::subject::matches(s.as_bytes(), dest.as_bytes()))
            {
                warn!(stream = %name, subject = %dest, "republish destination is one of the stream's own subjects; not sent");
                continue;
            }
            let mut h = decoded_headers(headers.as_deref());
            let fields = [
                ("Nats-Stream", name.to_owned()),
                (
                    "Nats-Subject",
                    String::from_utf8_lossy(&subject).into_owned(),
                ),
                ("Nats-Sequence", seq.to_string()),
                ("Nats-Last-Sequence", previous.to_string()),
            ];
            for (k, v) in fields {
                h.fields.push((k.to_owned(), v));
            }
            if headers_only {
                h.fields
                    .push(("Nats-Msg-Size".to_owned(), payload.len().to_string()));
            }
            let body = if headers_only { Bytes::new() } else { payload };
            sends.push((dest, h.encode(), body));
        }
        for (dest, headers, body) in sends {
            self.router
                .route(None, dest.as_bytes(), None, Some(&headers), &body);
        }
    }

    /// Applies `max_age` to every stream that has one.
    async fn expire(&mut self) {
        let now = self.now_ns();
        for stream in self.streams.values() {
            if stream.config.max_age <= 0 {
                continue;
            }
            let cutoff = now.saturating_sub(u64::try_from(stream.config.max_age).unwrap_or(0));
            let store = stream.store.clone();
            let _ = tokio::task::spawn_blocking(move || {
                store.apply(StreamOp::ExpireBefore {
                    timestamp_ns: cutoff,
                })
            })
            .await;
        }
    }

    async fn handle_api(&mut self, msg: InternalMsg) {
        self.api_total += 1;
        let Some(reply) = msg.reply.clone() else {
            return;
        };
        let subject = String::from_utf8_lossy(&msg.subject).into_owned();
        let Some(api) = subject.strip_prefix("$JS.API.") else {
            return;
        };
        let tokens: Vec<&str> = api.split('.').collect();
        let result = match tokens.as_slice() {
            ["INFO"] => Ok(("account_info_response", self.account_info())),
            ["STREAM", "CREATE", name] => self
                .create_stream(name, &msg.payload)
                .await
                .map(|v| ("stream_create_response", v)),
            ["STREAM", "UPDATE", name] => self
                .update_stream(name, &msg.payload)
                .await
                .map(|v| ("stream_update_response", v)),
            ["STREAM", "INFO", name] => self
                .stream_info_api(name, &msg.payload)
                .await
                .map(|v| ("stream_info_response", v)),
            ["STREAM", "DELETE", name] => self
                .delete_stream(name)
                .await
                .map(|v| ("stream_delete_response", v)),
            ["STREAM", "NAMES"] => self
                .stream_names(&msg.payload)
                .map(|v| ("stream_names_response", v)),
            ["STREAM", "LIST"] => self
                .stream_list(&msg.payload)
                .await
                .map(|v| ("stream_list_response", v)),
            ["STREAM", "PURGE", name] => self
                .purge_stream(name, &msg.payload)
                .await
                .map(|v| ("stream_purge_response", v)),
            ["STREAM", "MSG", "GET", name] => self
                .get_message(name, &msg.payload)
                .map(|v| ("stream_msg_get_response", v)),
            ["STREAM", "MSG", "DELETE", name] => self
                .delete_message(name, &msg.payload)
                .await
                .map(|v| ("stream_msg_delete_response", v)),
            ["DIRECT", "GET", name, rest @ ..] => {
                self.direct_get(name, &rest.join("."), &msg.payload, &reply);
                return;
            }
            ["CONSUMER", "CREATE", stream, rest @ ..] => {
                // `.<name>`, then `.<filter>` (which may have dots) in 2.10's form.
                let filter = (rest.len() > 1).then(|| rest[1..].join("."));
                self.create_consumer(
                    stream,
                    rest.first().copied(),
                    filter.as_deref(),
                    false,
                    &msg.payload,
                )
                .await
                .map(|v| ("consumer_create_response", v))
            }
            ["CONSUMER", "DURABLE", "CREATE", stream, durable] => self
                .create_consumer(stream, Some(durable), None, true, &msg.payload)
                .await
                .map(|v| ("consumer_create_response", v)),
            ["CONSUMER", "INFO", stream, name] => self
                .consumer_info(stream, name)
                .map(|v| ("consumer_info_response", v)),
            ["CONSUMER", "DELETE", stream, name] => self
                .delete_consumer(stream, name)
                .await
                .map(|v| ("consumer_delete_response", v)),
            ["CONSUMER", "NAMES", stream] => self
                .consumer_names(stream, &msg.payload, false)
                .map(|v| ("consumer_names_response", v)),
            ["CONSUMER", "LIST", stream] => self
                .consumer_names(stream, &msg.payload, true)
                .map(|v| ("consumer_list_response", v)),
            ["CONSUMER", "MSG", "NEXT", stream, name] => {
                self.next_request(stream, name, &msg.payload, &reply);
                return;
            }
            ["CONSUMER", ..] => Err(ApiError {
                description: "this consumer API is not implemented yet in tern".into(),
                ..ApiErrorCode::BAD_REQUEST.into()
            }),
            _ => Err(ApiErrorCode::BAD_REQUEST.with(&[])),
        };
        let (kind, body) = match result {
            Ok((kind, body)) => (kind, body),
            Err(error) => {
                self.api_errors += 1;
                let kind = response_kind(&tokens);
                if kind == "stream_purge_response" {
                    // nats-server's purge answers carry the count, errors too.
                    (kind, json!({ "error": error, "purged": 0 }))
                } else {
                    (kind, json!({ "error": error }))
                }
            }
        };
        let mut envelope = serde_json::Map::new();
        envelope.insert(
            "type".into(),
            json!(format!("io.nats.jetstream.api.v1.{kind}")),
        );
        if let Value::Object(fields) = body {
            envelope.extend(fields);
        }
        let response = Value::Object(envelope);
        self.reply_json(&reply, &response);
        // The audit nats-server sends for every API request it answers.
        let audit = "$JS.EVENT.ADVISORY.API";
        if self
            .router
            .lookup(audit.as_bytes())
            .is_some_and(|r| !r.is_empty())
        {
            let body = json!({
                "type": "io.nats.jetstream.advisory.v1.api_audit",
                "server": self.server.server_name,
                "client": {"acc": self.account.name},
                "subject": subject,
                "request": String::from_utf8_lossy(&msg.payload),
                "response": response.to_string(),
            });
            self.advise(audit, body);
        }
    }

    fn account_info(&self) -> Value {
        let (mut memory, mut storage) = (0u64, 0u64);
        for stream in self.streams.values() {
            if let Ok(state) = stream.store.state() {
                match stream.config.storage {
                    StorageType::Memory => memory += state.bytes,
                    StorageType::File => storage += state.bytes,
                }
            }
        }
        let mut info = AccountInfo {
            memory,
            storage,
            streams: self.streams.len() as u64,
            consumers: self
                .streams
                .values()
                .map(|s| s.consumers.len() as u64)
                .sum(),
            ..AccountInfo::default()
        };
        info.api.total = self.api_total;
        info.api.errors = self.api_errors;
        to_object(&info)
    }

    fn stream(&self, name: &str) -> Result<&Stream, ApiError> {
        self.streams
            .get(name)
            .ok_or_else(|| ApiErrorCode::STREAM_NOT_FOUND.into())
    }

    async fn create_stream(&mut self, name: &str, body: &[u8]) -> Result<Value, ApiError> {
        let mut config: StreamConfig = parse_body(body)?;
        if config.name.is_empty() {
            config.name = name.to_owned();
        }
        if config.name != name {
            return Err(ApiErrorCode::STREAM_MISMATCH.into());
        }
        validate_stream_name(name)?;
        let config = config.with_defaults();
        validate_stream_config(&config)?;
        if let Some(existing) = self.streams.get(name) {
            if existing.config == config {
                return self.stream_info(name, &StreamInfoRequest::default()).await;
            }
            return Err(ApiErrorCode::STREAM_NAME_EXIST.into());
        }
        self.check_overlap(name, &config.subjects)?;
        let limits = limits_of(&config);
        let store: Arc<dyn StreamStore> = match config.storage {
            StorageType::File => self
                .storage
                .create_stream(name, limits)
                .map_err(create_error)?,
            StorageType::Memory => Arc::new(MemoryStore::new(name, limits)),
        };
        let created_ns = self.now_ns() as i64;
        let saved = SavedStream {
            config: config.clone(),
            created_ns,
        };
        let blob = serde_json::to_vec(&saved).unwrap_or_default();
        store.save_stream_config(&blob).map_err(create_error)?;
        store.flush().map_err(create_error)?;
        self.install(config, created_ns, store)
            .map_err(|e| ApiErrorCode::STREAM_CREATE.with(&[&e]))?;
        info!(stream = %name, "stream created");
        // Where each source starts is saved now: after a restart the origin
        // may be opened after this stream, too late to look a time up in.
        let saves: Vec<StreamOp> = self
            .streams
            .get(name)
            .map(|s| {
                s.sources
                    .iter()
                    .map(|c| source_position(&c.name, c.next_seq))
                    .collect()
            })
            .unwrap_or_default();
        if let (false, Some(store)) = (
            saves.is_empty(),
            self.streams.get(name).map(|s| s.store.clone()),
        ) {
            let _ = tokio::task::spawn_blocking(move || store.apply_batch(saves)).await;
        }
        self.stream_action(name, "create", "CREATED");
        let mut info = self
            .stream_info(name, &StreamInfoRequest::default())
            .await?;
        // As nats-server 2.9: a new stream says so.
        if let Some(object) = info.as_object_mut() {
            object.insert("did_create".into(), Value::Bool(true));
        }
        Ok(info)
    }

    async fn update_stream(&mut self, name: &str, body: &[u8]) -> Result<Value, ApiError> {
        let mut config: StreamConfig = parse_body(body)?;
        if config.name.is_empty() {
            config.name = name.to_owned();
        }
        if config.name != name {
            return Err(ApiErrorCode::STREAM_MISMATCH.into());
        }
        let config = config.with_defaults();
        validate_stream_config(&config)?;
        let existing = self.stream(name)?;
        // What nats-server 2.9 refuses to change, in its order and words.
        let old = &existing.config;
        let refusal = if old.max_consumers != config.max_consumers {
            Some("stream configuration update can not change MaxConsumers")
        } else if old.storage != config.storage {
            Some("stream configuration update can not change storage type")
        } else if old.retention != config.retention {
            Some("stream configuration update can not change retention policy")
        } else if old.sealed && !config.sealed {
            Some("stream configuration update can not unseal a sealed stream")
        } else if old.deny_delete && !config.deny_delete {
            Some("stream configuration update can not cancel deny message deletes")
        } else if old.deny_purge && !config.deny_purge {
            Some("stream configuration update can not cancel deny purge")
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return Err(ApiErrorCode::STREAM_INVALID_CONFIG.with(&[&refusal]));
        }
        self.check_overlap(name, &config.subjects)?;
        let store = existing.store.clone();
        let created_ns = existing.created_ns;
        let limits = limits_of(&config);
        let saved = serde_json::to_vec(&SavedStream {
            config: config.clone(),
            created_ns,
        })
        .unwrap_or_default();
        let result = tokio::task::spawn_blocking(move || {
            store.apply_batch(vec![
                StreamOp::UpdateLimits(limits),
                StreamOp::SaveStreamConfig(saved.into()),
            ])
        })
        .await
        .unwrap_or_default();
        if let Some(Err(e)) = result.into_iter().find(|r| r.is_err()) {
            return Err(ApiErrorCode::STREAM_INVALID_CONFIG.with(&[&e]));
        }
        // The stream keeps its consumers, de-duplication ids and pending
        // deletes; only its subscriptions follow the new subjects.
        let old_subjects = existing.config.subjects.clone();
        let old_subs = self
            .streams
            .get_mut(name)
            .map(|s| std::mem::take(&mut s.subs))
            .unwrap_or_default();
        for sub in &old_subs {
            self.server.remove_subscription(&self.account, sub);
        }
        let subs = match self.subscribe_subjects(name, &config.subjects) {
            Ok(subs) => subs,
            Err(e) => {
                let back = self
                    .subscribe_subjects(name, &old_subjects)
                    .unwrap_or_default();
                if let Some(stream) = self.streams.get_mut(name) {
                    stream.subs = back;
                }
                return Err(ApiErrorCode::STREAM_INVALID_CONFIG.with(&[&e]));
            }
        };
        if let Some(stream) = self.streams.get_mut(name) {
            stream.subs = subs;
            stream.republish = republish_of(&config);
            stream.subject_transform = transform_of(&config);
            let kept = std::mem::take(&mut stream.sources);
            let cursors = source_cursors(&config, &kept, &BTreeMap::new());
            // A source dropped: its saved position goes too, so that adding
            // it again starts it afresh.
            let dropped: Vec<String> = kept
                .iter()
                .filter(|k| !cursors.iter().any(|c| c.name == k.name))
                .map(|k| source_record(&k.name))
                .collect();
            if !dropped.is_empty() {
                let store = stream.store.clone();
                tokio::task::spawn_blocking(move || {
                    for name in dropped {
                        let _ = store.delete_consumer(&name);
                    }
                });
            }
            stream.sources = cursors;
            stream.config = config;
        }
        self.stream_action(name, "modify", "UPDATED");
        self.stream_info(name, &StreamInfoRequest::default()).await
    }

    /// Subscribes the service to a stream's subjects (all or none).
    fn subscribe_subjects(
        &self,
        stream_name: &str,
        subjects: &[String],
    ) -> Result<Vec<SubRef>, RoutingError> {
        let sid = format!("{STREAM_SID_PREFIX}{stream_name}");
        let mut subs = Vec::new();
        for subject in subjects {
            match self.client.subscribe(&self.account, subject, None, &sid) {
                Ok(sub) => subs.push(sub),
                Err(e) => {
                    for sub in &subs {
                        self.server.remove_subscription(&self.account, sub);
                    }
                    return Err(e);
                }
            }
        }
        Ok(subs)
    }

    /// Refuses subjects that overlap those of another stream.
    fn check_overlap(&self, name: &str, subjects: &[String]) -> Result<(), ApiError> {
        for subject in subjects {
            if !tern_protocol::subject::is_valid_subscription_subject(subject.as_bytes()) {
                return Err(ApiErrorCode::STREAM_INVALID_CONFIG
                    .with(&[&format!("invalid subject {subject:?}")]));
            }
            for (other_name, other) in &self.streams {
                if other_name == name {
                    continue;
                }
                if other
                    .config
                    .subjects
                    .iter()
                    .any(|o| subjects_overlap(o, subject))
                {
                    return Err(ApiErrorCode::STREAM_SUBJECT_OVERLAP.into());
                }
            }
        }
        Ok(())
    }

    async fn stream_info_api(&mut self, name: &str, body: &[u8]) -> Result<Value, ApiError> {
        let request: StreamInfoRequest = if body.is_empty() {
            StreamInfoRequest::default()
        } else {
            parse_body(body)?
        };
        self.stream_info(name, &request).await
    }

    async fn stream_info(
        &self,
        name: &str,
        request: &StreamInfoRequest,
    ) -> Result<Value, ApiError> {
        let info = self.info_of(name, request)?;
        Ok(to_object(&info))
    }

    fn info_of(&self, name: &str, request: &StreamInfoRequest) -> Result<StreamInfo, ApiError> {
        let stream = self.stream(name)?;
        let state = stream
            .store
            .state()
            .map_err(|e| ApiErrorCode::STREAM_STORE_FAILED.with(&[&e]))?;
        let mut out = StreamState {
            messages: state.messages,
            bytes: state.bytes,
            // A stream that never held a message starts at 0, as nats-server's.
            first_seq: if state.last_seq == 0 {
                0
            } else {
                state.first_seq
            },
            first_ts: timestamp(state.first_ts),
            last_seq: state.last_seq,
            last_ts: timestamp(state.last_ts),
            num_subjects: state.num_subjects,
            num_deleted: state.num_deleted,
            consumer_count: stream.consumers.len() as u64,
            ..StreamState::default()
        };
        if !request.subjects_filter.is_empty() {
            if let Ok(subjects) = stream
                .store
                .subjects_state(request.subjects_filter.as_bytes())
            {
                out.subjects = subjects
                    .into_iter()
                    .map(|(s, n)| (String::from_utf8_lossy(&s).into_owned(), n))
                    .collect();
            }
        }
        if request.deleted_details {
            out.deleted = stream.store.deleted_seqs().unwrap_or_default();
        }
        let now = self.now_ns_peek();
        let sources = stream
            .sources
            .iter()
            .map(|c| {
                // Messages of the origin (its filter's) not copied yet.
                let lag = self.streams.get(&c.name).map_or(0, |origin| {
                    origin
                        .store
                        .count_matching(c.filter.as_bytes(), c.next_seq)
                        .unwrap_or(0)
                });
                tern_protocol::jetstream::StreamSourceInfo {
                    name: c.name.clone(),
                    lag,
                    active: if c.active_ns == 0 {
                        -1
                    } else {
                        i64::try_from(now.saturating_sub(c.active_ns)).unwrap_or(i64::MAX)
                    },
                    filter_subject: if c.filter == ">" {
                        String::new()
                    } else {
                        c.filter.clone()
                    },
                    ..Default::default()
                }
            })
            .collect();
        Ok(StreamInfo {
            config: stream.config.clone(),
            created: timestamp_i64(stream.created_ns),
            state: out,
            ts: timestamp_i64(now as i64),
            sources,
            ..StreamInfo::default()
        })
    }

    fn now_ns_peek(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    async fn delete_stream(&mut self, name: &str) -> Result<Value, ApiError> {
        let Some(stream) = self.streams.remove(name) else {
            return Err(ApiErrorCode::STREAM_NOT_FOUND.into());
        };
        for sub in &stream.subs {
            self.server.remove_subscription(&self.account, sub);
        }
        // Its consumers go with it, each with its advisory, and their
        // waiting pull requests end as a deleted consumer's do.
        for (consumer_name, consumer) in &stream.consumers {
            for request in &consumer.waiting {
                self.send_status(&request.reply, 409, "Consumer Deleted");
            }
            self.consumer_action(name, consumer_name, "delete", "DELETED");
        }
        if stream.config.storage == StorageType::File {
            // The name goes now (durably); wiping millions of records takes
            // a while, so it runs on the blocking pool after the reply.
            let storage = self.storage.clone();
            let owned = name.to_owned();
            match tokio::task::spawn_blocking(move || storage.begin_delete_stream(&owned)).await {
                Ok(Ok(wipe)) => {
                    let stream_name = name.to_owned();
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = wipe.finish() {
                            warn!(stream = %stream_name, error = %e, "removing deleted stream data failed; the next start finishes it");
                        }
                    });
                }
                Ok(Err(e)) => warn!(stream = %name, error = %e, "deleting stream data failed"),
                Err(e) => warn!(stream = %name, error = %e, "deleting stream data failed"),
            }
        }
        info!(stream = %name, "stream deleted");
        self.stream_action(name, "delete", "DELETED");
        Ok(json!({ "success": true }))
    }

    fn matching_names(&self, body: &[u8]) -> Result<(StreamNamesRequest, Vec<&String>), ApiError> {
        let request: StreamNamesRequest = if body.is_empty() {
            StreamNamesRequest::default()
        } else {
            parse_body(body)?
        };
        let names = self
            .streams
            .iter()
            .filter(|(_, s)| {
                request.subject.is_empty()
                    || s.config
                        .subjects
                        .iter()
                        .any(|sub| subjects_overlap(sub, &request.subject))
            })
            .map(|(name, _)| name)
            .collect();
        Ok((request, names))
    }

    fn stream_names(&self, body: &[u8]) -> Result<Value, ApiError> {
        let (request, names) = self.matching_names(body)?;
        let offset = request.offset as usize;
        let page: Vec<&String> = names
            .iter()
            .skip(offset)
            .take(NAMES_PAGE)
            .copied()
            .collect();
        Ok(json!({ "total": names.len(), "offset": offset, "limit": NAMES_PAGE, "streams": page }))
    }

    async fn stream_list(&self, body: &[u8]) -> Result<Value, ApiError> {
        let (request, names) = self.matching_names(body)?;
        let offset = request.offset as usize;
        let mut infos = Vec::new();
        for name in names.iter().skip(offset).take(LIST_PAGE) {
            infos.push(self.info_of(name, &StreamInfoRequest::default())?);
        }
        Ok(json!({ "total": names.len(), "offset": offset, "limit": LIST_PAGE, "streams": infos }))
    }

    async fn purge_stream(&mut self, name: &str, body: &[u8]) -> Result<Value, ApiError> {
        let request: StreamPurgeRequest = if body.is_empty() {
            StreamPurgeRequest::default()
        } else {
            parse_body(body)?
        };
        let stream = self.stream(name)?;
        if stream.config.sealed {
            return Err(ApiErrorCode::STREAM_SEALED.into());
        }
        if stream.config.deny_purge {
            return Err(ApiErrorCode::STREAM_PURGE_FAILED.with(&[&"stream purge not permitted"]));
        }
        // A sequence and a count to keep contradict each other (nats-server).
        if request.seq > 0 && request.keep > 0 {
            return Err(ApiErrorCode::BAD_REQUEST.into());
        }
        let purge = PurgeRequest {
            filter: (!request.filter.is_empty()).then(|| Bytes::from(request.filter.clone())),
            up_to_seq: (request.seq > 0).then_some(request.seq),
            keep: (request.keep > 0).then_some(request.keep),
        };
        let store = stream.store.clone();
        let result = tokio::task::spawn_blocking(move || store.purge(purge))
            .await
            .map_err(|e| ApiErrorCode::STREAM_PURGE_FAILED.with(&[&e]))?;
        let purged = result.map_err(|e| ApiErrorCode::STREAM_PURGE_FAILED.with(&[&e]))?;
        Ok(to_object(&StreamPurgeResponse {
            success: true,
            purged,
        }))
    }

    fn get_message(&self, name: &str, body: &[u8]) -> Result<Value, ApiError> {
        let request: MsgGetRequest = parse_body(body)?;
        let stream = self.stream(name)?;
        let message = lookup_message(stream.store.as_ref(), &request)?;
        Ok(to_object(&MsgGetResponse {
            message: StoredMessage {
                subject: String::from_utf8_lossy(&message.subject).into_owned(),
                seq: message.seq,
                hdrs: message.headers.unwrap_or_default(),
                data: message.payload,
                time: timestamp(message.timestamp_ns),
            },
        }))
    }

    async fn delete_message(&mut self, name: &str, body: &[u8]) -> Result<Value, ApiError> {
        let request: MsgDeleteRequest = parse_body(body)?;
        let stream = self.stream(name)?;
        if stream.config.sealed {
            return Err(ApiErrorCode::STREAM_SEALED.into());
        }
        if stream.config.deny_delete {
            return Err(
                ApiErrorCode::STREAM_MSG_DELETE_FAILED.with(&[&"message delete not permitted"])
            );
        }
        let store = stream.store.clone();
        let erase = !request.no_erase;
        let seq = request.seq;
        let result = tokio::task::spawn_blocking(move || store.delete_msg(seq, erase))
            .await
            .map_err(|e| ApiErrorCode::STREAM_MSG_DELETE_FAILED.with(&[&e]))?;
        match result {
            Ok(_) => Ok(json!({ "success": true })),
            // nats-server's answers for a message that is not there, and
            // for one past the stream's end.
            Err(StorageError::NotFound) => {
                let past_end = self
                    .stream(name)
                    .ok()
                    .and_then(|s| s.store.state().ok())
                    .is_some_and(|state| seq > state.last_seq);
                if past_end {
                    Err(ApiErrorCode::STREAM_MSG_DELETE_FAILED.with(&[&"stream store EOF"]))
                } else {
                    Err(ApiErrorCode::SEQUENCE_NOT_FOUND.with(&[&seq]))
                }
            }
            Err(e) => Err(ApiErrorCode::STREAM_MSG_DELETE_FAILED.with(&[&e])),
        }
    }

    /// `DIRECT.GET`: the stored message itself, with `Nats-*` headers, or a
    /// status-only reply (`404 Message Not Found`, `408 Empty Request` or `408 Malformed Request`).
    fn direct_get(&mut self, name: &str, last_subject: &str, body: &[u8], reply: &[u8]) {
        let Some(stream) = self.streams.get(name) else {
            return;
        };
        if !stream.config.allow_direct {
            return;
        }
        let request = if last_subject.is_empty() {
            match serde_json::from_slice::<MsgGetRequest>(body) {
                Ok(r) => r,
                Err(_) => {
                    let status = Headers::status(408, Some("Malformed Request")).encode();
                    self.router.route(None, reply, None, Some(&status), b"");
                    return;
                }
            }
        } else {
            MsgGetRequest {
                last_by_subj: last_subject.to_owned(),
                ..MsgGetRequest::default()
            }
        };
        match lookup_message(stream.store.as_ref(), &request) {
            Ok(message) => {
                let mut headers = decoded_headers(message.headers.as_deref());
                let fields = [
                    ("Nats-Stream", name.to_owned()),
                    (
                        "Nats-Subject",
                        String::from_utf8_lossy(&message.subject).into_owned(),
                    ),
                    ("Nats-Sequence", message.seq.to_string()),
                    (
                        "Nats-Time-Stamp",
                        timestamp(message.timestamp_ns).to_rfc3339(),
                    ),
                ];
                for (k, v) in fields {
                    headers.fields.push((k.to_owned(), v));
                }
                let encoded = headers.encode();
                self.router
                    .route(None, reply, None, Some(&encoded), &message.payload);
            }
            Err(e) if e.code == 404 => {
                let status = Headers::status(404, Some("Message Not Found")).encode();
                self.router.route(None, reply, None, Some(&status), b"");
            }
            // Neither a sequence nor a subject (nats-server's words).
            Err(e) if e.code == 400 => {
                let status = Headers::status(408, Some("Empty Request")).encode();
                self.router.route(None, reply, None, Some(&status), b"");
            }
            // Not "not found": the store could not read it.
            Err(e) => {
                let description = e.description.replace(['\r', '\n'], " ");
                let status = Headers::status(500, Some(&description)).encode();
                self.router.route(None, reply, None, Some(&status), b"");
            }
        }
    }
}

impl JetStream {
    async fn create_consumer(
        &mut self,
        stream_name: &str,
        name_in_subject: Option<&str>,
        filter_in_subject: Option<&str>,
        legacy_durable: bool,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let request: tern_protocol::jetstream::CreateConsumerRequest = parse_body(body)?;
        if legacy_durable && request.config.durable_name.is_empty() {
            return Err(ApiError {
                code: 400,
                err_code: 10018,
                description: "consumer expected to be durable but a durable name was not set"
                    .into(),
            });
        }
        if !request.stream_name.is_empty() && request.stream_name != stream_name {
            return Err(ApiErrorCode::STREAM_MISMATCH.into());
        }
        let now = self.now_ns();
        let stream = self
            .streams
            .get_mut(stream_name)
            .ok_or_else(|| ApiError::from(ApiErrorCode::STREAM_NOT_FOUND))?;
        let mut config = request.config;
        // The names and filter of the subject against the request's, in
        // nats-server's words.
        match name_in_subject {
            Some(subject_name) => {
                if !config.durable_name.is_empty() && config.durable_name != subject_name {
                    return Err(ApiErrorCode::CONSUMER_DURABLE_NAME_NOT_MATCH_SUBJECT.into());
                }
                if config.name.is_empty() && config.durable_name.is_empty() {
                    config.name = subject_name.to_owned();
                }
            }
            None if !config.durable_name.is_empty() => {
                return Err(ApiErrorCode::CONSUMER_EPHEMERAL_WITH_DURABLE_NAME.into());
            }
            None => {}
        }
        if !config.name.is_empty()
            && !config.durable_name.is_empty()
            && config.name != config.durable_name
        {
            return Err(ApiErrorCode::CONSUMER_CREATE_DURABLE_AND_NAME_MISMATCH.into());
        }
        if !config.filter_subject.is_empty() && !config.filter_subjects.is_empty() {
            return Err(ApiErrorCode::CONSUMER_DUPLICATE_FILTER_SUBJECTS.into());
        }
        if config.filter_subjects.iter().any(String::is_empty) {
            return Err(ApiErrorCode::CONSUMER_EMPTY_FILTER.into());
        }
        let overlapping = config.filter_subjects.iter().enumerate().any(|(i, a)| {
            config.filter_subjects[i + 1..]
                .iter()
                .any(|b| subjects_overlap(a, b))
        });
        if overlapping {
            return Err(ApiErrorCode::CONSUMER_OVERLAPPING_SUBJECT_FILTERS.into());
        }
        if filter_in_subject.is_some() && !config.filter_subjects.is_empty() {
            return Err(ApiErrorCode::CONSUMER_MULTIPLE_FILTERS_NOT_ALLOWED.into());
        }
        if let Some(filter) = filter_in_subject {
            if config.filter_subject != filter {
                return Err(ApiErrorCode::CONSUMER_CREATE_FILTER_SUBJECT_MISMATCH.into());
            }
        }
        for name in [&config.durable_name, &config.name] {
            if name.contains(['.', '*', '>']) {
                return Err(ApiErrorCode::CONSUMER_BAD_DURABLE_NAME.into());
            }
        }
        validate_consumer(&config, &stream.config)?;
        let name = if !config.name.is_empty() {
            config.name.clone()
        } else if !config.durable_name.is_empty() {
            config.durable_name.clone()
        } else {
            // An ephemeral consumer gets a generated name.
            (0..8)
                .map(|_| fastrand::alphanumeric().to_ascii_uppercase())
                .collect()
        };
        if name.is_empty() || name.contains(['.', '*', '>', ' ']) {
            return Err(ApiError {
                description: "invalid consumer name".into(),
                ..ApiErrorCode::BAD_REQUEST.into()
            });
        }
        config.name = name.clone();
        // A consumer stays durable once it is: an update without the
        // durable name keeps it (nats-server keeps its state on disk too).
        if config.durable_name.is_empty() {
            if let Some(existing) = stream.consumers.get(&name) {
                config.durable_name = existing.config.durable_name.clone();
            }
        }
        let config = config.with_defaults(&stream.config.consumer_limits);
        if stream.config.retention == tern_protocol::jetstream::RetentionPolicy::WorkQueue {
            if config.ack_policy != tern_protocol::jetstream::AckPolicy::Explicit
                && !stream.consumers.contains_key(&name)
            {
                return Err(ApiErrorCode::CONSUMER_WQ_REQUIRES_EXPLICIT_ACK.into());
            }
            let mine = match config.filters() {
                filters if filters.is_empty() => vec![">"],
                filters => filters,
            };
            // Another consumer's filters, not this one's own (an update).
            let overlap = stream
                .consumers
                .values()
                .filter(|c| c.name != name)
                .any(|other| {
                    let theirs = other.filters();
                    let theirs = if theirs.is_empty() { vec![">"] } else { theirs };
                    theirs
                        .iter()
                        .any(|t| mine.iter().any(|m| subjects_overlap(t, m)))
                });
            if overlap {
                return Err(ApiError {
                    code: 400,
                    err_code: 10100,
                    description: "filtered consumer not unique on workqueue stream".into(),
                });
            }
        }
        let action = request.action;
        if action == tern_protocol::jetstream::ConsumerAction::Update
            && !stream.consumers.contains_key(&name)
        {
            return Err(ApiErrorCode::CONSUMER_DOES_NOT_EXIST.into());
        }
        if let Some(existing) = stream.consumers.get_mut(&name) {
            if existing.config != config
                && action == tern_protocol::jetstream::ConsumerAction::Create
            {
                return Err(ApiErrorCode::CONSUMER_ALREADY_EXISTS.into());
            }
            if existing.config != config {
                // An update: only what nats-server lets change.
                let bound = !existing.config.deliver_subject.is_empty()
                    && self
                        .router
                        .lookup(existing.config.deliver_subject.as_bytes())
                        .is_some_and(|r| !r.is_empty());
                check_consumer_update(&existing.config, &config, bound)?;
                // Saved first: a failed save changes nothing.
                if !config.durable_name.is_empty() {
                    let saved = serde_json::to_vec(&SavedConsumer {
                        config: config.clone(),
                        created_ns: existing.created_ns,
                        initial_upto: existing.initial_upto,
                    })
                    .unwrap_or_default();
                    let mut ops = vec![StreamOp::SaveConsumerConfig {
                        name: name.clone(),
                        config: saved.into(),
                    }];
                    if !existing.is_durable() {
                        // An ephemeral made durable: its position too.
                        ops.push(StreamOp::SaveConsumerState {
                            name: name.clone(),
                            state: existing.state(),
                        });
                    }
                    let store = stream.store.clone();
                    let failed = tokio::task::spawn_blocking(move || store.apply_batch(ops))
                        .await
                        .map_err(|e| ApiErrorCode::STREAM_STORE_FAILED.with(&[&e]))?
                        .into_iter()
                        .find_map(Result::err);
                    if let Some(e) = failed {
                        return Err(ApiErrorCode::STREAM_STORE_FAILED.with(&[&e]));
                    }
                }
                let filters_changed = existing.config.filter_subject != config.filter_subject
                    || existing.config.filter_subjects != config.filter_subjects;
                let deliver_changed = existing.config.deliver_subject != config.deliver_subject;
                existing.config = config;
                existing.dirty = true;
                if deliver_changed {
                    // A new subscriber: no flow control request of the old
                    // one is outstanding, and what the old one had is sent
                    // again now, as nats-server does.
                    existing.flow_control_pending = None;
                    existing.bytes_since_flow_control = 0;
                    let owed: Vec<u64> = existing.pending.keys().copied().collect();
                    existing.redeliver.extend(owed);
                }
                if filters_changed {
                    if existing.initial_upto > 0 && !existing.initial.is_empty() {
                        // Still handing out last messages: the new filters'.
                        existing.initial = last_per_subject(
                            stream.store.as_ref(),
                            &existing.filters(),
                            existing.delivered_stream_seq,
                            existing.initial_upto,
                        );
                    }
                    // What only the old filters took may be wanted by nobody.
                    stream.consumer_removed();
                }
            }
        } else {
            let state = stream
                .store
                .state()
                .map_err(|e| ApiErrorCode::STREAM_STORE_FAILED.with(&[&e]))?;
            let start_time = config
                .opt_start_time
                .as_ref()
                .and_then(|t| t.unix_nanos())
                .and_then(|t| u64::try_from(t).ok());
            let seq_for_time = match start_time {
                Some(t) => stream.store.seq_for_time(t).ok().flatten(),
                None => None,
            };
            let mut consumer = Consumer::new(
                name.clone(),
                config.clone(),
                now as i64,
                state.first_seq,
                state.last_seq,
                seq_for_time,
            );
            match config.deliver_policy {
                tern_protocol::jetstream::DeliverPolicy::LastPerSubject => {
                    consumer.initial =
                        last_per_subject(stream.store.as_ref(), &consumer.filters(), 0, u64::MAX);
                    consumer.initial_upto = state.last_seq;
                    consumer.next_seq = state.last_seq + 1;
                    // Delivered up to just below the first of them, as
                    // nats-server reports it.
                    consumer.delivered_stream_seq = consumer
                        .initial
                        .first()
                        .map_or(state.last_seq, |first| first - 1);
                }
                // The last message its filters take, not the stream's last.
                tern_protocol::jetstream::DeliverPolicy::Last if !consumer.filters().is_empty() => {
                    let last = consumer
                        .filters()
                        .iter()
                        .filter_map(|f| stream.store.last_by_subject(f.as_bytes()).ok().flatten())
                        .map(|m| m.seq)
                        .max();
                    consumer.next_seq = last.unwrap_or(state.last_seq + 1);
                    consumer.delivered_stream_seq = consumer.next_seq - 1;
                }
                _ => {}
            }
            if consumer.is_durable() {
                let saved = serde_json::to_vec(&SavedConsumer {
                    config,
                    created_ns: now as i64,
                    initial_upto: consumer.initial_upto,
                })
                .unwrap_or_default();
                let store = stream.store.clone();
                let state = consumer.state();
                let consumer_name = name.clone();
                tokio::task::spawn_blocking(move || {
                    store.apply_batch(vec![
                        StreamOp::SaveConsumerConfig {
                            name: consumer_name.clone(),
                            config: saved.into(),
                        },
                        StreamOp::SaveConsumerState {
                            name: consumer_name,
                            state,
                        },
                    ])
                })
                .await
                .map_err(|e| ApiErrorCode::STREAM_STORE_FAILED.with(&[&e]))?;
            } else {
                // Ephemeral consumers live in memory only.
                consumer.dirty = false;
            }
            stream.consumers.insert(name.clone(), consumer);
            self.consumer_action(stream_name, &name, "create", "CREATED");
        }
        self.consumer_info(stream_name, &name)
    }

    fn consumer_info(&self, stream_name: &str, name: &str) -> Result<Value, ApiError> {
        let stream = self.stream(stream_name)?;
        let consumer = stream
            .consumers
            .get(name)
            .ok_or_else(|| ApiError::from(ApiErrorCode::CONSUMER_NOT_FOUND))?;
        Ok(to_object(&self.info_of_consumer(
            stream_name,
            stream,
            consumer,
        )))
    }

    fn info_of_consumer(
        &self,
        stream_name: &str,
        stream: &Stream,
        c: &Consumer,
    ) -> tern_protocol::jetstream::ConsumerInfo {
        use tern_protocol::jetstream::{ConsumerInfo, SequenceInfo};
        let num_pending = pending_after(c, stream.store.as_ref());
        ConsumerInfo {
            stream_name: stream_name.to_owned(),
            name: c.name.clone(),
            created: timestamp_i64(c.created_ns),
            config: c.config.clone(),
            delivered: SequenceInfo {
                consumer_seq: c.delivered_consumer_seq,
                stream_seq: c.delivered_stream_seq,
                last_active: (c.last_delivery_ns > 0).then(|| timestamp(c.last_delivery_ns)),
            },
            ack_floor: SequenceInfo {
                consumer_seq: c.ack_floor_consumer_seq,
                stream_seq: c.ack_floor_stream_seq,
                last_active: (c.last_ack_ns > 0).then(|| timestamp(c.last_ack_ns)),
            },
            num_ack_pending: c.pending.len() as u64,
            num_redelivered: c.redelivered_count,
            num_waiting: c.waiting.len() as u64,
            num_pending,
            ts: timestamp_i64(self.now_ns_peek() as i64),
            ..ConsumerInfo::default()
        }
    }

    async fn delete_consumer(&mut self, stream_name: &str, name: &str) -> Result<Value, ApiError> {
        let stream = self
            .streams
            .get_mut(stream_name)
            .ok_or_else(|| ApiError::from(ApiErrorCode::STREAM_NOT_FOUND))?;
        let Some(consumer) = stream.consumers.remove(name) else {
            return Err(ApiErrorCode::CONSUMER_NOT_FOUND.into());
        };
        stream.consumer_removed();
        let store = stream.store.clone();
        let owned = name.to_owned();
        let _ = tokio::task::spawn_blocking(move || store.delete_consumer(&owned)).await;
        // Its waiting pull requests end, as nats-server ends them.
        for request in consumer.waiting {
            self.send_status(&request.reply, 409, "Consumer Deleted");
        }
        self.consumer_action(stream_name, name, "delete", "DELETED");
        Ok(json!({ "success": true }))
    }

    fn consumer_names(
        &self,
        stream_name: &str,
        body: &[u8],
        full: bool,
    ) -> Result<Value, ApiError> {
        #[derive(serde::Deserialize, Default)]
        struct Paging {
            #[serde(default)]
            offset: usize,
        }
        let paging: Paging = parse_body(body)?;
        let stream = self.stream(stream_name)?;
        let total = stream.consumers.len();
        let page = stream
            .consumers
            .values()
            .skip(paging.offset)
            .take(LIST_PAGE);
        if full {
            let infos: Vec<_> = page
                .map(|c| self.info_of_consumer(stream_name, stream, c))
                .collect();
            Ok(
                json!({ "total": total, "offset": paging.offset, "limit": LIST_PAGE, "consumers": infos }),
            )
        } else {
            let names: Vec<&String> = page.map(|c| &c.name).collect();
            Ok(
                json!({ "total": total, "offset": paging.offset, "limit": NAMES_PAGE, "consumers": names }),
            )
        }
    }

    /// `MSG.NEXT`: queue the request, then serve what can be served now.
    fn next_request(&mut self, stream_name: &str, name: &str, body: &[u8], reply: &[u8]) {
        let now = self.now_ns();
        let Ok(request) = tern_protocol::jetstream::NextRequest::parse(body) else {
            self.send_status(reply, 400, "Bad Request");
            return;
        };
        let Some(consumer) = self
            .streams
            .get_mut(stream_name)
            .and_then(|s| s.consumers.get_mut(name))
        else {
            // nats-server does not answer a pull request for a consumer
            // that is not there (the client's request times out).
            return;
        };
        if consumer.is_push() {
            self.send_status(reply, 409, "Consumer is push based");
            return;
        }
        consumer.last_active_ns = now;
        if !consumer.add_request(Bytes::copy_from_slice(reply), &request, now) {
            self.send_status(reply, 409, "Exceeded MaxWaiting");
            return;
        }
        self.serve_consumer(stream_name, name, now);
    }

    /// A status that ends a pull request, with what it still asked for
    /// (`Nats-Pending-Messages`, `Nats-Pending-Bytes`), as nats-server sends.
    fn send_status_pending(
        &mut self,
        reply: &[u8],
        code: u16,
        description: &str,
        msgs: u64,
        bytes: u64,
    ) {
        let mut headers = Headers::status(code, Some(description));
        headers
            .fields
            .push(("Nats-Pending-Messages".into(), msgs.to_string()));
        headers
            .fields
            .push(("Nats-Pending-Bytes".into(), bytes.to_string()));
        self.router
            .route(None, reply, None, Some(&headers.encode()), b"");
    }

    fn send_status(&mut self, reply: &[u8], code: u16, description: &str) {
        let headers = Headers::status(code, Some(description)).encode();
        self.router.route(None, reply, None, Some(&headers), b"");
    }

    /// An acknowledgement on `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`.
    fn handle_ack(&mut self, msg: &InternalMsg) {
        let subject = String::from_utf8_lossy(&msg.subject).into_owned();
        let tokens: Vec<&str> = subject.split('.').collect();
        let (stream_name, consumer_name, seq, delivery_seq) = match tokens.as_slice() {
            ["$JS", "ACK", stream, consumer, _delivered, sseq, cseq, ..] => (
                *stream,
                *consumer,
                sseq.parse::<u64>().unwrap_or(0),
                cseq.parse::<u64>().unwrap_or(0),
            ),
            ["$JS", "ACK", stream, consumer, _delivered, sseq] => {
                (*stream, *consumer, sseq.parse::<u64>().unwrap_or(0), 0)
            }
            _ => return,
        };
        let Some(kind) = AckKind::parse(&msg.payload) else {
            return;
        };
        let now = self.now_ns();
        let Some(consumer) = self
            .streams
            .get_mut(stream_name)
            .and_then(|s| s.consumers.get_mut(consumer_name))
        else {
            return;
        };
        let before = consumer.pending.get(&seq).copied();
        let sampled = matches!(kind, AckKind::Ack | AckKind::Next)
            && before.is_some()
            && consumer.samples_ack();
        let finished = consumer.on_ack(seq, kind, now, delivery_seq);
        if let (true, Some(pending)) = (sampled, before) {
            let ack_time = if pending.delivered_ns > 0 {
                now.saturating_sub(pending.delivered_ns)
            } else {
                0
            };
            self.advise(
                &format!("$JS.EVENT.METRIC.CONSUMER.ACK.{stream_name}.{consumer_name}"),
                json!({"type": "io.nats.jetstream.metric.v1.consumer_ack", "stream": stream_name,
                    "consumer": consumer_name, "consumer_seq": delivery_seq, "stream_seq": seq,
                    "ack_time": ack_time, "deliveries": pending.deliveries}),
            );
        }
        if let (AckKind::Nak { .. }, Some(pending)) = (kind, before) {
            self.advise(
                &format!("$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED.{stream_name}.{consumer_name}"),
                json!({"type": "io.nats.jetstream.advisory.v1.nak", "stream": stream_name,
                    "consumer": consumer_name, "consumer_seq": delivery_seq,
                    "stream_seq": seq, "deliveries": pending.deliveries}),
            );
        }
        if !finished.is_empty() {
            if let (AckKind::Term, Some(pending)) = (kind, before) {
                let reason = String::from_utf8_lossy(
                    msg.payload
                        .trim_ascii()
                        .strip_prefix(b"+TERM")
                        .unwrap_or_default(),
                )
                .trim()
                .to_owned();
                self.give_up(
                    stream_name,
                    consumer_name,
                    seq,
                    pending.deliveries,
                    Some(delivery_seq),
                    &reason,
                );
            }
            for seq in finished {
                self.retire_if_consumed(stream_name, seq);
            }
        }
        let Some(reply) = msg.reply.clone() else {
            return;
        };
        let pull = self
            .streams
            .get(stream_name)
            .and_then(|s| s.consumers.get(consumer_name))
            .is_some_and(|c| !c.is_push());
        if kind == AckKind::Next && pull {
            // `+NXT`: acked, and what follows (empty for one message, a
            // batch size, or a pull request's JSON) asks for more, answered
            // on the ack's reply subject, as nats-server does.
            let body = msg
                .payload
                .trim_ascii()
                .strip_prefix(b"+NXT")
                .unwrap_or_default();
            self.next_request(stream_name, consumer_name, body, &reply);
            return;
        }
        // An ack with a reply subject (a client's ack_sync): answered empty.
        self.reply(&reply, b"");
    }

    /// A client answered a flow control request: the push consumer may go on.
    fn handle_flow_control(&mut self, msg: &InternalMsg) {
        let subject = String::from_utf8_lossy(&msg.subject).into_owned();
        let tokens: Vec<&str> = subject.split('.').collect();
        let ["$JS", "FC", stream_name, consumer_name, ..] = tokens.as_slice() else {
            return;
        };
        if let Some(consumer) = self
            .streams
            .get_mut(*stream_name)
            .and_then(|s| s.consumers.get_mut(*consumer_name))
        {
            if consumer.flow_control_pending.as_deref() == Some(subject.as_str()) {
                consumer.flow_control_pending = None;
            }
        }
    }

    /// A message the consumer gave up on (`max_deliver` reached, or `+TERM`):
    /// an advisory on `$JS.EVENT.ADVISORY.CONSUMER.{MAX_DELIVERIES,
    /// MSG_TERMINATED}.<stream>.<consumer>`, and — if the consumer's metadata
    /// names a `tern.dead_letter_subject` — the message itself republished
    /// there (with `Nats-Stream`, `Nats-Sequence`, `Nats-Consumer` and
    /// `Nats-Dead-Letter-Reason` headers), for a stream that captures it.
    fn give_up(
        &mut self,
        stream_name: &str,
        consumer_name: &str,
        seq: u64,
        deliveries: u64,
        consumer_seq: Option<u64>,
        reason: &str,
    ) {
        let terminated = consumer_seq.is_some();
        warn!(stream = %stream_name, consumer = %consumer_name, seq, deliveries, terminated, "message given up");
        let (subject, advisory) = if let Some(consumer_seq) = consumer_seq {
            (
                format!("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream_name}.{consumer_name}"),
                json!({
                    "type": "io.nats.jetstream.advisory.v1.terminated",
                    "stream": stream_name, "consumer": consumer_name,
                    "consumer_seq": consumer_seq, "stream_seq": seq, "deliveries": deliveries, "reason": reason,
                }),
            )
        } else {
            (
                format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream_name}.{consumer_name}"),
                json!({
                    "type": "io.nats.jetstream.advisory.v1.max_deliver",
                    "stream": stream_name, "consumer": consumer_name,
                    "stream_seq": seq, "deliveries": deliveries,
                }),
            )
        };
        self.advise(&subject, advisory);

        let Some(stream) = self.streams.get(stream_name) else {
            return;
        };
        let Some(target) = stream
            .consumers
            .get(consumer_name)
            .and_then(|c| c.config.metadata.get("tern.dead_letter_subject"))
            .cloned()
        else {
            return;
        };
        let Ok(message) = stream.store.get(seq) else {
            return;
        };
        let mut headers = decoded_headers(message.headers.as_deref());
        for (k, v) in [
            ("Nats-Stream", stream_name.to_owned()),
            ("Nats-Sequence", seq.to_string()),
            ("Nats-Consumer", consumer_name.to_owned()),
            (
                "Nats-Subject",
                String::from_utf8_lossy(&message.subject).into_owned(),
            ),
            (
                "Nats-Dead-Letter-Reason",
                if terminated {
                    "terminated"
                } else {
                    "max_deliveries"
                }
                .to_owned(),
            ),
        ] {
            headers.fields.push((k.to_owned(), v));
        }
        let encoded = headers.encode();
        self.router.route(
            None,
            target.as_bytes(),
            None,
            Some(&encoded),
            &message.payload,
        );
    }

    /// Under `workqueue` and `interest` retention a message goes once every
    /// consumer that takes it has acknowledged it. The delete is queued and
    /// written with the consumers' positions (see
    /// [`JetStream::save_consumers`]).
    fn retire_if_consumed(&mut self, stream_name: &str, seq: u64) {
        let Some(stream) = self.streams.get_mut(stream_name) else {
            return;
        };
        if stream.config.retention == tern_protocol::jetstream::RetentionPolicy::Limits {
            return;
        }
        let Ok(message) = stream.store.get(seq) else {
            return;
        };
        self.retire_message_if_consumed(stream_name, &message);
    }

    /// [`JetStream::retire_if_consumed`] for a message already read.
    fn retire_message_if_consumed(
        &mut self,
        stream_name: &str,
        message: &tern_storage::StoredMessage,
    ) {
        if self
            .streams
            .get(stream_name)
            .is_none_or(|s| s.config.retention == tern_protocol::jetstream::RetentionPolicy::Limits)
        {
            return;
        }
        let sourced = source_interest(&self.streams, stream_name);
        let Some(stream) = self.streams.get_mut(stream_name) else {
            return;
        };
        let seq = message.seq;
        let consumed = stream.consumers.values().all(|c| {
            !c.takes(&message.subject)
                || (seq < c.next_seq
                    && !c.pending.contains_key(&seq)
                    && !c.redeliver.contains(&seq)
                    && !c.initial.contains(&seq))
        }) && !sourced.iter().any(|(filter, next)| {
            seq >= *next && tern_protocol::subject::matches(filter.as_bytes(), &message.subject)
        });
        if consumed {
            stream.retired.push(seq);
        }
    }

    /// `sources`: copies what the origin streams stored since the last pass
    /// into the streams that source them, through the publish path (so
    /// limits, de-duplication and retention apply), each copy with a
    /// `Nats-Stream-Source: <origin> <sequence>` header. Each source's
    /// position is written in the same batch as its copies.
    async fn copy_sources(&mut self) {
        let targets: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.sources.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        for target in targets {
            let cursors = match self.streams.get(&target) {
                Some(s) => s.sources.clone(),
                None => continue,
            };
            let mut msgs = Vec::new();
            let mut moved = Vec::new();
            // (origin, sequence) of every message this pass takes.
            let mut taken: Vec<(String, u64)> = Vec::new();
            for (i, cursor) in cursors.iter().enumerate() {
                let Some(origin) = self.streams.get(&cursor.name) else {
                    continue;
                };
                let store = origin.store.clone();
                let (mut next, mut bytes, mut count) = (cursor.next_seq, 0usize, 0usize);
                while count < SOURCE_BATCH && bytes < SOURCE_BATCH_BYTES {
                    let message = match store.next_matching(next, cursor.filter.as_bytes()) {
                        Ok(Some(message)) => message,
                        Ok(None) => break,
                        // Damaged: passed over, as a consumer passes over it.
                        Err(StorageError::Corrupt { seq, .. }) if seq >= next => {
                            next = seq + 1;
                            count += 1;
                            continue;
                        }
                        Err(_) => break,
                    };
                    next = message.seq + 1;
                    count += 1;
                    bytes += message.payload.len();
                    taken.push((cursor.name.clone(), message.seq));
                    let mut headers = decoded_headers(message.headers.as_deref());
                    // A copy of one of this stream's own messages (sources
                    // that go round in a circle): not again.
                    let own = format!("{target} ");
                    if headers
                        .fields
                        .iter()
                        .any(|(k, v)| k == "Nats-Stream-Source" && v.starts_with(&own))
                    {
                        continue;
                    }
                    // Expectations were the origin's to check.
                    headers
                        .fields
                        .retain(|(k, _)| !k.starts_with("Nats-Expected-"));
                    headers.fields.push((
                        "Nats-Stream-Source".to_owned(),
                        format!("{} {}", cursor.name, message.seq),
                    ));
                    msgs.push(crate::client::InternalMsg::local(
                        Bytes::from(format!("{STREAM_SID_PREFIX}{target}")),
                        message.subject,
                        Some(headers.encode()),
                        message.payload,
                    ));
                }
                if next != cursor.next_seq {
                    moved.push((i, next));
                }
            }
            if moved.is_empty() {
                continue;
            }
            // The positions go in the same write as the copies (alone when
            // every message passed over was one not to copy).
            let saves: Vec<StreamOp> = moved
                .iter()
                .filter_map(|&(i, next)| Some(source_position(&cursors.get(i)?.name, next)))
                .collect();
            let written = if msgs.is_empty() {
                let Some(store) = self.streams.get(&target).map(|s| s.store.clone()) else {
                    continue;
                };
                tokio::task::spawn_blocking(move || store.apply_batch(saves))
                    .await
                    .is_ok_and(|results| results.iter().all(Result::is_ok))
            } else {
                let retired = self.streams.get(&target).map_or(0, |s| s.retired.len());
                let appends = msgs.into_iter().map(|m| (m, retired)).collect();
                let failed = self
                    .store_messages_with(appends, BTreeMap::from([(target.clone(), saves)]))
                    .await;
                !failed.contains(&target)
            };
            // A failed write took the positions with it: the same messages
            // are copied again at the next pass.
            if !written {
                continue;
            }
            let now = self.now_ns();
            if let Some(stream) = self.streams.get_mut(&target) {
                for (i, next) in moved {
                    if let Some(cursor) = stream.sources.get_mut(i) {
                        cursor.next_seq = next;
                        cursor.active_ns = now;
                    }
                }
            }
            // An interest origin kept what was not copied yet; copied, it
            // may go now.
            for (origin, seq) in taken {
                let interest = self.streams.get(&origin).is_some_and(|o| {
                    o.config.retention == tern_protocol::jetstream::RetentionPolicy::Interest
                });
                if interest {
                    self.retire_if_consumed(&origin, seq);
                }
            }
        }
    }

    /// Interest retention: after a consumer went, the messages no remaining
    /// consumer wants are retired, [`RECHECK_PER_TICK`] sequences per tick
    /// and stream, as nats-server removes them.
    fn recheck_interest(&mut self) {
        let due: Vec<(String, (u64, u64))> = self
            .streams
            .iter()
            .filter_map(|(name, s)| s.recheck.map(|range| (name.clone(), range)))
            .collect();
        for (name, (from, to)) in due {
            let (mut seq, mut bytes, mut checked) = (from, 0usize, 0u64);
            while seq <= to && checked < RECHECK_PER_TICK && bytes < RECHECK_BYTES_PER_TICK {
                let Some(stream) = self.streams.get(&name) else {
                    break;
                };
                // The next stored message, whatever was removed between.
                let message = match stream.store.next_matching(seq, b">") {
                    Ok(Some(message)) if message.seq <= to => message,
                    Ok(_) => {
                        seq = to.saturating_add(1);
                        break;
                    }
                    // Damaged: passed over, and kept.
                    Err(StorageError::Corrupt { seq: bad, .. }) if bad >= seq => {
                        seq = bad.saturating_add(1);
                        checked += 1;
                        continue;
                    }
                    // Unreadable for now: tried again at the next tick.
                    Err(_) => break,
                };
                bytes += message.payload.len() + message.subject.len();
                checked += 1;
                seq = message.seq.saturating_add(1);
                self.retire_message_if_consumed(&name, &message);
            }
            if let Some(stream) = self.streams.get_mut(&name) {
                stream.recheck = if seq <= to {
                    Some((seq, to))
                } else if std::mem::take(&mut stream.recheck_again) {
                    let first = stream.store.state().map_or(1, |state| state.first_seq);
                    Some((first.max(1), to))
                } else {
                    None
                };
            }
        }
    }

    /// Redelivery deadlines, request expiry and heartbeats.
    fn tick_consumers(&mut self) {
        let now = self.now_ns();
        let names: Vec<(String, String)> = self
            .streams
            .iter()
            .flat_map(|(s, st)| st.consumers.keys().map(move |c| (s.clone(), c.clone())))
            .collect();
        for (stream_name, consumer_name) in names {
            let mut statuses: Vec<(Bytes, u16, &'static str)> = Vec::new();
            let mut exhausted: Vec<(u64, u64)> = Vec::new();
            let mut expired: Vec<(Bytes, u64, u64)> = Vec::new();
            if let Some(consumer) = self
                .streams
                .get_mut(&stream_name)
                .and_then(|s| s.consumers.get_mut(&consumer_name))
            {
                let max_deliver = u64::try_from(consumer.config.max_deliver).unwrap_or(0);
                for seq in consumer.expire_pending(now) {
                    exhausted.push((seq, max_deliver));
                }
                consumer.waiting.retain_mut(|r| {
                    if r.expires_ns.is_some_and(|e| e <= now) {
                        expired.push((
                            r.reply.clone(),
                            r.remaining,
                            r.remaining_bytes.unwrap_or(0),
                        ));
                        return false;
                    }
                    if let Some(every) = r.heartbeat_ns {
                        if r.next_heartbeat_ns <= now {
                            r.next_heartbeat_ns = now + every;
                            statuses.push((r.reply.clone(), 100, "Idle Heartbeat"));
                        }
                    }
                    true
                });
            }
            for (reply, code, text) in statuses {
                self.send_status(&reply, code, text);
            }
            for (reply, msgs, bytes) in expired {
                self.send_status_pending(&reply, 408, "Request Timeout", msgs, bytes);
            }
            for (seq, deliveries) in exhausted {
                self.give_up(&stream_name, &consumer_name, seq, deliveries, None, "");
            }
            self.serve_consumer(&stream_name, &consumer_name, now);
        }
    }

    fn serve_all_consumers(&mut self) {
        let now = self.now_ns();
        let names: Vec<(String, String)> = self
            .streams
            .iter()
            .flat_map(|(s, st)| {
                st.consumers
                    .iter()
                    .filter(|(_, c)| !c.waiting.is_empty())
                    .map(move |(c, _)| (s.clone(), c.clone()))
            })
            .collect();
        for (stream_name, consumer_name) in names {
            self.serve_consumer(&stream_name, &consumer_name, now);
        }
    }

    /// Hands messages to the consumer's waiting requests while it has both.
    fn serve_consumer(&mut self, stream_name: &str, consumer_name: &str, now: u64) {
        let push = self
            .streams
            .get(stream_name)
            .and_then(|s| s.consumers.get(consumer_name))
            .is_some_and(Consumer::is_push);
        if push {
            self.serve_push(stream_name, consumer_name, now);
            return;
        }
        let mut sends: Vec<PullSend> = Vec::new();
        let Some(stream) = self.streams.get_mut(stream_name) else {
            return;
        };
        let store = stream.store.clone();
        let Some(consumer) = stream.consumers.get_mut(consumer_name) else {
            return;
        };
        let mut remaining = pending_after(consumer, store.as_ref());
        // A bounded amount of work per call keeps the service responsive.
        let mut budget = 10_000;
        while let Some(request) = consumer.waiting.front() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            if request.remaining == 0 {
                consumer.waiting.pop_front();
                continue;
            }
            let no_wait = request.no_wait;
            let byte_budget = request.remaining_bytes;
            if !consumer.can_deliver_more() {
                break;
            }
            let next_before = consumer.next_seq;
            let next = next_for(consumer, store.as_ref());
            let Some(message) = next else {
                // Nothing to give now.
                if no_wait {
                    if let Some(request) = consumer.waiting.pop_front() {
                        // Ran dry: 404 if it got nothing, else 408 with what
                        // it still asked for, as nats-server 2.9.
                        let code = if request.delivered > 0 { 408 } else { 404 };
                        let left = (request.remaining, request.remaining_bytes.unwrap_or(0));
                        sends.push((
                            request.reply,
                            Bytes::new(),
                            empty_message(),
                            Some((code, left.0, left.1)),
                        ));
                    }
                    continue;
                }
                break;
            };
            // As nats-server counts a delivery against max_bytes: subject,
            // ack reply subject, headers and payload.
            // Only a request with max_bytes needs the size, so only then is
            // the ack subject it will get spelled out ahead of the delivery.
            let ack_len = if byte_budget.is_some() {
                let deliveries = consumer
                    .pending
                    .get(&message.seq)
                    .map_or(0, |p| p.deliveries)
                    + 1;
                // As take_pending will count it once the delivery is recorded.
                let pending_count = if deliveries <= 1 {
                    remaining.saturating_sub(1)
                } else {
                    remaining
                };
                format!(
                    "$JS.ACK.{stream_name}.{consumer_name}.{deliveries}.{}.{}.{}.{pending_count}",
                    message.seq,
                    consumer.delivered_consumer_seq + 1,
                    message.timestamp_ns
                )
                .len()
            } else {
                0
            };
            let size = (message.subject.len()
                + ack_len
                + message.headers.as_ref().map_or(0, |h| h.len())
                + message.payload.len()) as u64;
            if byte_budget.is_some_and(|budget| size > budget) {
                // Put the message back where it came from, and end the request
                // as nats-server does when max_bytes is reached.
                consumer.put_back(message.seq, next_before);
                if let Some(request) = consumer.waiting.pop_front() {
                    let left = (request.remaining, request.remaining_bytes.unwrap_or(0));
                    sends.push((
                        request.reply,
                        Bytes::new(),
                        empty_message(),
                        Some((409, left.0, left.1)),
                    ));
                }
                continue;
            }
            let (consumer_seq, deliveries) = consumer.record_delivery(message.seq, now);
            if message.seq >= consumer.next_seq {
                consumer.next_seq = message.seq + 1;
            }
            let pending_count = take_pending(&mut remaining, consumer, message.seq);
            let ack = format!(
                "$JS.ACK.{stream_name}.{consumer_name}.{deliveries}.{}.{consumer_seq}.{}.{pending_count}",
                message.seq, message.timestamp_ns
            );
            let Some(request) = consumer.waiting.front_mut() else {
                break;
            };
            request.remaining -= 1;
            if let Some(budget) = &mut request.remaining_bytes {
                *budget = budget.saturating_sub(size);
            }
            request.delivered += 1;
            let reply = request.reply.clone();
            // Done when the count is, or when max_bytes is used up exactly
            // (nats-server ends the request then, without a status).
            if request.remaining == 0 || request.remaining_bytes == Some(0) {
                consumer.waiting.pop_front();
            }
            sends.push((reply, Bytes::from(ack), message, None));
        }
        let (headers_only, acks_required) =
            consumer_flags(&self.streams, stream_name, consumer_name);
        let mut delivered = Vec::new();
        for (reply, ack, message, status) in sends {
            match status {
                Some((409, msgs, bytes)) => self.send_status_pending(
                    &reply,
                    409,
                    "Message Size Exceeds MaxBytes",
                    msgs,
                    bytes,
                ),
                Some((408, msgs, bytes)) => {
                    self.send_status_pending(&reply, 408, "Request Timeout", msgs, bytes)
                }
                Some(_) => self.send_status(&reply, 404, "No Messages"),
                None => {
                    self.deliver_one(&reply, &ack, &message, headers_only);
                    delivered.push(message.seq);
                }
            }
        }
        if !acks_required {
            // Ack policy none: delivered is done with (interest retention).
            for seq in delivered {
                self.retire_if_consumed(stream_name, seq);
            }
        }
    }

    /// Whether a push consumer has someone to deliver to: a subscriber of its
    /// deliver subject or, with a `deliver_group`, a member of that queue
    /// group (nats-server does not push to others then).
    fn delivery_interest(&mut self, deliver: &str, group: &str) -> bool {
        self.router.lookup(deliver.as_bytes()).is_some_and(|r| {
            if group.is_empty() {
                !r.is_empty()
            } else {
                r.queues.iter().any(|q| &*q.name == group)
            }
        })
    }

    /// Pushes messages to a push consumer's deliver subject while someone
    /// listens there and `max_ack_pending` allows.
    fn serve_push(&mut self, stream_name: &str, consumer_name: &str, now: u64) {
        let Some((deliver, group)) = self
            .streams
            .get(stream_name)
            .and_then(|s| s.consumers.get(consumer_name))
            .map(|c| {
                (
                    c.config.deliver_subject.clone(),
                    c.config.deliver_group.clone(),
                )
            })
        else {
            return;
        };
        // As nats-server, push only once someone subscribes to the deliver subject.
        if !self.delivery_interest(&deliver, &group) {
            return;
        }
        let mut sends = Vec::new();
        let headers_only;
        let burst = self.server.opts.max_payload as u64;
        {
            let Some(stream) = self.streams.get_mut(stream_name) else {
                return;
            };
            let store = stream.store.clone();
            let Some(consumer) = stream.consumers.get_mut(consumer_name) else {
                return;
            };
            consumer.last_active_ns = now;
            headers_only = consumer.config.headers_only;
            if consumer.flow_control_pending.is_some() {
                return;
            }
            let mut remaining = pending_after(consumer, store.as_ref());
            let mut budget = 10_000;
            while budget > 0 && consumer.can_deliver_more() {
                budget -= 1;
                let next_before = consumer.next_seq;
                let Some(message) = next_for(consumer, store.as_ref()) else {
                    break;
                };
                if consumer.config.replay_policy == tern_protocol::jetstream::ReplayPolicy::Original
                    && !consumer.pending.contains_key(&message.seq)
                {
                    // Replay at the pace the messages were stored: the first
                    // goes now, each later one when as much time has passed
                    // since the first as passed between them.
                    let (started, first_ts) = *consumer
                        .replay_origin
                        .get_or_insert((now, message.timestamp_ns));
                    let due = started + message.timestamp_ns.saturating_sub(first_ts);
                    if due > now {
                        consumer.put_back(message.seq, next_before);
                        break;
                    }
                }
                let size = (message.subject.len()
                    + message.headers.as_ref().map_or(0, |h| h.len())
                    + message.payload.len()) as u64;
                if !consumer.rate_allows(size, now, burst) {
                    // Over rate_limit_bps: back where it came from, and on
                    // at a later tick.
                    consumer.put_back(message.seq, next_before);
                    break;
                }
                let (consumer_seq, deliveries) = consumer.record_delivery(message.seq, now);
                let ack = format!(
                    "$JS.ACK.{stream_name}.{consumer_name}.{deliveries}.{}.{consumer_seq}.{}.{}",
                    message.seq,
                    message.timestamp_ns,
                    take_pending(&mut remaining, consumer, message.seq)
                );
                let flow_control = consumer.flow_control_due(stream_name, size);
                sends.push((ack, message, flow_control.clone()));
                if flow_control.is_some() {
                    // Nothing more until the client answers.
                    break;
                }
            }
            if !sends.is_empty() {
                consumer.last_sent_ns = now;
            }
        }
        let (_, acks_required) = consumer_flags(&self.streams, stream_name, consumer_name);
        for (ack, message, flow_control) in sends {
            self.deliver_one(deliver.as_bytes(), ack.as_bytes(), &message, headers_only);
            if !acks_required {
                // Ack policy none: delivered is done with (interest retention).
                self.retire_if_consumed(stream_name, message.seq);
            }
            if let Some(reply) = flow_control {
                let headers = Headers::status(100, Some("FlowControl Request")).encode();
                self.router.route(
                    None,
                    deliver.as_bytes(),
                    Some(reply.as_bytes()),
                    Some(&headers),
                    b"",
                );
            }
        }
    }

    /// Sends a message to a consumer's client: the pull request's reply
    /// subject or the push consumer's deliver subject; with `headers_only`,
    /// its headers and its size (`Nats-Msg-Size`) without the payload.
    fn deliver_one(
        &mut self,
        to: &[u8],
        ack: &[u8],
        message: &tern_storage::StoredMessage,
        headers_only: bool,
    ) {
        {
            if headers_only {
                let mut headers = decoded_headers(message.headers.as_deref());
                headers
                    .fields
                    .push(("Nats-Msg-Size".into(), message.payload.len().to_string()));
                let encoded = headers.encode();
                self.router
                    .route_to(None, to, &message.subject, Some(ack), Some(&encoded), b"");
            } else {
                self.router.route_to(
                    None,
                    to,
                    &message.subject,
                    Some(ack),
                    message.headers.as_deref(),
                    &message.payload,
                );
            }
        }
    }

    /// Idle heartbeats of push consumers, and removal of ephemeral consumers
    /// nobody used for their `inactive_threshold`.
    fn push_heartbeats_and_cleanup(&mut self, now: u64) {
        let mut heartbeats: Vec<(String, u64, u64, Option<String>)> = Vec::new();
        let mut idle: Vec<(String, String)> = Vec::new();
        let mut interest_cache: HashMap<(String, String), bool> = HashMap::new();
        let candidates: Vec<(String, String)> = self
            .streams
            .values()
            .flat_map(|st| {
                st.consumers.values().filter(|c| c.is_push()).map(|c| {
                    (
                        c.config.deliver_subject.clone(),
                        c.config.deliver_group.clone(),
                    )
                })
            })
            .collect();
        for (deliver, group) in candidates {
            let interest = self.delivery_interest(&deliver, &group);
            interest_cache.insert((deliver, group), interest);
        }
        for (stream_name, stream) in &mut self.streams {
            for consumer in stream.consumers.values_mut() {
                let key = (
                    consumer.config.deliver_subject.clone(),
                    consumer.config.deliver_group.clone(),
                );
                let interest =
                    consumer.is_push() && interest_cache.get(&key).copied().unwrap_or(false);
                if interest {
                    consumer.last_active_ns = now;
                }
                if !consumer.is_durable() {
                    let threshold = u64::try_from(consumer.config.inactive_threshold)
                        .ok()
                        .filter(|&t| t > 0)
                        .unwrap_or(EPHEMERAL_INACTIVE_NS);
                    if consumer.waiting.is_empty()
                        && now.saturating_sub(consumer.last_active_ns) > threshold
                    {
                        idle.push((stream_name.clone(), consumer.name.clone()));
                        continue;
                    }
                }
                let every = u64::try_from(consumer.config.idle_heartbeat).unwrap_or(0);
                if interest && every > 0 && now.saturating_sub(consumer.last_sent_ns) >= every {
                    consumer.last_sent_ns = now;
                    heartbeats.push((
                        consumer.config.deliver_subject.clone(),
                        consumer.delivered_consumer_seq,
                        consumer.delivered_stream_seq,
                        consumer.flow_control_pending.clone(),
                    ));
                }
            }
        }
        for (stream_name, name) in idle {
            if let Some(stream) = self.streams.get_mut(&stream_name) {
                stream.consumers.remove(&name);
                stream.consumer_removed();
            }
            self.consumer_action(&stream_name, &name, "delete", "DELETED");
        }
        for (deliver, consumer_seq, stream_seq, stalled) in heartbeats {
            let mut headers = Headers::status(100, Some("Idle Heartbeat"));
            headers
                .fields
                .push(("Nats-Last-Consumer".into(), consumer_seq.to_string()));
            headers
                .fields
                .push(("Nats-Last-Stream".into(), stream_seq.to_string()));
            // A flow control request the client may have missed: where to
            // answer it (as nats-server tells stalled consumers).
            if let Some(reply) = stalled {
                headers.fields.push(("Nats-Consumer-Stalled".into(), reply));
            }
            let encoded = headers.encode();
            self.router
                .route(None, deliver.as_bytes(), None, Some(&encoded), b"");
        }
    }

    /// Persists the state of consumers that changed, and deletes messages
    /// retention says are consumed.
    ///
    /// Consumer positions, and the deletes of messages retired by acks
    /// (workqueue and interest retention), are written at most every
    /// [`CONSUMER_TICK`] unless `force` or a stream has [`RETIRED_MAX`]
    /// deletes waiting: each write is a sync, and what a
    /// crash loses of them only means redelivery (at least once), so acks
    /// do not each wait for one. Until then a retired message is gone for
    /// its consumers but still counted by its stream: API requests other
    /// than pull requests force the write first (see
    /// [`JetStream::handle_batch`]), and a stream's next publishes take its
    /// retired messages' deletes along (see [`JetStream::store_messages`]).
    async fn save_consumers(&mut self, force: bool) {
        let due = force
            || self.last_consumer_save.elapsed() >= CONSUMER_TICK
            || self
                .streams
                .values()
                .any(|s| s.retired.len() >= RETIRED_MAX);
        if !due {
            return;
        }
        self.last_consumer_save = std::time::Instant::now();
        for stream in self.streams.values_mut() {
            let (retired, ops) = consumers_owe(stream, stream.retired.len(), true);
            if !ops.is_empty() {
                let (store, n) = (stream.store.clone(), ops.len());
                let results = tokio::task::spawn_blocking(move || store.apply_batch(ops))
                    .await
                    .unwrap_or_default();
                still_owed(stream, &retired, n, &results);
            }
        }
    }
}

fn empty_message() -> tern_storage::StoredMessage {
    tern_storage::StoredMessage {
        seq: 0,
        subject: Bytes::new(),
        headers: None,
        payload: Bytes::new(),
        timestamp_ns: 0,
    }
}

/// After a restart, the `Nats-Msg-Id`s of the messages stored within the
/// duplicate window, and the last message's id, as nats-server rebuilds
/// them: a publish retried across a restart is still a duplicate.
fn rebuild_dedupe(stream: &mut Stream, now: u64) {
    let window = u64::try_from(stream.config.duplicate_window.max(0)).unwrap_or(0);
    if window == 0 {
        return;
    }
    let store = stream.store.clone();
    let Ok(state) = store.state() else {
        return;
    };
    if state.messages == 0 {
        return;
    }
    let Ok(Some(mut seq)) = store.seq_for_time(now.saturating_sub(window)) else {
        return;
    };
    while seq <= state.last_seq {
        let message = match store.next_matching(seq, b">") {
            Ok(Some(message)) => message,
            Ok(None) => break,
            // Unreadable: passed over, as nats-server does.
            Err(StorageError::Corrupt { seq: bad, .. }) if bad >= seq => {
                seq = bad + 1;
                continue;
            }
            Err(e) => {
                warn!(stream = %stream.config.name, error = %e, "rebuilding de-duplication ids stopped");
                break;
            }
        };
        seq = message.seq + 1;
        let id = message
            .headers
            .as_deref()
            .and_then(|h| Headers::decode(h).ok())
            .and_then(|h| h.get("Nats-Msg-Id").map(str::to_owned))
            .filter(|id| !id.is_empty());
        if let Some(id) = &id {
            stream
                .dedupe
                .insert(id.clone(), (message.seq, message.timestamp_ns));
        }
        if message.seq == state.last_seq {
            stream.last_msg_id = id;
        }
    }
}

/// What a serving pass sends for a pull request: (reply subject, ack
/// subject, message, status). A status ends the request: its code, and the
/// messages and bytes the request still asked for.
type PullSend = (
    Bytes,
    Bytes,
    tern_storage::StoredMessage,
    Option<(u16, u64, u64)>,
);

/// A stored message to republish: subject, headers, payload, sequence, the
/// subject's previous sequence, and when it was stored.
type Republished = (Bytes, Option<Bytes>, Bytes, u64, u64, u64);

/// A stream's `republish` as a checked transform (validated at create).
fn republish_of(config: &StreamConfig) -> Option<crate::transform::Transform> {
    let republish = config.republish.as_ref()?;
    let src = if republish.src.is_empty() {
        ">"
    } else {
        republish.src.as_str()
    };
    crate::transform::Transform::new(src, &republish.dest)
}

/// Where the streams that source `origin` are (filter, next sequence to
/// copy): on an interest origin they count as interest in what is ahead.
fn source_interest(streams: &BTreeMap<String, Stream>, origin: &str) -> Vec<(String, u64)> {
    streams
        .values()
        .flat_map(|s| s.sources.iter())
        .filter(|c| c.name == origin)
        .map(|c| (c.filter.clone(), c.next_seq))
        .collect()
}

/// The positions of a stream's `sources`: kept from `kept` for a source that
/// stays, else where its `opt_start_seq` or `opt_start_time` says (looked up
/// in the origin, when it is there), else its start.
fn source_cursors(
    config: &StreamConfig,
    kept: &[SourceCursor],
    streams: &BTreeMap<String, Stream>,
) -> Vec<SourceCursor> {
    config
        .sources
        .iter()
        .map(|source| {
            let filter = if source.filter_subject.is_empty() {
                ">".to_owned()
            } else {
                source.filter_subject.clone()
            };
            // A source that stays keeps its position (a new filter applies
            // from there on), as it does across a restart.
            if let Some(old) = kept.iter().find(|c| c.name == source.name) {
                return SourceCursor {
                    filter,
                    ..old.clone()
                };
            }
            let by_time = source
                .opt_start_time
                .as_ref()
                .and_then(|t| t.unix_nanos())
                .and_then(|t| u64::try_from(t).ok())
                .and_then(|t| {
                    streams
                        .get(&source.name)?
                        .store
                        .seq_for_time(t)
                        .ok()
                        .flatten()
                });
            let next_seq = if source.opt_start_seq > 0 {
                source.opt_start_seq
            } else {
                by_time.unwrap_or(1)
            };
            SourceCursor {
                name: source.name.clone(),
                filter,
                next_seq,
                active_ns: 0,
            }
        })
        .collect()
}

/// After a restart: each source's saved position (written in the same
/// batch as the copies it covers, so never behind them).
fn restore_sources(stream: &mut Stream, saved: &[(String, u64)]) {
    for cursor in &mut stream.sources {
        if let Some((_, next)) = saved.iter().find(|(name, _)| *name == cursor.name) {
            cursor.next_seq = (*next).max(1);
        }
    }
}

/// A stored header block decoded; none, or one that does not decode, as
/// empty headers.
fn decoded_headers(raw: Option<&[u8]>) -> Headers {
    match raw.map(Headers::decode) {
        Some(Ok(h)) => h,
        _ => Headers::default(),
    }
}

/// A stream's `subject_transform` as a checked transform.
fn transform_of(config: &StreamConfig) -> Option<crate::transform::Transform> {
    let t = config.subject_transform.as_ref()?;
    crate::transform::Transform::new(&t.src, &t.dest)
}

/// A consumer's `headers_only`, and whether it requires acks.
fn consumer_flags(
    streams: &BTreeMap<String, Stream>,
    stream: &str,
    consumer: &str,
) -> (bool, bool) {
    streams
        .get(stream)
        .and_then(|s| s.consumers.get(consumer))
        .map_or((false, true), |c| {
            (c.config.headers_only, c.acks_required())
        })
}

/// The next message for `consumer`: a redelivery first, else the next new
/// one matching its filters.
fn next_for(
    consumer: &mut Consumer,
    store: &dyn StreamStore,
) -> Option<tern_storage::StoredMessage> {
    while let Some(seq) = consumer.redeliver.pop_first() {
        match store.get(seq) {
            Ok(message) => return Some(message),
            // Unreadable for now (a failing disk): still owed, tried again
            // on the next pass rather than dropped.
            Err(e) if e.is_backend() => {
                consumer.redeliver.insert(seq);
                return None;
            }
            // Gone from the stream, or damaged for good: nothing to redeliver.
            Err(e) => {
                if matches!(e, StorageError::Corrupt { .. }) {
                    skipped_damaged(consumer, &e);
                }
                consumer.pending.remove(&seq);
                consumer.advance_ack_floor();
                consumer.dirty = true;
            }
        }
    }
    while let Some(seq) = consumer.initial.pop_first() {
        match store.get(seq) {
            Ok(message) => return Some(message),
            Err(e) if e.is_backend() => {
                consumer.initial.insert(seq);
                return None;
            }
            Err(e) => {
                if matches!(e, StorageError::Corrupt { .. }) {
                    skipped_damaged(consumer, &e);
                }
            }
        }
    }
    let filters: Vec<String> = consumer.filters().into_iter().map(str::to_owned).collect();
    let filters: Vec<&str> = if filters.is_empty() {
        vec![">"]
    } else {
        filters.iter().map(String::as_str).collect()
    };
    // A message damaged for good is passed over, as nats-server passes over
    // the messages it finds lost, rather than stopping the consumer there
    // for good; it stays in the stream, where `MSG.GET` reports it. A few
    // per call, so a long damaged stretch cannot hold the service up.
    for _ in 0..DAMAGED_SKIPS_PER_CALL {
        let mut found: Option<tern_storage::StoredMessage> = None;
        let mut damaged: Option<(u64, StorageError)> = None;
        for filter in &filters {
            match store.next_matching(consumer.next_seq, filter.as_bytes()) {
                Ok(Some(message)) => {
                    if found.as_ref().is_none_or(|f| message.seq < f.seq) {
                        found = Some(message);
                    }
                }
                Ok(None) => {}
                Err(e @ StorageError::Corrupt { seq, .. }) if seq >= consumer.next_seq => {
                    if damaged.as_ref().is_none_or(|(d, _)| seq < *d) {
                        damaged = Some((seq, e));
                    }
                }
                // Unreadable for now, or not a message: tried again on the
                // next pass.
                Err(_) => return None,
            }
        }
        match (found, damaged) {
            (Some(message), d) if d.as_ref().is_none_or(|(seq, _)| message.seq < *seq) => {
                consumer.next_seq = message.seq + 1;
                return Some(message);
            }
            (_, Some((seq, e))) => {
                skipped_damaged(consumer, &e);
                consumer.next_seq = seq + 1;
            }
            _ => return None,
        }
    }
    None
}

/// Damaged messages a consumer passes over in one call of [`next_for`].
const DAMAGED_SKIPS_PER_CALL: usize = 64;

fn skipped_damaged(consumer: &Consumer, e: &StorageError) {
    warn!(
        consumer = %consumer.name,
        "passing over a damaged message: {e}; it stays in the stream until deleted"
    );
}

/// Messages the consumer has yet to hand out for the first time, counted
/// once per serving pass (a scan from its position), so that the pending
/// token of each delivery is exact without a scan per message.
fn pending_after(consumer: &Consumer, store: &dyn StreamStore) -> u64 {
    let filters = consumer.filters();
    let after = if filters.is_empty() {
        // Unfiltered: from the stream's counters, without a scan (deleted
        // messages after the position are counted; nats-server's figure is
        // exact, ours is an upper bound then).
        match store.state() {
            Ok(state) if consumer.next_seq <= state.first_seq => state.messages,
            Ok(state) => (state.last_seq + 1)
                .saturating_sub(consumer.next_seq)
                .min(state.messages),
            Err(_) => 0,
        }
    } else {
        filters
            .iter()
            .map(|f| {
                store
                    .count_matching(f.as_bytes(), consumer.next_seq)
                    .unwrap_or(0)
            })
            .sum()
    };
    after + consumer.initial.len() as u64
}

/// The pending count to put in the ack subject of the delivery of `seq`:
/// a first delivery takes one off the count, a redelivery does not.
fn take_pending(remaining: &mut u64, consumer: &Consumer, seq: u64) -> u64 {
    let first_delivery = consumer.pending.get(&seq).is_none_or(|p| p.deliveries <= 1);
    if first_delivery {
        *remaining = remaining.saturating_sub(1);
    }
    *remaining
}

/// The last message of each subject matching `filters` (all when empty),
/// where that is after `after` and at most `upto`.
fn last_per_subject(
    store: &dyn StreamStore,
    filters: &[&str],
    after: u64,
    upto: u64,
) -> std::collections::BTreeSet<u64> {
    let filters: Vec<&str> = if filters.is_empty() {
        vec![">"]
    } else {
        filters.to_vec()
    };
    let mut seqs = std::collections::BTreeSet::new();
    for filter in filters {
        let Ok(subjects) = store.subjects_state(filter.as_bytes()) else {
            continue;
        };
        for subject in subjects.keys() {
            if let Ok(Some(message)) = store.last_by_subject(subject) {
                if message.seq > after && message.seq <= upto {
                    seqs.insert(message.seq);
                }
            }
        }
    }
    seqs
}

/// What is saved with each consumer so it comes back after a restart.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedConsumer {
    config: tern_protocol::jetstream::ConsumerConfig,
    created_ns: i64,
    /// `last_per_subject`: the stream's last sequence when the consumer was
    /// created; the last message of each subject up to it comes first.
    #[serde(default, skip_serializing_if = "is_zero")]
    initial_upto: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Checks a consumer configuration as sent (before defaults) the way
/// nats-server 2.9 does, with its error codes and texts.
fn validate_consumer(
    config: &tern_protocol::jetstream::ConsumerConfig,
    stream: &StreamConfig,
) -> Result<(), ApiError> {
    use tern_protocol::jetstream::{AckPolicy, DeliverPolicy, RetentionPolicy};
    let invalid = |text: &str| Err(ApiErrorCode::CONSUMER_INVALID_POLICY.with(&[&text]));
    if config.num_replicas > 1 {
        return Err(ApiErrorCode::STREAM_REPLICAS_NOT_SUPPORTED.into());
    }
    if !config.backoff.is_empty() && config.max_deliver <= config.backoff.len() as i64 {
        return Err(ApiErrorCode::CONSUMER_MAX_DELIVER_BACKOFF.into());
    }
    if config.description.len() > 4096 {
        return Err(ApiErrorCode::CONSUMER_DESCRIPTION_TOO_LONG.with(&[&4096]));
    }
    let filters = config.filters();
    if config.is_pull() {
        if config.ack_policy == AckPolicy::None && stream.retention == RetentionPolicy::WorkQueue {
            return Err(ApiError {
                code: 400,
                err_code: 10084,
                description: "consumer in pull mode requires ack policy".into(),
            });
        }
        if config.rate_limit_bps > 0 {
            return Err(ApiErrorCode::CONSUMER_PULL_WITH_RATE_LIMIT.into());
        }
        if config.max_waiting < 0 {
            return Err(ApiErrorCode::CONSUMER_MAX_WAITING_NEGATIVE.into());
        }
        if config.idle_heartbeat > 0 {
            return Err(ApiErrorCode::CONSUMER_HB_REQUIRES_PUSH.into());
        }
        if config.flow_control {
            return Err(ApiErrorCode::CONSUMER_FC_REQUIRES_PUSH.into());
        }
        if config.max_batch < 0 {
            return Err(ApiErrorCode::CONSUMER_MAX_REQUEST_BATCH_NEGATIVE.into());
        }
        if config.max_expires != 0 && config.max_expires < 1_000_000 {
            return Err(ApiErrorCode::CONSUMER_MAX_REQUEST_EXPIRES_TOO_SMALL.into());
        }
    } else {
        let deliver = config.deliver_subject.as_str();
        if deliver.contains(['*', '>']) {
            return Err(ApiErrorCode::CONSUMER_DELIVER_TO_WILDCARDS.into());
        }
        if deliver.split('.').any(str::is_empty) || deliver.contains([' ', '\t']) {
            return Err(ApiErrorCode::CONSUMER_INVALID_DELIVER_SUBJECT.into());
        }
        if stream.subjects.iter().any(|s| subjects_overlap(s, deliver)) {
            return Err(ApiErrorCode::CONSUMER_DELIVER_CYCLE.into());
        }
        if config.max_waiting != 0 {
            return Err(ApiErrorCode::CONSUMER_PUSH_MAX_WAITING.into());
        }
        if config.max_ack_pending > 0 && config.ack_policy == AckPolicy::None {
            return Err(ApiErrorCode::CONSUMER_MAX_PENDING_ACK_POLICY_REQUIRED.into());
        }
        if config.idle_heartbeat > 0 && config.idle_heartbeat < 100_000_000 {
            return Err(ApiErrorCode::CONSUMER_SMALL_HEARTBEAT.into());
        }
    }
    // What the stream stores under: its subjects, and what its subject
    // transform maps them to (each reference to a wildcard as `*`).
    let mut stored: Vec<String> = stream.subjects.clone();
    if let Some(t) = &stream.subject_transform {
        let pattern: Vec<&str> = t
            .dest
            .split('.')
            .map(|token| {
                if token.starts_with('$') || token.starts_with("{{") {
                    "*"
                } else {
                    token
                }
            })
            .collect();
        stored.push(pattern.join("."));
    }
    if !stream.subjects.is_empty()
        && filters
            .iter()
            .any(|f| !stored.iter().any(|s| subjects_overlap(s, f)))
    {
        return Err(ApiErrorCode::CONSUMER_FILTER_NOT_SUBSET.into());
    }
    let (seq, time) = (config.opt_start_seq > 0, config.opt_start_time.is_some());
    let policy = match config.deliver_policy {
        DeliverPolicy::All => "deliver all",
        DeliverPolicy::Last => "deliver last",
        DeliverPolicy::LastPerSubject => "deliver last per subject",
        DeliverPolicy::New => "deliver new",
        DeliverPolicy::ByStartSequence => "deliver by start sequence",
        DeliverPolicy::ByStartTime => "deliver by start time",
    };
    match config.deliver_policy {
        DeliverPolicy::ByStartSequence => {
            if !seq {
                return invalid(&format!(
                    "consumer delivery policy is {policy}, but optional start sequence is not set"
                ));
            }
            if time {
                return invalid(&format!(
                    "consumer delivery policy is {policy}, but optional start time is also set"
                ));
            }
        }
        DeliverPolicy::ByStartTime => {
            if !time {
                return invalid(&format!(
                    "consumer delivery policy is {policy}, but optional start time is not set"
                ));
            }
            if seq {
                // nats-server's words, doubled "start" included.
                return invalid(&format!(
                    "consumer delivery policy is {policy}, but optional start start sequence is also set"
                ));
            }
        }
        _ => {
            if seq {
                return invalid(&format!(
                    "consumer delivery policy is {policy}, but optional start sequence is also set"
                ));
            }
            if time {
                return invalid(&format!(
                    "consumer delivery policy is {policy}, but optional start time is also set"
                ));
            }
        }
    }
    if config.deliver_policy == DeliverPolicy::LastPerSubject && filters.is_empty() {
        return invalid(
            "consumer delivery policy is deliver last per subject, but optional filter subject is not set",
        );
    }
    if !config.sample_freq.is_empty() {
        let text = config.sample_freq.trim_end_matches('%');
        match text.parse::<i64>() {
            Ok(n) if n >= 0 => {}
            Ok(_) => {
                return Err(ApiErrorCode::CONSUMER_INVALID_SAMPLING.with(&[&"value is negative"]))
            }
            Err(_) => {
                return Err(ApiErrorCode::CONSUMER_INVALID_SAMPLING
                    .with(&[&format!("strconv.Atoi: parsing {text:?}: invalid syntax")]))
            }
        }
    }
    if config.flow_control && config.idle_heartbeat <= 0 {
        return Err(ApiErrorCode::CONSUMER_WITH_FLOW_CONTROL_NEEDS_HEARTBEATS.into());
    }
    if stream.retention == RetentionPolicy::WorkQueue && config.ack_policy != AckPolicy::Explicit {
        return Err(ApiErrorCode::CONSUMER_WQ_REQUIRES_EXPLICIT_ACK.into());
    }
    Ok(())
}

/// What of a consumer's configuration an update may change, as nats-server
/// 2.9 decides it (its error texts, 500 / 10012); `bound` says whether a push
/// consumer's deliver subject has subscribers.
fn check_consumer_update(
    old: &tern_protocol::jetstream::ConsumerConfig,
    new: &tern_protocol::jetstream::ConsumerConfig,
    bound: bool,
) -> Result<(), ApiError> {
    let refuse = |what: &str| {
        Err(ApiError {
            code: 500,
            err_code: 10012,
            description: what.into(),
        })
    };
    if old.deliver_policy != new.deliver_policy {
        return refuse("deliver policy can not be updated");
    }
    if old.opt_start_seq != new.opt_start_seq {
        return refuse("start sequence can not be updated");
    }
    if old.opt_start_time != new.opt_start_time {
        return refuse("start time can not be updated");
    }
    if old.ack_policy != new.ack_policy {
        return refuse("ack policy can not be updated");
    }
    if old.replay_policy != new.replay_policy {
        return refuse("replay policy can not be updated");
    }
    if old.idle_heartbeat != new.idle_heartbeat {
        return refuse("heart beats can not be updated");
    }
    if old.flow_control != new.flow_control {
        return refuse("flow control can not be updated");
    }
    if old.max_waiting != new.max_waiting {
        return refuse("max waiting can not be updated");
    }
    if old.deliver_subject != new.deliver_subject {
        if new.deliver_subject.is_empty() {
            return refuse("can not update push consumer to pull based");
        }
        if bound {
            return Err(ApiError {
                code: 400,
                err_code: 10013,
                description: "consumer name already in use".into(),
            });
        }
    }
    Ok(())
}

/// What is saved with each stream so it comes back after a restart.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedStream {
    config: StreamConfig,
    created_ns: i64,
}

fn lookup_message(
    store: &dyn StreamStore,
    request: &MsgGetRequest,
) -> Result<tern_storage::StoredMessage, ApiError> {
    let found = if request.seq > 0 && request.next_by_subj.is_empty() {
        match store.get(request.seq) {
            Ok(message) => Some(message),
            Err(StorageError::NotFound) => None,
            Err(e) => return Err(read_error(&e)),
        }
    } else if !request.last_by_subj.is_empty() {
        store
            .last_by_subject(request.last_by_subj.as_bytes())
            .map_err(|e| read_error(&e))?
    } else if !request.next_by_subj.is_empty() {
        store
            .next_matching(request.seq.max(1), request.next_by_subj.as_bytes())
            .map_err(|e| read_error(&e))?
    } else {
        return Err(ApiErrorCode::BAD_REQUEST.into());
    };
    found.ok_or_else(|| ApiErrorCode::NO_MESSAGE_FOUND.into())
}

/// A read the store could not do (a failing disk, a damaged block): an
/// error that says so, never "no message found", which a Key/Value client
/// would take for a missing key.
fn read_error(e: &StorageError) -> ApiError {
    match e {
        StorageError::NotFound => ApiErrorCode::NO_MESSAGE_FOUND.into(),
        e => ApiErrorCode::STREAM_GENERAL.with(&[e]),
    }
}

/// Decodes a request body. Clients send `null` for absent fields (and for
/// absent bodies), which means "the default", as Go's decoder reads it.
fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| ApiErrorCode::INVALID_JSON.with(&[&e]))?;
    if value.is_null() {
        return Ok(T::default());
    }
    strip_nulls(&mut value);
    serde_json::from_value(value).map_err(|e| ApiErrorCode::INVALID_JSON.with(&[&e]))
}

fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn to_object<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn timestamp(ns: u64) -> Timestamp {
    timestamp_i64(i64::try_from(ns).unwrap_or(i64::MAX))
}

fn timestamp_i64(ns: i64) -> Timestamp {
    Timestamp::from_unix_nanos(ns)
}

/// The API response `type` suffix for an error reply to `tokens`.
fn response_kind(tokens: &[&str]) -> &'static str {
    match tokens {
        ["INFO"] => "account_info_response",
        ["STREAM", "CREATE", ..] => "stream_create_response",
        ["STREAM", "UPDATE", ..] => "stream_update_response",
        ["STREAM", "INFO", ..] => "stream_info_response",
        ["STREAM", "DELETE", ..] => "stream_delete_response",
        ["STREAM", "NAMES", ..] => "stream_names_response",
        ["STREAM", "LIST", ..] => "stream_list_response",
        ["STREAM", "PURGE", ..] => "stream_purge_response",
        ["STREAM", "MSG", "GET", ..] => "stream_msg_get_response",
        ["STREAM", "MSG", "DELETE", ..] => "stream_msg_delete_response",
        ["CONSUMER", "CREATE", ..] | ["CONSUMER", "DURABLE", ..] => "consumer_create_response",
        ["CONSUMER", "INFO", ..] => "consumer_info_response",
        ["CONSUMER", "NAMES", ..] => "consumer_names_response",
        ["CONSUMER", "LIST", ..] => "consumer_list_response",
        ["CONSUMER", "DELETE", ..] => "consumer_delete_response",
        _ => "error_response",
    }
}

fn validate_stream_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace())
    {
        return Err(ApiErrorCode::STREAM_INVALID_CONFIG.with(&[&"invalid stream name"]));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(ApiErrorCode::STREAM_NAME_CONTAINS_PATH_SEPARATORS.into());
    }
    Ok(())
}

fn validate_stream_config(config: &StreamConfig) -> Result<(), ApiError> {
    if config.max_age < 0 {
        return Err(ApiErrorCode::STREAM_INVALID_CONFIG.with(&[&"max age needs to be >= 0"]));
    }
    if config.num_replicas > 1 {
        return Err(ApiErrorCode::STREAM_REPLICAS_NOT_SUPPORTED.into());
    }
    if config.discard_new_per_subject
        && (config.discard != tern_protocol::jetstream::DiscardPolicy::New
            || config.max_msgs_per_subject <= 0)
    {
        let why = if config.discard != tern_protocol::jetstream::DiscardPolicy::New {
            "discard new per subject requires discard new policy to be set"
        } else {
            "discard new per subject requires max msgs per subject > 0"
        };
        return Err(ApiErrorCode::STREAM_INVALID_CONFIG.with(&[&why]));
    }
    if config.mirror.is_some() {
        return Err(
            ApiErrorCode::STREAM_INVALID_CONFIG.with(&[&"mirrors are not implemented yet in tern"])
        );
    }
    let mut names = std::collections::HashSet::new();
    for source in &config.sources {
        if source.external.is_some() || !source.subject_transforms.is_empty() {
            return Err(ApiErrorCode::STREAM_INVALID_CONFIG.with(&[
                &"sources in other accounts or with subject transforms are not implemented yet in tern",
            ]));
        }
        if source.name.is_empty()
            || source.name == config.name
            || !names.insert(source.name.as_str())
        {
            return Err(ApiErrorCode::STREAM_INVALID_CONFIG
                .with(&[&"stream configuration for sources is not valid"]));
        }
        if !source.filter_subject.is_empty()
            && !tern_protocol::subject::is_valid_subscription_subject(
                source.filter_subject.as_bytes(),
            )
        {
            return Err(ApiErrorCode::STREAM_INVALID_CONFIG
                .with(&[&"stream configuration for source filter subject is not valid"]));
        }
    }
    if let Some(republish) = &config.republish {
        let src = if republish.src.is_empty() {
            ">"
        } else {
            republish.src.as_str()
        };
        if crate::transform::Transform::new(src, &republish.dest).is_none() {
            return Err(ApiErrorCode::STREAM_INVALID_CONFIG
                .with(&[&"stream configuration for republish not valid"]));
        }
        if !config.subjects.iter().any(|s| subjects_overlap(s, src)) {
            return Err(ApiErrorCode::STREAM_INVALID_CONFIG.with(&[
                &"stream configuration for republish source is not valid subset of subjects",
            ]));
        }
        if config
            .subjects
            .iter()
            .any(|s| subjects_overlap(s, &republish.dest))
        {
            return Err(ApiErrorCode::STREAM_INVALID_CONFIG
                .with(&[&"stream configuration for republish destination forms a cycle"]));
        }
    }
    if let Some(transform) = &config.subject_transform {
        if crate::transform::Transform::new(&transform.src, &transform.dest).is_none() {
            return Err(ApiErrorCode::STREAM_INVALID_CONFIG
                .with(&[&"stream configuration for subject transform not valid"]));
        }
    }
    Ok(())
}

/// One stream's share of a batch of publishes, between checking them and
/// answering them.
struct PreparedWrite {
    name: String,
    now: u64,
    /// What goes to the store.
    ops: Vec<StreamOp>,
    /// Per op: how many retired messages its stream had when its publish
    /// came (their deletes go before it).
    marks: Vec<usize>,
    /// Per op, and per in-batch duplicate: reply subject and message id.
    pending: Vec<(Option<Bytes>, Option<String>)>,
    /// Answers decided before the write.
    replies: Vec<(Bytes, PubAckResponse)>,
    /// Per entry of `pending`: the purge its `Nats-Rollup` asks for.
    rollups: Vec<Option<PurgeRequest>>,
    subjects: Vec<Bytes>,
    /// With `republish`: per entry of `pending`, the message's headers and
    /// payload; and each subject's last sequence before the batch.
    republish: Vec<(Option<Bytes>, Bytes)>,
    last_seqs: HashMap<Bytes, u64>,
}

/// The stream a publish the service received is for (from its sid).
fn stream_of(msg: &InternalMsg) -> &str {
    std::str::from_utf8(&msg.sid[STREAM_SID_PREFIX.len().min(msg.sid.len())..]).unwrap_or_default()
}

/// What a stream's consumers owe its store: the deletes of the first
/// `retired` messages they retired, and the positions of its durable
/// consumers that moved (if `positions`, or along with deletes: a message
/// is deleted together with the positions that retired it). Returns the
/// retired sequences and the ops, deletes first (see [`still_owed`]).
fn consumers_owe(
    stream: &mut Stream,
    retired: usize,
    positions: bool,
) -> (Vec<u64>, Vec<StreamOp>) {
    let retired: Vec<u64> = stream
        .retired
        .drain(..retired.min(stream.retired.len()))
        .collect();
    if retired.is_empty() && !positions {
        return (retired, Vec::new());
    }
    let mut ops: Vec<StreamOp> = retired
        .iter()
        .map(|&seq| StreamOp::Delete { seq, erase: false })
        .collect();
    for consumer in stream.consumers.values_mut() {
        if consumer.is_durable() && consumer.dirty {
            consumer.dirty = false;
            ops.push(StreamOp::SaveConsumerState {
                name: consumer.name.clone(),
                state: consumer.state(),
            });
        }
    }
    (retired, ops)
}

/// One write of a stream's `publishes` and what its consumers `owe` (the
/// first `deletes` of them deletes, the rest positions): before each
/// publish, the deletes of the acks that came before it (its mark), then
/// the rest at the end. Returns the ops and, per op, whether it is owed;
/// with nothing owed, the publishes as they are and no flags.
fn interleave(
    publishes: Vec<StreamOp>,
    marks: &[usize],
    deletes: usize,
    owed: Vec<StreamOp>,
) -> (Vec<StreamOp>, Vec<bool>) {
    if owed.is_empty() {
        return (publishes, Vec::new());
    }
    let mut ops = Vec::with_capacity(publishes.len() + owed.len());
    let mut is_owed = Vec::with_capacity(ops.capacity());
    let mut owed = owed.into_iter();
    let mut deleted = 0;
    for (op, &mark) in publishes.into_iter().zip(marks) {
        while deleted < mark.min(deletes) {
            ops.extend(owed.next());
            is_owed.push(true);
            deleted += 1;
        }
        ops.push(op);
        is_owed.push(false);
    }
    for op in owed {
        ops.push(op);
        is_owed.push(true);
    }
    (ops, is_owed)
}

/// Takes back what a write of [`consumers_owe`]'s `ops` ops did not do,
/// given their `results` (fewer if the write failed as a whole):
/// retired messages still there are deleted with a later write, and
/// positions are written again.
fn still_owed(
    stream: &mut Stream,
    retired: &[u64],
    ops: usize,
    results: &[Result<tern_storage::OpResult, StorageError>],
) {
    // Worth another try: a write that did not happen (an I/O error, or
    // another op's). A message already gone, or damaged, is not.
    let failed = |i: usize| {
        results.get(i).is_none_or(|r| {
            r.as_ref()
                .is_err_and(|e| e.is_backend() || matches!(e, StorageError::BatchAborted))
        })
    };
    let again: Vec<u64> = (0..retired.len())
        .filter(|&i| failed(i))
        .map(|i| retired[i])
        .collect();
    let positions_failed = (retired.len()..ops).any(failed);
    if !again.is_empty() {
        warn!(stream = %stream.config.name, messages = again.len(), "deleting consumed messages failed; retrying later");
        stream.retired.extend(again);
    }
    if positions_failed {
        for consumer in stream.consumers.values_mut() {
            consumer.dirty |= consumer.is_durable();
        }
    }
}

fn create_error(e: StorageError) -> ApiError {
    ApiErrorCode::STREAM_CREATE.with(&[&e])
}

/// The publish error nats-server reports for a store rejection.
fn publish_error(e: &StorageError) -> ApiError {
    use tern_protocol::jetstream::store_error;
    match e {
        StorageError::WrongLastSequence { current } => {
            ApiErrorCode::STREAM_WRONG_LAST_SEQUENCE.with(&[current])
        }
        StorageError::WrongLastSubjectSequence { current } => {
            ApiErrorCode::STREAM_WRONG_LAST_SEQUENCE.with(&[current])
        }
        StorageError::MaxMessageSizeExceeded => ApiErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM.into(),
        StorageError::MaximumMessagesExceeded => {
            ApiErrorCode::STREAM_STORE_FAILED.with(&[&store_error::MAX_MSGS])
        }
        StorageError::MaximumBytesExceeded => {
            ApiErrorCode::STREAM_STORE_FAILED.with(&[&store_error::MAX_BYTES])
        }
        StorageError::MaximumMessagesPerSubjectExceeded => {
            ApiErrorCode::STREAM_STORE_FAILED.with(&[&store_error::MAX_MSGS_PER_SUBJECT])
        }
        other => ApiErrorCode::STREAM_STORE_FAILED.with(&[other]),
    }
}

/// Limits of the store from a stream's configuration (-1 and 0 = none).
fn limits_of(config: &StreamConfig) -> StreamLimits {
    let positive = |n: i64| u64::try_from(n).ok().filter(|&n| n > 0);
    StreamLimits {
        max_msgs: positive(config.max_msgs),
        max_bytes: positive(config.max_bytes),
        max_age: positive(config.max_age).map(Duration::from_nanos),
        max_msgs_per_subject: positive(config.max_msgs_per_subject),
        max_msg_size: positive(i64::from(config.max_msg_size)),
        discard: match config.discard {
            DiscardPolicy::Old => tern_storage::DiscardPolicy::Old,
            DiscardPolicy::New => tern_storage::DiscardPolicy::New,
        },
        discard_new_per_subject: config.discard_new_per_subject,
    }
}

/// Whether two subscription subjects can match a common subject.
fn subjects_overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap() {
        assert!(subjects_overlap("orders.>", "orders.eu"));
        assert!(subjects_overlap("orders.*", "orders.eu"));
        assert!(subjects_overlap("orders.*", "*.eu"));
        assert!(!subjects_overlap("orders.*", "orders.eu.x"));
        assert!(!subjects_overlap("orders", "payments"));
        assert!(subjects_overlap(">", "anything"));
    }

    #[test]
    fn limits_from_config() {
        let config = StreamConfig {
            name: "S".into(),
            max_msgs: 10,
            max_age: 1_000_000_000,
            ..StreamConfig::default()
        }
        .with_defaults();
        let limits = limits_of(&config);
        assert_eq!(limits.max_msgs, Some(10));
        assert_eq!(limits.max_bytes, None);
        assert_eq!(limits.max_age, Some(Duration::from_secs(1)));
    }
}
