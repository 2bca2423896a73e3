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

CREATE TABLE IF NOT EXISTS {db}.derived_settings
(
    name     String,
    value    Float64,
    version  UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY name;

-- One row per conversion x touchpoint x model. credit sums to 1 per conversion and model;
-- revenue is credit x the converting event's properties.amount for purchase conversions.
-- campaign: properties.utm_campaign, else context.campaign.name, else ''; content: the
-- touch's properties.url, else properties.title, else ''.
CREATE OR REPLACE VIEW {db}.attribution AS
WITH assumeNotNull((SELECT if(count() = 0, 7776000000.0, argMax(value, version))
                    FROM {db}.derived_settings
                    WHERE name = 'attribution_lookback_ms')) AS lookback_ms,
     assumeNotNull((SELECT if(count() = 0, 604800000.0, argMax(value, version))
                    FROM {db}.derived_settings
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
        FROM {db}.phase_transitions_current AS t
        INNER JOIN {db}.events_current AS e ON e.account_id = t.account_id
        LEFT JOIN
        (
            SELECT event_id, JSONExtractFloat(properties, 'amount') AS amount
            FROM {db}.events_current
            WHERE event_id IN (SELECT event_id FROM {db}.phase_transitions_current
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

CREATE OR REPLACE VIEW {db}.attribution_current AS
SELECT account_id, to_phase, transitioned_at, conversion_event_id, touch_event_id, touch_at,
       channel, type, campaign, content, model, credit, revenue
FROM {db}.attribution;

-- Per phase reached and model: the conversions (sum of credit) and revenue each channel,
-- campaign ('' for touches without one) and piece of content earned.
CREATE OR REPLACE VIEW {db}.analytics_attribution_by_channel AS
SELECT to_phase, model, channel, sum(credit) AS conversions, sum(revenue) AS revenue
FROM {db}.attribution_current
GROUP BY to_phase, model, channel
ORDER BY to_phase, model, conversions DESC, channel;

CREATE OR REPLACE VIEW {db}.analytics_attribution_by_campaign AS
SELECT to_phase, model, campaign, sum(credit) AS conversions, sum(revenue) AS revenue
FROM {db}.attribution_current
GROUP BY to_phase, model, campaign
ORDER BY to_phase, model, conversions DESC, campaign;

CREATE OR REPLACE VIEW {db}.analytics_attribution_by_content AS
SELECT to_phase, model, channel, content, sum(credit) AS conversions, sum(revenue) AS revenue
FROM {db}.attribution_current
WHERE content != ''
GROUP BY to_phase, model, channel, content
ORDER BY to_phase, model, conversions DESC, channel, content;
