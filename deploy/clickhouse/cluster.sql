-- journeys on a ClickHouse cluster: the schema of every migration in
-- sinks/clickhouse/migrations/ (0001 to 0011), replicated and sharded.
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
-- find every migration recorded in schema_migrations (the end of this file) and
-- change nothing.
--
-- No table is partitioned: events are keyed on event_id alone (a redelivery
-- with a moved occurred_at must meet the row it repeats), so a backfill of
-- any span of years is one insert per shard.
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
--     cityHash64(dead_letter_id); generations: cityHash64(generation, partition).
--
-- Settings for the journeys user (a settings profile, or users.d XML):
--   distributed_foreground_insert = 1  -- an insert returns once the shards
--       have it: the sink re-attributes events with INSERT ... SELECT right
--       after inserting them, and commits Kafka offsets only after a write.
--   distributed_product_mode = 'global'  -- the re-attribution, the
--       median-time query and identity_links_current join two Distributed
--       tables.
-- e.g.  ALTER USER journeys ON CLUSTER '{cluster}'
--           SETTINGS distributed_foreground_insert = 1, distributed_product_mode = 'global';
--
-- Keep this file in step with the migrations: every new migration needs its
-- ON CLUSTER twin here and its name in the last INSERT (tests/unit/deploy
-- checks that columns, keys, views and names agree).
--
-- Upgrading a cluster made from the 0001-only version of this file (events
-- partitioned by month and ordered by time): with the sinks stopped, for each
-- of events, identity_links and alerts, on the cluster,
--   RENAME TABLE journeys.<t>_local TO journeys.<t>_0001 ON CLUSTER '{cluster}';
--   then this file's CREATE TABLE for <t>_local;
--   INSERT INTO journeys.<t>_local ... SELECT ... FROM journeys.<t>_0001 (on every
--       shard, as in migration 0002; the rows stay on their shard, since the
--       sharding keys do not change);
--   DROP TABLE journeys.<t>_0001 ON CLUSTER '{cluster}' SYNC;
-- recreate the Distributed tables (DROP and this file's CREATE ... AS, which
-- copies the new columns), run the views, and record the migrations as below.

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
    engine_account_id  String,
    version       UInt64,
    precedence    UInt128 MATERIALIZED bitShiftLeft(toUInt128(17592186044415 - toUnixTimestamp64Milli(occurred_at)), 64) + version,
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX account_idx account_id TYPE bloom_filter GRANULARITY 4,
    INDEX anonymous_idx anonymous_id TYPE bloom_filter GRANULARITY 4,
    INDEX contact_idx contact_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', precedence)
ORDER BY event_id;

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
    withdrawn    UInt8 DEFAULT 0,
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
    linked_at   DateTime64(3, 'UTC'),
    precedence  UInt64 MATERIALIZED toUInt64(17592186044415 - toUnixTimestamp64Milli(linked_at))
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', precedence)
ORDER BY (kind, alias);

CREATE TABLE IF NOT EXISTS journeys.identity_links ON CLUSTER '{cluster}'
AS journeys.identity_links_local
ENGINE = Distributed('{cluster}', journeys, identity_links_local, cityHash64(kind, alias));

-- The documented views (migrations 0003 and 0004), over the Distributed tables: FINAL runs
-- on each shard, which is exact because every version of a key lives on one shard. The
-- analytics views join Distributed tables: the journeys user needs
-- distributed_product_mode = 'global' (see the settings above).

CREATE OR REPLACE VIEW journeys.events_current ON CLUSTER '{cluster}' AS
SELECT event_id, channel, type, occurred_at, account_id, contact_id, anonymous_id, email,
       dmu_role, segment, properties, context
FROM journeys.events FINAL;

CREATE OR REPLACE VIEW journeys.phase_transitions_current ON CLUSTER '{cluster}' AS
SELECT account_id, from_phase, to_phase, transitioned_at, event_id, event_type, channel
FROM journeys.phase_transitions FINAL
WHERE is_deleted = 0;

CREATE OR REPLACE VIEW journeys.journeys_current ON CLUSTER '{cluster}' AS
SELECT account_id, phase, phase_since, first_seen, last_seen, last_activity, events, contacts,
       dmu_roles, segment
FROM journeys.journeys FINAL
WHERE is_deleted = 0;

CREATE OR REPLACE VIEW journeys.alerts_current ON CLUSTER '{cluster}' AS
SELECT alert_id, kind, account_id, raised_at, details, resolved_at,
       if(resolved_at IS NULL, 'raised', 'resolved') AS status
FROM journeys.alerts FINAL
WHERE withdrawn = 0;

CREATE OR REPLACE VIEW journeys.open_alerts ON CLUSTER '{cluster}' AS
SELECT alert_id, kind, account_id, raised_at, details
FROM journeys.alerts FINAL
WHERE resolved_at IS NULL AND withdrawn = 0;

-- Each alias names the account it ends at, through the `account` rows (two steps: a
-- free-mail contact into a company domain into an ERP account); migration 0005.
CREATE OR REPLACE VIEW journeys.identity_links_current ON CLUSTER '{cluster}' AS
WITH merged AS (
    SELECT alias, account_id FROM journeys.identity_links FINAL WHERE kind = 'account'
)
SELECT l.kind AS kind,
       l.alias AS alias,
       multiIf(second.account_id != '', second.account_id,
               first.account_id != '', first.account_id,
               l.account_id) AS account_id,
       l.linked_at AS linked_at
FROM journeys.identity_links AS l FINAL
LEFT JOIN merged AS first ON first.alias = l.account_id
LEFT JOIN merged AS second ON second.alias = first.account_id;

