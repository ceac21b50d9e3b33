//go:build !goolm

package e2ee

import (
	"context"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// Built says whether this binary has the crypto code: this one was built
// without -tags goolm, so it has none.
const Built = false

// Service, in a build without goolm, encrypts nothing: it reports encrypted
// rooms (from the state store) and refuses to send into them.
type Service struct{ opts Options }

// New returns the service; with encryption enabled in config the bridge
// refuses to start on this build (see Built).
func New(opts Options) *Service { return &Service{opts: opts} }

func (s *Service) Enabled() bool                                         { return false }
func (s *Service) Upgrade(context.Context) error                         { return nil }
func (s *Service) Run(context.Context)                                   {}
func (s *Service) EnsureDevice(context.Context, id.UserID) error         { return nil }
func (s *Service) HandleEvents(context.Context, []*eventlog.Event) error { return nil }
func (s *Service) Waiting(context.Context) (int64, error)                { return 0, nil }
func (s *Service) Devices() int                                          { return 0 }
func (s *Service) Unavailable() string                                   { return "" }

// IsEncrypted tells whether roomID is encrypted (see roomEncrypted), asUser
// reading its state when the store has not seen it.
func (s *Service) IsEncrypted(ctx context.Context, asUser id.UserID, roomID id.RoomID) (bool, error) {
	if s == nil {
		return false, nil
	}
	return s.opts.roomEncrypted(ctx, asUser, roomID)
}

// Send refuses an encrypted room; handled is false for a clear one.
func (s *Service) Send(ctx context.Context, sender id.UserID, roomID id.RoomID, _ event.Type, _ any, _ ...mautrix.ReqSendEvent) (*mautrix.RespSendEvent, bool, error) {
	encrypted, err := s.IsEncrypted(ctx, sender, roomID)
	if err != nil || !encrypted {
		return nil, false, err
	}
	return nil, true, apiError{ErrUnavailable}
}
