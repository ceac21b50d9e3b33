package benchkit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// SendAsAgent posts one message into room through the bridge's internal API
// as entity (agent:<id>), and returns the new event's id and how long the
// call took (the answer's decoding not included). An empty msgType leaves
// it to the bridge (m.notice for an agent).
func SendAsAgent(ctx context.Context, api *testrig.APIClient, room id.RoomID, entity, msgType, body string) (string, time.Duration, error) {
	req := map[string]string{"room_id": string(room), "sender": entity, "body": body}
	if msgType != "" {
		req["msgtype"] = msgType
	}
	data, _ := json.Marshal(req)
	t0 := time.Now()
	status, raw, err := api.Raw(ctx, http.MethodPost, "/internal/matrix/send", nil, bytes.NewReader(data), nil)
	took := time.Since(t0)
	if err != nil {
		return "", took, err
	}
	var out struct {
		EventID string `json:"event_id"`
	}
	if status != http.StatusOK || json.Unmarshal(raw, &out) != nil || out.EventID == "" {
		return "", took, fmt.Errorf("send as %s answered %d: %s", entity, status, raw)
	}
	return out.EventID, took, nil
}
