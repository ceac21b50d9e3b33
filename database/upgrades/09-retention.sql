-- v8 -> v9: Event log retention

-- How far the event log has been pruned: a sync since at or below
-- pruned_through asked for events that are gone.
CREATE TABLE log_retention (
	name           TEXT   PRIMARY KEY,
	pruned_through BIGINT NOT NULL
);
