package agents

import (
	"context"
	"os"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }

func ghostID(agentID string) id.UserID { return id.UserID("@agent_" + agentID + ":s") }

func TestStore(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		s := NewStore(testrig.OpenDatabase(t, tdb))
		if a, err := s.Get(ctx, "nobody"); a != nil || err != nil {
			t.Fatalf("unknown agent = %+v, %v", a, err)
		}
		if list, err := s.List(ctx, "", 10); len(list) != 0 || err != nil {
			t.Fatalf("empty list = %+v, %v", list, err)
		}
		for _, agentID := range []string{"b1", "a1", "a2"} {
			if err := s.Upsert(ctx, agentID, ghostID(agentID)); err != nil {
				t.Fatal(err)
			}
		}
		name, avatar := "Alice", "mxc://s/a"
		if err := s.SetProfile(ctx, "a1", &name, &avatar); err != nil {
			t.Fatal(err)
		}
		// A nil field stays; registering again keeps the profile.
		other := "Alicia"
		if err := s.SetProfile(ctx, "a1", &other, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Upsert(ctx, "a1", ghostID("a1")); err != nil {
			t.Fatal(err)
		}
		a, err := s.Get(ctx, "a1")
		if err != nil || a == nil || a.UserID != ghostID("a1") || a.DisplayName != "Alicia" || a.AvatarURL != avatar ||
			time.Since(a.RegisteredAt) > time.Minute || a.UpdatedAt.Before(a.RegisteredAt) {
			t.Fatalf("Get = %+v, %v", a, err)
		}
		list, err := s.List(ctx, "a", 10)
		if err != nil || len(list) != 2 || list[0].AgentID != "a1" || list[1].AgentID != "a2" {
			t.Fatalf("List(a) = %+v, %v", list, err)
		}
		if list, err = s.List(ctx, "", 1); err != nil || len(list) != 1 || list[0].AgentID != "a1" {
			t.Fatalf("List limit 1 = %+v, %v", list, err)
		}
	})
}
