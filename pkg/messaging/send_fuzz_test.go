package messaging

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

// fuzzDecode decodes body as a handler does; a refusal must be a 400 or
// 413 JSON error.
func fuzzDecode(t *testing.T, body []byte, dst any) bool {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/internal/matrix/send", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	err := internalapi.DecodeJSON(req, dst)
	if err == nil {
		return true
	}
	internalapi.WriteError(rec, req, err)
	var eb struct{ Error, Message string }
	if rec.Code != http.StatusBadRequest || json.Unmarshal(rec.Body.Bytes(), &eb) != nil ||
		(eb.Error != "M_NOT_JSON" && eb.Error != "M_BAD_JSON") || eb.Message == "" {
		t.Fatalf("decode refused with %d %s", rec.Code, rec.Body)
	}
	return false
}

// checkFieldError: err is a FieldError naming a field with one of the
// prefixes, and the handlers answer it with a 400 naming the field.
func checkFieldError(t *testing.T, err error, prefixes ...string) {
	t.Helper()
	var fe *identity.FieldError
	if !errors.As(err, &fe) || fe.Field == "" || fe.Problem == "" {
		t.Fatalf("error %v (%T) is not a FieldError", err, err)
	}
	named := false
	for _, p := range prefixes {
		named = named || fe.Field == p || strings.HasPrefix(fe.Field, p+".") || strings.HasPrefix(fe.Field, p+"[")
	}
	if !named {
		t.Errorf("error names field %q", fe.Field)
	}
	rec := httptest.NewRecorder()
	internalapi.WriteError(rec, httptest.NewRequest(http.MethodPost, "/", nil), err)
	var eb struct{ Error, Field string }
	if rec.Code != http.StatusBadRequest || json.Unmarshal(rec.Body.Bytes(), &eb) != nil || eb.Error != "M_INVALID_PARAM" || eb.Field != fe.Field {
		t.Errorf("%v answered %d %s", err, rec.Code, rec.Body)
	}
}

// validEventID is applyRelation's rule for the event ids it sends.
func validEventID(e id.EventID) bool {
	return strings.HasPrefix(string(e), "$") && len(e) <= 255 && !strings.ContainsAny(string(e), " \x00")
}

func checkRelation(t *testing.T, c *event.MessageEventContent) {
	t.Helper()
	rel := c.RelatesTo
	if rel == nil {
		t.Fatal("relation accepted but not set")
	}
	switch rel.Type {
	case "":
		if rel.InReplyTo == nil || !validEventID(rel.InReplyTo.EventID) || rel.EventID != "" {
			t.Errorf("reply relation %+v", rel)
		}
	case event.RelThread:
		if !validEventID(rel.EventID) || rel.InReplyTo == nil || !validEventID(rel.InReplyTo.EventID) {
			t.Errorf("thread relation %+v", rel)
		}
	case event.RelReplace:
		if !validEventID(rel.EventID) || rel.InReplyTo != nil || c.NewContent == nil || c.NewContent.RelatesTo != nil {
			t.Errorf("edit relation %+v (new content %+v)", rel, c.NewContent)
		}
	default:
		t.Errorf("relation type %q", rel.Type)
	}
}

