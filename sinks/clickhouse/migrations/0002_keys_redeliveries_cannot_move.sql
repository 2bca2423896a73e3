-- Keys that a redelivery cannot move, and no partitions a backfill can overflow.
--
-- events: one row per event_id, whatever its deliveries (contract section 1). The first
-- schema keyed and partitioned events on occurred_at, which a retried Segment call moves:
-- two deliveries stayed two rows, and a backfill of many years hit "Too many partitions"
-- (code 252). Now the sorting key is event_id alone and the table is not partitioned.
-- `engine_account_id` keeps the account the journey engine stored the event under ('' for
-- none), so re-attribution can start again from it when a link changes (an alias re-linked,
-- an account merged elsewhere); account_id is the attributed account readers use.
-- Which row of an event_id wins is `precedence`: the earliest occurred_at first (bits
-- 64..127: 2^44 - 1 less the time in ms, 2^44 ms reaching past DateTime64's year 2299),
-- then the highest `version` (bits 0..63: late rows 1, on-time rows 2, re-attributions
-- above 1000), so a re-attribution replaces the row it moved and an earlier delivery
-- replaces a later one even when the later one was re-attributed first (the writer then
-- re-attributes the earlier one in the same flush).
--
-- identity_links: one row per (kind, alias), the earliest linked_at winning (contract
-- section 2: an alias seen with two accounts belongs to the one it was linked to earliest
-- in event time). A re-linked alias is a new row; it supersedes the stored one when its
-- linked_at is earlier, and a redelivered old batch never undoes it. Equal times: the last
-- written wins.
--
-- alerts: `withdrawn` marks a version of an alert that late data showed never happened;
-- `alerts FINAL` still shows it (flagged), the alerts_current and open_alerts views do not.
--
-- Upgrading a database: each table is renamed away, created anew and filled from the old
-- one, which is then dropped. `journeys migrate` records every step, so an interrupted
-- upgrade resumes where it stopped. Stop the sink (and `journeys run`) while it runs: rows
-- written to the old table after its copy would be dropped with it.

RENAME TABLE IF EXISTS {db}.events TO {db}.events_0001;

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
    engine_account_id  String,
    version       UInt64,
    precedence    UInt128 MATERIALIZED bitShiftLeft(toUInt128(17592186044415 - toUnixTimestamp64Milli(occurred_at)), 64) + version,
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX account_idx account_id TYPE bloom_filter GRANULARITY 4,
    INDEX anonymous_idx anonymous_id TYPE bloom_filter GRANULARITY 4,
    INDEX contact_idx contact_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree(precedence)
ORDER BY event_id;

-- Each event_id once: the earliest delivery (ties: the highest version), carrying the
-- account of the newest attribution any of its deliveries received. The engine's own
-- account is that of the newest row the engine wrote (versions below 1000); where only
-- re-attributed rows are left, the current account stands for it.
INSERT INTO {db}.events
    (event_id, channel, type, occurred_at, account_id, contact_id, anonymous_id, email,
     dmu_role, segment, properties, context, late, engine_account_id, version, inserted_at)
SELECT event_id,
       argMax(channel, p), argMax(type, p), argMax(occurred_at, p),
       argMax(account_id, version),
       argMax(contact_id, p), argMax(anonymous_id, p), argMax(email, p), argMax(dmu_role, p),
       argMax(segment, p), argMax(properties, p), argMax(context, p), argMax(late, p),
       if(countIf(version < 1000) > 0, argMaxIf(account_id, version, version < 1000),
          argMax(account_id, version)),
       max(version), argMax(inserted_at, p)
FROM
(
    SELECT *,
           bitShiftLeft(toUInt128(17592186044415 - toUnixTimestamp64Milli(occurred_at)), 64) + version AS p
    FROM {db}.events_0001
)
GROUP BY event_id;

DROP TABLE IF EXISTS {db}.events_0001;

RENAME TABLE IF EXISTS {db}.identity_links TO {db}.identity_links_0001;

CREATE TABLE IF NOT EXISTS {db}.identity_links
(
    kind        LowCardinality(String),
    alias       String,
    account_id  String,
    linked_at   DateTime64(3, 'UTC'),
    precedence  UInt64 MATERIALIZED toUInt64(17592186044415 - toUnixTimestamp64Milli(linked_at))
)
ENGINE = ReplacingMergeTree(precedence)
ORDER BY (kind, alias);

INSERT INTO {db}.identity_links (kind, alias, account_id, linked_at)
SELECT kind, alias, account_id, linked_at FROM {db}.identity_links_0001;

DROP TABLE IF EXISTS {db}.identity_links_0001;

RENAME TABLE IF EXISTS {db}.alerts TO {db}.alerts_0001;

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id     String,
    kind         LowCardinality(String),
    account_id   String,
    raised_at    DateTime64(3, 'UTC'),
    details      String,
    resolved_at  Nullable(DateTime64(3, 'UTC')),
    withdrawn    UInt8 DEFAULT 0,
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY alert_id;

INSERT INTO {db}.alerts (alert_id, kind, account_id, raised_at, details, resolved_at, version)
SELECT alert_id, kind, account_id, raised_at, details, resolved_at, version
FROM {db}.alerts_0001;

DROP TABLE IF EXISTS {db}.alerts_0001;
