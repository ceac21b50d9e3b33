// Package agents makes DAARION agents Matrix users: ghosts (@agent_<id>)
// the bridge registers on first use and acts as, with their profiles kept
// in the database and applied to Matrix.
package agents

import (
	"context"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// Agent is one ghost.
type Agent struct {
	AgentID      string
	UserID       id.UserID
	DisplayName  string
	AvatarURL    string
	RegisteredAt time.Time
	UpdatedAt    time.Time
}

// Scan reads an agent row (agentColumns).
func (a *Agent) Scan(row dbutil.Scannable) (*Agent, error) {
	var registered, updated int64
	if err := row.Scan(&a.AgentID, &a.UserID, &a.DisplayName, &a.AvatarURL, &registered, &updated); err != nil {
		return nil, err
	}
	a.RegisteredAt, a.UpdatedAt = time.UnixMilli(registered), time.UnixMilli(updated)
	return a, nil
}

// Store keeps the ghosts: the agent table.
type Store struct {
	qh *dbutil.QueryHelper[*Agent]
}

// NewStore returns the store in db.
func NewStore(db *dbutil.Database) *Store {
	return &Store{qh: dbutil.MakeQueryHelperSimple(db, func() *Agent { return &Agent{} })}
}

const (
	agentColumns     = `agent_id, user_id, display_name, avatar_url, registered_at, updated_at`
	getAgentQuery    = `SELECT ` + agentColumns + ` FROM agent WHERE agent_id = $1`
	listAgentQuery   = `SELECT ` + agentColumns + ` FROM agent WHERE substr(agent_id, 1, $1) = $2 ORDER BY agent_id LIMIT $3`
	upsertAgentQuery = `
		INSERT INTO agent (` + agentColumns + `) VALUES ($1, $2, '', '', $3, $3)
		ON CONFLICT (agent_id) DO NOTHING`
	setAgentProfileQuery = `
		UPDATE agent SET display_name = COALESCE($2, display_name), avatar_url = COALESCE($3, avatar_url), updated_at = $4
		WHERE agent_id = $1`
)

// Get returns an agent, nil when unknown.
func (s *Store) Get(ctx context.Context, agentID string) (*Agent, error) {
	a, err := s.qh.QueryOne(ctx, getAgentQuery, agentID)
	if err != nil {
		return nil, fmt.Errorf("failed to look up agent %s: %w", agentID, err)
	}
	return a, nil
}

// List returns agents whose id starts with prefix, by id.
func (s *Store) List(ctx context.Context, prefix string, limit int) ([]*Agent, error) {
	list, err := s.qh.QueryMany(ctx, listAgentQuery, len(prefix), prefix, limit)
	if err != nil {
		return nil, fmt.Errorf("failed to list agents: %w", err)
	}
	return list, nil
}

// Upsert records a registered ghost, keeping its profile.
func (s *Store) Upsert(ctx context.Context, agentID string, userID id.UserID) error {
	if err := s.qh.Exec(ctx, upsertAgentQuery, agentID, userID, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("failed to record agent %s: %w", agentID, err)
	}
	return nil
}

// SetProfile stores the display name and avatar (nil leaves one unchanged).
func (s *Store) SetProfile(ctx context.Context, agentID string, displayName, avatarURL *string) error {
	if err := s.qh.Exec(ctx, setAgentProfileQuery, agentID, displayName, avatarURL, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("failed to update profile of agent %s: %w", agentID, err)
	}
	return nil
}
