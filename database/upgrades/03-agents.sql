-- v2 -> v3: Agent ghosts and idempotency keys

-- Agent ghosts: DAARION agents as Matrix users the bridge registers and acts as.
CREATE TABLE agent (
	agent_id      TEXT   PRIMARY KEY,
	user_id       TEXT   NOT NULL,
	display_name  TEXT   NOT NULL DEFAULT '',
	avatar_url    TEXT   NOT NULL DEFAULT '',
	registered_at BIGINT NOT NULL, -- unix milliseconds
	updated_at    BIGINT NOT NULL,

	CONSTRAINT agent_user_id_key UNIQUE (user_id)
);

-- Idempotency-Key of internal API writes: a retried request answers the
-- event it made the first time and sends nothing new.
CREATE TABLE idempotent_request (
	service      TEXT   NOT NULL,
	idem_key     TEXT   NOT NULL,
	request_hash TEXT   NOT NULL,
	event_id     TEXT   NOT NULL,
	sent_at      BIGINT NOT NULL,

	PRIMARY KEY (service, idem_key)
);