func FuzzSendRequest(f *testing.F) {
	for _, body := range []string{
		`{"room_id":"!r:daarion.space","sender":"agent:sofia","body":"Привіт"}`,
		`{"city_slug":"kyiv","sender":"user:alice","msgtype":"m.emote","body":"waves","format":"org.matrix.custom.html","formatted_body":"<i>waves</i>"}`,
		`{"room_id":"!r:s","sender":"agent:sofia","msgtype":"m.image","body":"cat.png","url":"mxc://s/abc","info":{"mimetype":"image/png","size":10,"w":1,"h":2},"filename":"cat.png"}`,
		`{"room_id":"!r:s","sender":"agent:sofia","body":"x","relates_to":{"m.in_reply_to":{"event_id":"$q"}}}`,
		`{"room_id":"!r:s","sender":"agent:sofia","body":"x","relates_to":{"rel_type":"m.thread","event_id":"$root","is_falling_back":true,"m.in_reply_to":{"event_id":"$last"}}}`,
		`{"room_id":"!r:s","sender":"agent:sofia","body":"new","format":"org.matrix.custom.html","formatted_body":"<b>new</b>","relates_to":{"rel_type":"m.replace","event_id":"$old"},"mentions":{"user_ids":["@a:s"],"room":true}}`,
		`{"body":"x","relates_to":null,"mentions":null,"info":null}`,
		`{"body":" "}`,
		`{"body":"x","msgtype":"m.location"}`,
		`{"body":"x","format":"markdown","formatted_body":"**x**"}`,
		`{"body":"x","msgtype":"m.file","url":"https://x/y"}`,
		`{"body":"x","msgtype":"m.file","url":"mxc://s/a","info":{"size":"big"}}`,
		`{"body":"x","msgtype":"m.video","url":"mxc://s/a","info":{"duration":1.5,"thumbnail_info":{"size":1}}}`,
		`{"body":"x","url":"mxc://s/a"}`,
		`{"body":"x","mentions":{"user_ids":["alice"]}}`,
		`{"body":"x","relates_to":{"rel_type":"m.annotation","event_id":"$x","key":"👍"}}`,
		`{"body":"x","relates_to":{"rel_type":"m.replace","event_id":"$` + strings.Repeat("e", 255) + `"}}`,
		`{"body":"x","relates_to":{"m.in_reply_to":{"event_id":"$a b"}}}`,
		`{"body":"x","relates_to":[1]}`,
		`{"body":"` + strings.Repeat("я", maxBodyRunes) + `"}`,
		`{"body":"x","unknown":1}`,
		`{"room_id":"!r:s","sender":"agent:sofia","msgtype":"m.file","body":"plan.txt","filename":"plan.txt","file":{"url":"mxc://s/c","key":{"k":"` + strings.Repeat("A", attachmentKeyChars) + `","alg":"A256CTR","ext":true,"kty":"oct","key_ops":["encrypt","decrypt"]},"iv":"` + strings.Repeat("A", attachmentIVChars) + `","hashes":{"sha256":"` + strings.Repeat("A", attachmentHashChars) + `"},"v":"v2"}}`,
		`{"body":"x","msgtype":"m.image","url":"mxc://s/a","file":{"url":"mxc://s/c"}}`,
		`{"body":"x","msgtype":"m.file","file":{"url":"https://s/c","v":"v2"}}`,
		`{"body":"x","file":{"url":"mxc://s/c"}}`,
		`{"body":"x","msgtype":"m.file","file":null}`,
	} {
		f.Add([]byte(body), false)
		f.Add([]byte(body), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, agent bool) {
		var req sendRequest
		if !fuzzDecode(t, body, &req) {
			return
		}
		kind := identity.KindHuman
		if agent {
			kind = identity.KindAgent
		}
		c, err := req.content(kind)
		if err != nil {
			checkFieldError(t, err, "msgtype", "body", "format", "formatted_body", "url", "file", "info", "mentions", "relates_to")
			return
		}
		switch {
		case !textTypes[c.MsgType] && !mediaTypes[c.MsgType]:
			t.Errorf("msgtype %q", c.MsgType)
		case req.MsgType == "" && (agent && c.MsgType != event.MsgNotice || !agent && c.MsgType != event.MsgText):
			t.Errorf("default msgtype %q for agent=%v", c.MsgType, agent)
		case strings.TrimSpace(req.Body) == "" || utf8.RuneCountInString(req.Body) > maxBodyRunes:
			t.Errorf("accepted body of %d runes", utf8.RuneCountInString(req.Body))
		case c.FormattedBody != "" && c.Format != event.FormatHTML:
			t.Errorf("formatted body with format %q", c.Format)
		case mediaTypes[c.MsgType] && (c.File == nil) == (c.URL == ""):
			t.Errorf("%s with url %q and file %v: want exactly one", c.MsgType, c.URL, c.File)
		case mediaTypes[c.MsgType] && c.File == nil && !strings.HasPrefix(string(c.URL), "mxc://"):
			t.Errorf("%s with url %q", c.MsgType, c.URL)
		case c.File != nil && (!strings.HasPrefix(string(c.File.URL), "mxc://") || len(req.File) > maxFileObjectBytes || c.File.PrepareForDecryption() != nil):
			t.Errorf("%s with file %s", c.MsgType, req.File)
		case !mediaTypes[c.MsgType] && (c.URL != "" || c.File != nil || c.Info != nil):
			t.Errorf("%s with media fields", c.MsgType)
		}
		if req.Mentions != nil {
			for _, u := range c.Mentions.UserIDs {
				if _, _, err := u.Parse(); err != nil {
					t.Errorf("mention %q", u)
				}
			}
		}
		if len(req.RelatesTo) > 0 && string(req.RelatesTo) != "null" {
			checkRelation(t, c)
		}
		if c.RelatesTo != nil && c.RelatesTo.Type == event.RelReplace {
			if c.NewContent.Body != req.Body || c.Body != "* "+req.Body {
				t.Errorf("edit bodies %q / %q for %q", c.Body, c.NewContent.Body, req.Body)
			}
		} else if c.Body != req.Body {
			t.Errorf("body %q, sent %q", c.Body, req.Body)
		}
		// What is sent encodes (json.Marshal is what mautrix does), and
		// reads back as the same message.
		raw, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("content does not encode: %v", err)
		}
		var back event.MessageEventContent
		if err = json.Unmarshal(raw, &back); err != nil || back.MsgType != c.MsgType || back.Body != c.Body {
			t.Errorf("content %s does not read back (%v)", raw, err)
		}
	})
}

