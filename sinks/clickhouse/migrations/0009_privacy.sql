-- Privacy (docs/privacy.md): the audit of erasure requests and the suppression list.
-- Neither holds personal data: identifiers are kept only as salted hashes (HMAC-SHA256
-- of `kind:value` under the deployment's secret salt), so without the salt a guessed
-- email cannot be tested against them.
--
-- privacy_requests: one row per `journeys forget` / POST /v1/privacy/forget; the latest
-- version of a request is its state (`started`, then `erased` or `failed`). `erased`
-- counts the rows deleted per table; `accounts_recomputed` how many accounts' journeys
-- were rebuilt without the erased events.
--
-- privacy_suppressions: the hash of every identifier a request erased (the ones asked
-- for and those found linked to them); `journeys replay` drops events carrying any of
-- them. The collector and the workers follow the same list on the compacted topic
-- journeys.internal.suppressions, since they do not read ClickHouse.
--
-- Retention (JOURNEYS_RETENTION) is not here: it is a setting, so the sink applies it
-- as the TTL of events and dead_letters when it starts (ALTER TABLE ... MODIFY TTL).

CREATE TABLE IF NOT EXISTS {db}.privacy_requests
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
ENGINE = ReplacingMergeTree(version)
ORDER BY request_id;

CREATE TABLE IF NOT EXISTS {db}.privacy_suppressions
(
    identifier_hash  String,
    request_id       String,
    added_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY identifier_hash;
