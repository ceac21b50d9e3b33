package commands

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/delivery/webhook"
	"github.com/daarion/matrix-bridge/pkg/rooms"
)

// maxScan bounds how many records a search reads.
const maxScan = 10000

// needCityRooms: the commands reading city rooms need the mapping.
func (b *Bot) needCityRooms() error {
	if b.opts.CityRooms == nil {
		return errUnavailable
	}
	return nil
}

// needRooms: the commands changing city rooms need the rooms service too.
func (b *Bot) needRooms() error {
	if b.opts.Rooms == nil || b.opts.CityRooms == nil {
		return errUnavailable
	}
	return nil
}

func describeCityRoom(cr *rooms.CityRoom) string {
	line := fmt.Sprintf("%s — %s · %s · %s", code(cr.Slug), esc(cr.Name), code(cr.Alias.String()), cr.Visibility)
	if cr.Archived {
		line += " · **archived**"
	}
	return line
}

func (b *Bot) cmdRooms(ctx context.Context, req *request) (string, error) {
	if err := b.needCityRooms(); err != nil {
		return "", err
	}
	archived := req.args.bools["archived"]
	query := strings.ToLower(req.args.text(0))
	var lines []string
	opts := rooms.ListOptions{Archived: &archived, Limit: 500}
	for scanned := 0; scanned < maxScan; {
		list, err := b.opts.CityRooms.List(ctx, opts)
		if err != nil {
			return "", err
		}
		for _, cr := range list {
			if query == "" || strings.Contains(cr.Slug, query) || strings.Contains(strings.ToLower(cr.Name), query) {
				lines = append(lines, describeCityRoom(cr))
			}
		}
		scanned += len(list)
		if len(list) < opts.Limit {
			break
		}
		opts.After = list[len(list)-1].Slug
	}
	kind, next := "City rooms", prefixFor(req.direct)+"rooms"
	if archived {
		kind = "Archived city rooms"
	}
	if query != "" {
		kind += " matching " + code(query)
		next += " " + query
	}
	if archived {
		next += " --archived"
	}
	if len(lines) == 0 {
		return fmt.Sprintf("**%s:** none.", kind), nil
	}
	return paged(fmt.Sprintf("**%s:** %d", kind, len(lines)), lines, req.args.page(), next)
}

// findRoom resolves a slug, a #alias or a !room id: the city room (nil when
// the room is not one) and the Matrix room.
func (b *Bot) findRoom(ctx context.Context, ref string) (*rooms.CityRoom, id.RoomID, error) {
	store := b.opts.CityRooms
	switch {
	case strings.HasPrefix(ref, "!"):
		cr, err := store.ByRoomID(ctx, id.RoomID(ref))
		if err != nil || cr != nil {
			return cr, id.RoomID(ref), err
		}
		return nil, id.RoomID(ref), nil
	case strings.HasPrefix(ref, "#"):
		cr, err := store.ByAlias(ctx, id.RoomAlias(ref))
		if err != nil || cr != nil {
			return cr, "", err
		}
		resp, err := b.client.ResolveAlias(ctx, id.RoomAlias(ref))
		if errors.Is(err, mautrix.MNotFound) {
			return nil, "", userErrorf("no room has the alias %s", ref)
		} else if err != nil {
			return nil, "", fmt.Errorf("failed to resolve %s: %w", ref, err)
		}
		cr, err = store.ByRoomID(ctx, resp.RoomID)
		return cr, resp.RoomID, err
	default:
		cr, err := store.BySlug(ctx, strings.ToLower(ref))
		cr, err = found(cr, err, "no city room has the slug %s", ref)
		return cr, "", err
	}
}

