package e2e_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"testing"
	"time"

	"github.com/daarion/matrix-bridge/pkg/mapping"
	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// uploadForRoom posts a multipart upload as agent, for the room roomID.
func uploadForRoom(t *testing.T, s *stack, agent, roomID, fileName string, data []byte) apiResult {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range map[string]string{"agent": agent, "room_id": roomID} {
		if err := mw.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename=%q`, fileName))
	h.Set("Content-Type", "application/octet-stream")
	w, err := mw.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(data)
	if err = mw.Close(); err != nil {
		t.Fatal(err)
	}
	return s.apiRaw(t, http.MethodPost, "/internal/matrix/upload", serviceSecret, mw.FormDataContentType(), buf.Bytes())
}

// An agent's file for an encrypted room is an encrypted attachment: the
// upload with the room's room_id encrypts it, the send carries its file, a
// real client decrypts it byte for byte, the homeserver holds only
// ciphertext, and the echo's DTO has the file.
func TestEncryptedAttachmentFromAnAgent(t *testing.T) {
	r := newEncryptedRig(t, testrig.NewTestDatabase(t, testrig.SQLite))
	s := r.s
	plain := bytes.Repeat([]byte(fmt.Sprintf("agent's confidential report %d\n", time.Now().UnixNano())), 200)

	up := uploadForRoom(t, s, "agent:sofia", r.room, "report.txt", plain)
	file, _ := up.json["file"].(map[string]any)
	if up.status != http.StatusOK || file == nil {
		t.Fatalf("upload for the encrypted room: %d %s", up.status, up.body)
	}
	mxc, _ := up.json["content_uri"].(string)
	if file["url"] != mxc || file["v"] != "v2" || up.json["content_type"] != "text/plain; charset=utf-8" || up.json["size"] != float64(len(plain)) {
		t.Errorf("upload answered %s", up.body)
	}

	// The homeserver holds only ciphertext.
	raw := downloadRaw(t, s.hs, r.aliceHTTP.AccessToken, mxc)
	if len(raw) != len(plain) || bytes.Equal(raw, plain) || bytes.Contains(raw, []byte("confidential report")) {
		t.Errorf("the homeserver holds %d bytes, the clear file is %d: not only ciphertext", len(raw), len(plain))
	}

	// A room whose state the bridge has not seen — one an agent joined a
	// moment ago, before the consumers loaded its state; here the state
	// store forgets it — is asked of the homeserver before the upload: it
	// is still an encrypted attachment, and the store knows the room again.
	ctx := context.Background()
	roomState := func() (encrypted, fetched bool) {
		var enc sql.NullString
		err := s.database.QueryRow(ctx, `SELECT encryption, COALESCE(members_fetched, false) FROM mx_room_state WHERE room_id = $1`, r.room).Scan(&enc, &fetched)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			t.Fatal(err)
		}
		return enc.Valid, fetched
	}
	// The e2ee consumer loads the state on the agent's join: once it has,
	// nothing else writes the room's row.
	eventually(t, "the joined room's state in the store", 30*time.Second, func() bool { enc, fetched := roomState(); return enc && fetched })
	if _, err := s.database.Exec(ctx, `DELETE FROM mx_room_state WHERE room_id = $1`, r.room); err != nil {
		t.Fatal(err)
	}
	if again := uploadForRoom(t, s, "agent:sofia", r.room, "again.txt", plain); again.status != http.StatusOK || again.json["file"] == nil {
		t.Errorf("upload for an encrypted room the store has not seen: %d %s, want an encrypted attachment", again.status, again.body)
	}
	if enc, _ := roomState(); !enc {
		t.Error("the upload read the room's state, but the store does not know it as encrypted")
	}

	// In a clear room the send refuses the file.
	clearRoom, _ := createCity(t, s, "clear-media", "Clear media", "")
	if res := s.api(t, http.MethodPost, "/internal/matrix/send", map[string]any{"room_id": clearRoom, "sender": "agent:sofia",
		"msgtype": "m.file", "body": "report.txt", "file": file}); res.status != http.StatusBadRequest || res.str("field") != "file" {
		t.Errorf("file into a clear room: %d %s", res.status, res.body)
	}

	eventID := send(t, s, map[string]any{"room_id": r.room, "sender": "agent:sofia", "msgtype": "m.file", "body": "report.txt",
		"filename": "report.txt", "info": map[string]any{"mimetype": "text/plain", "size": len(plain)}, "file": file})
	got := r.alice.WaitDecrypted(jsWait{Room: r.room, Sender: r.sofia.String(), EventID: eventID.String(), Timeout: 60 * time.Second})
	clearFile, _ := got.Content["file"].(map[string]any)
	if got.WireType != "m.room.encrypted" || got.Content["msgtype"] != "m.file" || clearFile == nil || got.Content["url"] != nil {
		t.Fatalf("alice read the agent's file as %s %v, want an encrypted m.file with file and no url", got.WireType, got.Content)
	}
	if data := r.alice.DownloadDecrypt(clearFile); !bytes.Equal(data, plain) {
		t.Errorf("alice decrypted %d bytes (%.40q), want the %d uploaded", len(data), data, len(plain))
	}

	var dto *receivedDTO
	eventually(t, "the agent's file at the webhook", 60*time.Second, func() bool { dto = r.dto(eventID.String()); return dto != nil })
	if err := mapping.Validate(dto.body.DTO); err != nil {
		t.Error(err)
	}
	dtoFile, _ := dto.dto.Data["file"].(map[string]any)
	if dto.dto.Type != mapping.MediaUploaded || dto.dto.Sender == nil || dto.dto.Sender.ID != "agent:sofia" || dtoFile == nil ||
		dtoFile["url"] != mxc || dtoFile["iv"] != file["iv"] {
		t.Errorf("the file's DTO: %s from %+v, data %v", dto.dto.Type, dto.dto.Sender, dto.dto.Data)
	}
}
