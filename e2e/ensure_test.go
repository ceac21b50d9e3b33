package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

type ensured struct {
	Slug            string `json:"slug"`
	MatrixRoomID    string `json:"matrix_room_id"`
	MatrixRoomAlias string `json:"matrix_room_alias"`
	Created         bool   `json:"created"`
}

func ensureRooms(t *testing.T, s *stack, slugs ...string) (int, []ensured, apiResult) {
	t.Helper()
	var rooms []map[string]string
	for _, slug := range slugs {
		rooms = append(rooms, map[string]string{"slug": slug, "name": "Room " + slug})
	}
	res := s.api(t, http.MethodPost, "/internal/matrix/rooms/ensure", map[string]any{"rooms": rooms})
	var body struct {
		Rooms []ensured `json:"rooms"`
	}
	if res.status == http.StatusOK {
		if err := json.Unmarshal(res.body, &body); err != nil {
			t.Fatal(err)
		}
	}
	return res.status, body.Rooms, res
}

// city-service's backfill: one call makes every listed city room, once,
// under concurrent calls too; a bad list makes nothing.
func TestEnsureCityRooms(t *testing.T) {
	forEachHomeserver(t, func(t *testing.T, tdb rig) {
		s := newStack(t, tdb)
		s.bridge.waitForLog("Bridge bot registered", 30*time.Second)
		existing, _ := createCity(t, s, "general", "General", "")

		// Two callers at once, overlapping.
		var wg sync.WaitGroup
		answers := make([][]ensured, 2)
		for i, slugs := range [][]string{{"general", "energy", "market", "port"}, {"port", "market", "school"}} {
			wg.Go(func() {
				status, rooms, res := ensureRooms(t, s, slugs...)
				if status != http.StatusOK {
					t.Errorf("ensure %v: %d %s", slugs, status, res.body)
				}
				answers[i] = rooms
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		byslug := map[string]string{}
		created := map[string]int{}
		for _, rooms := range answers {
			for _, r := range rooms {
				if prev, ok := byslug[r.Slug]; ok && prev != r.MatrixRoomID {
					t.Errorf("%s mapped to %s and %s", r.Slug, prev, r.MatrixRoomID)
				}
				byslug[r.Slug] = r.MatrixRoomID
				if r.Created {
					created[r.Slug]++
				}
				if r.MatrixRoomAlias != fmt.Sprintf("#city_%s:%s", r.Slug, serverName) {
					t.Errorf("%s has alias %s", r.Slug, r.MatrixRoomAlias)
				}
			}
		}
		if got := answers[0][0]; got.Slug != "general" || got.MatrixRoomID != existing.String() || got.Created {
			t.Errorf("the existing room came back as %+v", got)
		}
		for _, slug := range []string{"energy", "market", "port", "school"} {
			if created[slug] != 1 {
				t.Errorf("%s was created %d times by the two calls", slug, created[slug])
			}
		}
		if slugs := listSlugs(t, s, ""); !slices.Equal(slugs, []string{"energy", "general", "market", "port", "school"}) {
			t.Errorf("city rooms: %v", slugs)
		}

		// Again: nothing new.
		_, again, _ := ensureRooms(t, s, "school", "general")
		if len(again) != 2 || again[0].Created || again[1].Created || again[0].MatrixRoomID != byslug["school"] {
			t.Errorf("a repeated ensure answered %+v", again)
		}

		// A bad list is refused whole, naming the item.
		for _, tc := range []struct {
			slugs []string
			field string
		}{
			{[]string{"harbour", "Not A Slug"}, "rooms[1].slug"},
			{[]string{"harbour", "harbour"}, "rooms[1].slug"},
		} {
			status, _, res := ensureRooms(t, s, tc.slugs...)
			if status != http.StatusBadRequest || res.str("field") != tc.field {
				t.Errorf("ensure %v: %d %s, want 400 naming %s", tc.slugs, status, res.body, tc.field)
			}
		}
		tooMany := make([]string, 101)
		for i := range tooMany {
			tooMany[i] = fmt.Sprintf("r%d", i)
		}
		if status, _, res := ensureRooms(t, s, tooMany...); status != http.StatusBadRequest || res.str("field") != "rooms" {
			t.Errorf("101 rooms: %d %s", status, res.body)
		}
		if slugs := listSlugs(t, s, ""); slices.Contains(slugs, "harbour") || slices.Contains(slugs, "r0") {
			t.Errorf("a refused list made rooms: %v", slugs)
		}
	})
}
