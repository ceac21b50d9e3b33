//go:build goolm

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/internal/benchkit"
	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// human is a Matrix user on a Go client with its own end-to-end encryption
// (mautrix's cryptohelper, its Olm state in a SQLite file): in an encrypted
// room SendMessageEvent encrypts, sharing the room key with the members'
// devices (the agent's) first when needed, and the sync loop decrypts what
// arrives, as a real client would.
type human struct {
	cli      *mautrix.Client
	helper   *cryptohelper.CryptoHelper
	stopSync context.CancelFunc
	syncDone chan struct{}
	logFile  *os.File

	mu sync.Mutex
	// fromAgent counts the agent's messages the human's client received
	// in each room, decrypted or clear, and failures to decrypt.
	fromAgent map[id.RoomID]*agentSeen
}

type agentSeen struct{ decrypted, clear, failed int }

// startHuman registers localpart with shared-secret registration, sets up
// its encryption and starts its sync loop.
func startHuman(ctx context.Context, hs *testrig.Homeserver, dir, localpart string) (_ *human, err error) {
	h := &human{fromAgent: map[id.RoomID]*agentSeen{}, syncDone: make(chan struct{})}
	if h.cli, err = hs.RegisterUser(ctx, localpart, randomToken(), false); err != nil {
		return nil, err
	}
	// The client's own log (warnings and up: failed decryptions, key
	// sharing errors) goes to a file in the work directory.
	if h.logFile, err = os.Create(filepath.Join(dir, "human-client.log")); err != nil {
		return nil, err
	}
	h.cli.Log = zerolog.New(h.logFile).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	if h.helper, err = cryptohelper.NewCryptoHelper(h.cli, []byte(randomToken()), filepath.Join(dir, "human-crypto.db")); err != nil {
		h.logFile.Close()
		return nil, err
	}
	if err = h.helper.Init(ctx); err != nil {
		_ = h.helper.Close()
		h.logFile.Close()
		return nil, fmt.Errorf("the human's crypto: %w", err)
	}
	agent := id.NewUserID(agentLocalpart, serverName)
	h.helper.DecryptErrorCallback = func(evt *event.Event, _ error) {
		if evt.Sender == agent {
			h.bump(evt.RoomID, func(s *agentSeen) { s.failed++ })
		}
	}
	h.cli.Crypto = h.helper
	syncer := h.cli.Syncer.(mautrix.ExtensibleSyncer)
	syncer.OnEventType(event.EventMessage, func(_ context.Context, evt *event.Event) {
		if evt.Sender != agent {
			return
		}
		if evt.Mautrix.EventSource&event.SourceDecrypted != 0 {
			h.bump(evt.RoomID, func(s *agentSeen) { s.decrypted++ })
		} else {
			h.bump(evt.RoomID, func(s *agentSeen) { s.clear++ })
		}
	})
	syncCtx, cancel := context.WithCancel(context.Background())
	h.stopSync = cancel
	go func() {
		defer close(h.syncDone)
		if err := h.cli.SyncWithContext(syncCtx); err != nil && !errors.Is(err, context.Canceled) {
			benchkit.Progress("the human's sync loop ended: %v", err)
		}
	}()
	return h, nil
}

// bump changes the room's counter under the lock: the handlers run on the
// sync goroutine, the decryption-error callback also on the helper's own.
func (h *human) bump(room id.RoomID, f func(*agentSeen)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.fromAgent[room]
	if s == nil {
		s = &agentSeen{}
		h.fromAgent[room] = s
	}
	f(s)
}

func (h *human) agentSeen(room id.RoomID) agentSeen {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.fromAgent[room]; s != nil {
		return *s
	}
	return agentSeen{}
}

func (h *human) close() {
	h.stopSync()
	select {
	case <-h.syncDone:
	case <-time.After(10 * time.Second):
	}
	_ = h.helper.Close()
	_ = h.logFile.Close()
}

// createRoom creates a private room inviting the agent; encrypted rooms get
// m.room.encryption (Megolm, the default rotation: 100 messages or a week,
// as Element's) in their initial state.
func (h *human) createRoom(ctx context.Context, name string, encrypted bool) (id.RoomID, error) {
	req := &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Name:   name,
		Invite: []id.UserID{id.NewUserID(agentLocalpart, serverName)},
	}
	if encrypted {
		req.InitialState = []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}}
	}
	resp, err := h.cli.CreateRoom(ctx, req)
	if err != nil {
		return "", fmt.Errorf("creating %q: %w", name, err)
	}
	return resp.RoomID, nil
}

// waitJoined waits until the human's own sync has seen user join room:
// then the client's key sharing includes the user's devices.
func (h *human) waitJoined(ctx context.Context, room id.RoomID, user id.UserID, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if h.cli.StateStore.IsMembership(ctx, room, user, event.MembershipJoin) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not join %s within %s (as the human's client sees it)", user, room, timeout)
		}
		if !clock.Sleep(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// send posts a text message (encrypted in an encrypted room) and returns
// its event id.
func (h *human) send(ctx context.Context, room id.RoomID, body string) (id.EventID, error) {
	resp, err := h.cli.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		return "", err
	}
	return resp.EventID, nil
}
