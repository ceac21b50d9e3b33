package rooms

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

func TestMain(m *testing.M) { os.Exit(testrig.RunTests(m)) }

func openStore(t *testing.T, tdb testrig.TestDatabase) *Store {
	t.Helper()
	db := testrig.OpenDatabase(t, tdb)
	return NewStore(db)
}

func cityRoom(slug string) *CityRoom {
	return &CityRoom{Slug: slug, RoomID: id.RoomID("!" + slug + ":s"), Alias: id.RoomAlias("#city_" + slug + ":s"), Name: slug, Visibility: "public"}
}

func TestStore(t *testing.T) {
	testrig.ForEachDatabase(t, func(t *testing.T, tdb testrig.TestDatabase) {
		ctx := context.Background()
		s := openStore(t, tdb)
		for _, slug := range []string{"b_x", "a", "bx", "c"} {
			if ok, err := s.Insert(ctx, cityRoom(slug)); err != nil || !ok {
				t.Fatalf("insert %s: %v %v", slug, ok, err)
			}
		}
		// One city room is one Matrix room: slug, room and alias are each unique.
		dupRoom := cityRoom("d")
		dupRoom.RoomID = "!a:s"
		dupAlias := cityRoom("e")
		dupAlias.Alias = "#city_a:s"
		for _, cr := range []*CityRoom{cityRoom("a"), dupRoom, dupAlias} {
			if ok, err := s.Insert(ctx, cr); err != nil || ok {
				t.Errorf("duplicate %+v inserted: %v %v", cr, ok, err)
			}
		}
		got, err := s.BySlug(ctx, "a")
		if err != nil || got == nil || got.RoomID != "!a:s" || got.Archived || time.Since(got.CreatedAt) > time.Minute {
			t.Fatalf("BySlug = %+v, %v", got, err)
		}
		if missing, err := s.BySlug(ctx, "zzz"); missing != nil || err != nil {
			t.Errorf("unknown slug = %+v, %v", missing, err)
		}
		if byAlias, _ := s.ByAlias(ctx, "#city_c:s"); byAlias == nil || byAlias.Slug != "c" {
			t.Errorf("ByAlias = %+v", byAlias)
		}

		// Prefix "b_" must not treat '_' as a wildcard (it would match "bx").
		list, err := s.List(ctx, ListOptions{Prefix: "b_", Limit: 10})
		if err != nil || len(list) != 1 || list[0].Slug != "b_x" {
			t.Errorf("prefix b_ = %v, %v", slugs(list), err)
		}
		page, _ := s.List(ctx, ListOptions{Limit: 2})
		next, _ := s.List(ctx, ListOptions{Limit: 2, After: page[1].Slug})
		if fmt.Sprint(slugs(page), slugs(next)) != "[a b_x] [bx c]" {
			t.Errorf("pages = %v %v", slugs(page), slugs(next))
		}

		if err = s.SetArchived(ctx, "c", true, `{"users":{}}`); err != nil {
			t.Fatal(err)
		}
		archived := true
		list, _ = s.List(ctx, ListOptions{Archived: &archived, Limit: 10})
		if len(list) != 1 || list[0].Slug != "c" || list[0].PreArchivePowerLevels != `{"users":{}}` {
			t.Errorf("archived = %+v", list)
		}
		_ = s.SetArchived(ctx, "c", false, "")
		if c, _ := s.BySlug(ctx, "c"); c.Archived || c.PreArchivePowerLevels != "" {
			t.Errorf("after unarchive = %+v", c)
		}

		if err = s.MoveToRoom(ctx, "a", "!a:s", "!a2:s"); err != nil {
			t.Fatal(err)
		}
		for _, roomID := range []id.RoomID{"!a:s", "!a2:s"} {
			if cr, err := s.ByRoomID(ctx, roomID); err != nil || cr == nil || cr.Slug != "a" || cr.RoomID != "!a2:s" {
				t.Errorf("ByRoomID(%s) = %+v, %v", roomID, cr, err)
			}
		}
	})
}

func slugs(list []*CityRoom) []string {
	var out []string
	for _, cr := range list {
		out = append(out, cr.Slug)
	}
	return out
}

func TestMetadataCache(t *testing.T) {
	fetches := 0
	now := time.Unix(1000, 0)
	c := NewMetadataCache(time.Minute, func(_ context.Context, roomID id.RoomID) (*Metadata, error) {
		fetches++
		return &Metadata{RoomID: roomID, Name: fmt.Sprint("v", fetches)}, nil
	})
	c.now = func() time.Time { return now }
	ctx := context.Background()
	get := func() string {
		m, err := c.Get(ctx, "!r:s")
		if err != nil {
			t.Fatal(err)
		}
		return m.Name
	}
	if get() != "v1" || get() != "v1" || fetches != 1 {
		t.Fatalf("hit did not come from the cache (fetches %d)", fetches)
	}
	c.Invalidate("!r:s")
	if get() != "v2" {
		t.Error("invalidate did not refetch")
	}
	now = now.Add(2 * time.Minute)
	if get() != "v3" {
		t.Error("expired entry was served")
	}
}
