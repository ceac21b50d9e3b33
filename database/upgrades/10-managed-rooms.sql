-- v9 -> v10: Rooms the bridge manages for DAARION besides city rooms

-- Rooms the internal API may reach without the any_room scope, besides city
-- rooms: rooms created through POST /internal/matrix/create-room, and rooms
-- an agent was invited into and accepted.
CREATE TABLE managed_room (
	room_id    TEXT   PRIMARY KEY,
	origin     TEXT   NOT NULL, -- 'created' or 'agent_invite'
	agent_id   TEXT   NOT NULL DEFAULT '', -- the agent that accepted (agent_invite)
	managed_at BIGINT NOT NULL  -- unix milliseconds
);
