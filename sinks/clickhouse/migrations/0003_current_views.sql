-- A `<table>_current` view per table (contract section 4): the current rows, for plain SQL
-- as BI tools write it. No FINAL needed, no superseded versions, no deleted transitions or
-- journeys, no withdrawn alerts; none of the write bookkeeping (version, precedence,
-- is_deleted, inserted_at). An empty string means "none" in text columns (an event with
-- no account yet has account_id '').

CREATE OR REPLACE VIEW {db}.events_current AS
SELECT event_id, channel, type, occurred_at, account_id, contact_id, anonymous_id, email,
       dmu_role, segment, properties, context
FROM {db}.events FINAL;

CREATE OR REPLACE VIEW {db}.phase_transitions_current AS
SELECT account_id, from_phase, to_phase, transitioned_at, event_id, event_type, channel
FROM {db}.phase_transitions FINAL
WHERE is_deleted = 0;

CREATE OR REPLACE VIEW {db}.journeys_current AS
SELECT account_id, phase, phase_since, first_seen, last_seen, last_activity, events, contacts,
       dmu_roles, segment
FROM {db}.journeys FINAL
WHERE is_deleted = 0;

CREATE OR REPLACE VIEW {db}.alerts_current AS
SELECT alert_id, kind, account_id, raised_at, details, resolved_at,
       if(resolved_at IS NULL, 'raised', 'resolved') AS status
FROM {db}.alerts FINAL
WHERE withdrawn = 0;

CREATE OR REPLACE VIEW {db}.open_alerts AS
SELECT alert_id, kind, account_id, raised_at, details
FROM {db}.alerts FINAL
WHERE resolved_at IS NULL AND withdrawn = 0;

CREATE OR REPLACE VIEW {db}.identity_links_current AS
SELECT kind, alias, account_id, linked_at
FROM {db}.identity_links FINAL;

CREATE OR REPLACE VIEW {db}.dead_letters_current AS
SELECT dead_letter_id, received_at, reason, payload, source
FROM {db}.dead_letters FINAL;
