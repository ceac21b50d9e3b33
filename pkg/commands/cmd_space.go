package commands

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/daarion/matrix-bridge/pkg/rooms"
)

// maxListedChildren bounds the rooms the space's answer lists.
const maxListedChildren = 30

// cmdSpace reports the city space's children, and repairs them with
// "repair".
func (b *Bot) cmdSpace(ctx context.Context, req *request) (string, error) {
	if b.opts.Rooms == nil {
		return "", errUnavailable
	}
	repair := false
	switch arg := req.args.text(0); arg {
	case "":
	case "repair":
		repair = true
	default:
		return "", userErrorf("unknown argument %s: say `space` or `space repair`", code(arg))
	}
	report, err := b.opts.Rooms.CheckSpace(ctx, repair)
	if errors.Is(err, rooms.ErrNoSpace) {
		return "", userErrorf("%s", err.Error())
	} else if err != nil {
		return "", err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "**City space** %s (%s): %d city room(s), **%d out of step**",
		code(report.Alias.String()), code(report.SpaceID.String()), len(report.Rooms), report.OutOfStep)
	if repair {
		fmt.Fprintf(&sb, ", **%d repaired**", report.Repaired)
		if report.Failed > 0 {
			fmt.Fprintf(&sb, ", **%d failed**", report.Failed)
		}
	}
	sb.WriteString(".\n")
	listed := 0
	for _, child := range report.Rooms {
		var problems []string
		switch {
		case child.Error != "":
			problems = append(problems, "unreadable: "+esc(child.Error))
		default:
			if child.InSpace == child.Archived {
				if child.Archived {
					problems = append(problems, "archived but in the space")
				} else {
					problems = append(problems, "not in the space")
				}
			}
			if !child.Archived && !child.HasParent {
				problems = append(problems, "no space parent")
			}
			if !child.HasBridgeState {
				problems = append(problems, "no bridge state")
			}
		}
		if len(problems) == 0 {
			continue
		}
		if listed == maxListedChildren {
			sb.WriteString("\n- …")
			break
		}
		listed++
		fmt.Fprintf(&sb, "\n- %s: %s", code(child.Slug), strings.Join(problems, ", "))
	}
	for _, roomID := range report.Stale {
		fmt.Fprintf(&sb, "\n- %s: listed, but no live city room", code(roomID.String()))
	}
	if report.OutOfStep > 0 && !repair {
		fmt.Fprintf(&sb, "\n\nSay %s to put them in step.", code(prefixFor(req.direct)+"space repair"))
	}
	return sb.String(), nil
}
