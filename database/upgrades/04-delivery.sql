-- v3 -> v4: Sent events, webhook subscriptions and outbox

-- Events the bridge sent for a service: delivered DTOs of their echoes carry
-- the origin (service, Idempotency-Key) so consumers can tell their own.
CREATE TABLE sent_event (
	event_id  TEXT   PRIMARY KEY,
	service   TEXT   NOT NULL,
	idem_key  TEXT,
	sent_at   BIGINT NOT NULL
);

-- Webhook subscriptions.
CREATE TABLE webhook_subscription (
	id          TEXT    PRIMARY KEY,
	service     TEXT    NOT NULL,
	room_filter TEXT    NOT NULL, -- '*', a room id, or 'city:<slug>'
	webhook_url TEXT    NOT NULL,
	event_types TEXT    NOT NULL, -- JSON array; empty array: every type
	secret      TEXT    NOT NULL,
	state       TEXT    NOT NULL, -- 'active', 'paused' or 'disabled'
	state_reason TEXT   NOT NULL DEFAULT '',
	created_at  BIGINT  NOT NULL,
	updated_at  BIGINT  NOT NULL
);

-- The webhook outbox: one row per (subscription, event) to deliver, in log
-- order per room. 'dead' rows are the dead-letter list.
CREATE TABLE webhook_delivery (
	subscription_id TEXT    NOT NULL,
	position        BIGINT  NOT NULL,
	room_id         TEXT    NOT NULL,
	event_id        TEXT    NOT NULL,
	body            TEXT    NOT NULL,
	state           TEXT    NOT NULL, -- 'pending' or 'dead'
	attempts        INTEGER NOT NULL DEFAULT 0,
	next_attempt_at BIGINT  NOT NULL,
	first_failed_at BIGINT,
	last_error      TEXT    NOT NULL DEFAULT '',

	PRIMARY KEY (subscription_id, position),
	CONSTRAINT webhook_delivery_subscription_fkey FOREIGN KEY (subscription_id)
		REFERENCES webhook_subscription (id) ON DELETE CASCADE
);
CREATE INDEX webhook_delivery_due_idx ON webhook_delivery (state, next_attempt_at);
-- A (subscription, room) queue in order: its head is the lowest pending position.
CREATE INDEX webhook_delivery_queue_idx ON webhook_delivery (subscription_id, room_id, state, position);