CREATE OR REPLACE VIEW journeys.dead_letters_current ON CLUSTER '{cluster}' AS
SELECT dead_letter_id, received_at, reason, payload, source
FROM journeys.dead_letters FINAL;

-- Accounts per phase now, with their share of all accounts.
CREATE OR REPLACE VIEW journeys.analytics_accounts_per_phase ON CLUSTER '{cluster}' AS
SELECT phase,
       indexOf(['awareness', 'consideration', 'decision', 'purchase', 'delivery', 'loyalty'], phase) AS phase_order,
       count() AS accounts,
       count() / sum(count()) OVER () AS share
FROM journeys.journeys_current
GROUP BY phase
ORDER BY phase_order = 0, phase_order, phase;

-- Accounts per phase now within each segment ('' for accounts without one), with their
-- share of the segment's accounts.
CREATE OR REPLACE VIEW journeys.analytics_accounts_per_phase_by_segment ON CLUSTER '{cluster}' AS
SELECT segment, phase,
       indexOf(['awareness', 'consideration', 'decision', 'purchase', 'delivery', 'loyalty'], phase) AS phase_order,
       count() AS accounts,
       count() / sum(count()) OVER (PARTITION BY segment) AS share_of_segment
FROM journeys.journeys_current
GROUP BY segment, phase
ORDER BY segment, phase_order = 0, phase_order, phase;

