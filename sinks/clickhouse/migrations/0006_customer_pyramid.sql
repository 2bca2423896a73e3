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

CREATE OR REPLACE VIEW {db}.analytics_customer_tiers AS
WITH (SELECT max(occurred_at) FROM {db}.events_current) AS as_of,
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
    FROM {db}.journeys_current AS j
    LEFT JOIN
    (
        SELECT account_id,
               sumIf(JSONExtractFloat(properties, 'amount'),
                     occurred_at >= since AND occurred_at <= as_of) AS revenue,
               countIf(occurred_at >= since AND occurred_at <= as_of) AS orders_in_period,
               countIf(occurred_at < since) AS earlier_orders
        FROM {db}.events_current
        WHERE channel = 'order' AND type = 'order_placed' AND account_id != ''
        GROUP BY account_id
    ) AS o ON o.account_id = j.account_id
)
ORDER BY indexOf(['top', 'big', 'medium', 'small', 'inactive', 'prospect', 'suspect'], tier),
         revenue DESC, account_id;

-- The pyramid itself: every tier, top first, with its accounts, revenue and share of the
-- revenue (tiers without accounts show 0, so a chart keeps its shape).
CREATE OR REPLACE VIEW {db}.analytics_customer_pyramid AS
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
    FROM {db}.analytics_customer_tiers
    GROUP BY tier
) AS t ON t.tier = tiers[n.i]
ORDER BY tier_order;
