-- Analytics views for BI tools (docs/bi.md lists them with example SQL). They read the
-- `_current` views, so they show current rows only, and plain SQL on them is right.
--
-- Conventions:
-- * phase_order is the position in the default phases (awareness 1 .. loyalty 6); a phase
--   from another rules file has 0.
-- * Days are fractional (milliseconds / 86,400,000); medians are exact
--   (quantileExactInclusive, interpolating like a spreadsheet's MEDIAN).
-- * "Now" is event time: `as_of` is the latest last_seen of any account, so replayed
--   history reads the same today as on the day it happened.
-- * Engaged means seen on the account's own activity: every event except the default
--   rules' supplier actions (email sent, delivered, bounce, deferred; order quote_sent,
--   invoice_sent, order_shipped, order_delivered).

-- Accounts per phase now, with their share of all accounts.
CREATE OR REPLACE VIEW {db}.analytics_accounts_per_phase AS
SELECT phase,
       indexOf(['awareness', 'consideration', 'decision', 'purchase', 'delivery', 'loyalty'], phase) AS phase_order,
       count() AS accounts,
       count() / sum(count()) OVER () AS share
FROM {db}.journeys_current
GROUP BY phase
ORDER BY phase_order = 0, phase_order, phase;

-- Accounts per phase now within each segment ('' for accounts without one), with their
-- share of the segment's accounts.
CREATE OR REPLACE VIEW {db}.analytics_accounts_per_phase_by_segment AS
SELECT segment, phase,
       indexOf(['awareness', 'consideration', 'decision', 'purchase', 'delivery', 'loyalty'], phase) AS phase_order,
       count() AS accounts,
       count() / sum(count()) OVER (PARTITION BY segment) AS share_of_segment
FROM {db}.journeys_current
GROUP BY segment, phase
ORDER BY segment, phase_order = 0, phase_order, phase;

-- Monthly cohorts (the month an account was first seen): per default phase, how many of
-- the cohort reached it (phases never move back, so reaching a later phase counts), and
-- the median days from first seen, and from the phase before, to entering it (among the
-- cohort's accounts with a transition into it; skipped phases have none).
CREATE OR REPLACE VIEW {db}.analytics_cohort_funnel AS
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
    FROM {db}.journeys_current AS j
    LEFT JOIN
    (
        SELECT account_id, groupArray(to_phase) AS to_phases, groupArray(from_phase) AS from_phases,
               groupArray(toUnixTimestamp64Milli(transitioned_at)) AS times
        FROM {db}.phase_transitions_current
        GROUP BY account_id
    ) AS t ON t.account_id = j.account_id
)
ARRAY JOIN arrayEnumerate(phases) AS i
GROUP BY cohort_month, i
ORDER BY cohort_month, i;

-- Time in phase: per phase, the accounts in it now and the median days they have been
-- in it (to as_of); the accounts that moved on from it and the median days they spent in
-- it; and the accounts in it now with an open deal_stalled alert, and their share.
CREATE OR REPLACE VIEW {db}.analytics_time_in_phase AS
WITH (SELECT max(last_seen) FROM {db}.journeys_current) AS as_of
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
    FROM {db}.phase_transitions_current
    GROUP BY to_phase
) AS p
LEFT JOIN
(
    SELECT j.phase AS phase, count() AS accounts,
           quantileExactInclusive(0.5)((toUnixTimestamp64Milli(as_of) - toUnixTimestamp64Milli(j.phase_since)) / 86400000) AS median_days,
           countIf(s.account_id != '') AS stalled
    FROM {db}.journeys_current AS j
    LEFT JOIN
    (
        SELECT DISTINCT account_id FROM {db}.open_alerts WHERE kind = 'deal_stalled'
    ) AS s ON s.account_id = j.account_id
    GROUP BY j.phase
) AS n ON n.phase = p.phase
LEFT JOIN
(
    SELECT t.to_phase AS phase, count() AS accounts,
           quantileExactInclusive(0.5)((toUnixTimestamp64Milli(nxt.transitioned_at) - toUnixTimestamp64Milli(t.transitioned_at)) / 86400000) AS median_days
    FROM {db}.phase_transitions_current AS t
    INNER JOIN {db}.phase_transitions_current AS nxt
        ON nxt.account_id = t.account_id AND nxt.from_phase = t.to_phase
    GROUP BY t.to_phase
) AS m ON m.phase = p.phase
ORDER BY phase_order = 0, phase_order, phase;

-- The touchpoints that precede each transition: per kind of transition (from, to) and per
-- channel and event type, the account's events after it entered the phase it left and up
-- to the transition (its first transition: everything up to it), how many accounts had
-- such a touchpoint, and their share of the accounts that made the transition.
CREATE OR REPLACE VIEW {db}.analytics_transition_touchpoints AS
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
    FROM {db}.phase_transitions_current AS t
    LEFT JOIN {db}.phase_transitions_current AS prev
        ON prev.account_id = t.account_id AND prev.to_phase = t.from_phase
) AS w
INNER JOIN {db}.events_current AS e ON e.account_id = w.account_id
INNER JOIN
(
    SELECT from_phase, to_phase, count() AS transitions
    FROM {db}.phase_transitions_current
    GROUP BY from_phase, to_phase
) AS c ON c.from_phase = w.from_phase AND c.to_phase = w.to_phase
WHERE e.occurred_at > w.since AND e.occurred_at <= w.until
GROUP BY from_phase, to_phase, channel, type
ORDER BY from_phase, to_phase, touchpoints DESC, channel, type;

