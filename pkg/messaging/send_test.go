package messaging

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/identity"
)

func TestMessageContent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   sendRequest
		kind  identity.Kind
		field string
		check func(c *event.MessageEventContent) bool
	}{
		{"agent default is notice", sendRequest{Body: "hi"}, identity.KindAgent, "", func(c *event.MessageEventContent) bool { return c.MsgType == event.MsgNotice }},
		{"human default is text", sendRequest{Body: "hi"}, identity.KindHuman, "", func(c *event.MessageEventContent) bool { return c.MsgType == event.MsgText }},
		{"html", sendRequest{Body: "hi", Format: "org.matrix.custom.html", FormattedBody: "<b>hi</b>"}, identity.KindAgent, "",
			func(c *event.MessageEventContent) bool {
				return c.Format == event.FormatHTML && c.FormattedBody == "<b>hi</b>"
			}},
		{"image", sendRequest{Body: "cat.png", MsgType: "m.image", URL: "mxc://s/abc", Info: json.RawMessage(`{"mimetype":"image/png","size":10}`)}, identity.KindAgent, "",
			func(c *event.MessageEventContent) bool {
				return c.URL == "mxc://s/abc" && c.Info != nil && c.Info.MimeType == "image/png"
			}},
		{"reply", sendRequest{Body: "x", RelatesTo: json.RawMessage(`{"m.in_reply_to":{"event_id":"$q"}}`)}, identity.KindAgent, "",
			func(c *event.MessageEventContent) bool {
				return c.RelatesTo.InReplyTo.EventID == "$q" && c.RelatesTo.Type == ""
			}},
		{"thread falls back to root", sendRequest{Body: "x", RelatesTo: json.RawMessage(`{"rel_type":"m.thread","event_id":"$root"}`)}, identity.KindAgent, "",
			func(c *event.MessageEventContent) bool {
				return c.RelatesTo.Type == event.RelThread && c.RelatesTo.InReplyTo.EventID == "$root" && c.RelatesTo.IsFallingBack
			}},
		{"thread reply", sendRequest{Body: "x", RelatesTo: json.RawMessage(`{"rel_type":"m.thread","event_id":"$root","m.in_reply_to":{"event_id":"$last"}}`)}, identity.KindAgent, "",
			func(c *event.MessageEventContent) bool {
				return c.RelatesTo.InReplyTo.EventID == "$last" && !c.RelatesTo.IsFallingBack
			}},
		{"edit", sendRequest{Body: "new", RelatesTo: json.RawMessage(`{"rel_type":"m.replace","event_id":"$old"}`)}, identity.KindAgent, "",
			func(c *event.MessageEventContent) bool {
				return c.Body == "* new" && c.NewContent.Body == "new" && c.NewContent.RelatesTo == nil && c.RelatesTo.EventID == "$old"
			}},
		{"null relation", sendRequest{Body: "x", RelatesTo: json.RawMessage(`null`)}, identity.KindAgent, "", func(c *event.MessageEventContent) bool { return c.RelatesTo == nil }},
		{"empty body", sendRequest{Body: "  "}, identity.KindAgent, "body", nil},
		{"long body", sendRequest{Body: strings.Repeat("я", maxBodyRunes+1)}, identity.KindAgent, "body", nil},
		{"bad msgtype", sendRequest{Body: "x", MsgType: "m.location"}, identity.KindAgent, "msgtype", nil},
		{"format without body", sendRequest{Body: "x", Format: "org.matrix.custom.html"}, identity.KindAgent, "formatted_body", nil},
		{"body without format", sendRequest{Body: "x", FormattedBody: "<b>x</b>"}, identity.KindAgent, "format", nil},
		{"other format", sendRequest{Body: "x", Format: "markdown", FormattedBody: "**x**"}, identity.KindAgent, "format", nil},
		{"image without url", sendRequest{Body: "x", MsgType: "m.image"}, identity.KindAgent, "url", nil},
		{"image with http url", sendRequest{Body: "x", MsgType: "m.image", URL: "https://x/y.png"}, identity.KindAgent, "url", nil},
		{"text with url", sendRequest{Body: "x", URL: "mxc://s/a"}, identity.KindAgent, "url", nil},
		{"bad info", sendRequest{Body: "x", MsgType: "m.file", URL: "mxc://s/a", Info: json.RawMessage(`{"size":"big"}`)}, identity.KindAgent, "info", nil},
		{"bad relation type", sendRequest{Body: "x", RelatesTo: json.RawMessage(`{"rel_type":"m.annotation","event_id":"$x"}`)}, identity.KindAgent, "relates_to.rel_type", nil},
		{"relation not object", sendRequest{Body: "x", RelatesTo: json.RawMessage(`[1]`)}, identity.KindAgent, "relates_to", nil},
		{"empty relation", sendRequest{Body: "x", RelatesTo: json.RawMessage(`{}`)}, identity.KindAgent, "relates_to", nil},
		{"bad edit target", sendRequest{Body: "x", RelatesTo: json.RawMessage(`{"rel_type":"m.replace","event_id":"old"}`)}, identity.KindAgent, "relates_to.event_id", nil},
		{"bad mention", sendRequest{Body: "x", Mentions: &struct {
			UserIDs []id.UserID `json:"user_ids"`
			Room    bool        `json:"room"`
		}{UserIDs: []id.UserID{"alice"}}}, identity.KindAgent, "mentions.user_ids[0]", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.req.content(tc.kind)
			var fe *identity.FieldError
			switch {
			case tc.field != "":
				if !errors.As(err, &fe) || fe.Field != tc.field {
					t.Errorf("error %v, want one naming %s", err, tc.field)
				}
			case err != nil:
				t.Errorf("unexpected error %v", err)
			case !tc.check(c):
				raw, _ := json.Marshal(c)
				t.Errorf("content %s", raw)
			}
		})
	}
}

func TestIdempotencyKeys(t *testing.T) {
	for key, ok := range map[string]bool{"order-42": true, "a": true, strings.Repeat("k", 255): true, "": false,
		"has space": false, strings.Repeat("k", 256): false, "ünï": false, "tab\t": false} {
		if validIdempotencyKey(key) != ok {
			t.Errorf("validIdempotencyKey(%q) = %v", key, !ok)
		}
	}
	if matrixTxnID("svc", "k") != matrixTxnID("svc", "k") || matrixTxnID("svc", "k") == matrixTxnID("other", "k") {
		t.Error("transaction ids are not stable per service and key")
	}
	if requestHash("a", "bc") == requestHash("ab", "c") {
		t.Error("request hash is ambiguous across field boundaries")
	}
}
