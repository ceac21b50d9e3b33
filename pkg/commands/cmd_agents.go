package commands

import (
	"context"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/agents"
	"github.com/daarion/matrix-bridge/pkg/identity"
)

// lastPostWindow bounds how far back in the event log `agent` looks for
// the agent's last post: the log has no index by sender.
const lastPostWindow = 200000

// maxDisplayName is the longest display name set-agent-name accepts.
const maxDisplayName = 256

// needAgents: the commands reading agents need the agent table.
func (b *Bot) needAgents() error {
	if b.opts.AgentStore == nil {
		return errUnavailable
	}
	return nil
}

// agentID reads an agent reference: sofia, agent:sofia or @agent_sofia:server.
func (b *Bot) agentID(ref string) (string, error) {
	switch {
	case strings.HasPrefix(ref, "@"):
		entity := b.mapper.FromMatrix(id.UserID(ref))
		if entity.Kind != identity.KindAgent {
			return "", userErrorf("%s is not an agent", ref)
		}
		return strings.TrimPrefix(entity.ID, "agent:"), nil
	case strings.HasPrefix(ref, "agent:"):
		return strings.TrimPrefix(ref, "agent:"), nil
	default:
		return ref, nil
	}
}

func (b *Bot) findAgent(ctx context.Context, ref string) (*agents.Agent, error) {
	if err := b.needAgents(); err != nil {
		return nil, err
	}
	agentID, err := b.agentID(ref)
	if err != nil {
		return nil, err
	}
	agent, err := b.opts.AgentStore.Get(ctx, agentID)
	return found(agent, err, "no agent has the id %s", agentID)
}

func (b *Bot) cmdAgents(ctx context.Context, req *request) (string, error) {
	if err := b.needAgents(); err != nil {
		return "", err
	}
	query := strings.ToLower(req.args.text(0))
	list, err := b.opts.AgentStore.List(ctx, "", maxScan)
	if err != nil {
		return "", err
	}
	var lines []string
	for _, a := range list {
		if query != "" && !strings.Contains(strings.ToLower(a.AgentID), query) && !strings.Contains(strings.ToLower(a.DisplayName), query) {
			continue
		}
		line := code(a.AgentID)
		if a.DisplayName != "" {
			line += " — " + esc(a.DisplayName)
		}
		lines = append(lines, line+" · "+code(a.UserID.String()))
	}
	title, next := "Agents", prefixFor(req.direct)+"agents"
	if query != "" {
		title += " matching " + code(query)
		next += " " + query
	}
	if len(lines) == 0 {
		return fmt.Sprintf("**%s:** none.", title), nil
	}
	return paged(fmt.Sprintf("**%s:** %d", title, len(lines)), lines, req.args.page(), next)
}

func (b *Bot) cmdAgent(ctx context.Context, req *request) (string, error) {
	agent, err := b.findAgent(ctx, req.args.pos[0])
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	name := agent.DisplayName
	if name == "" {
		name = "(no display name)"
	}
	fmt.Fprintf(&sb, "**Agent %s** — %s\n\n", code(agent.AgentID), esc(name))
	fmt.Fprintf(&sb, "- **Matrix:** %s\n", code(agent.UserID.String()))
	avatar := "none"
	if agent.AvatarURL != "" {
		avatar = code(agent.AvatarURL)
	}
	fmt.Fprintf(&sb, "- **Profile:** display name %s, avatar %s, updated %s\n", code(agent.DisplayName), avatar, ago(agent.UpdatedAt))
	fmt.Fprintf(&sb, "- **Registered:** %s\n", ago(agent.RegisteredAt))
	sb.WriteString(b.agentRooms(ctx, agent.UserID))
	sb.WriteString(b.lastPost(ctx, agent.UserID))
	return sb.String(), nil
}

func (b *Bot) agentRooms(ctx context.Context, userID id.UserID) string {
	resp, err := b.opts.AppService.Intent(userID).Client.JoinedRooms(ctx)
	if err != nil {
		return fmt.Sprintf("- **Rooms:** unknown (%s)\n", esc(err.Error()))
	}
	if len(resp.JoinedRooms) == 0 {
		return "- **Rooms:** none\n"
	}
	var names []string
	for _, roomID := range resp.JoinedRooms[:min(len(resp.JoinedRooms), perPage)] {
		name := code(roomID.String())
		if b.opts.CityRooms != nil {
			if cr, err := b.opts.CityRooms.ByRoomID(ctx, roomID); err == nil && cr != nil {
				name = fmt.Sprintf("%s (%s)", code(cr.Slug), code(roomID.String()))
			}
		}
		names = append(names, name)
	}
	line := fmt.Sprintf("- **Rooms:** %d: %s", len(resp.JoinedRooms), strings.Join(names, ", "))
	if len(resp.JoinedRooms) > len(names) {
		line += fmt.Sprintf(" and %d more", len(resp.JoinedRooms)-len(names))
	}
	return line + "\n"
}

// lastPost finds the agent's newest message in the recent event log.
func (b *Bot) lastPost(ctx context.Context, userID id.UserID) string {
	if b.opts.EventLog == nil {
		return ""
	}
	evt, err := b.opts.EventLog.LastBy(ctx, userID.String(), event.EventMessage.Type, lastPostWindow)
	if err != nil {
		return fmt.Sprintf("- **Last post:** unknown (%s)\n", esc(err.Error()))
	} else if evt == nil {
		return fmt.Sprintf("- **Last post:** none in the last %d logged events\n", lastPostWindow)
	}
	f := gjson.GetManyBytes(evt.JSON, "content.body", "origin_server_ts")
	where := code(evt.RoomID)
	if b.opts.CityRooms != nil {
		if cr, err := b.opts.CityRooms.ByRoomID(ctx, id.RoomID(evt.RoomID)); err == nil && cr != nil {
			where = code(cr.Slug)
		}
	}
	return fmt.Sprintf("- **Last post:** in %s at %s (%s): %s\n", where, ago(timeMillis(f[1].Int())), code(evt.EventID), excerpt(f[0].Str, 100))
}

// excerpt is the start of a message on one line, quoted.
func excerpt(body string, runes int) string {
	body = strings.Join(strings.Fields(body), " ")
	if utf8.RuneCountInString(body) > runes {
		body = string([]rune(body)[:runes]) + "…"
	}
	return "“" + esc(body) + "”"
}

func (b *Bot) cmdSetAgentName(ctx context.Context, req *request) (string, error) {
	if b.opts.Agents == nil {
		return "", errUnavailable
	}
	agent, err := b.findAgent(ctx, req.args.pos[0])
	if err != nil {
		return "", err
	}
	name := req.args.text(1)
	switch {
	case strings.TrimSpace(name) == "":
		return "", userErrorf("the name is empty")
	case utf8.RuneCountInString(name) > maxDisplayName:
		return "", userErrorf("the name is longer than %d characters", maxDisplayName)
	case strings.ContainsFunc(name, unicode.IsControl):
		return "", userErrorf("the name has control characters")
	}
	if err = b.opts.Agents.SetProfile(ctx, agent.AgentID, &name, nil); err != nil {
		return "", err
	}
	return fmt.Sprintf("**Renamed** agent %s (%s) to %s.", code(agent.AgentID), code(agent.UserID.String()), esc(name)), nil
}
