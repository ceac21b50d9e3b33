// Package commands is the bridge bot's command interface for operators: a
// consumer of the event log that reads invites of the bot and messages in
// rooms the bot is in, and answers commands such as `status`, `rooms` or
// `redeliver` with Markdown notices.
//
// Who may do what is the `permissions` config. The bot joins direct chats
// opened by admins only and answers there without a prefix; elsewhere a
// command starts with `!daarion`. Commands run at most once per command
// event in a process and, as the log is read at least once, a command seen
// again after a restart is run again but answered with the same Matrix
// transaction id, so the homeserver keeps a single reply.
package commands

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/commands"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/consumer"
	"github.com/daarion/matrix-bridge/pkg/eventlog"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/messaging"
	"github.com/daarion/matrix-bridge/pkg/rooms"
	"github.com/daarion/matrix-bridge/pkg/status"
)

// Prefix starts a command outside the bot's direct chats.
const Prefix = "!daarion"

// DefaultMaxAge is how old a command may be and still run.
const DefaultMaxAge = time.Hour

// Options are what the bot reads and acts on. Rooms, CityRooms, Agents,
// AgentStore, the webhook parts, Runners and NATS may be nil in tests;
// commands needing them then say so.
type Options struct {
	Config     *config.Config
	AppService *appservice.AppService
	DB         *dbutil.Database
	EventLog   EventLog
	Rooms      Rooms
	CityRooms  CityRooms
	Agents     Agents
	AgentStore AgentStore
	Webhooks   Subscriptions
	Deliverer  Deliverer
	// Runners returns the event log's consumers (for status).
	Runners func() []*consumer.Runner
	// Status returns the process's latest status sample (for status).
	Status func() *status.Snapshot
	// Parked is the list of events consumers parked.
	Parked ParkedEvents
	// Reconciler compares rooms' timelines with the event log (reconcile).
	Reconciler Reconciler
	// NATS is the JetStream sink, nil when NATS is not configured (a nil
	// interface: mind a nil *jetstream.Sink in it).
	NATS NATSSink
	// Version is the bridge's version; Started its start time (default: now).
	Version string
	Started time.Time
	// MaxAge skips commands older than this (default DefaultMaxAge): a
	// consumer reading the log from the start, or a bridge back from a long
	// outage, does not run stale commands.
	MaxAge time.Duration
}

// Bot is the command consumer of the event log.
type Bot struct {
	opts   Options
	perms  Permissions
	botID  id.UserID
	client *mautrix.Client
	mapper identity.Mapper
	puppet *regexp.Regexp // double-puppeted humans; nil when off
	proc   *commands.Processor[*Bot]
	cmds   []*command
	direct *rooms.DirectChats

	// done is the position of the last event handled, so a batch retried
	// after an error does not run its commands twice.
	done atomic.Int64
}

