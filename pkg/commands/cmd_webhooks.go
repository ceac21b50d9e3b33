package commands

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/daarion/matrix-bridge/pkg/delivery/webhook"
)

func (b *Bot) findSubscription(ctx context.Context, subID string) (*webhook.Subscription, error) {
	if b.opts.Webhooks == nil {
		return nil, errUnavailable
	}
	sub, err := b.opts.Webhooks.Subscription(ctx, subID)
	return found(sub, err, "no subscription has the id %s; send subscriptions for the list", subID)
}

func (b *Bot) cmdSubscriptions(ctx context.Context, req *request) (string, error) {
	if b.opts.Webhooks == nil {
		return "", errUnavailable
	}
	subs, err := b.opts.Webhooks.Subscriptions(ctx, "")
	if err != nil {
		return "", err
	}
	if len(subs) == 0 {
		return "**Webhook subscriptions:** none.", nil
	}
	lines := make([]string, 0, len(subs))
	for _, sub := range subs {
		line := b.describeSubscription(ctx, sub)
		if u, err := url.Parse(sub.URL); err == nil {
			line += " · to " + code(u.Host)
		}
		lines = append(lines, line)
	}
	return paged(fmt.Sprintf("**Webhook subscriptions:** %d", len(subs)), lines, req.args.page(), prefixFor(req.direct)+"subscriptions")
}

func (b *Bot) cmdFailures(ctx context.Context, req *request) (string, error) {
	sub, err := b.findSubscription(ctx, req.args.pos[0])
	if err != nil {
		return "", err
	}
	pending, _, err := b.opts.Webhooks.Counts(ctx, sub.ID)
	if err != nil {
		return "", err
	}
	dead, err := b.opts.Webhooks.DeadLetters(ctx, sub.ID, maxScan)
	if err != nil {
		return "", err
	}
	title := fmt.Sprintf("**Dead letters of %s** (%s, %d pending)", code(sub.ID), sub.State, pending)
	if len(dead) == 0 {
		return title + ": none.", nil
	}
	lines := make([]string, 0, len(dead))
	for _, d := range dead {
		lines = append(lines, fmt.Sprintf("%s in %s — %s, first failed %s; last error: %s", code(d.EventID), code(d.RoomID),
			plural(int64(d.Attempts), "attempt", "attempts"), ago(d.FirstFailedAt), esc(d.LastError)))
	}
	prefix := prefixFor(req.direct)
	reply, err := paged(fmt.Sprintf("%s: %d", title, len(dead)), lines, req.args.page(), prefix+"failures "+sub.ID)
	if err != nil {
		return "", err
	}
	return reply + "\n\nRedeliver with " + code(prefix+"redeliver "+sub.ID+" all") + " or " + code(prefix+"redeliver "+sub.ID+" <event id>") + ".", nil
}

func (b *Bot) cmdRedeliver(ctx context.Context, req *request) (string, error) {
	sub, err := b.findSubscription(ctx, req.args.pos[0])
	if err != nil {
		return "", err
	}
	eventID := req.args.text(1)
	if strings.EqualFold(eventID, "all") {
		eventID = ""
	}
	n, err := b.opts.Webhooks.Redeliver(ctx, sub.ID, eventID)
	if err != nil {
		return "", err
	}
	if b.opts.Deliverer != nil {
		b.opts.Deliverer.Wake()
	}
	var reply string
	switch {
	case n == 0 && eventID != "":
		return fmt.Sprintf("%s has **no dead letter** of %s.", code(sub.ID), code(eventID)), nil
	case n == 0:
		return fmt.Sprintf("%s has **no dead letters**.", code(sub.ID)), nil
	default:
		reply = fmt.Sprintf("**Queued again** %s of %s.", plural(n, "dead letter", "dead letters"), code(sub.ID))
	}
	if sub.State != webhook.StateActive {
		reply += fmt.Sprintf(" The subscription is **%s**: nothing is delivered until it is resumed.", sub.State)
	}
	return reply, nil
}

func (b *Bot) setState(ctx context.Context, req *request, state string) (string, error) {
	sub, err := b.findSubscription(ctx, req.args.pos[0])
	if err != nil {
		return "", err
	}
	if sub.State == state {
		return fmt.Sprintf("%s is **already %s**.", code(sub.ID), state), nil
	}
	reason := ""
	if state == webhook.StatePaused {
		reason = "paused by " + req.evt.Sender.String()
	}
	if err = b.opts.Webhooks.SetState(ctx, sub.ID, state, reason); err != nil {
		return "", err
	}
	if b.opts.Deliverer != nil {
		b.opts.Deliverer.Wake()
	}
	if state == webhook.StatePaused {
		return fmt.Sprintf("**Paused** %s: deliveries wait in its queue until it is resumed.", code(sub.ID)), nil
	}
	return fmt.Sprintf("**Resumed** %s: its queue is being delivered.", code(sub.ID)), nil
}

func (b *Bot) cmdPause(ctx context.Context, req *request) (string, error) {
	return b.setState(ctx, req, webhook.StatePaused)
}

func (b *Bot) cmdResume(ctx context.Context, req *request) (string, error) {
	return b.setState(ctx, req, webhook.StateActive)
}
