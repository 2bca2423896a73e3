-- journeys on a ClickHouse cluster: the tables of
-- sinks/clickhouse/migrations/0001_initial.sql, replicated and sharded.
--
--     clickhouse-client --multiquery < deploy/clickhouse/cluster.sql
--
-- Needs the macros {cluster}, {shard} and {replica} on every node (the
-- Altinity operator sets them) and ClickHouse Keeper for replication.
--
-- Layout: each contract table is a ReplicatedReplacingMergeTree named
-- <table>_local on every node, with the same columns, version / is_deleted,
-- ORDER BY and PARTITION BY as the single-node schema; a Distributed table
-- with the contract's name (events, journeys, ...) in front of it. journeys
-- reads and writes the contract names, so the sink, `journeys replay` and BI
-- tools work unchanged; `journeys migrate` (and the sink's own migration step)
-- find every table already there and create nothing but schema_migrations.
--
-- Sharding key. ReplacingMergeTree collapses versions of a key only within
-- one shard, so FINAL is exact only if every version of a row lands on the
-- same shard: the sharding key must be a function of the row's ORDER BY key,
-- never of a column that a newer version may change.
--   * journeys, phase_transitions: cityHash64(account_id). The key starts
--     with account_id, and one account's journey and transitions sit together,
--     so per-account joins stay on one shard.
--   * events: cityHash64(event_id). account_id is NOT usable: re-attribution
--     writes a newer version of an event with another account_id, which would
--     land on another shard and survive FINAL as a second row.
--   * alerts: cityHash64(alert_id). Not account_id either: when two accounts
--     merge, the resolving version of an open alert carries the surviving
--     account.
--   * identity_links: cityHash64(kind, alias); dead_letters:
--     cityHash64(dead_letter_id).
--
-- Settings for the journeys user (a settings profile, or users.d XML):
--   distributed_foreground_insert = 1  -- an insert returns once the shards
--       have it: the sink re-attributes events with INSERT ... SELECT right
--       after inserting them, and commits Kafka offsets only after a write.
--   distributed_product_mode = 'global'  -- the re-attribution and the
--       median-time query join two Distributed tables.
-- e.g.  ALTER USER journeys ON CLUSTER '{cluster}'
--           SETTINGS distributed_foreground_insert = 1, distributed_product_mode = 'global';
--
-- Keep this file in step with the migrations: every new migration needs its
-- ON CLUSTER twin here (tests/unit/deploy checks that the columns agree).

CREATE DATABASE IF NOT EXISTS journeys ON CLUSTER '{cluster}';

CREATE TABLE IF NOT EXISTS journeys.events_local ON CLUSTER '{cluster}'
(
    event_id      String,
    channel       LowCardinality(String),
    type          LowCardinality(String),
    occurred_at   DateTime64(3, 'UTC'),
    account_id    String,
    contact_id    String,
    anonymous_id  String,
    email         String,
    dmu_role      LowCardinality(String),
    segment       LowCardinality(String),
    properties    String,
    context       String,
    late          UInt8,
    version       UInt64,
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX account_idx account_id TYPE bloom_filter GRANULARITY 4,
    INDEX anonymous_idx anonymous_id TYPE bloom_filter GRANULARITY 4,
    INDEX contact_idx contact_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (channel, type, occurred_at, event_id);

CREATE TABLE IF NOT EXISTS journeys.events ON CLUSTER '{cluster}'
AS journeys.events_local
ENGINE = Distributed('{cluster}', journeys, events_local, cityHash64(event_id));

CREATE TABLE IF NOT EXISTS journeys.phase_transitions_local ON CLUSTER '{cluster}'
(
    account_id       String,
    from_phase       LowCardinality(String),
    to_phase         LowCardinality(String),
    transitioned_at  DateTime64(3, 'UTC'),
    event_id         String,
    event_type       LowCardinality(String),
    channel          LowCardinality(String),
    version          UInt64,
    is_deleted       UInt8
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', version, is_deleted)
ORDER BY (account_id, to_phase);

CREATE TABLE IF NOT EXISTS journeys.phase_transitions ON CLUSTER '{cluster}'
AS journeys.phase_transitions_local
ENGINE = Distributed('{cluster}', journeys, phase_transitions_local, cityHash64(account_id));

CREATE TABLE IF NOT EXISTS journeys.journeys_local ON CLUSTER '{cluster}'
(
    account_id     String,
    phase          LowCardinality(String),
    phase_since    DateTime64(3, 'UTC'),
    first_seen     DateTime64(3, 'UTC'),
    last_seen      DateTime64(3, 'UTC'),
    last_activity  Nullable(DateTime64(3, 'UTC')),
    events         UInt64,
    contacts       UInt32,
    dmu_roles      Array(LowCardinality(String)),
    segment        LowCardinality(String),
    version        UInt64,
    is_deleted     UInt8
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', version, is_deleted)
ORDER BY account_id;

CREATE TABLE IF NOT EXISTS journeys.journeys ON CLUSTER '{cluster}'
AS journeys.journeys_local
ENGINE = Distributed('{cluster}', journeys, journeys_local, cityHash64(account_id));

CREATE TABLE IF NOT EXISTS journeys.alerts_local ON CLUSTER '{cluster}'
(
    alert_id     String,
    kind         LowCardinality(String),
    account_id   String,
    raised_at    DateTime64(3, 'UTC'),
    details      String,
    resolved_at  Nullable(DateTime64(3, 'UTC')),
    version      UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', version)
ORDER BY alert_id;

CREATE TABLE IF NOT EXISTS journeys.alerts ON CLUSTER '{cluster}'
AS journeys.alerts_local
ENGINE = Distributed('{cluster}', journeys, alerts_local, cityHash64(alert_id));

CREATE TABLE IF NOT EXISTS journeys.dead_letters_local ON CLUSTER '{cluster}'
(
    dead_letter_id  String,
    received_at     DateTime64(3, 'UTC'),
    reason          String,
    payload         String,
    source          String
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
ORDER BY dead_letter_id;

CREATE TABLE IF NOT EXISTS journeys.dead_letters ON CLUSTER '{cluster}'
AS journeys.dead_letters_local
ENGINE = Distributed('{cluster}', journeys, dead_letters_local, cityHash64(dead_letter_id));

CREATE TABLE IF NOT EXISTS journeys.identity_links_local ON CLUSTER '{cluster}'
(
    kind        LowCardinality(String),
    alias       String,
    account_id  String,
    linked_at   DateTime64(3, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
ORDER BY (kind, alias);

CREATE TABLE IF NOT EXISTS journeys.identity_links ON CLUSTER '{cluster}'
AS journeys.identity_links_local
ENGINE = Distributed('{cluster}', journeys, identity_links_local, cityHash64(kind, alias));

-- The documented views, over the Distributed tables: FINAL runs on each shard,
-- which is exact because every version of a key lives on one shard.
CREATE VIEW IF NOT EXISTS journeys.journeys_current ON CLUSTER '{cluster}' AS
SELECT account_id, phase, phase_since, first_seen, last_seen, last_activity, events, contacts,
       dmu_roles, segment
FROM journeys.journeys FINAL;

CREATE VIEW IF NOT EXISTS journeys.open_alerts ON CLUSTER '{cluster}' AS
SELECT alert_id, kind, account_id, raised_at, details
FROM journeys.alerts FINAL
WHERE resolved_at IS NULL;
