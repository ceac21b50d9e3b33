package commands

import (
	"context"
	"html"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/clock"
	"github.com/daarion/matrix-bridge/pkg/homeserver"
)

// renderNotice makes the m.notice for a Markdown answer; it always has an
// HTML body, even when the Markdown has no formatting.
func renderNotice(markdown string) *event.MessageEventContent {
	content := format.RenderMarkdown(markdown, true, false)
	content.MsgType = event.MsgNotice
	if content.FormattedBody == "" {
		content.Format = event.FormatHTML
		content.FormattedBody = strings.ReplaceAll(html.EscapeString(content.Body), "\n", "<br>")
	}
	return &content
}

// send posts a notice with a fixed transaction id, retrying a few times
// while the homeserver fails: the same id makes a retry (or the same
// command handled again after a restart) a single message.
func (b *Bot) send(ctx context.Context, roomID id.RoomID, replyTo *event.Event, txnID, markdown string) {
	content := renderNotice(markdown)
	if replyTo != nil {
		content.SetReply(replyTo)
	}
	log := zerolog.Ctx(ctx)
	wait := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err := b.client.SendMessageEvent(ctx, roomID, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: txnID})
		if err == nil {
			return
		}
		if homeserver.Permanent(err) || attempt == 4 {
			log.Err(err).Stringer("room_id", roomID).Msg("Failed to send the bot's answer")
			return
		}
		if !clock.Sleep(ctx, wait) {
			return
		}
		wait *= 2
	}
}

// code is s as Markdown inline code.
func code(s string) string {
	return format.SafeMarkdownCode(s)
}

// esc escapes s for Markdown text.
func esc(s string) string {
	return format.EscapeMarkdown(s)
}
