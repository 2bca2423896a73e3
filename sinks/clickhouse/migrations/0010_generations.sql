-- Generations of derived rows (contract section 8: `journeys rebuild --rules FILE`).
--
-- journeys, phase_transitions and alerts gain `generation`, the last column of their
-- sorting key, so the rows a rebuild derives with new rules sit beside the rows the old
-- rules made instead of replacing them key by key. Rows written before this migration
-- are generation 0 (the column has no DEFAULT expression: a UInt32 reads 0 anyway, and a
-- sorting-key column may not have one).
--
-- Each journey partition that has derived all its journeys again writes them under the
-- new generation, then a `generations` row: "partition P of PARTITIONS holds generation
-- G now". A generation is complete when every partition 0..PARTITIONS-1 has reported it.
-- `generation_current` is the newest complete one (0 when none was ever reported), and
-- every view that reads the three tables shows that generation only, so BI tools switch
-- to a rebuild's rows at once, when the last partition reports, never to half of them.
-- The sink deletes the rows of older generations once a newer one is complete.

ALTER TABLE {db}.journeys
    ADD COLUMN IF NOT EXISTS generation UInt32,
    MODIFY ORDER BY (account_id, generation);

ALTER TABLE {db}.phase_transitions
    ADD COLUMN IF NOT EXISTS generation UInt32,
    MODIFY ORDER BY (account_id, to_phase, generation);

ALTER TABLE {db}.alerts
    ADD COLUMN IF NOT EXISTS generation UInt32,
    MODIFY ORDER BY (alert_id, generation);

CREATE TABLE IF NOT EXISTS {db}.generations
(
    generation    UInt32,
    partition     UInt32,
    partitions    UInt32,
    rules_hash    String,
    rules         String,
    completed_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (generation, partition);

-- One row, always: the newest generation every partition has reported (0, rules_hash ''
-- and completed_at NULL when there is none), the SHA-256 of its rules file and when its
-- last partition reported.
CREATE OR REPLACE VIEW {db}.generation_current AS
SELECT toUInt32(if(count() = 0, 0, max(complete))) AS generation,
       if(count() = 0, '', argMax(hash, complete)) AS rules_hash,
       if(count() = 0, NULL, argMax(last_report, complete)) AS completed_at
FROM
(
    SELECT generation AS complete, any(rules_hash) AS hash, max(completed_at) AS last_report
    FROM {db}.generations FINAL
    GROUP BY generation
    HAVING uniqExact(partition) >= max(partitions)
);

CREATE OR REPLACE VIEW {db}.phase_transitions_current AS
SELECT account_id, from_phase, to_phase, transitioned_at, event_id, event_type, channel
FROM {db}.phase_transitions FINAL
WHERE is_deleted = 0 AND generation = (SELECT generation FROM {db}.generation_current);

CREATE OR REPLACE VIEW {db}.journeys_current AS
SELECT account_id, phase, phase_since, first_seen, last_seen, last_activity, events, contacts,
       dmu_roles, segment, engagement, engagement_at, engagement_half_life_ms, engagement_warm,
       engagement_hot
FROM {db}.journeys FINAL
WHERE is_deleted = 0 AND generation = (SELECT generation FROM {db}.generation_current);

CREATE OR REPLACE VIEW {db}.alerts_current AS
SELECT alert_id, kind, account_id, raised_at, details, resolved_at,
       if(resolved_at IS NULL, 'raised', 'resolved') AS status
FROM {db}.alerts FINAL
WHERE withdrawn = 0 AND generation = (SELECT generation FROM {db}.generation_current);

CREATE OR REPLACE VIEW {db}.open_alerts AS
SELECT alert_id, kind, account_id, raised_at, details
FROM {db}.alerts FINAL
WHERE resolved_at IS NULL AND withdrawn = 0
  AND generation = (SELECT generation FROM {db}.generation_current);