func (b *Bot) cmdRoom(ctx context.Context, req *request) (string, error) {
	if err := b.needCityRooms(); err != nil {
		return "", err
	}
	cr, roomID, err := b.findRoom(ctx, req.args.pos[0])
	if err != nil {
		return "", err
	}
	var sb strings.Builder
	if cr != nil {
		roomID = cr.RoomID
		fmt.Fprintf(&sb, "**City room %s** — %s\n\n", code(cr.Slug), esc(cr.Name))
		fmt.Fprintf(&sb, "- **Mapping:** %s → %s\n", code(cr.Alias.String()), code(roomID.String()))
		archived := "no"
		if cr.Archived {
			archived = "**yes**"
		}
		fmt.Fprintf(&sb, "- **Visibility:** %s · **archived:** %s · **created:** %s\n", cr.Visibility, archived, ago(cr.CreatedAt))
		if cr.Topic != "" {
			fmt.Fprintf(&sb, "- **Topic:** %s\n", esc(cr.Topic))
		}
	} else {
		fmt.Fprintf(&sb, "**Room %s** — not a city room\n\n", code(roomID.String()))
		if b.opts.Rooms != nil {
			if meta, err := b.opts.Rooms.Cache().Get(ctx, roomID); err == nil && meta.Name != "" {
				fmt.Fprintf(&sb, "- **Name:** %s\n", esc(meta.Name))
			}
		}
	}
	sb.WriteString(b.roomMembers(ctx, roomID))
	sb.WriteString(b.lastEvent(ctx, roomID))
	sb.WriteString(b.roomSubscriptions(ctx, cr, roomID))
	return sb.String(), nil
}

func (b *Bot) roomMembers(ctx context.Context, roomID id.RoomID) string {
	resp, err := b.client.JoinedMembers(ctx, roomID)
	if err != nil {
		return fmt.Sprintf("- **Members:** unknown (%s)\n", esc(err.Error()))
	}
	members := make([]string, 0, len(resp.Joined))
	for userID := range resp.Joined {
		members = append(members, userID.String())
	}
	slices.Sort(members)
	shown := members[:min(len(members), perPage)]
	for i, m := range shown {
		shown[i] = code(m)
	}
	line := fmt.Sprintf("- **Members:** %d joined: %s", len(members), strings.Join(shown, ", "))
	if len(members) > len(shown) {
		line += fmt.Sprintf(" and %d more", len(members)-len(shown))
	}
	return line + "\n"
}

func (b *Bot) lastEvent(ctx context.Context, roomID id.RoomID) string {
	resp, err := b.client.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 1)
	switch {
	case err != nil:
		return fmt.Sprintf("- **Last event:** unknown (%s)\n", esc(err.Error()))
	case len(resp.Chunk) == 0:
		return "- **Last event:** none\n"
	}
	evt := resp.Chunk[0]
	return fmt.Sprintf("- **Last event:** %s by %s at %s (%s)\n", code(evt.Type.Type), code(evt.Sender.String()),
		ago(timeMillis(evt.Timestamp)), code(evt.ID.String()))
}

func (b *Bot) roomSubscriptions(ctx context.Context, cr *rooms.CityRoom, roomID id.RoomID) string {
	if b.opts.Webhooks == nil {
		return ""
	}
	subs, err := b.opts.Webhooks.Subscriptions(ctx, "")
	if err != nil {
		return fmt.Sprintf("- **Subscriptions:** unknown (%s)\n", esc(err.Error()))
	}
	var lines []string
	for _, sub := range subs {
		if sub.RoomFilter == "*" || sub.RoomFilter == roomID.String() || (cr != nil && sub.RoomFilter == "city:"+cr.Slug) {
			lines = append(lines, b.describeSubscription(ctx, sub))
		}
	}
	if len(lines) == 0 {
		return "- **Subscriptions:** none\n"
	}
	return "- **Subscriptions:**\n    - " + strings.Join(lines, "\n    - ") + "\n"
}

func (b *Bot) cityRoomBySlug(ctx context.Context, slug string) (*rooms.CityRoom, error) {
	if err := b.needRooms(); err != nil {
		return nil, err
	}
	cr, err := b.opts.CityRooms.BySlug(ctx, strings.ToLower(slug))
	return found(cr, err, "no city room has the slug %s", slug)
}

func (b *Bot) cmdCreateRoom(ctx context.Context, req *request) (string, error) {
	if err := b.needRooms(); err != nil {
		return "", err
	}
	slug, name := strings.ToLower(req.args.pos[0]), req.args.text(1)
	visibility := "public"
	if req.args.bools["private"] {
		visibility = "private"
	}
	existing, err := b.opts.CityRooms.BySlug(ctx, slug)
	if err != nil {
		return "", err
	}
	if existing != nil {
		return fmt.Sprintf("City room %s **already exists**: %s (%s).", code(slug), code(existing.Alias.String()), code(existing.RoomID.String())), nil
	}
	cr, err := b.opts.Rooms.Create(ctx, rooms.CreateRequest{Slug: slug, Name: name, Visibility: visibility})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("**Created** %s city room %s — %s: %s (%s).", cr.Visibility, code(cr.Slug), esc(cr.Name), code(cr.Alias.String()), code(cr.RoomID.String())), nil
}

