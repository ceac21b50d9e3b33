package rooms

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

const (
	testServer = "daarion.test"
	testBot    = id.UserID("@daarion-bot:" + testServer)
)

// matrixRoom is a room as the fake homeserver keeps it.
type matrixRoom struct {
	state  map[string]json.RawMessage // type + "\x00" + state key → content
	joined bool                       // the bot is in it
}

func stateKey(evtType, key string) string { return evtType + "\x00" + key }

// matrixHomeserver is a small in-memory homeserver for the rooms service:
// rooms with state, aliases, joins and messages, as the bot sees them.
type matrixHomeserver struct {
	*testrig.FakeHomeserver
	mu      sync.Mutex
	rooms   map[id.RoomID]*matrixRoom
	aliases map[id.RoomAlias]id.RoomID
	created []map[string]json.RawMessage // createRoom bodies
	notices []string                     // message bodies sent
	calls   map[string]int               // "METHOD what" → count
	// fail answers the named call ("createRoom", "join", "versions",
	// "putState", "putAlias", "getState") with this status, when set.
	fail map[string]int
	next int
}

func newMatrixHomeserver(t *testing.T) *matrixHomeserver {
	hs := &matrixHomeserver{FakeHomeserver: testrig.NewFakeHomeserver(t), rooms: map[id.RoomID]*matrixRoom{},
		aliases: map[id.RoomAlias]id.RoomID{}, calls: map[string]int{}, fail: map[string]int{}}
	const v3 = "/_matrix/client/v3"
	hs.on("POST "+v3+"/createRoom", "createRoom", hs.createRoom)
	hs.on("GET "+v3+"/directory/room/{alias}", "getAlias", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		roomID, ok := hs.aliases[id.RoomAlias(r.PathValue("alias"))]
		if !ok {
			testrig.WriteMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "no such alias")
			return
		}
		testrig.WriteJSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": []string{testServer}})
	})
	hs.on("PUT "+v3+"/directory/room/{alias}", "putAlias", func(w http.ResponseWriter, r *http.Request, body []byte) {
		alias := id.RoomAlias(r.PathValue("alias"))
		if _, ok := hs.aliases[alias]; ok {
			testrig.WriteMatrixError(w, http.StatusConflict, "M_UNKNOWN", "alias exists")
			return
		}
		var req struct {
			RoomID id.RoomID `json:"room_id"`
		}
		_ = json.Unmarshal(body, &req)
		hs.aliases[alias] = req.RoomID
		testrig.WriteJSON(w, http.StatusOK, map[string]any{})
	})
	hs.on("DELETE "+v3+"/directory/room/{alias}", "deleteAlias", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		alias := id.RoomAlias(r.PathValue("alias"))
		if _, ok := hs.aliases[alias]; !ok {
			testrig.WriteMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "no such alias")
			return
		}
		delete(hs.aliases, alias)
		testrig.WriteJSON(w, http.StatusOK, map[string]any{})
	})
	getState := func(w http.ResponseWriter, r *http.Request, _ []byte) {
		room := hs.joinedRoom(w, r)
		if room == nil {
			return
		}
		content, ok := room.state[stateKey(r.PathValue("type"), r.PathValue("key"))]
		if !ok {
			testrig.WriteMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "no such state")
			return
		}
		if r.URL.Query().Get("format") == "event" {
			testrig.WriteJSON(w, http.StatusOK, map[string]any{"type": r.PathValue("type"), "state_key": r.PathValue("key"),
				"content": content, "sender": testBot, "room_id": r.PathValue("room"), "event_id": "$state", "origin_server_ts": 1})
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(content)
	}
	putState := func(w http.ResponseWriter, r *http.Request, body []byte) {
		room := hs.joinedRoom(w, r)
		if room == nil {
			return
		}
		room.state[stateKey(r.PathValue("type"), r.PathValue("key"))] = body
		hs.next++
		testrig.WriteJSON(w, http.StatusOK, map[string]any{"event_id": fmt.Sprintf("$state%d", hs.next)})
	}
	hs.on("GET "+v3+"/rooms/{room}/state/{type}/{key...}", "getState", getState)
	hs.on("GET "+v3+"/rooms/{room}/state/{type}", "getState", getState)
	hs.on("PUT "+v3+"/rooms/{room}/state/{type}/{key...}", "putState", putState)
	hs.on("PUT "+v3+"/rooms/{room}/state/{type}", "putState", putState)
	hs.on("GET "+v3+"/rooms/{room}/state", "getState", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		room := hs.joinedRoom(w, r)
		if room == nil {
			return
		}
		var events []map[string]any
		for k, content := range room.state {
			var evtType, key string
			for i := range k {
				if k[i] == 0 {
					evtType, key = k[:i], k[i+1:]
				}
			}
			hs.next++
			events = append(events, map[string]any{"type": evtType, "state_key": key, "content": content, "sender": testBot,
				"room_id": r.PathValue("room"), "event_id": fmt.Sprintf("$s%d", hs.next), "origin_server_ts": 1})
		}
		testrig.WriteJSON(w, http.StatusOK, events)
	})
	hs.on("PUT "+v3+"/rooms/{room}/send/{type}/{txn}", "send", func(w http.ResponseWriter, r *http.Request, body []byte) {
		var content struct {
			Body string `json:"body"`
		}
		_ = json.Unmarshal(body, &content)
		hs.notices = append(hs.notices, content.Body)
		hs.next++
		testrig.WriteJSON(w, http.StatusOK, map[string]any{"event_id": fmt.Sprintf("$msg%d", hs.next)})
	})
	join := func(w http.ResponseWriter, r *http.Request, _ []byte) {
		roomID := id.RoomID(r.PathValue("room"))
		room, ok := hs.rooms[roomID]
		if !ok {
			testrig.WriteMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "no such room")
			return
		}
		room.joined = true
		testrig.WriteJSON(w, http.StatusOK, map[string]any{"room_id": roomID})
	}
	hs.on("POST "+v3+"/rooms/{room}/join", "join", join)
	hs.on("POST "+v3+"/join/{room}", "join", join)
	hs.on("GET /_matrix/client/versions", "versions", func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		testrig.WriteJSON(w, http.StatusOK, map[string]any{"versions": []string{"v1.11"}})
	})
	hs.on("GET "+v3+"/user/{user}/account_data/m.direct", "direct", func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		testrig.WriteMatrixError(w, http.StatusNotFound, "M_NOT_FOUND", "no direct chats")
	})
	return hs
}

