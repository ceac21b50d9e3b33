package commands

import (
	"context"
	"fmt"
	"strconv"

	"github.com/daarion/matrix-bridge/pkg/consumer"
)

// cmdParked lists the events consumers parked after failing on them for good.
func (b *Bot) cmdParked(ctx context.Context, req *request) (string, error) {
	if b.opts.Parked == nil {
		return "", errUnavailable
	}
	opts := consumer.ListOptions{Consumer: req.args.text(0), Limit: 500}
	var lines []string
	for scanned := 0; scanned < maxScan; {
		list, err := b.opts.Parked.List(ctx, opts)
		if err != nil {
			return "", err
		}
		for _, p := range list {
			line := fmt.Sprintf("%s #%d %s — %s · %s, parked %s",
				code(p.Consumer), p.Position, code(p.EventID), esc(p.Error), plural(int64(p.Attempts), "attempt", "attempts"),
				p.ParkedAt.UTC().Format("2006-01-02 15:04:05Z"))
			if p.RetryRequested {
				line += " · **retry requested**"
			}
			lines = append(lines, line)
		}
		scanned += len(list)
		if len(list) < opts.Limit {
			break
		}
		last := list[len(list)-1]
		opts.AfterConsumer, opts.AfterPosition = last.Consumer, last.Position
	}
	if n, err := b.parkedTransactions(ctx); err == nil && n > 0 {
		// Rare and serious: the database refused a whole answered transaction.
		lines = append([]string{fmt.Sprintf("**%s the indexer could not store** (table `parked_transaction`; see the runbook)",
			plural(n, "journalled transaction", "journalled transactions"))}, lines...)
	}
	if len(lines) == 0 {
		return "**Parked events:** none.", nil
	}
	next := prefixFor(req.direct) + "parked"
	if opts.Consumer != "" {
		next += " " + opts.Consumer
	}
	return paged(fmt.Sprintf("**Parked events:** %d (retry with %s)", len(lines), code(prefixFor(req.direct)+"retry-parked <consumer> [position]")),
		lines, req.args.page(), next)
}

// cmdRetryParked asks the leader to handle parked events again.
func (b *Bot) cmdRetryParked(ctx context.Context, req *request) (string, error) {
	if b.opts.Parked == nil {
		return "", errUnavailable
	}
	name := req.args.pos[0]
	var position int64
	if s := req.args.text(1); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return "", userErrorf("the position must be a positive number, as %s lists it", code("parked"))
		}
		position = n
	}
	n, err := b.opts.Parked.RequestRetry(ctx, name, position)
	if err != nil {
		return "", err
	}
	if n == 0 {
		return fmt.Sprintf("%s has **nothing parked** there; send %s for the list.", code(name), code("parked")), nil
	}
	return fmt.Sprintf("**Retry requested** for %s of %s: the leader handles them again when its consumer is idle.",
		plural(n, "parked event", "parked events"), code(name)), nil
}

func (b *Bot) parkedTransactions(ctx context.Context) (int64, error) {
	if b.opts.EventLog == nil {
		return 0, nil
	}
	return b.opts.EventLog.ParkedTransactionCount(ctx)
}