func (b *Bot) cmdArchive(ctx context.Context, req *request) (string, error) {
	cr, err := b.cityRoomBySlug(ctx, req.args.pos[0])
	if err != nil {
		return "", err
	}
	if cr.Archived {
		return fmt.Sprintf("City room %s is **already archived**.", code(cr.Slug)), nil
	}
	if cr, err = b.opts.Rooms.Archive(ctx, cr.RoomID, req.args.text(1)); err != nil {
		return "", err
	}
	return fmt.Sprintf("**Archived** city room %s: only the bridge may post in %s now.", code(cr.Slug), code(cr.Alias.String())), nil
}

func (b *Bot) cmdUnarchive(ctx context.Context, req *request) (string, error) {
	cr, err := b.cityRoomBySlug(ctx, req.args.pos[0])
	if err != nil {
		return "", err
	}
	if !cr.Archived {
		return fmt.Sprintf("City room %s is **not archived**.", code(cr.Slug)), nil
	}
	if cr, err = b.opts.Rooms.Unarchive(ctx, cr.RoomID); err != nil {
		return "", err
	}
	return fmt.Sprintf("**Unarchived** city room %s: its members may post again.", code(cr.Slug)), nil
}

// describeSubscription is one line about a webhook subscription.
func (b *Bot) describeSubscription(ctx context.Context, sub *webhook.Subscription) string {
	target := "all rooms"
	if slug, ok := strings.CutPrefix(sub.RoomFilter, "city:"); ok {
		target = "city " + code(slug)
	} else if sub.RoomFilter != "*" {
		target = "room " + code(sub.RoomFilter)
	}
	line := fmt.Sprintf("%s · service %s · %s · **%s**", code(sub.ID), code(sub.Service), target, sub.State)
	if sub.StateReason != "" {
		line += " (" + esc(sub.StateReason) + ")"
	}
	if pending, dead, err := b.opts.Webhooks.Counts(ctx, sub.ID); err == nil {
		line += fmt.Sprintf(" · %d pending · %s", pending, plural(dead, "dead letter", "dead letters"))
	}
	return line
}

// cmdConfidential shows whether a room is confidential, or with on or off
// marks it so or not: its DTOs, sync answers and event log keep no message
// content from then on (what is stored already stays as it is).
func (b *Bot) cmdConfidential(ctx context.Context, req *request) (string, error) {
	if err := b.needRooms(); err != nil {
		return "", err
	}
	cr, roomID, err := b.findRoom(ctx, req.args.pos[0])
	if err != nil {
		return "", err
	}
	name := code(roomID.String())
	if cr != nil {
		roomID, name = cr.RoomID, "city room "+code(cr.Slug)
	}
	var on bool
	switch strings.ToLower(req.args.text(1)) {
	case "":
		if b.opts.Rooms.IsConfidential(roomID) {
			return fmt.Sprintf("%s is **confidential**: its DTOs, sync answers and event log keep no message content.", capitalized(name)), nil
		}
		return fmt.Sprintf("%s is **not confidential**.", capitalized(name)), nil
	case "on":
		on = true
	case "off":
	default:
		return "", userErrorf("the second argument must be on or off, not %s", req.args.text(1))
	}
	var reach *rooms.OutOfReachError
	if err = b.opts.Rooms.SetConfidential(ctx, "room", roomID, on, req.evt.Sender.String()); errors.As(err, &reach) {
		return "", userErrorf("%s %s", roomID, reach.Problem)
	} else if err != nil {
		return "", err
	}
	if on {
		return fmt.Sprintf("%s is **confidential** now: the events the bridge stores and delivers from now on keep no message content (what it stored before stays as it is).", capitalized(name)), nil
	}
	return fmt.Sprintf("%s is **not confidential** any more: messages the bridge stores and delivers from now on carry their content.", capitalized(name)), nil
}

// capitalized starts s with a capital letter (s starts with a letter or `).
func capitalized(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
