-- Lookups that let each flush re-attribute only the events it can move.
--
-- events is sorted by event_id, so finding the events of an account or alias read every
-- row: each flush's re-attribution scanned the whole table, and a backfill's cost grew with
-- the square of its input. One projection per column re-attribution looks events up by
-- (the engine's account and the three alias kinds) holds (value, event_id) sorted by that
-- value: `sinks.clickhouse.attribution` finds the event_ids there (any stored version),
-- then reads those events with FINAL through the sorting key.
--
-- A ReplacingMergeTree keeps projections only when its merges rebuild them
-- (`deduplicate_merge_projection_mode`); deletes (`journeys forget`, TTL) rebuild them too.
-- Every statement here can run again (IF NOT EXISTS; materializing twice rebuilds once more).

ALTER TABLE {db}.events MODIFY SETTING deduplicate_merge_projection_mode = 'rebuild', lightweight_mutation_projection_mode = 'rebuild';

ALTER TABLE {db}.events ADD PROJECTION IF NOT EXISTS by_engine_account_id (SELECT engine_account_id, event_id ORDER BY engine_account_id);

ALTER TABLE {db}.events ADD PROJECTION IF NOT EXISTS by_contact_id (SELECT contact_id, event_id ORDER BY contact_id);

ALTER TABLE {db}.events ADD PROJECTION IF NOT EXISTS by_anonymous_id (SELECT anonymous_id, event_id ORDER BY anonymous_id);

ALTER TABLE {db}.events ADD PROJECTION IF NOT EXISTS by_email (SELECT email, event_id ORDER BY email);

ALTER TABLE {db}.events MATERIALIZE PROJECTION by_engine_account_id SETTINGS mutations_sync = 2;

ALTER TABLE {db}.events MATERIALIZE PROJECTION by_contact_id SETTINGS mutations_sync = 2;

ALTER TABLE {db}.events MATERIALIZE PROJECTION by_anonymous_id SETTINGS mutations_sync = 2;

ALTER TABLE {db}.events MATERIALIZE PROJECTION by_email SETTINGS mutations_sync = 2
