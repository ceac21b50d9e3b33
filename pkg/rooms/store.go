package rooms

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// CityRoom is the mapping of one DAARION city room to its Matrix room.
type CityRoom struct {
	Slug       string
	RoomID     id.RoomID
	Alias      id.RoomAlias
	Name       string
	Topic      string
	Visibility string
	Archived   bool
	// PreArchivePowerLevels is the power levels JSON before archiving.
	PreArchivePowerLevels string
	CreatedAt             time.Time
	UpdatedAt             time.Time
}

// Scan reads a city_room row (cityRoomColumns).
func (cr *CityRoom) Scan(row dbutil.Scannable) (*CityRoom, error) {
	var preArchive sql.NullString
	var created, updated int64
	err := row.Scan(&cr.Slug, &cr.RoomID, &cr.Alias, &cr.Name, &cr.Topic, &cr.Visibility, &cr.Archived, &preArchive, &created, &updated)
	if err != nil {
		return nil, err
	}
	cr.PreArchivePowerLevels = preArchive.String
	cr.CreatedAt = time.UnixMilli(created)
	cr.UpdatedAt = time.UnixMilli(updated)
	return cr, nil
}

// Store keeps the city room mappings and the managed rooms: the city_room,
// city_room_predecessor and managed_room tables.
type Store struct {
	db        *dbutil.Database
	cityRooms *dbutil.QueryHelper[*CityRoom]
}

// NewStore returns the store in db.
func NewStore(db *dbutil.Database) *Store {
	return &Store{db: db, cityRooms: dbutil.MakeQueryHelperSimple(db, func() *CityRoom { return &CityRoom{} })}
}

const (
	cityRoomColumns         = `slug, room_id, alias, name, topic, visibility, archived, pre_archive_power_levels, created_at, updated_at`
	prefixedCityRoomColumns = `c.slug, c.room_id, c.alias, c.name, c.topic, c.visibility, c.archived, c.pre_archive_power_levels, c.created_at, c.updated_at`
	getCityRoomBaseQuery    = `SELECT ` + cityRoomColumns + ` FROM city_room `
	getCityRoomBySlugQuery  = getCityRoomBaseQuery + `WHERE slug = $1`
	getCityRoomByAliasQuery = getCityRoomBaseQuery + `WHERE alias = $1`
	// getCityRoomByRoomIDQuery finds a city room by its room or, after an
	// upgrade, by the room it lived in before.
	getCityRoomByRoomIDQuery = getCityRoomBaseQuery + `WHERE room_id = $1
		UNION ALL
		SELECT ` + prefixedCityRoomColumns + ` FROM city_room c
			JOIN city_room_predecessor p ON p.slug = c.slug WHERE p.room_id = $1
		LIMIT 1`
	insertCityRoomQuery = `
		INSERT INTO city_room (` + cityRoomColumns + `)
		VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $8)
		ON CONFLICT DO NOTHING`
	// listCityRoomsQuery is followed by the filters of ListOptions, then
	// listCityRoomsOrder; the placeholders are numbered as they are added.
	listCityRoomsQuery       = getCityRoomBaseQuery + `WHERE slug > $1`
	listCityRoomsPrefix      = ` AND slug LIKE $%d ESCAPE '\'`
	listCityRoomsArchived    = ` AND archived = $%d`
	listCityRoomsOrder       = ` ORDER BY slug LIMIT $%d`
	setCityRoomArchivedQuery = `UPDATE city_room SET archived = $2, pre_archive_power_levels = $3, updated_at = $4 WHERE slug = $1`
	insertPredecessorQuery   = `
		INSERT INTO city_room_predecessor (room_id, slug, replaced_at) VALUES ($1, $2, $3)
		ON CONFLICT (room_id) DO NOTHING`
	moveCityRoomQuery = `UPDATE city_room SET room_id = $2, updated_at = $3 WHERE slug = $1`
	cityRoomIDsQuery  = `SELECT room_id FROM city_room ORDER BY slug`
)

// BySlug returns the city room with slug, nil when there is none.
func (s *Store) BySlug(ctx context.Context, slug string) (*CityRoom, error) {
	cr, err := s.cityRooms.QueryOne(ctx, getCityRoomBySlugQuery, slug)
	if err != nil {
		return nil, fmt.Errorf("failed to look up city room %q: %w", slug, err)
	}
	return cr, nil
}

