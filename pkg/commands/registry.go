package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/commands"
	"maunium.net/go/mautrix/event"

	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/rooms"
)

// perPage is how many lines a list shows at once.
const perPage = 20

// request is one command to run.
type request struct {
	evt    *event.Event
	args   args
	direct bool // in a direct chat: no prefix needed
}

// command is one bot command.
type command struct {
	name  string
	usage string // the arguments, e.g. "<slug> <name>"
	help  string // one line
	level Level
	flags map[string]flagKind
	// minArgs is how many positional arguments are required.
	minArgs int
	run     func(ctx context.Context, req *request) (string, error)
}

// commandList is every command, in the order help shows them.
func (b *Bot) commandList() []*command {
	paged := map[string]flagKind{"page": intFlag}
	return []*command{
		{name: "help", help: "list the commands", level: LevelUser, run: b.cmdHelp},
		{name: "ping", help: "check that the bot answers", level: LevelUser, run: b.cmdPing},
		{name: "status", help: "version, uptime, homeserver, database, event log, consumers, deliveries, NATS", level: LevelAdmin, run: b.cmdStatus},
		{name: "rooms", usage: "[query] [--archived] [--page N]", help: "list city rooms (archived ones with --archived)", level: LevelAdmin,
			flags: map[string]flagKind{"page": intFlag, "archived": boolFlag}, run: b.cmdRooms},
		{name: "room", usage: "<slug|alias|room id>", help: "a room's mapping, members, last event and subscriptions", level: LevelAdmin, minArgs: 1, run: b.cmdRoom},
		{name: "create-room", usage: "<slug> <name> [--private]", help: "create the city room of a slug (public unless --private)", level: LevelAdmin, minArgs: 2,
			flags: map[string]flagKind{"private": boolFlag}, run: b.cmdCreateRoom},
		{name: "archive", usage: "<slug> [reason]", help: "archive a city room: only the bridge may post", level: LevelAdmin, minArgs: 1, run: b.cmdArchive},
		{name: "unarchive", usage: "<slug>", help: "unarchive a city room", level: LevelAdmin, minArgs: 1, run: b.cmdUnarchive},
		{name: "confidential", usage: "<slug|alias|room id> [on|off]", help: "whether a room is confidential (its DTOs, sync and event log keep no message content), or mark it on or off", level: LevelAdmin, minArgs: 1, run: b.cmdConfidential},
		{name: "agents", usage: "[query] [--page N]", help: "list agents", level: LevelAdmin, flags: paged, run: b.cmdAgents},
		{name: "agent", usage: "<id>", help: "an agent's Matrix id, profile, rooms and last post", level: LevelAdmin, minArgs: 1, run: b.cmdAgent},
		{name: "set-agent-name", usage: "<id> <name>", help: "set an agent's display name", level: LevelAdmin, minArgs: 2, run: b.cmdSetAgentName},
		{name: "subscriptions", usage: "[--page N]", help: "list webhook subscriptions with their queues", level: LevelAdmin, flags: paged, run: b.cmdSubscriptions},
		{name: "failures", usage: "<subscription> [--page N]", help: "a subscription's dead letters", level: LevelAdmin, minArgs: 1, flags: paged, run: b.cmdFailures},
		{name: "redeliver", usage: "<subscription> [event id|all]", help: "queue dead letters again (all by default)", level: LevelAdmin, minArgs: 1, run: b.cmdRedeliver},
		{name: "pause", usage: "<subscription>", help: "pause a webhook subscription", level: LevelAdmin, minArgs: 1, run: b.cmdPause},
		{name: "resume", usage: "<subscription>", help: "resume a webhook subscription", level: LevelAdmin, minArgs: 1, run: b.cmdResume},
		{name: "parked", usage: "[consumer] [--page N]", help: "events consumers failed on for good and parked", level: LevelAdmin, flags: paged, run: b.cmdParked},
		{name: "space", usage: "[repair]", help: "the city space: which city rooms it lists, and with repair, put them in step", level: LevelAdmin, run: b.cmdSpace},
		{name: "reconcile", usage: "[slug|alias|room id]", help: "compare a city room's (or every city room's) newest events with the event log and store what it lacks", level: LevelAdmin, run: b.cmdReconcile},
		{name: "retry-parked", usage: "<consumer> [position]", help: "handle a consumer's parked events (or one of them) again", level: LevelAdmin, minArgs: 1, run: b.cmdRetryParked},
	}
}

func (b *Bot) names(level Level) []string {
	var names []string
	for _, cmd := range b.cmds {
		if level >= cmd.level {
			names = append(names, cmd.name)
		}
	}
	return names
}

