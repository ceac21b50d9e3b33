//go:build goolm

package e2ee

import (
	"encoding/json"
	"testing"

	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// The idempotency marker of a wrapped content stays in the clear beside
// the ciphertext; a plain content is sent as it was encrypted.
func TestOuterContent(t *testing.T) {
	enc := &event.EncryptedEventContent{Algorithm: id.AlgorithmMegolmV1, SessionID: "sess", MegolmCiphertext: []byte("cipher")}
	wrapped := &event.Content{Parsed: &event.MessageEventContent{MsgType: event.MsgText, Body: "secret"}, Raw: map[string]any{"org.daarion.txn_id": "t1"}}
	raw, err := json.Marshal(outerContent(wrapped, enc))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	_ = json.Unmarshal(raw, &got)
	if got["org.daarion.txn_id"] != "t1" || got["algorithm"] != "m.megolm.v1.aes-sha2" || got["ciphertext"] != "cipher" || got["body"] != nil {
		t.Errorf("outer content = %s", raw)
	}
	if outerContent(&event.MessageEventContent{Body: "x"}, enc) != any(enc) {
		t.Error("a plain content was wrapped")
	}
}

// The markers are top-level keys of the journalled event, as the parser
// and the mapping read them.
func TestMarkersAreTopLevelKeys(t *testing.T) {
	raw, err := sjson.SetBytes([]byte(`{"type":"m.room.encrypted"}`), sjsonKey(UndecryptableKey), map[string]any{"reason": "r"})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	_ = json.Unmarshal(raw, &got)
	if _, ok := got[UndecryptableKey]; !ok || got["net"] != nil {
		t.Errorf("marked event = %s", raw)
	}
}