// on answers pattern with the body read and hs.mu held, counting the call
// as name and failing it when hs.fail says so.
func (hs *matrixHomeserver) on(pattern, name string, fn func(w http.ResponseWriter, r *http.Request, body []byte)) {
	hs.Handle(pattern, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hs.mu.Lock()
		defer hs.mu.Unlock()
		hs.calls[name]++
		if status := hs.fail[name]; status != 0 {
			testrig.WriteMatrixError(w, status, "M_UNKNOWN", name+" fails")
			return
		}
		fn(w, r, body)
	})
}

func (hs *matrixHomeserver) joinedRoom(w http.ResponseWriter, r *http.Request) *matrixRoom {
	room, ok := hs.rooms[id.RoomID(r.PathValue("room"))]
	if !ok || !room.joined {
		testrig.WriteMatrixError(w, http.StatusForbidden, "M_FORBIDDEN", "the bot is not in the room")
		return nil
	}
	return room
}

// addRoom makes a room with the bot at botLevel (joined when botLevel > 0)
// and the given state (type → content, state key "").
func (hs *matrixHomeserver) addRoom(roomID id.RoomID, alias id.RoomAlias, botLevel int, state map[string]any) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	room := &matrixRoom{state: map[string]json.RawMessage{}, joined: botLevel > 0}
	pl, _ := json.Marshal(map[string]any{"users": map[id.UserID]int{testBot: botLevel}, "events_default": 0, "state_default": 50})
	room.state[stateKey("m.room.power_levels", "")] = pl
	room.state[stateKey("m.room.create", "")] = json.RawMessage(`{"room_version":"10"}`)
	for evtType, content := range state {
		raw, _ := json.Marshal(content)
		room.state[stateKey(evtType, "")] = raw
	}
	hs.rooms[roomID] = room
	if alias != "" {
		hs.aliases[alias] = roomID
	}
}

func (hs *matrixHomeserver) createRoom(w http.ResponseWriter, _ *http.Request, body []byte) {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil {
		testrig.WriteMatrixError(w, http.StatusBadRequest, "M_NOT_JSON", err.Error())
		return
	}
	hs.created = append(hs.created, req)
	var aliasName, name, topic string
	_ = json.Unmarshal(req["room_alias_name"], &aliasName)
	_ = json.Unmarshal(req["name"], &name)
	_ = json.Unmarshal(req["topic"], &topic)
	alias := id.RoomAlias("")
	if aliasName != "" {
		alias = id.NewRoomAlias(aliasName, testServer)
		if _, taken := hs.aliases[alias]; taken {
			testrig.WriteMatrixError(w, http.StatusBadRequest, "M_ROOM_IN_USE", "alias taken")
			return
		}
	}
	hs.next++
	roomID := id.RoomID(fmt.Sprintf("!r%d:%s", hs.next, testServer))
	room := &matrixRoom{state: map[string]json.RawMessage{}, joined: true}
	pl := map[string]any{"users": map[id.UserID]int{testBot: 100}, "events_default": 0, "state_default": 50}
	var override map[string]any
	if json.Unmarshal(req["power_level_content_override"], &override) == nil {
		for k, v := range override {
			pl[k] = v
		}
	}
	room.state[stateKey("m.room.power_levels", "")], _ = json.Marshal(pl)
	room.state[stateKey("m.room.create", "")] = json.RawMessage(`{"room_version":"10"}`)
	if name != "" {
		room.state[stateKey("m.room.name", "")], _ = json.Marshal(map[string]string{"name": name})
	}
	if topic != "" {
		room.state[stateKey("m.room.topic", "")], _ = json.Marshal(map[string]string{"topic": topic})
	}
	member, _ := json.Marshal(map[string]string{"membership": "join"})
	room.state[stateKey("m.room.member", testBot.String())] = member
	hs.rooms[roomID] = room
	if alias != "" {
		hs.aliases[alias] = roomID
	}
	testrig.WriteJSON(w, http.StatusOK, map[string]any{"room_id": roomID})
}

// state returns a room's state content (nil when none).
func (hs *matrixHomeserver) state(roomID id.RoomID, evtType string) map[string]any {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	room := hs.rooms[roomID]
	if room == nil || room.state[stateKey(evtType, "")] == nil {
		return nil
	}
	var content map[string]any
	_ = json.Unmarshal(room.state[stateKey(evtType, "")], &content)
	return content
}

func (hs *matrixHomeserver) alias(alias id.RoomAlias) id.RoomID {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.aliases[alias]
}

func (hs *matrixHomeserver) count(name string) int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.calls[name]
}

func (hs *matrixHomeserver) setFail(name string, status int) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.fail[name] = status
}