-- Monthly cohorts (the month an account was first seen): per default phase, how many of
-- the cohort reached it (phases never move back, so reaching a later phase counts), and
-- the median days from first seen, and from the phase before, to entering it (among the
-- cohort's accounts with a transition into it; skipped phases have none).
CREATE OR REPLACE VIEW journeys.analytics_cohort_funnel ON CLUSTER '{cluster}' AS
WITH ['awareness', 'consideration', 'decision', 'purchase', 'delivery', 'loyalty'] AS phases
SELECT cohort_month, phases[i] AS phase, i AS phase_order,
       count() AS cohort_accounts,
       countIf(reached >= i) AS reached_accounts,
       reached_accounts / cohort_accounts AS reached_share,
       countIf(entered[i] > 0) AS entered_accounts,
       if(entered_accounts = 0, NULL,
          quantileExactInclusiveIf(0.5)((entered[i] - first_ms) / 86400000, entered[i] > 0))
           AS median_days_from_first_seen,
       if(countIf(entered[i] > 0 AND previous[i] > 0) = 0, NULL,
          quantileExactInclusiveIf(0.5)((entered[i] - previous[i]) / 86400000,
                                        entered[i] > 0 AND previous[i] > 0))
           AS median_days_from_previous_phase
FROM
(
    SELECT toStartOfMonth(j.first_seen) AS cohort_month,
           indexOf(phases, j.phase) AS reached,
           toUnixTimestamp64Milli(j.first_seen) AS first_ms,
           arrayMap(p -> toInt64(if(indexOf(t.to_phases, p) = 0, 0,
                                    t.times[indexOf(t.to_phases, p)])), phases) AS entered,
           arrayMap(p -> toInt64(if(indexOf(t.to_phases, p) = 0
                                        OR indexOf(t.to_phases, t.from_phases[indexOf(t.to_phases, p)]) = 0,
                                    0,
                                    t.times[indexOf(t.to_phases, t.from_phases[indexOf(t.to_phases, p)])])),
                    phases) AS previous
    FROM journeys.journeys_current AS j
    LEFT JOIN
    (
        SELECT account_id, groupArray(to_phase) AS to_phases, groupArray(from_phase) AS from_phases,
               groupArray(toUnixTimestamp64Milli(transitioned_at)) AS times
        FROM journeys.phase_transitions_current
        GROUP BY account_id
    ) AS t ON t.account_id = j.account_id
)
ARRAY JOIN arrayEnumerate(phases) AS i
GROUP BY cohort_month, i
ORDER BY cohort_month, i;

-- Time in phase: per phase, the accounts in it now and the median days they have been
-- in it (to as_of); the accounts that moved on from it and the median days they spent in
-- it; and the accounts in it now with an open deal_stalled alert, and their share.
CREATE OR REPLACE VIEW journeys.analytics_time_in_phase ON CLUSTER '{cluster}' AS
WITH (SELECT max(last_seen) FROM journeys.journeys_current) AS as_of
SELECT p.phase AS phase,
       indexOf(['awareness', 'consideration', 'decision', 'purchase', 'delivery', 'loyalty'], p.phase) AS phase_order,
       p.entered AS accounts_entered,
       n.accounts AS accounts_now,
       if(n.accounts = 0, NULL, n.median_days) AS median_days_in_phase_now,
       m.accounts AS accounts_moved_on,
       if(m.accounts = 0, NULL, m.median_days) AS median_days_before_moving_on,
       n.stalled AS stalled_accounts,
       if(n.accounts = 0, NULL, n.stalled / n.accounts) AS stalled_share,
       as_of
FROM
(
    SELECT to_phase AS phase, count() AS entered
    FROM journeys.phase_transitions_current
    GROUP BY to_phase
) AS p
LEFT JOIN
(
    SELECT j.phase AS phase, count() AS accounts,
           quantileExactInclusive(0.5)((toUnixTimestamp64Milli(as_of) - toUnixTimestamp64Milli(j.phase_since)) / 86400000) AS median_days,
           countIf(s.account_id != '') AS stalled
    FROM journeys.journeys_current AS j
    LEFT JOIN
    (
        SELECT DISTINCT account_id FROM journeys.open_alerts WHERE kind = 'deal_stalled'
    ) AS s ON s.account_id = j.account_id
    GROUP BY j.phase
) AS n ON n.phase = p.phase
LEFT JOIN
(
    SELECT t.to_phase AS phase, count() AS accounts,
           quantileExactInclusive(0.5)((toUnixTimestamp64Milli(nxt.transitioned_at) - toUnixTimestamp64Milli(t.transitioned_at)) / 86400000) AS median_days
    FROM journeys.phase_transitions_current AS t
    INNER JOIN journeys.phase_transitions_current AS nxt
        ON nxt.account_id = t.account_id AND nxt.from_phase = t.to_phase
    GROUP BY t.to_phase
) AS m ON m.phase = p.phase
ORDER BY phase_order = 0, phase_order, phase;

-- The touchpoints that precede each transition: per kind of transition (from, to) and per
-- channel and event type, the account's events after it entered the phase it left and up
-- to the transition (its first transition: everything up to it), how many accounts had
-- such a touchpoint, and their share of the accounts that made the transition.
CREATE OR REPLACE VIEW journeys.analytics_transition_touchpoints ON CLUSTER '{cluster}' AS
SELECT w.from_phase AS from_phase, w.to_phase AS to_phase, e.channel AS channel, e.type AS type,
       count() AS touchpoints,
       uniqExact(w.account_id) AS accounts,
       any(c.transitions) AS transitions,
       accounts / transitions AS share_of_transitions
FROM
(
    SELECT t.account_id AS account_id, t.from_phase AS from_phase, t.to_phase AS to_phase,
           t.transitioned_at AS until,
           if(t.from_phase = '', toDateTime64('1900-01-01 00:00:00', 3, 'UTC'), prev.transitioned_at) AS since
    FROM journeys.phase_transitions_current AS t
    LEFT JOIN journeys.phase_transitions_current AS prev
        ON prev.account_id = t.account_id AND prev.to_phase = t.from_phase
) AS w
INNER JOIN journeys.events_current AS e ON e.account_id = w.account_id
INNER JOIN
(
    SELECT from_phase, to_phase, count() AS transitions
    FROM journeys.phase_transitions_current
    GROUP BY from_phase, to_phase
) AS c ON c.from_phase = w.from_phase AND c.to_phase = w.to_phase
WHERE e.occurred_at > w.since AND e.occurred_at <= w.until
GROUP BY from_phase, to_phase, channel, type
ORDER BY from_phase, to_phase, touchpoints DESC, channel, type;

-- The same per channel only.
CREATE OR REPLACE VIEW journeys.analytics_transition_channels ON CLUSTER '{cluster}' AS
SELECT w.from_phase AS from_phase, w.to_phase AS to_phase, e.channel AS channel,
       count() AS touchpoints,
       uniqExact(w.account_id) AS accounts,
       any(c.transitions) AS transitions,
       accounts / transitions AS share_of_transitions
FROM
(
    SELECT t.account_id AS account_id, t.from_phase AS from_phase, t.to_phase AS to_phase,
           t.transitioned_at AS until,
           if(t.from_phase = '', toDateTime64('1900-01-01 00:00:00', 3, 'UTC'), prev.transitioned_at) AS since
    FROM journeys.phase_transitions_current AS t
    LEFT JOIN journeys.phase_transitions_current AS prev
        ON prev.account_id = t.account_id AND prev.to_phase = t.from_phase
) AS w
INNER JOIN journeys.events_current AS e ON e.account_id = w.account_id
INNER JOIN
(
    SELECT from_phase, to_phase, count() AS transitions
    FROM journeys.phase_transitions_current
    GROUP BY from_phase, to_phase
) AS c ON c.from_phase = w.from_phase AND c.to_phase = w.to_phase
WHERE e.occurred_at > w.since AND e.occurred_at <= w.until
GROUP BY from_phase, to_phase, channel
ORDER BY from_phase, to_phase, touchpoints DESC, channel;

-- DMU coverage per account: the roles engaged (seen on the account's own activity), how
-- many, the contacts engaged, and whether a decider is among them.
CREATE OR REPLACE VIEW journeys.analytics_dmu_coverage ON CLUSTER '{cluster}' AS
SELECT j.account_id AS account_id, j.phase AS phase,
       indexOf(['awareness', 'consideration', 'decision', 'purchase', 'delivery', 'loyalty'], j.phase) AS phase_order,
       j.segment AS segment,
       arraySort(e.roles) AS roles_engaged,
       length(e.roles) AS roles_engaged_count,
       e.contacts AS contacts_engaged,
       has(e.roles, 'decider') AS decider_engaged
FROM journeys.journeys_current AS j
LEFT JOIN
(
    SELECT account_id,
           groupUniqArrayIf(dmu_role, dmu_role != '') AS roles,
           uniqExactIf(contact_id, contact_id != '') AS contacts
    FROM journeys.events_current
    WHERE (channel, type) NOT IN (('email', 'sent'), ('email', 'delivered'), ('email', 'bounce'),
                                  ('email', 'deferred'), ('order', 'quote_sent'),
                                  ('order', 'invoice_sent'), ('order', 'order_shipped'),
                                  ('order', 'order_delivered'))
    GROUP BY account_id
) AS e ON e.account_id = j.account_id;

-- DMU roles per phase: of the accounts in a phase now, how many have each role engaged.
CREATE OR REPLACE VIEW journeys.analytics_dmu_roles ON CLUSTER '{cluster}' AS
SELECT phase, phase_order, role,
       count() AS accounts,
       countIf(has(roles_engaged, role)) AS accounts_engaged,
       accounts_engaged / accounts AS share_engaged
FROM journeys.analytics_dmu_coverage
ARRAY JOIN ['initiator', 'gatekeeper', 'influencer', 'decider', 'buyer', 'user'] AS role
GROUP BY phase, phase_order, role
ORDER BY phase_order = 0, phase_order, phase,
         indexOf(['initiator', 'gatekeeper', 'influencer', 'decider', 'buyer', 'user'], role);

-- Accounts in decision now with no decider engaged: who to bring to the table.
CREATE OR REPLACE VIEW journeys.analytics_decision_without_decider ON CLUSTER '{cluster}' AS
WITH (SELECT max(last_seen) FROM journeys.journeys_current) AS as_of
SELECT c.account_id AS account_id, c.segment AS segment, j.phase_since AS decision_since,
       (toUnixTimestamp64Milli(as_of) - toUnixTimestamp64Milli(j.phase_since)) / 86400000 AS days_in_decision,
       c.roles_engaged AS roles_engaged, c.contacts_engaged AS contacts_engaged,
       as_of
FROM journeys.analytics_dmu_coverage AS c
INNER JOIN journeys.journeys_current AS j ON j.account_id = c.account_id
WHERE c.phase = 'decision' AND NOT c.decider_engaged
ORDER BY days_in_decision DESC, account_id;

-- Open alerts with what an account manager needs: the account's phase and segment, the
-- value of an abandoned cart (price x quantity of the lines added in the cart episode,
-- less lines whose SKU was removed afterwards in it), and the age of a stalled deal (days
-- from its opening to as_of); days_open counts from the alert.
CREATE OR REPLACE VIEW journeys.analytics_open_alerts ON CLUSTER '{cluster}' AS
WITH (SELECT max(last_seen) FROM journeys.journeys_current) AS as_of
SELECT a.alert_id AS alert_id, a.kind AS kind, a.account_id AS account_id,
       j.phase AS phase, j.segment AS segment, a.raised_at AS raised_at,
       (toUnixTimestamp64Milli(as_of) - toUnixTimestamp64Milli(a.raised_at)) / 86400000 AS days_open,
       if(a.kind = 'cart_abandoned', ifNull(v.cart_value, 0), NULL) AS cart_value,
       if(a.kind = 'deal_stalled',
          parseDateTime64BestEffortOrNull(JSONExtractString(a.details, 'open_since'), 3, 'UTC'),
          NULL) AS deal_opened_at,
       if(a.kind = 'deal_stalled',
          (toUnixTimestamp64Milli(as_of) - toUnixTimestamp64Milli(deal_opened_at)) / 86400000,
          NULL) AS deal_age_days,
       a.details AS details,
       as_of
FROM journeys.open_alerts AS a
LEFT JOIN journeys.journeys_current AS j ON j.account_id = a.account_id
LEFT JOIN
(
    SELECT alert_id,
           arraySum(x -> if(arrayExists(r -> r.2 = x.2 AND r.1 >= x.1, removed), 0, x.3), added)
               AS cart_value
    FROM
    (
        SELECT alert_id,
               groupArrayIf((at, sku, price * quantity), type = 'add_to_cart') AS added,
               groupArrayIf((at, sku), type = 'remove_from_cart') AS removed
        FROM
        (
            SELECT ca.alert_id AS alert_id, e.type AS type,
                   toUnixTimestamp64Milli(e.occurred_at) AS at,
                   JSONExtractString(line, 'sku') AS sku,
                   JSONExtractFloat(line, 'price') AS price,
                   JSONExtractFloat(line, 'quantity') AS quantity
            FROM
            (
                SELECT alert_id, account_id,
                       parseDateTime64BestEffort(JSONExtractString(details, 'cart_started_at'), 3, 'UTC') AS since,
                       parseDateTime64BestEffort(JSONExtractString(details, 'last_cart_activity_at'), 3, 'UTC') AS until
                FROM journeys.open_alerts
                WHERE kind = 'cart_abandoned'
            ) AS ca
            INNER JOIN journeys.events_current AS e ON e.account_id = ca.account_id
            ARRAY JOIN if(JSONLength(e.properties, 'items') > 0,
                          JSONExtractArrayRaw(e.properties, 'items'),
                          [e.properties]) AS line
            WHERE e.type IN ('add_to_cart', 'remove_from_cart')
              AND e.occurred_at >= ca.since AND e.occurred_at <= ca.until
        )
        GROUP BY alert_id
    )
) AS v ON v.alert_id = a.alert_id
ORDER BY raised_at DESC, alert_id;

-- Repeat orders of loyal accounts: the orders placed (order_placed events), the first and
-- last, the days between consecutive orders (median, mean, and all of them), and the days
-- since the last order to as_of. An account loyal by a paid invoice may have one order and
-- no interval (NULL medians).
CREATE OR REPLACE VIEW journeys.analytics_repeat_orders ON CLUSTER '{cluster}' AS
WITH (SELECT max(last_seen) FROM journeys.journeys_current) AS as_of
SELECT j.account_id AS account_id, j.segment AS segment, j.phase_since AS loyal_since,
       length(o.times) AS orders,
       if(orders = 0, NULL, fromUnixTimestamp64Milli(o.times[1], 'UTC')) AS first_order_at,
       if(orders = 0, NULL, fromUnixTimestamp64Milli(o.times[-1], 'UTC')) AS last_order_at,
       arrayMap(d -> d / 86400000, arrayPopFront(arrayDifference(o.times))) AS interval_days,
       if(orders < 2, NULL, arrayReduce('quantileExactInclusive(0.5)', interval_days))
           AS median_interval_days,
       if(orders < 2, NULL, arrayAvg(interval_days)) AS mean_interval_days,
       if(orders = 0, NULL, (toUnixTimestamp64Milli(as_of) - o.times[-1]) / 86400000)
           AS days_since_last_order,
       as_of
FROM journeys.journeys_current AS j
LEFT JOIN
(
    SELECT account_id, arraySort(groupArray(toUnixTimestamp64Milli(occurred_at))) AS times
    FROM journeys.events_current
    WHERE channel = 'order' AND type = 'order_placed'
    GROUP BY account_id
) AS o ON o.account_id = j.account_id
WHERE j.phase = 'loyalty'
ORDER BY account_id;

-- The customer pyramid (Jay Curry; contract section 8): accounts by the last 12 months'
-- order revenue. "Now" is event time: as_of is the latest occurred_at stored, so a replay
-- of last year's history reads as it did then.
--
-- * revenue: the sum of properties.amount of the account's order_placed events with
--   occurred_at in [as_of - 365 days, as_of].
-- * Customers (revenue > 0) ranked by revenue descending, then account_id; of N customers,
--   top for rank <= ceil(N / 100), big <= ceil(N / 20), medium <= ceil(N / 5), else small
--   (integer ceilings: 0.05 * 300 in floating point is 15.000000000000002).
-- * The others: inactive (an order_placed before the period), prospect (phase
--   consideration or later, in the default phases), else suspect.

CREATE OR REPLACE VIEW journeys.analytics_customer_tiers ON CLUSTER '{cluster}' AS
WITH (SELECT max(occurred_at) FROM journeys.events_current) AS as_of,
     as_of - INTERVAL 365 DAY AS since
SELECT account_id,
       multiIf(revenue > 0 AND customer_rank <= intDiv(customers + 99, 100), 'top',
               revenue > 0 AND customer_rank <= intDiv(customers + 19, 20), 'big',
               revenue > 0 AND customer_rank <= intDiv(customers + 4, 5), 'medium',
               revenue > 0, 'small',
               earlier_orders > 0, 'inactive',
               phase_order >= 2, 'prospect',
               'suspect') AS tier,
       revenue,
       if(revenue > 0, customer_rank, NULL) AS revenue_rank,
       orders_in_period,
       phase,
       as_of
FROM
(
    SELECT j.account_id AS account_id, j.phase AS phase,
           indexOf(['awareness', 'consideration', 'decision', 'purchase', 'delivery', 'loyalty'],
                   j.phase) AS phase_order,
           coalesce(o.revenue, 0) AS revenue,
           coalesce(o.orders_in_period, 0) AS orders_in_period,
           coalesce(o.earlier_orders, 0) AS earlier_orders,
           row_number() OVER (ORDER BY revenue > 0 DESC, revenue DESC, account_id) AS customer_rank,
           countIf(revenue > 0) OVER () AS customers
    FROM journeys.journeys_current AS j
    LEFT JOIN
    (
        SELECT account_id,
               sumIf(JSONExtractFloat(properties, 'amount'),
                     occurred_at >= since AND occurred_at <= as_of) AS revenue,
               countIf(occurred_at >= since AND occurred_at <= as_of) AS orders_in_period,
               countIf(occurred_at < since) AS earlier_orders
        FROM journeys.events_current
        WHERE channel = 'order' AND type = 'order_placed' AND account_id != ''
        GROUP BY account_id
    ) AS o ON o.account_id = j.account_id
)
ORDER BY indexOf(['top', 'big', 'medium', 'small', 'inactive', 'prospect', 'suspect'], tier),
         revenue DESC, account_id;

-- The pyramid itself: every tier, top first, with its accounts, revenue and share of the
-- revenue (tiers without accounts show 0, so a chart keeps its shape).
CREATE OR REPLACE VIEW journeys.analytics_customer_pyramid ON CLUSTER '{cluster}' AS
WITH ['top', 'big', 'medium', 'small', 'inactive', 'prospect', 'suspect'] AS tiers
SELECT tiers[i] AS tier, i AS tier_order,
       coalesce(t.accounts, 0) AS accounts,
       coalesce(t.revenue, 0) AS revenue,
       if(sum(coalesce(t.revenue, 0)) OVER () = 0, 0,
          coalesce(t.revenue, 0) / sum(coalesce(t.revenue, 0)) OVER ()) AS revenue_share
FROM (SELECT arrayJoin(arrayEnumerate(tiers)) AS i) AS n
LEFT JOIN
(
    SELECT tier, count() AS accounts, sum(revenue) AS revenue
    FROM journeys.analytics_customer_tiers
    GROUP BY tier
) AS t ON t.tier = tiers[n.i]
ORDER BY tier_order;

-- Multi-touch attribution (contract section 8), worked out by ClickHouse from the current
-- rows: every row of phase_transitions_current is a conversion, its touchpoints are the
-- account's activity events (every event but the default rules' supplier actions) with
-- occurred_at in [transitioned_at - lookback, transitioned_at], the converting event
-- included when it is an activity, ordered by (occurred_at, event_id).
--
-- `attribution` is a view, not a stored table: its rows are a function of the current
-- events and transitions, so a late event, a redelivery, an identity merge or a rebuild
-- corrects them the moment those tables are corrected, with nothing to keep in step, and
-- the stream and `journeys replay` give the same rows because they give the same events
-- and transitions. It needs no FINAL; `attribution_current` is the same rows under the
-- name every table's current view has.
--
-- The lookback and the time-decay half-life are settings (JOURNEYS_ATTRIBUTION_LOOKBACK,
-- JOURNEYS_ATTRIBUTION_HALF_LIFE), which the sink and `journeys replay` write to
-- `derived_settings` when they start; until then the view uses the defaults (90d, 7d).

CREATE TABLE IF NOT EXISTS journeys.derived_settings_local ON CLUSTER '{cluster}'
(
    name     String,
    value    Float64,
    version  UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', version)
ORDER BY name;

CREATE TABLE IF NOT EXISTS journeys.derived_settings ON CLUSTER '{cluster}'
AS journeys.derived_settings_local
ENGINE = Distributed('{cluster}', journeys, derived_settings_local, cityHash64(name));

-- One row per conversion x touchpoint x model. credit sums to 1 per conversion and model;
-- revenue is credit x the converting event's properties.amount for purchase conversions.
-- campaign: properties.utm_campaign, else context.campaign.name, else ''; content: the
-- touch's properties.url, else properties.title, else ''.
CREATE OR REPLACE VIEW journeys.attribution ON CLUSTER '{cluster}' AS
WITH assumeNotNull((SELECT if(count() = 0, 7776000000.0, argMax(value, version))
                    FROM journeys.derived_settings
                    WHERE name = 'attribution_lookback_ms')) AS lookback_ms,
     assumeNotNull((SELECT if(count() = 0, 604800000.0, argMax(value, version))
                    FROM journeys.derived_settings
                    WHERE name = 'attribution_half_life_ms')) AS half_life_ms
SELECT account_id, to_phase, transitioned_at, conversion_event_id,
       touch.2 AS touch_event_id, fromUnixTimestamp64Milli(touch.1, 'UTC') AS touch_at,
       touch.3 AS channel, touch.4 AS type, touch.5 AS campaign, touch.6 AS content, model,
       multiIf(model = 'first_touch', toFloat64(touch_number = 1),
               model = 'last_touch', toFloat64(touch_number = touches),
               model = 'linear', 1 / touches,
               model = 'position_based',
                   multiIf(touches = 1, 1.0,
                           touches = 2, 0.5,
                           touch_number = 1 OR touch_number = touches, 0.4,
                           0.2 / (touches - 2)),
               decay / decay_total) AS credit,
       if(to_phase = 'purchase', credit * amount, 0) AS revenue,
       touch_number, touches
FROM
(
    -- Each conversion with its touchpoints as one sorted array, so that every sum over
    -- them runs in (occurred_at, event_id) order and gives the same bits in any database.
    SELECT account_id, to_phase, transitioned_at, conversion_event_id, amount,
           arraySort(groupArray((toUnixTimestamp64Milli(e_at), e_id, e_channel, e_type,
                                 e_campaign, e_content))) AS touch_list,
           length(touch_list) AS touches,
           arrayMap(x -> exp2(-(toUnixTimestamp64Milli(transitioned_at) - x.1) / half_life_ms),
                    touch_list) AS decays,
           arraySum(decays) AS decay_total
    FROM
    (
        SELECT t.account_id AS account_id, t.to_phase AS to_phase,
               t.transitioned_at AS transitioned_at, t.event_id AS conversion_event_id,
               coalesce(a.amount, 0) AS amount,
               e.occurred_at AS e_at, e.event_id AS e_id, e.channel AS e_channel,
               e.type AS e_type,
               if(JSONExtractString(e.properties, 'utm_campaign') != '',
                  JSONExtractString(e.properties, 'utm_campaign'),
                  JSONExtractString(e.context, 'campaign', 'name')) AS e_campaign,
               if(JSONExtractString(e.properties, 'url') != '',
                  JSONExtractString(e.properties, 'url'),
                  JSONExtractString(e.properties, 'title')) AS e_content
        FROM journeys.phase_transitions_current AS t
        INNER JOIN journeys.events_current AS e ON e.account_id = t.account_id
        LEFT JOIN
        (
            SELECT event_id, JSONExtractFloat(properties, 'amount') AS amount
            FROM journeys.events_current
            WHERE event_id IN (SELECT event_id FROM journeys.phase_transitions_current
                               WHERE to_phase = 'purchase')
        ) AS a ON a.event_id = t.event_id
        WHERE e.occurred_at <= t.transitioned_at
          AND toUnixTimestamp64Milli(e.occurred_at)
              >= toUnixTimestamp64Milli(t.transitioned_at) - lookback_ms
          AND (e.channel, e.type) NOT IN (('email', 'sent'), ('email', 'delivered'),
                                          ('email', 'bounce'), ('email', 'deferred'),
                                          ('order', 'quote_sent'), ('order', 'invoice_sent'),
                                          ('order', 'order_shipped'),
                                          ('order', 'order_delivered'))
    )
    GROUP BY account_id, to_phase, transitioned_at, conversion_event_id, amount
)
ARRAY JOIN touch_list AS touch, decays AS decay, arrayEnumerate(touch_list) AS touch_number
ARRAY JOIN ['first_touch', 'last_touch', 'linear', 'position_based', 'time_decay'] AS model;

CREATE OR REPLACE VIEW journeys.attribution_current ON CLUSTER '{cluster}' AS
SELECT account_id, to_phase, transitioned_at, conversion_event_id, touch_event_id, touch_at,
       channel, type, campaign, content, model, credit, revenue
FROM journeys.attribution;

-- Per phase reached and model: the conversions (sum of credit) and revenue each channel,
-- campaign ('' for touches without one) and piece of content earned.
CREATE OR REPLACE VIEW journeys.analytics_attribution_by_channel ON CLUSTER '{cluster}' AS
SELECT to_phase, model, channel, sum(credit) AS conversions, sum(revenue) AS revenue
FROM journeys.attribution_current
GROUP BY to_phase, model, channel
ORDER BY to_phase, model, conversions DESC, channel;

CREATE OR REPLACE VIEW journeys.analytics_attribution_by_campaign ON CLUSTER '{cluster}' AS
SELECT to_phase, model, campaign, sum(credit) AS conversions, sum(revenue) AS revenue
FROM journeys.attribution_current
GROUP BY to_phase, model, campaign
ORDER BY to_phase, model, conversions DESC, campaign;

CREATE OR REPLACE VIEW journeys.analytics_attribution_by_content ON CLUSTER '{cluster}' AS
SELECT to_phase, model, channel, content, sum(credit) AS conversions, sum(revenue) AS revenue
FROM journeys.attribution_current
WHERE content != ''
GROUP BY to_phase, model, channel, content
ORDER BY to_phase, model, conversions DESC, channel, content;

-- Account engagement (migration 0008; contract section 8): journeys carries the score
-- just after the account's last activity, that activity's time, and the rules the score
-- was computed with (half-life, warm and hot), so the view can decay and tier it with no
-- settings table (see the migration). The Distributed table gets the columns too.
ALTER TABLE journeys.journeys_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS engagement Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS engagement_at Nullable(DateTime64(3, 'UTC')),
    ADD COLUMN IF NOT EXISTS engagement_half_life_ms UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS engagement_warm Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS engagement_hot Float64 DEFAULT 0;

ALTER TABLE journeys.journeys ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS engagement Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS engagement_at Nullable(DateTime64(3, 'UTC')),
    ADD COLUMN IF NOT EXISTS engagement_half_life_ms UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS engagement_warm Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS engagement_hot Float64 DEFAULT 0;

CREATE OR REPLACE VIEW journeys.journeys_current ON CLUSTER '{cluster}' AS
SELECT account_id, phase, phase_since, first_seen, last_seen, last_activity, events, contacts,
       dmu_roles, segment, engagement, engagement_at, engagement_half_life_ms, engagement_warm,
       engagement_hot
FROM journeys.journeys FINAL
WHERE is_deleted = 0;

CREATE OR REPLACE VIEW journeys.analytics_engagement ON CLUSTER '{cluster}' AS
WITH (SELECT max(occurred_at) FROM journeys.events_current) AS as_of
SELECT account_id,
       score,
       multiIf(engagement_at IS NULL, 'cold',
               score >= engagement_hot, 'hot',
               score >= engagement_warm, 'warm',
               'cold') AS tier,
       as_of,
       engagement AS score_at_last_activity,
       engagement_at
FROM
(
    SELECT account_id, engagement, engagement_at, engagement_warm, engagement_hot,
           if(engagement_at IS NULL OR engagement_half_life_ms = 0, 0,
              engagement * pow(2, -greatest(toUnixTimestamp64Milli(as_of)
                                            - toUnixTimestamp64Milli(assumeNotNull(engagement_at)), 0)
                                  / engagement_half_life_ms)) AS score
    FROM journeys.journeys_current
)
ORDER BY score DESC, account_id;

-- Migration 0009: the audit of erasure requests and the suppression list (hashes only;
-- docs/privacy.md). Retention is applied by the sink at start (ALTER TABLE events_local /
-- dead_letters_local ON CLUSTER ... MODIFY TTL), following JOURNEYS_RETENTION.
CREATE TABLE IF NOT EXISTS journeys.privacy_requests_local ON CLUSTER '{cluster}'
(
    request_id           String,
    kind                 LowCardinality(String),
    identifier_hash      String,
    source               LowCardinality(String),
    requested_at         DateTime64(3, 'UTC'),
    finished_at          Nullable(DateTime64(3, 'UTC')),
    status               LowCardinality(String),
    identifiers          UInt32,
    erased               Map(String, UInt64),
    accounts_recomputed  UInt32,
    version              UInt64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', version)
ORDER BY request_id;

CREATE TABLE IF NOT EXISTS journeys.privacy_requests ON CLUSTER '{cluster}'
AS journeys.privacy_requests_local
ENGINE = Distributed('{cluster}', journeys, privacy_requests_local, cityHash64(request_id));

CREATE TABLE IF NOT EXISTS journeys.privacy_suppressions_local ON CLUSTER '{cluster}'
(
    identifier_hash  String,
    request_id       String,
    added_at         DateTime64(3, 'UTC')
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
ORDER BY identifier_hash;

CREATE TABLE IF NOT EXISTS journeys.privacy_suppressions ON CLUSTER '{cluster}'
AS journeys.privacy_suppressions_local
ENGINE = Distributed('{cluster}', journeys, privacy_suppressions_local, cityHash64(identifier_hash));

-- Migration 0010: generations of derived rows (`journeys rebuild`; see the migration).
-- generation is the last column of the derived tables' sorting keys; their sharding keys
-- (account_id, alert_id) stay, so every generation of a key sits on the key's shard and
-- FINAL stays exact. The Distributed tables get the column (a sorting key is the local
-- tables' business). generation_current reads `generations` through its Distributed
-- table, so it counts the reports of every shard.
ALTER TABLE journeys.journeys_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS generation UInt32,
    MODIFY ORDER BY (account_id, generation);

ALTER TABLE journeys.journeys ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS generation UInt32;

ALTER TABLE journeys.phase_transitions_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS generation UInt32,
    MODIFY ORDER BY (account_id, to_phase, generation);

ALTER TABLE journeys.phase_transitions ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS generation UInt32;

ALTER TABLE journeys.alerts_local ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS generation UInt32,
    MODIFY ORDER BY (alert_id, generation);

ALTER TABLE journeys.alerts ON CLUSTER '{cluster}'
    ADD COLUMN IF NOT EXISTS generation UInt32;

CREATE TABLE IF NOT EXISTS journeys.generations_local ON CLUSTER '{cluster}'
(
    generation    UInt32,
    partition     UInt32,
    partitions    UInt32,
    rules_hash    String,
    rules         String,
    completed_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')
ORDER BY (generation, partition);

CREATE TABLE IF NOT EXISTS journeys.generations ON CLUSTER '{cluster}'
AS journeys.generations_local
ENGINE = Distributed('{cluster}', journeys, generations_local, cityHash64(generation, partition));

CREATE OR REPLACE VIEW journeys.generation_current ON CLUSTER '{cluster}' AS
SELECT toUInt32(if(count() = 0, 0, max(complete))) AS generation,
       if(count() = 0, '', argMax(hash, complete)) AS rules_hash,
       if(count() = 0, NULL, argMax(last_report, complete)) AS completed_at
FROM
(
    SELECT generation AS complete, any(rules_hash) AS hash, max(completed_at) AS last_report
    FROM journeys.generations FINAL
    GROUP BY generation
    HAVING uniqExact(partition) >= max(partitions)
);

CREATE OR REPLACE VIEW journeys.phase_transitions_current ON CLUSTER '{cluster}' AS
SELECT account_id, from_phase, to_phase, transitioned_at, event_id, event_type, channel
FROM journeys.phase_transitions FINAL
WHERE is_deleted = 0 AND generation = (SELECT generation FROM journeys.generation_current);

CREATE OR REPLACE VIEW journeys.journeys_current ON CLUSTER '{cluster}' AS
SELECT account_id, phase, phase_since, first_seen, last_seen, last_activity, events, contacts,
       dmu_roles, segment, engagement, engagement_at, engagement_half_life_ms, engagement_warm,
       engagement_hot
FROM journeys.journeys FINAL
WHERE is_deleted = 0 AND generation = (SELECT generation FROM journeys.generation_current);

CREATE OR REPLACE VIEW journeys.alerts_current ON CLUSTER '{cluster}' AS
SELECT alert_id, kind, account_id, raised_at, details, resolved_at,
       if(resolved_at IS NULL, 'raised', 'resolved') AS status
FROM journeys.alerts FINAL
WHERE withdrawn = 0 AND generation = (SELECT generation FROM journeys.generation_current);

CREATE OR REPLACE VIEW journeys.open_alerts ON CLUSTER '{cluster}' AS
SELECT alert_id, kind, account_id, raised_at, details
FROM journeys.alerts FINAL
WHERE resolved_at IS NULL AND withdrawn = 0
  AND generation = (SELECT generation FROM journeys.generation_current);

-- `journeys migrate` and the sink's own migration step read which migrations a database
-- has: this schema is every migration's, so record them all, once, on a table every node
-- replicates (one Keeper path for all shards).
-- Migration 0011: lookups for re-attribution (see the migration). Projections live in the
-- parts of the local table; the Distributed table in front of it holds no data.
ALTER TABLE journeys.events_local ON CLUSTER '{cluster}'
    MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild', lightweight_mutation_projection_mode = 'rebuild';

ALTER TABLE journeys.events_local ON CLUSTER '{cluster}'
    ADD PROJECTION IF NOT EXISTS by_engine_account_id (SELECT engine_account_id, event_id ORDER BY engine_account_id);

ALTER TABLE journeys.events_local ON CLUSTER '{cluster}'
    ADD PROJECTION IF NOT EXISTS by_contact_id (SELECT contact_id, event_id ORDER BY contact_id);

ALTER TABLE journeys.events_local ON CLUSTER '{cluster}'
    ADD PROJECTION IF NOT EXISTS by_anonymous_id (SELECT anonymous_id, event_id ORDER BY anonymous_id);

ALTER TABLE journeys.events_local ON CLUSTER '{cluster}'
    ADD PROJECTION IF NOT EXISTS by_email (SELECT email, event_id ORDER BY email);

ALTER TABLE journeys.events_local ON CLUSTER '{cluster}'
    MATERIALIZE PROJECTION by_engine_account_id SETTINGS mutations_sync = 2;

ALTER TABLE journeys.events_local ON CLUSTER '{cluster}'
    MATERIALIZE PROJECTION by_contact_id SETTINGS mutations_sync = 2;

ALTER TABLE journeys.events_local ON CLUSTER '{cluster}'
    MATERIALIZE PROJECTION by_anonymous_id SETTINGS mutations_sync = 2;

ALTER TABLE journeys.events_local ON CLUSTER '{cluster}'
    MATERIALIZE PROJECTION by_email SETTINGS mutations_sync = 2;

CREATE TABLE IF NOT EXISTS journeys.schema_migrations ON CLUSTER '{cluster}'
(
    name        String,
    applied_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/{database}/{table}', '{replica}')
ORDER BY name;

INSERT INTO journeys.schema_migrations (name)
VALUES ('0001_initial'), ('0002_keys_redeliveries_cannot_move'), ('0003_current_views'),
       ('0004_analytics_views'), ('0005_links_name_the_account_they_end_at'),
       ('0006_customer_pyramid'), ('0007_attribution'),
       ('0008_engagement'), ('0009_privacy'), ('0010_generations'),
       ('0011_attribution_lookups');