// prefixFor is how a command is written in a room: bare in a direct chat.
func prefixFor(direct bool) string {
	if direct {
		return ""
	}
	return Prefix + " "
}

// run is the handler of cmd: it checks the sender's level and the
// arguments, runs the command and answers.
func (b *Bot) run(cmd *command) func(ce *commands.Event[*Bot]) {
	return func(ce *commands.Event[*Bot]) {
		ctx := ce.Ctx
		direct := b.direct.Cached(ce.RoomID)
		level := b.perms.Level(ce.Sender)
		answer := func(markdown string) { b.send(ctx, ce.RoomID, ce.Event, txnID("reply", ce.ID.String()), markdown) }
		if level < cmd.level {
			zerolog.Ctx(ctx).Info().Str("permission", level.String()).Msg("Refused a command")
			answer(refusal(cmd.name, level))
			return
		}
		a, err := parseArgs(ce.Args, cmd.flags)
		if err == nil && len(a.pos) < cmd.minArgs {
			err = fmt.Errorf("missing arguments")
		}
		if err != nil {
			answer(fmt.Sprintf("**Error:** %s. Usage: %s", err, code(strings.TrimSpace(prefixFor(direct)+cmd.name+" "+cmd.usage))))
			return
		}
		zerolog.Ctx(ctx).Info().Str("permission", level.String()).Msg("Running a command")
		reply, err := cmd.run(ctx, &request{evt: ce.Event, args: a, direct: direct})
		if err != nil {
			logEvt := zerolog.Ctx(ctx).Warn()
			if isUserError(err) {
				logEvt = zerolog.Ctx(ctx).Info()
			}
			logEvt.Err(err).Msg("Command failed")
			reply = "**Error:** " + esc(err.Error())
		}
		answer(reply)
	}
}

// userError is a command's mistake (an unknown slug, a bad name), not a
// failure of the bridge.
type userError struct{ msg string }

func (e *userError) Error() string { return e.msg }

func userErrorf(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...)}
}

// found passes on a lookup's answer (v, err), turning "nothing found" (no
// error, nil v) into the user error format and args describe.
func found[T any](v *T, err error, format string, args ...any) (*T, error) {
	if err == nil && v == nil {
		err = userErrorf(format, args...)
	}
	return v, err
}

func isUserError(err error) bool {
	var ue *userError
	var fieldErr *identity.FieldError
	return errors.As(err, &ue) || errors.As(err, &fieldErr) || errors.Is(err, rooms.ErrNotFound)
}

func refusal(name string, level Level) string {
	if level == LevelNone {
		return "**Sorry**, you may not use the bridge bot."
	}
	return fmt.Sprintf("**Sorry**, %s is for bridge admins only.", code(name))
}

// unknown answers a command that does not exist with the closest ones.
func (b *Bot) unknown(ce *commands.Event[*Bot]) {
	ctx := ce.Ctx
	level := b.perms.Level(ce.Sender)
	direct := b.direct.Cached(ce.RoomID)
	var reply string
	if level == LevelNone {
		reply = refusal(ce.Command, level)
	} else {
		reply = unknownReply(ce.Command, b.names(level), prefixFor(direct))
	}
	zerolog.Ctx(ctx).Info().Str("permission", level.String()).Msg("Unknown command")
	b.send(ctx, ce.RoomID, ce.Event, txnID("reply", ce.ID.String()), reply)
}

func unknownReply(input string, names []string, prefix string) string {
	reply := fmt.Sprintf("Unknown command %s.", code(input))
	if matches := closest(input, names); len(matches) > 0 {
		quoted := make([]string, len(matches))
		for i, m := range matches {
			quoted[i] = code(prefix + m)
		}
		reply += " **Did you mean** " + strings.Join(quoted, " or ") + "?"
	} else {
		reply += " Send " + code(prefix+"help") + " for the list of commands."
	}
	return reply
}

func (b *Bot) cmdHelp(_ context.Context, req *request) (string, error) {
	var sb strings.Builder
	prefix := prefixFor(req.direct)
	if req.direct {
		sb.WriteString("**DAARION bridge bot commands**\n\n")
	} else {
		sb.WriteString("**DAARION bridge bot commands** (start each with " + code(Prefix) + ")\n\n")
	}
	for _, cmd := range b.cmds {
		line := strings.TrimSpace(prefix + cmd.name + " " + cmd.usage)
		sb.WriteString("- " + code(line) + " — " + cmd.help)
		if cmd.level == LevelAdmin {
			sb.WriteString(" (admin)")
		}
		sb.WriteString("\n")
	}
	return sb.String(), nil
}
