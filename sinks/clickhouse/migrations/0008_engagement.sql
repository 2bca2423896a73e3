-- Account engagement in event time (contract section 8).
--
-- journeys gains the score the engine computed (`engagement`, just after the account's last
-- activity event, rounded to 6 decimals) and that event's time (`engagement_at`), and the
-- rules the score was computed with: its half-life in ms and the warm and hot thresholds.
--
-- Why the rules sit on each row rather than in a settings table: the rules live in the
-- engine's rules file, which the sink does not read, and a row that carries its own
-- half-life and thresholds can never disagree with them (a journey written with old rules
-- decays and tiers as those rules said; a rebuild with new rules writes rows that carry the
-- new ones). The three constant columns compress to nothing. Rows written before this
-- migration read engagement_at NULL: score 0, cold.
--
-- analytics_engagement: the score decayed from engagement_at to as_of, the latest
-- occurred_at stored (event time, so a replay of last year reads as it did then), and its
-- tier: hot from the hot threshold, warm from the warm one, else cold.

ALTER TABLE {db}.journeys
    ADD COLUMN IF NOT EXISTS engagement Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS engagement_at Nullable(DateTime64(3, 'UTC')),
    ADD COLUMN IF NOT EXISTS engagement_half_life_ms UInt64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS engagement_warm Float64 DEFAULT 0,
    ADD COLUMN IF NOT EXISTS engagement_hot Float64 DEFAULT 0;

CREATE OR REPLACE VIEW {db}.journeys_current AS
SELECT account_id, phase, phase_since, first_seen, last_seen, last_activity, events, contacts,
       dmu_roles, segment, engagement, engagement_at, engagement_half_life_ms, engagement_warm,
       engagement_hot
FROM {db}.journeys FINAL
WHERE is_deleted = 0;

CREATE OR REPLACE VIEW {db}.analytics_engagement AS
WITH (SELECT max(occurred_at) FROM {db}.events_current) AS as_of
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
    FROM {db}.journeys_current
)
ORDER BY score DESC, account_id;
