-- The demo SIMs leave with the demo profile (scripts/up.sh without it): set
-- them inactive with the sweeper's own mark (pipeline/sweeper.py,
-- retire_absent_sims), so that the sweeper makes them active again once
-- `make demo` brings their workers back and these see them.
--   psql -v ids=demo-1,demo-2 -f scripts/retire-demo-sims.sql
WITH r AS (
  UPDATE sim_cards SET status = 'inactive'
  WHERE status = 'active' AND modem_id = ANY (string_to_array(:'ids', ','))
  RETURNING id, number, modem_id)
INSERT INTO logs (action, details, status, sender_sim, actor, timestamp)
SELECT 'sim_absent', 'sim_card_id=' || id || ': demo modem ' || modem_id
       || ' not started (no demo profile); inactive until it is seen again',
       'success', number, 'sweeper', now()
FROM r;
