package messaging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/attachment"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

// RegisterMediaRoutes adds media upload and room history to the internal API.
func (s *Service) RegisterMediaRoutes(api *internalapi.API) {
	api.HandleWithBodyLimit(http.MethodPost, "/internal/matrix/upload", internalapi.ScopeMessaging,
		uploadBodyLimit(s.media.MaxUploadBytes), s.handleUpload)
	api.Handle(http.MethodGet, "/internal/matrix/rooms/{roomId}/messages", internalapi.ScopeMessaging, s.handleHistory)
}

const (
	// multipartOverhead is what an upload's body may hold besides the file:
	// boundaries, part headers and the agent and room_id fields.
	multipartOverhead = 64 << 10
	// maxFieldBytes bounds a form field other than the file.
	maxFieldBytes = 1024
	// sniffBytes is what http.DetectContentType looks at.
	sniffBytes = 512
	// maxFileNameBytes bounds the file name passed to the homeserver.
	maxFileNameBytes = 255
	// maxExtensionBytes is the longest extension kept when a name is cut.
	maxExtensionBytes = 16
)

// uploadBodyLimit is the body limit of the upload route for a file limit.
func uploadBodyLimit(maxFile int64) int64 { return maxFile + multipartOverhead }

// uploadResponse is the answer to POST /internal/matrix/upload.
type uploadResponse struct {
	ContentURI  string `json:"content_uri"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	// File is the encrypted attachment (key, iv, hash and the ciphertext's
	// mxc) of an upload for an encrypted room: what a send's file needs.
	File *event.EncryptedFileInfo `json:"file,omitempty"`
}

// errFileTooLarge: the file part has more bytes than media.max_upload_bytes.
var errFileTooLarge = errors.New("file too large")

// spooledFile is the file part of an upload, copied to an unlinked temporary
// file: the homeserver needs its length up front (Synapse refuses an upload
// without Content-Length), and the file must not be held in memory.
type spooledFile struct {
	f    *os.File
	size int64
	head []byte // the first sniffBytes bytes, for http.DetectContentType
	name string // sanitised; "" for none
}

func (sf *spooledFile) close() {
	if sf != nil && sf.f != nil {
		name := sf.f.Name()
		_ = sf.f.Close()
		_ = os.Remove(name)
	}
}

// spool copies src to a new temporary file, counting its bytes: more than
// limit is errFileTooLarge. Memory use is a copy buffer, whatever the size.
func spool(src io.Reader, limit int64) (*spooledFile, error) {
	f, err := os.CreateTemp("", "daarion-upload-*")
	if err != nil {
		return nil, err
	}
	// Unlinked at once where the OS allows: nothing is left behind even if
	// the process dies mid-upload. close removes it again for other systems.
	_ = os.Remove(f.Name())
	sf := &spooledFile{f: f}
	head := make([]byte, sniffBytes)
	n, err := io.ReadFull(src, head)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		sf.close()
		return nil, err
	}
	sf.head = head[:n]
	if _, err = f.Write(sf.head); err != nil {
		sf.close()
		return nil, err
	}
	rest, err := io.Copy(f, io.LimitReader(src, limit-int64(n)+1))
	sf.size = int64(n) + rest
	if err != nil {
		sf.close()
		return nil, err
	}
	if sf.size > limit {
		sf.close()
		return nil, errFileTooLarge
	}
	if _, err = f.Seek(0, io.SeekStart); err != nil {
		sf.close()
		return nil, err
	}
	return sf, nil
}

// uploadForm is a parsed upload body.
type uploadForm struct {
	file   *spooledFile
	agent  string
	roomID id.RoomID // the room the file is for, resolved; "" for none
}

// formError is a problem with the upload body itself, answered as is.
type formError struct {
	status  int
	errcode string
	field   string
	message string
}

func (e *formError) Error() string { return e.message }

// APIError is the answer: 400 M_INVALID_PARAM naming the field, or status
// and errcode.
func (e *formError) APIError() *internalapi.Error {
	if e.field != "" && e.status == http.StatusBadRequest {
		return internalapi.InvalidField(e.field, e.message)
	}
	return internalapi.NewError(e.status, e.errcode, e.message)
}

// readUploadForm reads the multipart body part by part: the file goes to
// disk as it arrives, agent and room_id are short text fields, anything else
// is refused. onAgent runs as soon as the agent field is read, and onRoom as
// soon as room_id is (answering the room to use), so that a refused actor or
// room is refused before a file that follows it is read.
func readUploadForm(r *http.Request, maxFile int64, onAgent func(string) error, onRoom func(string) (id.RoomID, error)) (*uploadForm, error) {
	mr, err := r.MultipartReader()
	if errors.Is(err, http.ErrNotMultipart) {
		return nil, &formError{status: http.StatusUnsupportedMediaType, errcode: internalapi.ErrInvalidParam,
			message: "Content-Type must be multipart/form-data"}
	} else if err != nil {
		return nil, &formError{status: http.StatusBadRequest, errcode: internalapi.ErrInvalidParam,
			message: "request body is not multipart/form-data: " + err.Error()}
	}
	form := &uploadForm{}
	seen := map[string]bool{}
	fail := func(err error) (*uploadForm, error) {
		form.file.close()
		return nil, err
	}
	// At most three parts are read: a fourth is a duplicate or unknown, and refused.
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fail(bodyError(err))
		}
		name := part.FormName()
		switch name {
		case "file":
			if form.file != nil {
				part.Close()
				return fail(fieldErr("file", "is given more than once"))
			}
			form.file, err = spool(part, maxFile)
			if errors.Is(err, errFileTooLarge) {
				part.Close()
				return fail(&formError{status: http.StatusRequestEntityTooLarge, errcode: internalapi.ErrTooLarge,
					message: fmt.Sprintf("file is larger than %d bytes", maxFile)})
			} else if err != nil {
				part.Close()
				return fail(bodyError(err))
			}
			form.file.name = sanitizeFileName(part.FileName())
		case "agent", "room_id":
			if seen[name] {
				part.Close()
				return fail(fieldErr(name, "is given more than once"))
			}
			seen[name] = true
			value, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
			if err != nil {
				part.Close()
				return fail(bodyError(err))
			}
			if len(value) > maxFieldBytes {
				part.Close()
				return fail(fieldErr(name, fmt.Sprintf("is longer than %d bytes", maxFieldBytes)))
			}
			if name == "agent" {
				form.agent = string(value)
				err = onAgent(form.agent)
			} else if len(value) > 0 {
				form.roomID, err = onRoom(string(value))
			}
			if err != nil {
				part.Close()
				return fail(err)
			}
		case "":
			part.Close()
			return fail(&formError{status: http.StatusBadRequest, errcode: internalapi.ErrInvalidParam,
				message: "every part must be form-data with a name (file, agent, room_id)"})
		default:
			part.Close()
			return fail(fieldErr(name, "unknown field (an upload has file and, optionally, agent and room_id)"))
		}
		part.Close()
	}
	if form.file == nil {
		return nil, fieldErr("file", "is required: a multipart/form-data part named file")
	}
	return form, nil
}

func fieldErr(field, problem string) *formError {
	return &formError{status: http.StatusBadRequest, errcode: internalapi.ErrInvalidParam, field: field, message: problem}
}

// bodyError classifies a failure to read the upload body.
func bodyError(err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return &formError{status: http.StatusRequestEntityTooLarge, errcode: internalapi.ErrTooLarge,
			message: fmt.Sprintf("request body is larger than %d bytes", tooLarge.Limit)}
	}
	var pathErr *os.PathError
	if errors.As(err, &pathErr) {
		return err // the temporary file: ours, a 500
	}
	return &formError{status: http.StatusBadRequest, errcode: internalapi.ErrInvalidParam,
		message: "request body is not valid multipart/form-data: " + err.Error()}
}

// sanitizeFileName makes a client's file name safe to pass on: the last path
// element only, without control, format (bidi overrides, zero-width) or
// separator characters, invalid UTF-8, leading dots, '~' or spaces, trailing
// dots or spaces, cut to maxFileNameBytes (keeping a short extension).
// The result may be "" (no name).
func sanitizeFileName(name string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	var b strings.Builder
	for i, r := range name {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(name[i:]); size <= 1 {
				continue // invalid UTF-8
			}
		}
		if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Co, unicode.Zl, unicode.Zp) {
			continue
		}
		if unicode.IsSpace(r) {
			r = ' '
		}
		b.WriteRune(r)
	}
	name = strings.TrimLeft(b.String(), ".~ ")
	name = strings.TrimRight(name, ". ")
	if len(name) <= maxFileNameBytes {
		return name
	}
	ext := filepath.Ext(name)
	if len(ext) > maxExtensionBytes || len(ext) == len(name) {
		ext = ""
	}
	stem := cutUTF8(strings.TrimSuffix(name, ext), maxFileNameBytes-len(ext))
	return strings.TrimRight(stem, ". ") + ext
}

// cutUTF8 cuts s to at most n bytes without splitting a character.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// uploadActor is who uploads: the agent named in the form, or the bot.
func (s *Service) uploadActor(ctx context.Context, agent string) (*Actor, error) {
	if agent == "" {
		return s.botActor(), nil
	}
	entity, err := s.mapper.ParseUser("agent", agent)
	if err != nil {
		return nil, err
	}
	if entity.Kind != identity.KindAgent {
		return nil, &identity.FieldError{Field: "agent", Problem: "must be an agent id such as agent:sofia"}
	}
	return s.actAs(ctx, "agent", agent, "", "")
}

// botActor is the bridge bot, which services with the messaging scope may
// use for reading and uploading.
func (s *Service) botActor() *Actor {
	return &Actor{Entity: s.mapper.FromMatrix(s.as.BotMXID()), Intent: s.as.BotIntent()}
}

// uploadRoom resolves an upload's room_id like a send's: a valid room id
// the caller may reach (an upgraded city room's old id is its current room).
func (s *Service) uploadRoom(ctx context.Context, value string) (id.RoomID, error) {
	return s.resolveRoom(ctx, id.RoomID(value), "")
}

// encryptedRoom tells whether roomID is encrypted (actor reads its state
// when the bridge has not seen it yet); false when the bridge has no
// encryption dependency.
func (s *Service) encryptedRoom(ctx context.Context, actor *Actor, roomID id.RoomID) (bool, error) {
	if s.encryption == nil || roomID == "" {
		return false, nil
	}
	return s.encryption.IsEncrypted(ctx, actor.Intent.UserID, roomID)
}

// clearFile hides the spooled file's Close from the encrypting reader (its
// Close closes its source; the spool is closed by its owner), keeping Seek
// for the client's retries.
type clearFile struct{ io.ReadSeeker }

// uploadEncrypted encrypts the spooled file as a Matrix encrypted attachment
// (AES-256-CTR, mautrix's attachment package), streamed from the disk to the
// homeserver, and uploads the ciphertext as application/octet-stream,
// without a file name (the name belongs in the encrypted event). It answers
// the attachment's EncryptedFile with the ciphertext's mxc.
func uploadEncrypted(ctx context.Context, intent interface {
	UploadMedia(context.Context, mautrix.ReqUploadMedia) (*mautrix.RespMediaUpload, error)
}, sf *spooledFile) (*event.EncryptedFileInfo, error) {
	ef := attachment.NewEncryptedFile()
	stream := ef.EncryptStream(clearFile{sf.f})
	resp, err := intent.UploadMedia(ctx, mautrix.ReqUploadMedia{
		Content:       stream,
		ContentLength: ef.EncryptedLength(sf.size),
		ContentType:   "application/octet-stream",
	})
	if err != nil {
		return nil, err
	}
	// Close fills in the ciphertext's hash, over what was read since the
	// last rewind: it is the whole file only if the spool was read to its end.
	if err = stream.Close(); err != nil {
		return nil, fmt.Errorf("failed to finish encrypting the upload: %w", err)
	}
	if pos, err := sf.f.Seek(0, io.SeekCurrent); err != nil || pos != sf.size {
		return nil, fmt.Errorf("encrypted upload read %d of %d bytes (%v)", pos, sf.size, err)
	}
	return &event.EncryptedFileInfo{EncryptedFile: *ef, URL: resp.ContentURI.CUString()}, nil
}

func (s *Service) handleUpload(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var actor *Actor
	form, err := readUploadForm(r, s.media.MaxUploadBytes, func(agent string) (err error) {
		actor, err = s.uploadActor(ctx, agent)
		return err
	}, func(roomID string) (id.RoomID, error) { return s.uploadRoom(ctx, roomID) })
	if err != nil {
		return err
	}
	defer form.file.close()
	if form.file.size == 0 {
		return internalapi.InvalidField("file", "is empty")
	}
	if actor == nil {
		actor = s.botActor()
	}
	// The client's Content-Type is not trusted: the bytes decide.
	contentType := http.DetectContentType(form.file.head)
	encrypted, err := s.encryptedRoom(ctx, actor, form.roomID)
	if err != nil {
		return err
	}
	if encrypted {
		file, err := uploadEncrypted(ctx, actor.Intent, form.file)
		if err != nil {
			return err
		}
		zerolog.Ctx(ctx).Debug().
			Str("content_uri", string(file.URL)).
			Str("content_type", contentType).
			Int64("size", form.file.size).
			Str("as", actor.Entity.ID).
			Stringer("room_id", form.roomID).
			Msg("Uploaded media encrypted")
		internalapi.WriteJSON(w, http.StatusOK, uploadResponse{
			ContentURI:  string(file.URL),
			ContentType: contentType,
			Size:        form.file.size,
			File:        file,
		})
		return nil
	}
	resp, err := actor.Intent.UploadMedia(ctx, mautrix.ReqUploadMedia{
		Content:       form.file.f,
		ContentLength: form.file.size,
		ContentType:   contentType,
		FileName:      form.file.name,
	})
	if err != nil {
		return err
	}
	zerolog.Ctx(ctx).Debug().
		Stringer("content_uri", resp.ContentURI).
		Str("content_type", contentType).
		Int64("size", form.file.size).
		Str("as", actor.Entity.ID).
		Msg("Uploaded media")
	internalapi.WriteJSON(w, http.StatusOK, uploadResponse{
		ContentURI:  resp.ContentURI.String(),
		ContentType: contentType,
		Size:        form.file.size,
	})
	return nil
}
