package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/util/dbutil"

	"github.com/daarion/matrix-bridge/pkg/status"
)

// paged renders one page of a list: a header with the total, the page's
// lines, and how to get the next page.
func paged(header string, lines []string, page int, nextCommand string) (string, error) {
	pages := max(1, (len(lines)+perPage-1)/perPage)
	if page > pages {
		return "", userErrorf("there is no page %d, only %d", page, pages)
	}
	var sb strings.Builder
	sb.WriteString(header)
	if pages > 1 {
		fmt.Fprintf(&sb, " — page %d of %d", page, pages)
	}
	sb.WriteString("\n\n")
	for _, line := range lines[(page-1)*perPage : min(page*perPage, len(lines))] {
		sb.WriteString("- " + line + "\n")
	}
	if page < pages {
		sb.WriteString("\nNext page: " + code(fmt.Sprintf("%s --page %d", nextCommand, page+1)))
	}
	return sb.String(), nil
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format("2006-01-02 15:04:05 UTC"), time.Since(t).Round(time.Second))
}

var errUnavailable = errors.New("not available in this process")

func (b *Bot) cmdPing(_ context.Context, req *request) (string, error) {
	took := time.Since(time.UnixMilli(req.evt.Timestamp)).Milliseconds()
	return fmt.Sprintf("**Pong!** Your command reached me %d ms after you sent it.", max(took, 0)), nil
}

func (b *Bot) cmdStatus(ctx context.Context, _ *request) (string, error) {
	var sb strings.Builder
	version := b.opts.Version
	if version == "" {
		version = "dev"
	}
	fmt.Fprintf(&sb, "**DAARION bridge** %s\n\n", code(version))
	fmt.Fprintf(&sb, "- **Uptime:** %s (since %s)\n", time.Since(b.opts.Started).Round(time.Second), b.opts.Started.UTC().Format("2006-01-02 15:04:05 UTC"))

	// The process's latest status sample, which /healthz and the metrics
	// read too.
	if b.opts.Status == nil {
		sb.WriteString("- **Status:** not sampled in this process\n")
	} else if st := b.opts.Status(); !st.Sampled() {
		sb.WriteString("- **Status:** not sampled yet (the bridge started less than a second ago)\n")
	} else {
		fmt.Fprintf(&sb, "- **Homeserver:** %s (%s)\n", reachability(st.Homeserver), code(b.opts.Config.Homeserver.ServerName))
		if db := b.opts.DB; db != nil {
			fmt.Fprintf(&sb, "- **Database:** %s, %s\n", dialectName(db.Dialect), reachability(st.Database))
		}
		fmt.Fprintf(&sb, "- **Event log:** position %d, journal backlog %d; leader: %s\n", st.LogHead, st.JournalBacklog, st.Leader())
		failures := map[string]int64{}
		if b.opts.Runners != nil {
			for _, r := range b.opts.Runners() {
				failures[r.Name()] = r.Failures()
			}
		}
		sb.WriteString("- **Consumers:**\n")
		for _, c := range st.Consumers {
			fmt.Fprintf(&sb, "    - %s: position %d, lag %d, %s\n", code(c.Name), c.Position, c.Lag,
				plural(failures[c.Name], "failed batch", "failed batches"))
		}
		sb.WriteString(encryptionStatus(st.Encryption))
	}
	b.webhookStatus(ctx, &sb)
	b.natsStatus(&sb)
	return sb.String(), nil
}

func (b *Bot) webhookStatus(ctx context.Context, sb *strings.Builder) {
	if b.opts.Webhooks == nil {
		return
	}
	subs, err := b.opts.Webhooks.Subscriptions(ctx, "")
	if err != nil {
		fmt.Fprintf(sb, "- **Webhooks:** unreadable (%s)\n", esc(err.Error()))
		return
	}
	var pending, dead int64
	var failing []string
	states := map[string]int{}
	for _, sub := range subs {
		p, d, err := b.opts.Webhooks.Counts(ctx, sub.ID)
		if err != nil {
			fmt.Fprintf(sb, "- **Webhooks:** unreadable (%s)\n", esc(err.Error()))
			return
		}
		pending, dead = pending+p, dead+d
		states[sub.State]++
		if d > 0 {
			failing = append(failing, fmt.Sprintf("%s (%s)", code(sub.ID), plural(d, "dead letter", "dead letters")))
		}
	}
	fmt.Fprintf(sb, "- **Webhooks:** %s (%d active, %d paused, %d disabled), %d pending, %s\n",
		plural(int64(len(subs)), "subscription", "subscriptions"), states["active"], states["paused"], states["disabled"],
		pending, plural(dead, "dead letter", "dead letters"))
	if len(failing) > 0 {
		fmt.Fprintf(sb, "    - failing: %s\n", strings.Join(failing, ", "))
	}
	if b.opts.Deliverer != nil {
		st := b.opts.Deliverer.Stats()
		fmt.Fprintf(sb, "    - since start: %d delivered, %d failed attempts, %d dead-lettered, %d disabled\n",
			st.Delivered, st.Failed, st.DeadLettered, st.Disabled)
	}
}

// encryptionStatus is the end-to-bridge encryption's line of status.
func encryptionStatus(e status.Encryption) string {
	switch {
	case !e.Enabled:
		return "- **Encryption:** off (encryption.enabled)\n"
	case e.Unavailable != "":
		return fmt.Sprintf("- **Encryption:** unavailable: %s\n", esc(e.Unavailable))
	}
	return fmt.Sprintf("- **Encryption:** on; %s loaded in this process, %s waiting for keys\n",
		plural(int64(e.Devices), "device", "devices"), plural(e.Waiting, "event", "events"))
}

func (b *Bot) natsStatus(sb *strings.Builder) {
	if b.opts.NATS == nil {
		sb.WriteString("- **NATS:** not configured\n")
		return
	}
	st := b.opts.NATS.Stats()
	state := "disconnected"
	switch {
	case st.Connected && st.StreamReady:
		state = "connected, stream ready"
	case st.Connected:
		state = "connected, stream not ready"
	}
	fmt.Fprintf(sb, "- **NATS:** %s; %d published, %d duplicates, %s\n", state, st.Published, st.Duplicates,
		plural(st.FailedBatches, "failed batch", "failed batches"))
}

// reachability is one ping's result, as the status command shows it.
func reachability(r status.Reachability) string {
	if !r.Reachable {
		return "unreachable (" + esc(r.Error) + ")"
	}
	return fmt.Sprintf("reachable, ping %d ms", r.Ping.Milliseconds())
}

func dialectName(d dbutil.Dialect) string {
	switch d {
	case dbutil.Postgres:
		return "PostgreSQL"
	case dbutil.SQLite:
		return "SQLite"
	default:
		return d.String()
	}
}

func timeMillis(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
