-- v5 -> v6: Parked events

-- Events a consumer could not handle for good (a permanent failure): parked
-- with the error so the consumer moves on; listed, and retried on request.
CREATE TABLE parked_event (
	consumer        TEXT    NOT NULL,
	position        BIGINT  NOT NULL, -- the event's position in event_log
	event_id        TEXT    NOT NULL,
	error           TEXT    NOT NULL,
	parked_at       BIGINT  NOT NULL, -- unix milliseconds
	attempts        INTEGER NOT NULL,
	retry_requested BOOLEAN NOT NULL DEFAULT false,

	PRIMARY KEY (consumer, position)
);
