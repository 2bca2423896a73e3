-- The contract's tables (CONTRACT.md section 4). Every table is a ReplacingMergeTree
-- with a deterministic key and a growing version: writing the same rows twice, or
-- a newer row over an older one, leaves one row per key when read with FINAL.

CREATE TABLE IF NOT EXISTS {db}.events
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
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
-- Only immutable parts of an event: the same event_id always lands on the same key,
-- while account_id can be re-attributed by a newer version.
ORDER BY (channel, type, occurred_at, event_id);

CREATE TABLE IF NOT EXISTS {db}.phase_transitions
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
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY (account_id, to_phase);

CREATE TABLE IF NOT EXISTS {db}.journeys
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
ENGINE = ReplacingMergeTree(version, is_deleted)
ORDER BY account_id;

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id     String,
    kind         LowCardinality(String),
    account_id   String,
    raised_at    DateTime64(3, 'UTC'),
    details      String,
    resolved_at  Nullable(DateTime64(3, 'UTC')),
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY alert_id;

CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    dead_letter_id  String,
    received_at     DateTime64(3, 'UTC'),
    reason          String,
    payload         String,
    source          String
)
ENGINE = ReplacingMergeTree
ORDER BY dead_letter_id;

CREATE TABLE IF NOT EXISTS {db}.identity_links
(
    kind        LowCardinality(String),
    alias       String,
    account_id  String,
    linked_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (kind, alias);

-- The documented way for BI tools to read current state: one row per account.
CREATE VIEW IF NOT EXISTS {db}.journeys_current AS
SELECT account_id, phase, phase_since, first_seen, last_seen, last_activity, events, contacts,
       dmu_roles, segment
FROM {db}.journeys FINAL;

CREATE VIEW IF NOT EXISTS {db}.open_alerts AS
SELECT alert_id, kind, account_id, raised_at, details
FROM {db}.alerts FINAL
WHERE resolved_at IS NULL;