func FuzzApplyRelation(f *testing.F) {
	for _, rel := range []string{
		`{"m.in_reply_to":{"event_id":"$q"}}`,
		`{"rel_type":"m.thread","event_id":"$root"}`,
		`{"rel_type":"m.thread","event_id":"$root","m.in_reply_to":{"event_id":"$root"}}`,
		`{"rel_type":"m.thread","event_id":"$root","is_falling_back":false,"m.in_reply_to":{"event_id":"$last"}}`,
		`{"rel_type":"m.replace","event_id":"$old"}`,
		`{"rel_type":"m.replace","event_id":"$old","m.in_reply_to":{"event_id":"$q"}}`,
		`{"rel_type":"m.annotation","event_id":"$x"}`,
		`{"rel_type":"","m.in_reply_to":null}`,
		`{"m.in_reply_to":{"event_id":"q"}}`,
		`{"m.in_reply_to":{"event_id":"$\u0000"}}`,
		`{"rel_type":5}`,
		`{}`, `[]`, `null`, `"x"`, ``, `{"m.in_reply_to":{}}`,
	} {
		f.Add("hello", "", []byte(rel))
		f.Add("hello", "<b>hello</b>", []byte(rel))
	}
	f.Fuzz(func(t *testing.T, body, formatted string, raw []byte) {
		c := &event.MessageEventContent{MsgType: event.MsgText, Body: body}
		if formatted != "" {
			c.Format, c.FormattedBody = event.FormatHTML, formatted
		}
		if err := applyRelation(c, raw); err != nil {
			checkFieldError(t, err, "relates_to")
			return
		}
		checkRelation(t, c)
		if c.RelatesTo.Type == event.RelReplace {
			if c.Body != "* "+body || c.NewContent.Body != body || c.NewContent.FormattedBody != formatted ||
				formatted != "" && c.FormattedBody != "* "+formatted {
				t.Errorf("edit of %q/%q gives %q/%q, new %q/%q", body, formatted, c.Body, c.FormattedBody, c.NewContent.Body, c.NewContent.FormattedBody)
			}
		} else if c.Body != body || c.FormattedBody != formatted || c.NewContent != nil {
			t.Errorf("a %q relation changed the content", c.RelatesTo.Type)
		}
		if _, err := json.Marshal(c); err != nil {
			t.Fatalf("content does not encode: %v", err)
		}
	})
}

func FuzzMembershipRequest(f *testing.F) {
	for _, body := range []string{
		`{"room_id":"!r:daarion.space","user_id":"agent:sofia"}`,
		`{"city_slug":"kyiv","user_id":"@bob:daarion.space","kicker":"agent:guard","reason":"spam"}`,
		`{"room_id":"!r:s","user_id":"user:alice","inviter_matrix_id":"@agent_sofia:daarion.space"}`,
		`{"room_id":"!r:s","user_id":"matrix:@eve:other.org"}`,
		`{"room_id":"!r:s","user_id":"bridge:bot"}`,
		`{"room_id":"!r:s","user_id":"agent:"}`,
		`{"room_id":"!r:s","user_id":"user:agent_x"}`,
		`{"room_id":"!r:s","user_id":"@:s"}`,
		`{"room_id":"!r:s","user_id":"alice"}`,
		`{"room_id":"!r:s","user_id":""}`,
		`{"room_id":"!r:s","user_id":"@a:s","reason":"` + strings.Repeat("r", 1001) + `"}`,
	} {
		f.Add([]byte(body))
	}
	mapper := identity.Mapper{ServerName: "daarion.space", BotLocalpart: "daarion-bot"}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req membershipRequest
		if !fuzzDecode(t, body, &req) {
			return
		}
		// The handler's own checks, in its order.
		if len(req.Reason) > 1000 || req.UserID == "" {
			return
		}
		member, err := mapper.ParseUser("user_id", req.UserID)
		if err != nil {
			checkFieldError(t, err, "user_id")
			return
		}
		if _, _, err := member.UserID.Parse(); err != nil || member.ID == "" || len(member.UserID) > 255 {
			t.Errorf("user_id %q parses to %+v", req.UserID, member)
		}
		if member.Kind == identity.KindAgent && !strings.HasPrefix(member.ID, "agent:") {
			t.Errorf("agent %+v", member)
		}
	})
}
