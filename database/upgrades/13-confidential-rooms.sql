-- v12 -> v13: Confidential rooms

-- Rooms whose message content the bridge keeps out of its DTOs, its sync
-- answers and its own event log (only ids, types, relations, actors and
-- times). Owned by pkg/rooms; marking is PUT
-- /internal/matrix/rooms/{roomId}/confidential or the bot's confidential.
CREATE TABLE confidential_room (
	room_id   TEXT   PRIMARY KEY,
	marked_by TEXT   NOT NULL DEFAULT '', -- the service, or the Matrix user of the bot command
	marked_at BIGINT NOT NULL  -- unix milliseconds
);
