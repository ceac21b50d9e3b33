-- v7 -> v8: Leader lease

-- The consumers' leader: a lease with an epoch (the fencing token) that the
-- leader renews on a heartbeat and a standby takes over once it has expired.
-- Every leader-only write checks the epoch in its own transaction.
-- (Replaces the session advisory lock, which a frozen leader kept for hours.)
CREATE TABLE leader_lease (
	name       TEXT   PRIMARY KEY,
	holder     TEXT   NOT NULL,
	epoch      BIGINT NOT NULL,
	expires_at BIGINT NOT NULL -- unix milliseconds
);
