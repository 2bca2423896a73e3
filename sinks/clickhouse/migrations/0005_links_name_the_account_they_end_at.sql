-- identity_links_current names the account each alias belongs to now: a row's account_id
-- followed through the `account` rows (a company domain or free-mail contact merged into
-- another account) to the account it ends at, as events_current does. Which account the
-- table's own row names depends on the order links were learnt (an email linked to its
-- company domain before the domain turned out to be an ERP account names the domain;
-- linked after, the ERP account); the view does not. Accounts only merge into accounts of
-- a higher rank (free-mail contact, company domain, ERP account), so two steps reach the
-- end. `identity_links FINAL` keeps each row as written.

CREATE OR REPLACE VIEW {db}.identity_links_current AS
WITH merged AS (
    SELECT alias, account_id FROM {db}.identity_links FINAL WHERE kind = 'account'
)
SELECT l.kind AS kind,
       l.alias AS alias,
       multiIf(second.account_id != '', second.account_id,
               first.account_id != '', first.account_id,
               l.account_id) AS account_id,
       l.linked_at AS linked_at
FROM {db}.identity_links AS l FINAL
LEFT JOIN merged AS first ON first.alias = l.account_id
LEFT JOIN merged AS second ON second.alias = first.account_id;
