-- v1 -> v2: City rooms

-- City rooms: one DAARION city room is one Matrix room (#city_<slug>).
CREATE TABLE city_room (
	slug        TEXT    PRIMARY KEY,
	room_id     TEXT    NOT NULL,
	alias       TEXT    NOT NULL,
	name        TEXT    NOT NULL,
	topic       TEXT    NOT NULL,
	visibility  TEXT    NOT NULL, -- 'public' or 'private'
	archived    BOOLEAN NOT NULL DEFAULT false,
	-- The power levels before archiving, restored by unarchive.
	pre_archive_power_levels TEXT,
	created_at  BIGINT  NOT NULL, -- unix milliseconds
	updated_at  BIGINT  NOT NULL,

	CONSTRAINT city_room_room_id_key UNIQUE (room_id),
	CONSTRAINT city_room_alias_key UNIQUE (alias)
);

-- Rooms a city room lived in before a room upgrade; old ids keep resolving.
CREATE TABLE city_room_predecessor (
	room_id     TEXT   PRIMARY KEY,
	slug        TEXT   NOT NULL,
	replaced_at BIGINT NOT NULL,

	CONSTRAINT city_room_predecessor_slug_fkey FOREIGN KEY (slug)
		REFERENCES city_room (slug) ON DELETE CASCADE ON UPDATE CASCADE
);
