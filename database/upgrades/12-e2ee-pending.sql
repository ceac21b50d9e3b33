-- v11 -> v12: Encrypted events waiting for their keys

-- Encrypted room events the end-to-bridge encryption could not decrypt yet
-- (no Megolm session): tried again when keys arrive and every few seconds,
-- given up on after encryption.give_up_after. Owned by pkg/e2ee; the event
-- itself stays in event_log.
CREATE TABLE e2ee_pending (
	event_id   TEXT   PRIMARY KEY,
	room_id    TEXT   NOT NULL,
	session_id TEXT   NOT NULL,
	position   BIGINT NOT NULL, -- the encrypted event's log position
	since      BIGINT NOT NULL, -- unix milliseconds: first seen undecryptable
	-- unix milliseconds: when the bridge asked the sender's devices for the
	-- key (Synapse drops to-device messages sent while the bridge is down);
	-- 0: not yet
	key_requested_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX e2ee_pending_since_idx ON e2ee_pending (since);