// New returns the bot; it is a consumer.Handler.
func New(opts Options) *Bot {
	if opts.Started.IsZero() {
		opts.Started = time.Now()
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	b := &Bot{
		opts:   opts,
		perms:  NewPermissions(opts.Config.Permissions),
		botID:  opts.Config.BotUserID(),
		client: opts.AppService.BotIntent().Client,
		mapper: identity.NewMapper(opts.Config),
	}
	if re := opts.Config.DoublePuppetRegex(); re != "" {
		b.puppet = regexp.MustCompile("^" + re + "$")
	}
	if opts.Rooms != nil {
		b.direct = opts.Rooms.DirectChats()
	}
	if b.direct == nil {
		b.direct = rooms.NewDirectChats(b.client)
	}
	b.cmds = b.commandList()
	b.proc = commands.NewProcessor[*Bot](b.client)
	b.proc.Meta = b
	b.proc.PreValidator = commands.FuncPreValidator[*Bot](b.validate)
	b.proc.Unregister(b.proc.GetHandler(commands.UnknownCommandName))
	for _, cmd := range b.cmds {
		b.proc.Register(&commands.Handler[*Bot]{
			Name:        cmd.name,
			Func:        b.run(cmd),
			Description: event.MakeExtensibleText(cmd.help),
		})
	}
	b.proc.Register(&commands.Handler[*Bot]{Name: commands.UnknownCommandName, Func: b.unknown})
	return b
}

// HandleEvents reads invites of the bot and commands, in log order.
func (b *Bot) HandleEvents(ctx context.Context, events []*eventlog.Event) error {
	for _, evt := range events {
		if evt.Position <= b.done.Load() {
			continue
		}
		if err := b.handle(ctx, evt); err != nil {
			return err
		}
		b.done.Store(evt.Position)
	}
	return nil
}

func (b *Bot) handle(ctx context.Context, evt *eventlog.Event) error {
	if evt.Kind != eventlog.KindTimeline || evt.RoomID == "" || id.UserID(evt.Sender) == b.botID {
		return nil
	}
	switch evt.Type {
	case event.StateMember.Type:
		f := gjson.GetMany(string(evt.JSON), "state_key", "content.membership", "content.is_direct")
		if id.UserID(f[0].Str) == b.botID && f[1].Str == string(event.MembershipInvite) {
			return b.handleInvite(ctx, evt, f[2].Bool())
		}
	case event.EventMessage.Type:
		return b.handleMessage(ctx, evt)
	case event.EventEncrypted.Type:
		return b.handleEncrypted(ctx, evt)
	}
	return nil
}

// handleEncrypted tells an admin who writes in an encrypted direct chat
// that the bot cannot read it, instead of staying silent.
func (b *Bot) handleEncrypted(ctx context.Context, evt *eventlog.Event) error {
	if b.perms.Level(id.UserID(evt.Sender)) < LevelAdmin {
		return nil
	}
	roomID := id.RoomID(evt.RoomID)
	if direct, err := b.direct.Has(ctx, roomID); err != nil || !direct {
		return err
	}
	if sent := time.UnixMilli(gjson.Get(string(evt.JSON), "origin_server_ts").Int()); time.Since(sent) > b.opts.MaxAge {
		return nil
	}
	b.send(ctx, roomID, nil, txnID("encrypted", evt.EventID),
		"**I cannot read encrypted messages.** Open a direct chat with me without encryption to use the commands.")
	return nil
}

// handleInvite joins a room an admin invited the bot to, remembering a
// direct chat as one; anyone else's invite is rejected.
func (b *Bot) handleInvite(ctx context.Context, evt *eventlog.Event, isDirect bool) error {
	roomID, inviter := id.RoomID(evt.RoomID), id.UserID(evt.Sender)
	log := zerolog.Ctx(ctx).With().Stringer("room_id", roomID).Stringer("inviter", inviter).Bool("is_direct", isDirect).Logger()
	if b.perms.Level(inviter) < LevelAdmin {
		_, err := b.client.LeaveRoom(ctx, roomID, &mautrix.ReqLeave{Reason: "Only bridge admins can invite the bridge bot."})
		if err != nil && !homeserver.Permanent(err) {
			return fmt.Errorf("failed to reject an invite: %w", err)
		}
		log.Info().Err(err).Msg("Rejected an invite from a non-admin")
		return nil
	}
	if _, err := b.client.JoinRoomByID(ctx, roomID); err != nil {
		if homeserver.Permanent(err) {
			log.Warn().Err(err).Msg("Cannot accept an admin's invite")
			return nil
		}
		return fmt.Errorf("failed to accept an invite: %w", err)
	}
	greeting := "**Hello!** I am the DAARION bridge bot. Commands here start with `" + Prefix + "`; send `" + Prefix + " help` for the list."
	if isDirect {
		if err := b.direct.Add(ctx, inviter, roomID); err != nil {
			return err
		}
		greeting = "**Hello!** I am the DAARION bridge bot. Send `help` for the list of commands."
	}
	log.Info().Msg("Accepted an admin's invite")
	b.send(ctx, roomID, nil, txnID("invite", evt.EventID), greeting)
	return nil
}

// handleMessage runs the command a message holds, if any.
func (b *Bot) handleMessage(ctx context.Context, evt *eventlog.Event) error {
	sender := id.UserID(evt.Sender)
	if kind := b.mapper.FromMatrix(sender).Kind; kind == identity.KindAgent || kind == identity.KindBridge {
		return nil // the bridge's own users never command it
	}
	// The content is found once and read inside: every message of the log
	// passes here, and few are commands.
	content := gjson.Get(string(evt.JSON), "content")
	f := gjson.GetMany(content.Raw, "msgtype", "body")
	if f[0].Str == string(event.MsgNotice) {
		return nil
	}
	roomID := id.RoomID(evt.RoomID)
	prefixed := hasPrefix(f[1].Str)
	direct := false
	if !prefixed {
		var err error
		if direct, err = b.direct.Has(ctx, roomID); err != nil {
			return err
		} else if !direct {
			return nil
		}
	}
	log := zerolog.Ctx(ctx).With().Str("event_id", evt.EventID).Stringer("room_id", roomID).Stringer("sender", sender).Logger()
	if sent := time.UnixMilli(gjson.Get(string(evt.JSON), "origin_server_ts").Int()); time.Since(sent) > b.opts.MaxAge {
		log.Info().Time("sent_at", sent).Msg("Ignoring a command older than the maximum age")
		return nil
	}
	if b.puppet != nil && b.puppet.MatchString(string(sender)) {
		if b.sentByBridge(evt) {
			log.Info().Msg("Ignoring a command the bridge itself sent as a double-puppeted user")
			return nil
		}
	}
	if !direct && !b.botJoined(ctx, roomID) {
		return nil // a room of agents only: the bot cannot answer there
	}
	var parsed event.Event
	if err := json.Unmarshal(evt.JSON, &parsed); err != nil {
		log.Warn().Err(err).Msg("Ignoring a message that does not parse")
		return nil
	}
	if err := parsed.Content.ParseRaw(parsed.Type); err != nil {
		log.Warn().Err(err).Msg("Ignoring a message whose content does not parse")
		return nil
	}
	parsed.RoomID, parsed.Sender, parsed.ID = roomID, sender, id.EventID(evt.EventID)
	cmdCtx, cancel := context.WithTimeout(log.WithContext(ctx), 2*time.Minute)
	defer cancel()
	b.proc.Process(cmdCtx, &parsed)
	// Stopping mid-command: leave the cursor before it, so the command runs
	// again after the restart (answered with the same transaction id).
	return ctx.Err()
}

// hasPrefix reports whether text starts with the command prefix as a word.
func hasPrefix(text string) bool {
	text = strings.TrimSpace(text)
	if len(text) < len(Prefix) || !strings.EqualFold(text[:len(Prefix)], Prefix) {
		return false
	}
	rest := text[len(Prefix):]
	return rest == "" || rest[0] == ' ' || rest[0] == '\n' || rest[0] == '\t'
}

// validate finds the command word: after the prefix, or first in a direct
// chat; false leaves the message alone.
func (b *Bot) validate(ce *commands.Event[*Bot]) bool {
	if ce.Command == Prefix {
		if len(ce.Args) == 0 {
			ce.Command = "help"
			return true
		}
		ce.Command = strings.ToLower(ce.ShiftArg())
		return true
	}
	return b.direct.Cached(ce.RoomID)
}

// botJoined reports whether the bot is in a room (it can answer there).
func (b *Bot) botJoined(ctx context.Context, roomID id.RoomID) bool {
	var member event.MemberEventContent
	err := b.client.StateEvent(ctx, roomID, event.StateMember, b.botID.String(), &member)
	return err == nil && member.Membership == event.MembershipJoin
}

// sentByBridge reports whether the bridge sent evt itself (a DAARION
// service acting as a human through double puppeting): such a message is
// the service's, not the human's. Every message the bridge sends carries
// its marker in the content, put there before the send, so this holds even
// for a send whose caller hung up before anything was recorded. (A human
// who writes the marker into a message only stops their own command.)
func (b *Bot) sentByBridge(evt *eventlog.Event) bool {
	return messaging.Marked(evt.JSON)
}

// txnID is the Matrix transaction id of the bot's answer to an event: the
// same event always gets the same id, so a command handled again (after a
// restart) is not answered twice.
func txnID(kind, eventID string) string {
	sum := sha256.Sum256([]byte(kind + "\x00" + eventID))
	return "daarion_cmd_" + hex.EncodeToString(sum[:16])
}
