package e2e_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/sqlstatestore"
)

// The room state the bridge's intents rely on is in the bridge's database,
// fed from the log by the matrix-state consumer: a human's join and leave,
// and the power levels, as the real homeserver pushed them.
func TestStateStoreFollowsTheLog(t *testing.T) {
	forEachRig(t, func(t *testing.T, r rig) {
		ctx := context.Background()
		s := newStack(t, r)
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		roomID, alias := createCity(t, s, "state", "State", "")
		alice, _ := s.humanJoins("alice", alias)
		// The bridge created the tables; this reads them as any process would.
		store := sqlstatestore.NewSQLStateStore(s.database, nil, true)
		membership := func() event.Membership {
			m, err := store.GetMembership(ctx, roomID, alice.UserID)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		eventually(t, "alice's join in the state store", 30*time.Second, func() bool { return membership() == event.MembershipJoin })
		if _, err := alice.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		eventually(t, "alice's leave in the state store", 30*time.Second, func() bool { return membership() == event.MembershipLeave })
		pl, err := store.GetPowerLevels(ctx, roomID)
		if err != nil || pl == nil || pl.GetUserLevel(s.cfg.BotUserID()) < 100 {
			t.Errorf("power levels in the state store = %+v, %v; want the bot at 100", pl, err)
		}
	})
}