-- The same per channel only.
CREATE OR REPLACE VIEW {db}.analytics_transition_channels AS
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
    FROM {db}.phase_transitions_current AS t
    LEFT JOIN {db}.phase_transitions_current AS prev
        ON prev.account_id = t.account_id AND prev.to_phase = t.from_phase
) AS w
INNER JOIN {db}.events_current AS e ON e.account_id = w.account_id
INNER JOIN
(
    SELECT from_phase, to_phase, count() AS transitions
    FROM {db}.phase_transitions_current
    GROUP BY from_phase, to_phase
) AS c ON c.from_phase = w.from_phase AND c.to_phase = w.to_phase
WHERE e.occurred_at > w.since AND e.occurred_at <= w.until
GROUP BY from_phase, to_phase, channel
ORDER BY from_phase, to_phase, touchpoints DESC, channel;

-- DMU coverage per account: the roles engaged (seen on the account's own activity), how
-- many, the contacts engaged, and whether a decider is among them.
CREATE OR REPLACE VIEW {db}.analytics_dmu_coverage AS
SELECT j.account_id AS account_id, j.phase AS phase,
       indexOf(['awareness', 'consideration', 'decision', 'purchase', 'delivery', 'loyalty'], j.phase) AS phase_order,
       j.segment AS segment,
       arraySort(e.roles) AS roles_engaged,
       length(e.roles) AS roles_engaged_count,
       e.contacts AS contacts_engaged,
       has(e.roles, 'decider') AS decider_engaged
FROM {db}.journeys_current AS j
LEFT JOIN
(
    SELECT account_id,
           groupUniqArrayIf(dmu_role, dmu_role != '') AS roles,
           uniqExactIf(contact_id, contact_id != '') AS contacts
    FROM {db}.events_current
    WHERE (channel, type) NOT IN (('email', 'sent'), ('email', 'delivered'), ('email', 'bounce'),
                                  ('email', 'deferred'), ('order', 'quote_sent'),
                                  ('order', 'invoice_sent'), ('order', 'order_shipped'),
                                  ('order', 'order_delivered'))
    GROUP BY account_id
) AS e ON e.account_id = j.account_id;

-- DMU roles per phase: of the accounts in a phase now, how many have each role engaged.
CREATE OR REPLACE VIEW {db}.analytics_dmu_roles AS
SELECT phase, phase_order, role,
       count() AS accounts,
       countIf(has(roles_engaged, role)) AS accounts_engaged,
       accounts_engaged / accounts AS share_engaged
FROM {db}.analytics_dmu_coverage
ARRAY JOIN ['initiator', 'gatekeeper', 'influencer', 'decider', 'buyer', 'user'] AS role
GROUP BY phase, phase_order, role
ORDER BY phase_order = 0, phase_order, phase,
         indexOf(['initiator', 'gatekeeper', 'influencer', 'decider', 'buyer', 'user'], role);

-- Accounts in decision now with no decider engaged: who to bring to the table.
CREATE OR REPLACE VIEW {db}.analytics_decision_without_decider AS
WITH (SELECT max(last_seen) FROM {db}.journeys_current) AS as_of
SELECT c.account_id AS account_id, c.segment AS segment, j.phase_since AS decision_since,
       (toUnixTimestamp64Milli(as_of) - toUnixTimestamp64Milli(j.phase_since)) / 86400000 AS days_in_decision,
       c.roles_engaged AS roles_engaged, c.contacts_engaged AS contacts_engaged,
       as_of
FROM {db}.analytics_dmu_coverage AS c
INNER JOIN {db}.journeys_current AS j ON j.account_id = c.account_id
WHERE c.phase = 'decision' AND NOT c.decider_engaged
ORDER BY days_in_decision DESC, account_id;

-- Open alerts with what an account manager needs: the account's phase and segment, the
-- value of an abandoned cart (price x quantity of the lines added in the cart episode,
-- less lines whose SKU was removed afterwards in it), and the age of a stalled deal (days
-- from its opening to as_of); days_open counts from the alert.
CREATE OR REPLACE VIEW {db}.analytics_open_alerts AS
WITH (SELECT max(last_seen) FROM {db}.journeys_current) AS as_of
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
FROM {db}.open_alerts AS a
LEFT JOIN {db}.journeys_current AS j ON j.account_id = a.account_id
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
                FROM {db}.open_alerts
                WHERE kind = 'cart_abandoned'
            ) AS ca
            INNER JOIN {db}.events_current AS e ON e.account_id = ca.account_id
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
CREATE OR REPLACE VIEW {db}.analytics_repeat_orders AS
WITH (SELECT max(last_seen) FROM {db}.journeys_current) AS as_of
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
FROM {db}.journeys_current AS j
LEFT JOIN
(
    SELECT account_id, arraySort(groupArray(toUnixTimestamp64Milli(occurred_at))) AS times
    FROM {db}.events_current
    WHERE channel = 'order' AND type = 'order_placed'
    GROUP BY account_id
) AS o ON o.account_id = j.account_id
WHERE j.phase = 'loyalty'
ORDER BY account_id;