// ByAlias returns the city room with alias, nil when there is none.
func (s *Store) ByAlias(ctx context.Context, alias id.RoomAlias) (*CityRoom, error) {
	cr, err := s.cityRooms.QueryOne(ctx, getCityRoomByAliasQuery, alias)
	if err != nil {
		return nil, fmt.Errorf("failed to look up city room by alias %s: %w", alias, err)
	}
	return cr, nil
}

// ByRoomID returns the city room living in roomID, or whose earlier room
// (before an upgrade) was roomID; nil when there is none.
func (s *Store) ByRoomID(ctx context.Context, roomID id.RoomID) (*CityRoom, error) {
	cr, err := s.cityRooms.QueryOne(ctx, getCityRoomByRoomIDQuery, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to look up city room by room id %s: %w", roomID, err)
	}
	return cr, nil
}

// Insert stores a new mapping. It reports false, without error, when the
// slug, room or alias is already mapped (a concurrent creator won).
func (s *Store) Insert(ctx context.Context, cr *CityRoom) (bool, error) {
	now := time.Now()
	cr.CreatedAt, cr.UpdatedAt = now, now
	res, err := s.db.Exec(ctx, insertCityRoomQuery, cr.Slug, cr.RoomID, cr.Alias, cr.Name, cr.Topic, cr.Visibility, cr.Archived, now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to insert city room %q: %w", cr.Slug, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// ListOptions filter and page List.
type ListOptions struct {
	Prefix   string
	Archived *bool
	After    string // the last slug of the previous page
	Limit    int
}

// List returns city rooms ordered by slug.
func (s *Store) List(ctx context.Context, opts ListOptions) ([]*CityRoom, error) {
	query := listCityRoomsQuery
	args := []any{opts.After}
	if opts.Prefix != "" {
		// The slug alphabet has no LIKE wildcards except '_', which is escaped.
		query += fmt.Sprintf(listCityRoomsPrefix, len(args)+1)
		args = append(args, strings.ReplaceAll(opts.Prefix, "_", `\_`)+"%")
	}
	if opts.Archived != nil {
		query += fmt.Sprintf(listCityRoomsArchived, len(args)+1)
		args = append(args, *opts.Archived)
	}
	query += fmt.Sprintf(listCityRoomsOrder, len(args)+1)
	args = append(args, opts.Limit)
	list, err := s.cityRooms.QueryMany(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("failed to list city rooms: %w", err)
	}
	return list, nil
}

// SetArchived records the archive state and the power levels to restore.
func (s *Store) SetArchived(ctx context.Context, slug string, archived bool, prePowerLevels string) error {
	var pre any
	if prePowerLevels != "" {
		pre = prePowerLevels
	}
	if err := s.cityRooms.Exec(ctx, setCityRoomArchivedQuery, slug, archived, pre, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("failed to update archive state of city room %q: %w", slug, err)
	}
	return nil
}

// MoveToRoom records that a city room now lives in newRoomID (after a room
// upgrade); the old room id stays resolvable.
func (s *Store) MoveToRoom(ctx context.Context, slug string, oldRoomID, newRoomID id.RoomID) error {
	return s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		now := time.Now().UnixMilli()
		if err := s.cityRooms.Exec(ctx, insertPredecessorQuery, oldRoomID, slug, now); err != nil {
			return fmt.Errorf("failed to record predecessor room: %w", err)
		}
		if err := s.cityRooms.Exec(ctx, moveCityRoomQuery, slug, newRoomID, now); err != nil {
			return fmt.Errorf("failed to move city room %q to %s: %w", slug, newRoomID, err)
		}
		return nil
	})
}

// CityRoomIDs returns the Matrix room of every city room, archived or not
// (what the reconciler compares with the event log).
func (s *Store) CityRoomIDs(ctx context.Context) ([]id.RoomID, error) {
	rows, err := s.db.Query(ctx, cityRoomIDsQuery)
	roomIDs, err := dbutil.NewRowIterWithError(rows, dbutil.ScanSingleColumn[id.RoomID], err).AsList()
	if err != nil {
		return nil, fmt.Errorf("failed to list the city rooms: %w", err)
	}
	return roomIDs, nil
}
