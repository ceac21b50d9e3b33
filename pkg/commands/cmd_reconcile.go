package commands

import (
	"context"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/reconcile"
)

// maxListedRecoveries bounds the event ids a reconcile's answer lists.
const maxListedRecoveries = 20

// cmdReconcile compares a room's (or every city room's) newest events with
// the event log and stores what the log lacks.
func (b *Bot) cmdReconcile(ctx context.Context, req *request) (string, error) {
	if b.opts.Reconciler == nil {
		return "", errUnavailable
	}
	var report *reconcile.Report
	if len(req.args.pos) == 0 {
		var err error
		if report, err = b.opts.Reconciler.City(ctx, reconcile.TriggerCommand); err != nil {
			return "", err
		}
	} else {
		if err := b.needCityRooms(); err != nil {
			return "", err
		}
		cr, roomID, err := b.findRoom(ctx, req.args.pos[0])
		if err != nil {
			return "", err
		}
		if cr != nil {
			roomID = cr.RoomID
		}
		report = b.opts.Reconciler.Rooms(ctx, reconcile.TriggerCommand, []id.RoomID{roomID})
	}
	return describeReconcile(report), nil
}

func describeReconcile(report *reconcile.Report) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "**Reconciled** %d room(s) in %s: **%d event(s) recovered**, %d /messages page(s)",
		len(report.Rooms), report.Duration.Round(1e6), report.Recovered, report.Pages)
	if report.Failed > 0 {
		fmt.Fprintf(&sb, ", **%d room(s) failed**", report.Failed)
	}
	sb.WriteString(".\n")
	listed := 0
	for _, res := range report.Rooms {
		switch {
		case res.Err != nil:
			fmt.Fprintf(&sb, "\n- %s: **failed**: %s", code(res.RoomID.String()), esc(res.Err.Error()))
		case len(res.Recovered) > 0:
			fmt.Fprintf(&sb, "\n- %s: %d of %d compared recovered", code(res.RoomID.String()), len(res.Recovered), res.Compared)
			for _, eventID := range res.Recovered {
				if listed == maxListedRecoveries {
					break
				}
				listed++
				fmt.Fprintf(&sb, " %s", code(eventID))
			}
		}
	}
	if listed < report.Recovered {
		fmt.Fprintf(&sb, "\n\n…and %d more (the bridge's log lists them).", report.Recovered-listed)
	}
	return sb.String()
}
