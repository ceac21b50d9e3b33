package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
)

// poison is a poison event the soak injected: a tombstone in a city room
// whose replacement room the bot cannot join. With the "private" kind (the
// default, as in e2e TestPoisonTombstoneIsParked) the replacement is a
// private room a human made, the homeserver refuses the bot's join (403),
// and the rooms consumer must park the tombstone and go on. With "missing"
// the replacement room does not exist: Dendrite v0.15.2 answers that join
// 500 ("unsupported room version ”"), which the bridge retries for good
// (see docs/reliability.md).
type poison struct {
	EventID     id.EventID
	Room        id.RoomID
	Replacement id.RoomID
	Kind        string
	At          time.Time
}

// Poison kinds (-poison).
const (
	poisonPrivate = "private"
	poisonMissing = "missing"
)

// flood is one invite flood: a human creates a room and invites agents the
// platform never made. Nothing may be registered for them.
type flood struct {
	Room              id.RoomID
	Begin, End        time.Time
	Agents            []string // agent ids invited (agent_<id> on the homeserver)
	Invited           int      // invites answered 200
	Refused           int      // answered 4xx (not retried)
	Failed            int      // no answer or 5xx after every retry
	Retries           int
	RefusedSamples    []string
	AgentPrefix       string
	CreateRoomRetries int
	InviteTimes       []time.Duration // each invite's time to its answer, retries included
}

// injections are the poison events and invite floods of the run.
type injections struct {
	mu      sync.Mutex
	poisons []poison
	floods  []*flood
}

func (in *injections) snapshot() ([]poison, []*flood) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]poison(nil), in.poisons...), append([]*flood(nil), in.floods...)
}

// faultPoison sends, as the bot, a tombstone into a city room (each poison
// the next room) naming a replacement room the bot cannot join. A retry
// after no answer may make a second tombstone: the judge counts the
// tombstones naming the replacement in the log, not the sends.
func (s *soak) faultPoison(ctx context.Context, rec *chaosRecord) error {
	s.inj.mu.Lock()
	n := len(s.inj.poisons)
	s.inj.mu.Unlock()
	room := s.rooms[n%len(s.rooms)]
	p := poison{Room: room, Kind: s.opts.Poison, At: time.Now()}
	switch s.opts.Poison {
	case poisonMissing:
		p.Replacement = id.RoomID(fmt.Sprintf("!soakpoison%s:%s", randomHex(8), serverName))
	default:
		for attempt := 1; ; attempt++ {
			resp, err := s.outsider.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "not for bots"})
			if err == nil {
				p.Replacement = resp.RoomID
				break
			}
			if !homeserver.Transient(err) || attempt >= 10 || ctx.Err() != nil {
				return fmt.Errorf("the outsider could not create the private room of a poison: %w", err)
			}
			clock.Sleep(ctx, retryWait(attempt))
		}
	}
	// Not bodyPrefix: a poison is no soak message.
	content := map[string]string{"body": "poison tombstone of the chaos soak", "replacement_room": p.Replacement.String()}
	deadline := time.Now().Add(60 * time.Second)
	for attempt := 1; ; attempt++ {
		resp, err := s.bot.SendStateEvent(ctx, room, event.StateTombstone, "", content)
		if err == nil {
			p.EventID = resp.EventID
			break
		}
		if !homeserver.Transient(err) || time.Now().After(deadline) || ctx.Err() != nil {
			rec.Details = fmt.Sprintf("tombstone into %s not answered: %v", room, err)
			break
		}
		clock.Sleep(ctx, retryWait(attempt))
	}
	s.inj.mu.Lock()
	s.inj.poisons = append(s.inj.poisons, p)
	s.inj.mu.Unlock()
	if rec.Details == "" {
		what := "a private room the bot may not join"
		if p.Kind == poisonMissing {
			what = "does not exist"
		}
		rec.Details = fmt.Sprintf("tombstone %s in %s → %s (%s)", p.EventID, s.slugs[n%len(s.rooms)], p.Replacement, what)
	}
	return nil
}

// floodWorkers is how many invites of a flood are in flight at once: one,
// as a person or a script inviting one after the other (Dendrite handles a
// room's invites one at a time anyway).
const floodWorkers = 1

// faultFlood: a human creates a room and invites opts.FloodInvites agents
// the platform never made (@agent_flood<n>x<random>x<i>), four at a time.
// Each invite is retried on no answer, 5xx and 429 (at most 5 attempts).
func (s *soak) faultFlood(ctx context.Context, rec *chaosRecord) error {
	s.inj.mu.Lock()
	n := len(s.inj.floods) + 1
	s.inj.mu.Unlock()
	f := &flood{Begin: time.Now(), AgentPrefix: fmt.Sprintf("flood%dx%s", n, randomHex(3))}
	defer func() {
		f.End = time.Now()
		s.inj.mu.Lock()
		s.inj.floods = append(s.inj.floods, f)
		s.inj.mu.Unlock()
		_, p50, _, worst := stats(f.InviteTimes)
		rec.Details = fmt.Sprintf("room %s: %d invites answered 200, %d refused, %d failed, %d retries; an invite took %s (p50), %s (max), %d at a time",
			f.Room, f.Invited, f.Refused, f.Failed, f.Retries, ms(p50), ms(worst), floodWorkers)
	}()
	for attempt := 1; ; attempt++ {
		resp, err := s.outsider.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: fmt.Sprintf("soak flood %d", n)})
		if err == nil {
			f.Room = resp.RoomID
			break
		}
		f.CreateRoomRetries++
		if !homeserver.Transient(err) || attempt >= 10 || ctx.Err() != nil {
			return fmt.Errorf("the outsider could not create a room: %w", err)
		}
		clock.Sleep(ctx, retryWait(attempt))
	}
	for i := 0; i < s.opts.FloodInvites; i++ {
		f.Agents = append(f.Agents, fmt.Sprintf("%sx%03d", f.AgentPrefix, i))
	}
	var mu sync.Mutex
	work := make(chan string)
	var wg sync.WaitGroup
	for w := 0; w < floodWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for agent := range work {
				userID := id.NewUserID("agent_"+agent, serverName)
				var err error
				retries := 0
				began := time.Now()
				for attempt := 1; attempt <= 5; attempt++ {
					if _, err = s.outsider.InviteUser(ctx, f.Room, &mautrix.ReqInviteUser{UserID: userID}); err == nil || !homeserver.Transient(err) {
						break
					}
					retries++
					clock.Sleep(ctx, retryWait(attempt))
				}
				mu.Lock()
				f.InviteTimes = append(f.InviteTimes, time.Since(began))
				f.Retries += retries
				switch {
				case err == nil:
					f.Invited++
				case !homeserver.Transient(err):
					f.Refused++
					if len(f.RefusedSamples) < 3 {
						f.RefusedSamples = append(f.RefusedSamples, fmt.Sprintf("%s: %v", userID, err))
					}
				default:
					f.Failed++
				}
				mu.Unlock()
			}
		}()
	}
	for _, agent := range f.Agents {
		work <- agent
	}
	close(work)
	wg.Wait()
	return nil
}
