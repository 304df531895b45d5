//! Tern's JetStream JSON against the official Rust client's own types:
//! what Tern writes must deserialize into `async-nats`'s response types, and
//! what `async-nats` writes for requests must parse into Tern's types.
//!
//! No server and no network: only `serde_json` between the two type sets.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, account, consumer, publish, response::Response, stream};
use tern_protocol::jetstream::{
    AccountInfo, AccountTier, AckPolicy, ApiError, ApiErrorCode, ApiResponse, ApiStats,
    ClusterInfo, ConsumerAction, ConsumerConfig, ConsumerInfo, ConsumerLimits,
    ConsumerNamesResponse, CreateConsumerRequest, DeliverPolicy, DiscardPolicy, MsgGetRequest,
    MsgGetResponse, NextRequest, Paged, PubAck, PubAckResponse, ReplayPolicy, ResponseType,
    RetentionPolicy, SequenceInfo, StorageType, StoredMessage, StreamConfig, StreamInfo,
    StreamInfoResponse, StreamListResponse, StreamPurgeRequest, StreamPurgeResponse, StreamSource,
    StreamState, SuccessResponse, Timestamp, NANOS_PER_SECOND,
};

const T0: i64 = 1_704_067_200_123_456_789; // 2024-01-01T00:00:00.123456789Z

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// Deserializes Tern's reply the way async-nats reads an API reply.
fn client_reads<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, jetstream::Error> {
    match serde_json::from_slice::<Response<T>>(bytes) {
        Ok(Response::Ok(value)) => Ok(value),
        Ok(Response::Err { error }) => Err(error),
        Err(e) => panic!(
            "async-nats cannot read {}: {e}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fn stream_info() -> StreamInfo {
    let config: StreamConfig =
        serde_json::from_str(r#"{"name":"ORDERS","subjects":["orders.>"]}"#).unwrap();
    StreamInfo {
        config: config.with_defaults(),
        created: Timestamp::from_unix_nanos(T0),
        state: StreamState {
            messages: 2,
            bytes: 120,
            first_seq: 4,
            first_ts: Timestamp::from_unix_nanos(T0 + 1),
            last_seq: 6,
            last_ts: Timestamp::from_unix_nanos(T0 + 2),
            num_subjects: 2,
            num_deleted: 1,
            deleted: vec![5],
            consumer_count: 1,
            ..Default::default()
        },
        cluster: Some(ClusterInfo {
            leader: "tern-1".into(),
            ..Default::default()
        }),
        ts: Timestamp::from_unix_nanos(T0 + 3),
        ..Default::default()
    }
}

fn consumer_info() -> ConsumerInfo {
    let config = ConsumerConfig {
        durable_name: "C".into(),
        ack_policy: AckPolicy::Explicit,
        filter_subject: "orders.new".into(),
        ..Default::default()
    };
    ConsumerInfo {
        stream_name: "ORDERS".into(),
        name: "C".into(),
        created: Timestamp::from_unix_nanos(T0),
        config: config.with_defaults(&ConsumerLimits::default()),
        delivered: SequenceInfo {
            consumer_seq: 3,
            stream_seq: 5,
            last_active: Some(Timestamp::from_unix_nanos(T0 + 5)),
        },
        ack_floor: SequenceInfo {
            consumer_seq: 2,
            stream_seq: 4,
            last_active: None,
        },
        num_ack_pending: 1,
        num_redelivered: 0,
        num_waiting: 2,
        num_pending: 7,
        cluster: Some(ClusterInfo {
            leader: "tern-1".into(),
            ..Default::default()
        }),
        ts: Timestamp::from_unix_nanos(T0 + 6),
        ..Default::default()
    }
}

#[test]
fn client_reads_stream_info() {
    let reply = ApiResponse::ok(
        ResponseType::StreamInfo,
        StreamInfoResponse {
            paged: Paged::default(),
            info: stream_info(),
        },
    );
    let info: stream::Info = client_reads(&reply.to_vec()).unwrap();
    assert_eq!(info.config.name, "ORDERS");
    assert_eq!(info.config.subjects, ["orders.>"]);
    assert_eq!(info.config.max_messages, -1);
    assert_eq!(info.config.max_bytes, -1);
    assert_eq!(info.config.max_consumers, -1);
    assert_eq!(info.config.max_message_size, -1);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    assert_eq!(info.config.num_replicas, 1);
    assert_eq!(info.config.retention, stream::RetentionPolicy::Limits);
    assert_eq!(info.config.storage, stream::StorageType::File);
    assert_eq!(info.config.discard, stream::DiscardPolicy::Old);
    assert_eq!(info.config.compression, Some(stream::Compression::None));
    assert_eq!(info.config.consumer_limits, None);
    assert_eq!(info.created.unix_timestamp_nanos(), i128::from(T0));
    assert_eq!(info.state.messages, 2);
    assert_eq!(info.state.first_sequence, 4);
    assert_eq!(
        info.state.last_timestamp.unix_timestamp_nanos(),
        i128::from(T0 + 2)
    );
    assert_eq!(info.state.subjects_count, 2);
    assert_eq!(info.state.deleted_count, Some(1));
    assert_eq!(info.state.deleted, Some(vec![5]));
    assert_eq!(info.cluster.unwrap().leader.as_deref(), Some("tern-1"));

    // Create and update answer with the bare info.
    let created = ApiResponse::ok(ResponseType::StreamCreate, stream_info());
    let info: stream::Info = client_reads(&created.to_vec()).unwrap();
    assert_eq!(info.config.name, "ORDERS");
}

#[test]
fn client_reads_empty_stream_state_with_go_zero_times() {
    let mut info = stream_info();
    info.state = StreamState::default();
    let info: stream::Info =
        client_reads(&ApiResponse::ok(ResponseType::StreamCreate, info).to_vec()).unwrap();
    assert_eq!(info.state.first_timestamp.year(), 1);
    assert_eq!(info.state.deleted_count, None);
}

#[test]
fn client_reads_every_stream_config_field() {
    let mut config = stream_info().config;
    config.description = "orders".into();
    config.retention = RetentionPolicy::WorkQueue;
    config.discard = DiscardPolicy::New;
    config.discard_new_per_subject = true;
    config.max_msgs_per_subject = 1;
    config.storage = StorageType::Memory;
    config.max_age = 3_600 * NANOS_PER_SECOND;
    config.allow_direct = true;
    config.allow_rollup_hdrs = true;
    config.deny_delete = true;
    config.sealed = true;
    config.no_ack = true;
    config.first_seq = 9;
    config.consumer_limits = ConsumerLimits {
        inactive_threshold: NANOS_PER_SECOND,
        max_ack_pending: 10,
    };
    config.metadata.insert("k".into(), "v".into());
    config.sources.push(StreamSource {
        name: "UP".into(),
        opt_start_time: Some(Timestamp::from_unix_nanos(T0)),
        ..Default::default()
    });
    let mut info = stream_info();
    info.config = config;
    let info: stream::Info =
        client_reads(&ApiResponse::ok(ResponseType::StreamUpdate, info).to_vec()).unwrap();
    let c = info.config;
    assert_eq!(c.retention, stream::RetentionPolicy::WorkQueue);
    assert_eq!(c.discard, stream::DiscardPolicy::New);
    assert!(c.discard_new_per_subject && c.allow_direct && c.allow_rollup && c.deny_delete);
    assert!(c.sealed && c.no_ack);
    assert_eq!(c.storage, stream::StorageType::Memory);
    assert_eq!(c.max_age, Duration::from_secs(3_600));
    assert_eq!(c.first_sequence, Some(9));
    let limits = c.consumer_limits.unwrap();
    assert_eq!(
        (limits.inactive_threshold, limits.max_ack_pending),
        (Duration::from_secs(1), 10)
    );
    assert_eq!(c.metadata.get("k").map(String::as_str), Some("v"));
    let source = &c.sources.unwrap()[0];
    assert_eq!(source.name, "UP");
    assert_eq!(
        source.start_time.unwrap().unix_timestamp_nanos(),
        i128::from(T0)
    );
}

#[test]
fn client_reads_consumer_info() {
    let reply = ApiResponse::ok(ResponseType::ConsumerInfo, consumer_info());
    let info: consumer::Info = client_reads(&reply.to_vec()).unwrap();
    assert_eq!(info.stream_name, "ORDERS");
    assert_eq!(info.name, "C");
    assert_eq!(info.config.durable_name.as_deref(), Some("C"));
    assert_eq!(info.config.deliver_policy, consumer::DeliverPolicy::All);
    assert_eq!(info.config.ack_policy, consumer::AckPolicy::Explicit);
    assert_eq!(info.config.ack_wait, Duration::from_secs(30));
    assert_eq!(info.config.max_deliver, -1);
    assert_eq!(info.config.max_waiting, 512);
    assert_eq!(info.config.max_ack_pending, 1000);
    assert_eq!(info.config.filter_subject, "orders.new");
    assert_eq!(info.config.replay_policy, consumer::ReplayPolicy::Instant);
    assert_eq!(info.delivered.consumer_sequence, 3);
    assert_eq!(info.delivered.stream_sequence, 5);
    assert_eq!(
        info.delivered.last_active.unwrap().unix_timestamp_nanos(),
        i128::from(T0 + 5)
    );
    assert_eq!(info.ack_floor.last_active, None);
    assert_eq!(
        (info.num_ack_pending, info.num_waiting, info.num_pending),
        (1, 2, 7)
    );
    assert!(!info.push_bound);

    // A push consumer by start time, as create returns it.
    let mut push = consumer_info();
    push.config = ConsumerConfig {
        deliver_subject: "deliver.here".into(),
        deliver_group: "workers".into(),
        deliver_policy: DeliverPolicy::ByStartTime,
        opt_start_time: Some(Timestamp::from_unix_nanos(T0)),
        ack_policy: AckPolicy::All,
        replay_policy: ReplayPolicy::Original,
        flow_control: true,
        idle_heartbeat: 5 * NANOS_PER_SECOND,
        backoff: vec![NANOS_PER_SECOND, 2 * NANOS_PER_SECOND],
        filter_subjects: vec!["a".into(), "b".into()],
        headers_only: true,
        sample_freq: "100%".into(),
        ..Default::default()
    }
    .with_defaults(&ConsumerLimits::default());
    push.push_bound = true;
    let info: consumer::Info =
        client_reads(&ApiResponse::ok(ResponseType::ConsumerCreate, push).to_vec()).unwrap();
    let c = info.config;
    assert_eq!(c.deliver_subject.as_deref(), Some("deliver.here"));
    assert_eq!(c.deliver_group.as_deref(), Some("workers"));
    match c.deliver_policy {
        consumer::DeliverPolicy::ByStartTime { start_time } => {
            assert_eq!(start_time.unix_timestamp_nanos(), i128::from(T0));
        }
        other => panic!("deliver policy {other:?}"),
    }
    assert_eq!(c.ack_policy, consumer::AckPolicy::All);
    assert_eq!(c.replay_policy, consumer::ReplayPolicy::Original);
    assert!(c.flow_control && c.headers_only);
    assert_eq!(c.idle_heartbeat, Duration::from_secs(5));
    assert_eq!(c.backoff, [Duration::from_secs(1), Duration::from_secs(2)]);
    assert_eq!(c.ack_wait, Duration::from_secs(1));
    assert_eq!(c.filter_subjects, ["a", "b"]);
    assert_eq!(c.sample_frequency, 100);
    assert_eq!(c.inactive_threshold, Duration::from_secs(5));
    assert!(info.push_bound);
}

#[test]
fn client_reads_account_info() {
    let info = AccountInfo {
        memory: 10,
        storage: 20,
        reserved_memory: 0,
        reserved_storage: 1 << 20,
        streams: 2,
        consumers: 3,
        api: ApiStats {
            level: 1,
            total: 100,
            errors: 4,
            inflight: 0,
        },
        tiers: [(
            "R1".to_owned(),
            AccountTier {
                streams: 2,
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    };
    let account: account::Account =
        client_reads(&ApiResponse::ok(ResponseType::AccountInfo, info).to_vec()).unwrap();
    assert_eq!(
        (
            account.memory,
            account.storage,
            account.streams,
            account.consumers
        ),
        (10, 20, 2, 3)
    );
    assert_eq!(account.reserved_storage, 1 << 20);
    assert_eq!(account.limits.max_memory, None);
    assert_eq!(account.limits.max_streams, None);
    assert_eq!(account.limits.max_ack_pending, -1);
    assert!(!account.limits.max_bytes_required);
    assert_eq!((account.requests.total, account.requests.errors), (100, 4));
    assert_eq!(account.requests.level, 1);
    assert_eq!(account.domain, None);
    assert_eq!(account.tiers["R1"].streams, 2);
}

#[test]
fn client_reads_pub_acks() {
    let ack = PubAckResponse::ok(PubAck {
        stream: "ORDERS".into(),
        seq: 42,
        ..Default::default()
    });
    let read: publish::PublishAck = client_reads(&json(&ack)).unwrap();
    assert_eq!(
        (read.stream.as_str(), read.sequence, read.duplicate),
        ("ORDERS", 42, false)
    );

    let dup = PubAckResponse::ok(PubAck {
        stream: "ORDERS".into(),
        seq: 42,
        domain: "hub".into(),
        duplicate: true,
    });
    let read: publish::PublishAck = client_reads(&json(&dup)).unwrap();
    assert!(read.duplicate);
    assert_eq!(read.domain, "hub");

    let failed = PubAckResponse::err(
        "ORDERS",
        ApiErrorCode::STREAM_WRONG_LAST_SEQUENCE.with(&[&41]),
    );
    let error = client_reads::<publish::PublishAck>(&json(&failed)).unwrap_err();
    assert_eq!(error.code(), 400);
    assert_eq!(
        error.error_code(),
        jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE
    );
    assert!(
        error.to_string().contains("wrong last sequence: 41"),
        "{error}"
    );
}

#[test]
fn client_reads_error_responses_with_its_own_codes() {
    let cases = [
        (
            ApiErrorCode::STREAM_NOT_FOUND,
            jetstream::ErrorCode::STREAM_NOT_FOUND,
        ),
        (
            ApiErrorCode::CONSUMER_NOT_FOUND,
            jetstream::ErrorCode::CONSUMER_NOT_FOUND,
        ),
        (
            ApiErrorCode::STREAM_NAME_EXIST,
            jetstream::ErrorCode::STREAM_NAME_EXIST,
        ),
        (
            ApiErrorCode::NO_MESSAGE_FOUND,
            jetstream::ErrorCode::NO_MESSAGE_FOUND,
        ),
        (
            ApiErrorCode::STREAM_WRONG_LAST_MSG_ID,
            jetstream::ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID,
        ),
        (
            ApiErrorCode::STREAM_NOT_MATCH,
            jetstream::ErrorCode::STREAM_NOT_MATCH,
        ),
        (
            ApiErrorCode::STREAM_SUBJECT_OVERLAP,
            jetstream::ErrorCode::STREAM_SUBJECT_OVERLAP,
        ),
        (ApiErrorCode::BAD_REQUEST, jetstream::ErrorCode::BAD_REQUEST),
        (
            ApiErrorCode::CONSUMER_ALREADY_EXISTS,
            jetstream::ErrorCode::CONSUMER_ALREADY_EXISTS,
        ),
        (
            ApiErrorCode::CONSUMER_DOES_NOT_EXIST,
            jetstream::ErrorCode::CONSUMER_DOES_NOT_EXIST,
        ),
    ];
    for (ours, theirs) in cases {
        let reply: ApiResponse<StreamInfo> = ApiResponse::err(ResponseType::StreamInfo, ours);
        let error = client_reads::<stream::Info>(&reply.to_vec()).unwrap_err();
        assert_eq!(error.error_code(), theirs, "{ours:?}");
        assert_eq!(error.code(), usize::from(ours.code));
    }
    // Every code async-nats names agrees with our table.
    for (name, ours) in ApiErrorCode::ALL {
        assert!(ours.err_code >= 10_000, "{name}");
    }
    let consumer_reply: ApiResponse<ConsumerInfo> = ApiResponse::err(
        ResponseType::ConsumerCreate,
        ApiErrorCode::CONSUMER_NAME_EXIST,
    );
    let error = client_reads::<consumer::Info>(&consumer_reply.to_vec()).unwrap_err();
    assert_eq!(
        error.error_code(),
        jetstream::ErrorCode::CONSUMER_NAME_EXIST
    );
}

#[test]
fn client_reads_list_and_message_responses() {
    let purge = ApiResponse::ok(
        ResponseType::StreamPurge,
        StreamPurgeResponse {
            success: true,
            purged: 3,
        },
    );
    let read: stream::PurgeResponse = client_reads(&purge.to_vec()).unwrap();
    assert!(read.success);
    assert_eq!(read.purged, 3);

    let deleted = ApiResponse::ok(
        ResponseType::StreamDelete,
        SuccessResponse { success: true },
    );
    let read: stream::DeleteStatus = client_reads(&deleted.to_vec()).unwrap();
    assert!(read.success);

    let message = StoredMessage {
        subject: "orders.new".into(),
        seq: 5,
        hdrs: "NATS/1.0\r\nNats-Msg-Id: a\r\n\r\n".into(),
        data: "payload".into(),
        time: Timestamp::from_unix_nanos(T0),
    };
    let get = ApiResponse::ok(ResponseType::StreamMsgGet, MsgGetResponse { message });
    let value: serde_json::Value = serde_json::from_slice(&get.to_vec()).unwrap();
    let raw: stream::RawMessage = serde_json::from_value(value["message"].clone()).unwrap();
    assert_eq!((raw.subject.as_str(), raw.sequence), ("orders.new", 5));
    let msg = jetstream::message::StreamMessage::try_from(raw).unwrap();
    assert_eq!(&msg.payload[..], b"payload");
    assert_eq!(
        msg.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("a")
    );
    assert_eq!(msg.time.unix_timestamp_nanos(), i128::from(T0));

    // Names and list pages parse as the client expects (it reads these fields by name).
    let names = ApiResponse::ok(
        ResponseType::ConsumerNames,
        ConsumerNamesResponse {
            paged: Paged {
                total: 1,
                offset: 0,
                limit: 1024,
            },
            consumers: vec!["C".into()],
        },
    );
    let value: serde_json::Value = serde_json::from_slice(&names.to_vec()).unwrap();
    assert_eq!(value["consumers"][0], "C");
    let list = ApiResponse::ok(
        ResponseType::StreamList,
        StreamListResponse {
            paged: Paged {
                total: 1,
                offset: 0,
                limit: 256,
            },
            streams: vec![stream_info()],
            missing: vec![],
        },
    );
    let value: serde_json::Value = serde_json::from_slice(&list.to_vec()).unwrap();
    let info: stream::Info = serde_json::from_value(value["streams"][0].clone()).unwrap();
    assert_eq!(info.config.name, "ORDERS");
}

#[test]
fn stream_configs_from_the_client_parse() {
    let minimal = stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    };
    let ours: StreamConfig = serde_json::from_slice(&json(&minimal)).unwrap();
    assert_eq!(ours.name, "ORDERS");
    assert_eq!(ours.subjects, ["orders.>"]);
    assert_eq!(ours.with_defaults().max_msgs, -1);

    // What the client's KV create sends for a bucket with history 5.
    let kv = stream::Config {
        name: "KV_b".into(),
        subjects: vec!["$KV.b.>".into()],
        max_messages_per_subject: 5,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        max_age: Duration::from_secs(60),
        duplicate_window: Duration::from_secs(30),
        storage: stream::StorageType::Memory,
        num_replicas: 1,
        compression: Some(stream::Compression::S2),
        metadata: HashMap::from([("a".to_owned(), "b".to_owned())]),
        sources: Some(vec![stream::Source {
            name: "KV_a".into(),
            filter_subject: Some("$KV.a.>".into()),
            subject_transforms: vec![stream::SubjectTransform {
                source: "$KV.a.>".into(),
                destination: "$KV.b.>".into(),
            }],
            ..Default::default()
        }]),
        consumer_limits: Some(stream::ConsumerLimits {
            inactive_threshold: Duration::from_secs(2),
            max_ack_pending: 3,
        }),
        ..Default::default()
    };
    let ours: StreamConfig = serde_json::from_slice(&json(&kv)).unwrap();
    assert_eq!(ours.max_msgs_per_subject, 5);
    assert_eq!(ours.discard, DiscardPolicy::New);
    assert!(ours.allow_rollup_hdrs && ours.deny_delete && ours.allow_direct);
    assert_eq!(ours.max_age, 60 * NANOS_PER_SECOND);
    assert_eq!(ours.duplicate_window, 30 * NANOS_PER_SECOND);
    assert_eq!(ours.storage, StorageType::Memory);
    assert_eq!(ours.metadata["a"], "b");
    assert_eq!(ours.sources[0].subject_transforms[0].dest, "$KV.b.>");
    assert_eq!(
        ours.consumer_limits,
        ConsumerLimits {
            inactive_threshold: 2 * NANOS_PER_SECOND,
            max_ack_pending: 3
        }
    );

    // And what we write back, the client reads to the same values.
    let info = StreamInfo {
        config: ours.with_defaults(),
        ..stream_info()
    };
    let back: stream::Info =
        client_reads(&ApiResponse::ok(ResponseType::StreamCreate, info).to_vec()).unwrap();
    assert_eq!(back.config.max_messages_per_subject, 5);
    assert_eq!(back.config.compression, Some(stream::Compression::S2));
    assert_eq!(
        back.config.sources.unwrap()[0].filter_subject.as_deref(),
        Some("$KV.a.>")
    );
}

#[test]
fn consumer_create_requests_from_the_client_parse() {
    use async_nats::jetstream::consumer::IntoConsumerConfig;

    let pull = consumer::pull::Config {
        durable_name: Some("C".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        filter_subject: "orders.new".into(),
        max_ack_pending: 100,
        inactive_threshold: Duration::from_secs(60),
        ..Default::default()
    }
    .into_consumer_config();
    for action in ["", "create", "update"] {
        // The exact body async-nats sends (`create_consumer_on_stream_action`).
        let body = serde_json::json!({"stream_name": "ORDERS", "config": pull, "action": action});
        let req: CreateConsumerRequest = serde_json::from_value(body).unwrap();
        assert_eq!(req.stream_name, "ORDERS");
        assert_eq!(req.action.as_str(), action);
        assert_eq!(req.config.durable_name, "C");
        assert_eq!(req.config.ack_policy, AckPolicy::Explicit);
        assert_eq!(req.config.deliver_policy, DeliverPolicy::All);
        assert_eq!(req.config.filter_subject, "orders.new");
        assert_eq!(req.config.max_ack_pending, 100);
        assert_eq!(req.config.inactive_threshold, 60 * NANOS_PER_SECOND);
        assert!(req.config.is_pull());
    }

    // An ordered push consumer: ephemeral, deliver last per subject, flow control.
    let ordered = consumer::push::OrderedConfig {
        deliver_subject: "_INBOX.abc".into(),
        filter_subject: "$KV.b.>".into(),
        deliver_policy: consumer::DeliverPolicy::LastPerSubject,
        headers_only: true,
        ..Default::default()
    }
    .into_consumer_config();
    let body = serde_json::json!({"stream_name": "KV_b", "config": ordered, "action": ""});
    let req: CreateConsumerRequest = serde_json::from_value(body).unwrap();
    assert_eq!(req.action, ConsumerAction::CreateOrUpdate);
    let c = req.config;
    assert!(!c.is_pull() && !c.is_durable());
    assert_eq!(c.deliver_policy, DeliverPolicy::LastPerSubject);
    assert_eq!(c.ack_policy, AckPolicy::None);
    assert!(c.flow_control && c.headers_only && c.mem_storage);
    assert!(c.idle_heartbeat > 0);
    assert_eq!(c.num_replicas, 1);

    // By start sequence and by start time, as the client's flattened enum writes them.
    let by_seq = consumer::Config {
        deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: 9 },
        ..Default::default()
    };
    let c: ConsumerConfig = serde_json::from_slice(&json(&by_seq)).unwrap();
    assert_eq!(
        (c.deliver_policy, c.opt_start_seq),
        (DeliverPolicy::ByStartSequence, 9)
    );
    let start_time = async_nats::jetstream::consumer::DeliverPolicy::ByStartTime {
        start_time: time_of(T0),
    };
    let by_time = consumer::Config {
        deliver_policy: start_time,
        backoff: vec![Duration::from_millis(10)],
        ..Default::default()
    };
    let c: ConsumerConfig = serde_json::from_slice(&json(&by_time)).unwrap();
    assert_eq!(c.deliver_policy, DeliverPolicy::ByStartTime);
    assert_eq!(c.opt_start_time, Some(Timestamp::from_unix_nanos(T0)));
    assert_eq!(c.backoff, [10_000_000]);
}

fn time_of(nanos: i64) -> async_nats::datetime::DateTime {
    async_nats::datetime::from_nanos(i128::from(nanos)).unwrap()
}

#[test]
fn other_client_requests_parse() {
    let batch = consumer::pull::BatchConfig {
        batch: 10,
        expires: Some(Duration::from_secs(5)),
        no_wait: false,
        max_bytes: 1024,
        idle_heartbeat: Duration::from_secs(1),
        ..Default::default()
    };
    let next = NextRequest::parse(&json(&batch)).unwrap();
    assert_eq!(
        next,
        NextRequest {
            expires: 5 * NANOS_PER_SECOND,
            batch: 10,
            max_bytes: 1024,
            no_wait: false,
            idle_heartbeat: NANOS_PER_SECOND
        }
    );

    let purge = stream::PurgeRequest {
        sequence: None,
        filter: Some("orders.*".into()),
        keep: Some(2),
    };
    let ours: StreamPurgeRequest = serde_json::from_slice(&json(&purge)).unwrap();
    assert_eq!(
        ours,
        StreamPurgeRequest {
            seq: 0,
            filter: "orders.*".into(),
            keep: 2
        }
    );

    // async-nats's (private-field) RawMessageRequest / DirectGetRequest write these.
    for (body, expected) in [
        (
            r#"{"seq":5}"#,
            MsgGetRequest {
                seq: 5,
                ..Default::default()
            },
        ),
        (
            r#"{"last_by_subj":"$KV.b.k"}"#,
            MsgGetRequest {
                last_by_subj: "$KV.b.k".into(),
                ..Default::default()
            },
        ),
        (
            r#"{"seq":3,"next_by_subj":"a.>"}"#,
            MsgGetRequest {
                seq: 3,
                next_by_subj: "a.>".into(),
                ..Default::default()
            },
        ),
    ] {
        assert_eq!(
            serde_json::from_str::<MsgGetRequest>(body).unwrap(),
            expected
        );
    }
}

#[test]
fn tern_reads_what_tern_writes_for_every_response() {
    fn round_trip<T>(kind: ResponseType, payload: T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let reply = ApiResponse::ok(kind, payload);
        let back: ApiResponse<T> = serde_json::from_slice(&reply.to_vec()).unwrap();
        assert_eq!(back, reply);
        let failed: ApiResponse<T> =
            ApiResponse::err(kind, ApiError::new(ApiErrorCode::BAD_REQUEST));
        let back: ApiResponse<T> = serde_json::from_slice(&failed.to_vec()).unwrap();
        assert_eq!(back, failed);
    }
    round_trip(
        ResponseType::StreamInfo,
        StreamInfoResponse {
            paged: Paged::default(),
            info: stream_info(),
        },
    );
    round_trip(ResponseType::StreamCreate, stream_info());
    round_trip(ResponseType::ConsumerInfo, consumer_info());
    round_trip(ResponseType::AccountInfo, AccountInfo::default());
    round_trip(
        ResponseType::StreamPurge,
        StreamPurgeResponse {
            success: true,
            purged: 1,
        },
    );
    round_trip(
        ResponseType::StreamMsgDelete,
        SuccessResponse { success: true },
    );
}
