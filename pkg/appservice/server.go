// Package appservice serves the Application Service API the homeserver calls:
// transactions, user and alias queries, and ping. The transaction route is
// the bridge's own (not mautrix's, which answers from memory): a transaction
// is answered 200 only after its events are committed to the event log.
package appservice

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/eventlog"
)

// maxTxnIDBytes bounds a transaction id. The Matrix spec sets no limit, but
// the id is stored: it is the primary key of as_transaction (a PostgreSQL
// btree refuses entries over about 2.7 kB, so a longer id could never be
// indexed), it is repeated in every event_log row of the transaction and
// hashed into its ephemeral event ids. Homeservers send short ids (Synapse a
// counter, Dendrite a timestamp), so the spec's limit for the other
// identifiers the bridge stores is ample.
const maxTxnIDBytes = maxIdentifierBytes

// Journal durably records a transaction's body. The event log's indexer
// turns journalled bodies into log events after the answer; the events
// parsed here are handed to it (eventlog.Log.JournalParsed), so that it
// neither reads the body back nor parses it again.
type Journal interface {
	JournalParsed(ctx context.Context, txnID string, body []byte, events []eventlog.IncomingEvent) error
}

// QueryHandler answers the homeserver's questions about the bridge's
// namespaces. true means the user or alias exists now (the handler creates
// it first if it should exist).
type QueryHandler interface {
	QueryUser(ctx context.Context, userID id.UserID) (bool, error)
	QueryAlias(ctx context.Context, alias id.RoomAlias) (bool, error)
}

// NoQueries answers every query with "does not exist".
type NoQueries struct{}

func (NoQueries) QueryUser(context.Context, id.UserID) (bool, error)     { return false, nil }
func (NoQueries) QueryAlias(context.Context, id.RoomAlias) (bool, error) { return false, nil }

// Observer is told about every transaction (metrics).
type Observer interface {
	// ObserveTransaction: result is ok, bad_request, overloaded or error.
	ObserveTransaction(result string, events []eventlog.IncomingEvent, commit time.Duration)
	// ObservePace: how long a committed transaction's answer waited for
	// Options.Pace.
	ObservePace(waited time.Duration)
}

// Options configure the server.
type Options struct {
	// Observer, when set, is told about every transaction.
	Observer Observer
	// HSToken is the token the homeserver authenticates with.
	HSToken string
	// AllowQueryToken also accepts the legacy access_token query parameter.
	AllowQueryToken bool
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64
	// CommitTimeout bounds how long a transaction's commit may take; the
	// commit is not cancelled when the homeserver hangs up, only by this.
	CommitTimeout time.Duration
	// Overloaded, when set and true, makes transactions answer 503 before
	// they are read: the journal is past its hard limit, and the homeserver
	// must back off (it keeps the transaction and retries) rather than the
	// database fill up. It must be cheap: it runs for every transaction.
	Overloaded func() bool
	// Pace, when set, is called after a transaction's commit and before its
	// answer with the transaction's number of events, and may hold the
	// answer back (eventlog.Log.Pace: while the indexer is behind); it
	// returns how long it waited.
	Pace func(ctx context.Context, events int) time.Duration
}

// Server is the appservice HTTP API.
type Server struct {
	opts    Options
	log     Journal
	queries QueryHandler
	logger  zerolog.Logger
	router  *mux.Router
}

// NewServer builds the router.
func NewServer(opts Options, log Journal, queries QueryHandler, logger zerolog.Logger) *Server {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 32 << 20
	}
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = time.Minute
	}
	if queries == nil {
		queries = NoQueries{}
	}
	s := &Server{opts: opts, log: log, queries: queries, logger: logger}
	r := mux.NewRouter().UseEncodedPath()
	// The current paths, and the legacy ones without a prefix that older
	// homeservers use.
	for _, prefix := range []string{"/_matrix/app/v1", ""} {
		r.Handle(prefix+"/transactions/{txnId}", s.authed(s.putTransaction)).Methods(http.MethodPut)
		r.Handle(prefix+"/users/{userId}", s.authed(s.getUser)).Methods(http.MethodGet)
		r.Handle(prefix+"/rooms/{roomAlias}", s.authed(s.getRoom)).Methods(http.MethodGet)
	}
	r.Handle("/_matrix/app/v1/ping", s.authed(s.postPing)).Methods(http.MethodPost)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mautrix.MUnrecognized.WithMessage("Unrecognized request").Write(w)
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mautrix.MUnrecognized.WithStatus(http.StatusMethodNotAllowed).WithMessage("Method not allowed").Write(w)
	})
	s.router = r
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.router.ServeHTTP(w, r)
}

// authed checks the homeserver's token in constant time before the handler.
func (s *Server) authed(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := s.requestToken(r)
		if !ok {
			mautrix.MMissingToken.WithMessage("Missing homeserver token").Write(w)
			return
		}
		if subtle.ConstantTimeCompare([]byte(token), []byte(s.opts.HSToken)) != 1 {
			mautrix.MForbidden.WithMessage("Invalid homeserver token").Write(w)
			return
		}
		next(w, r)
	})
}

func (s *Server) requestToken(r *http.Request) (string, bool) {
	if header := r.Header.Get("Authorization"); header != "" {
		token, found := strings.CutPrefix(header, "Bearer ")
		return token, found && token != ""
	}
	if s.opts.AllowQueryToken {
		if token := r.URL.Query().Get("access_token"); token != "" {
			return token, true
		}
	}
	return "", false
}

// pathVar returns a decoded path variable.
func pathVar(r *http.Request, name string) (string, bool) {
	value, err := url.PathUnescape(mux.Vars(r)[name])
	return value, err == nil && value != ""
}

func (s *Server) putTransaction(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	txnID, ok := pathVar(r, "txnId")
	// The id is stored as text: PostgreSQL refuses NUL and non-UTF-8 bytes.
	if !ok || !utf8.ValidString(txnID) || strings.ContainsRune(txnID, 0) {
		mautrix.MInvalidParam.WithMessage("txnId path parameter is missing or badly encoded").Write(w)
		return
	}
	if len(txnID) > maxTxnIDBytes {
		mautrix.MInvalidParam.WithMessage("txnId path parameter must be at most %d bytes", maxTxnIDBytes).Write(w)
		return
	}
	if s.opts.Overloaded != nil && s.opts.Overloaded() {
		s.observe("overloaded", nil, 0)
		mautrix.MLimitExceeded.WithStatus(http.StatusServiceUnavailable).
			WithMessage("The bridge's journal is past its limit (appservice.max_journal_backlog): retry later").Write(w)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			mautrix.MTooLarge.WithMessage("Transaction body is larger than %d bytes", s.opts.MaxBodyBytes).Write(w)
		} else {
			mautrix.MNotJSON.WithMessage("Failed to read request body").Write(w)
		}
		return
	}
	log := s.logger.With().Str("txn_id", txnID).Logger()
	events, parseErr := parseTransaction(txnID, body)
	if parseErr != nil {
		s.observe("bad_request", nil, 0)
		log.Warn().Str("errcode", parseErr.ErrCode).Str("problem", parseErr.Err).Msg("Rejected malformed transaction")
		parseErr.Write(w)
		return
	}
	// The commit goes on when the homeserver hangs up: it will resend, and
	// the indexer stores each event once.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), s.opts.CommitTimeout)
	defer cancel()
	commitStart := time.Now()
	err = s.log.JournalParsed(log.WithContext(ctx), txnID, body, events)
	if err != nil {
		s.observe("error", nil, time.Since(commitStart))
		log.Err(err).Int("events", len(events)).Msg("Failed to commit transaction")
		mautrix.MUnknown.WithStatus(http.StatusInternalServerError).
			WithMessage("Failed to store the transaction; retry later").Write(w)
		return
	}
	s.observe("ok", events, time.Since(commitStart))
	if s.opts.Pace != nil {
		waited := s.opts.Pace(r.Context(), len(events))
		if s.opts.Observer != nil {
			s.opts.Observer.ObservePace(waited)
		}
		if waited > 0 {
			log.Debug().Dur("waited", waited).Msg("Answer held back while the indexer catches up")
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("{}"))
	log.Debug().
		Int("events", len(events)).
		Dur("duration", time.Since(start)).
		Msg("Transaction committed")
}

func (s *Server) observe(result string, events []eventlog.IncomingEvent, commit time.Duration) {
	if s.opts.Observer != nil {
		s.opts.Observer.ObserveTransaction(result, events, commit)
	}
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request) {
	raw, ok := pathVar(r, "userId")
	userID := id.UserID(raw)
	if _, _, err := userID.Parse(); !ok || err != nil {
		mautrix.MInvalidParam.WithMessage("userId must be a Matrix user id such as @agent_x:example.org").Write(w)
		return
	}
	exists, err := s.queries.QueryUser(s.logger.WithContext(r.Context()), userID)
	s.answerQuery(w, "user", string(userID), exists, err)
}

func (s *Server) getRoom(w http.ResponseWriter, r *http.Request) {
	raw, ok := pathVar(r, "roomAlias")
	alias := id.RoomAlias(raw)
	if !ok || !strings.HasPrefix(raw, "#") || !strings.Contains(raw, ":") {
		mautrix.MInvalidParam.WithMessage("roomAlias must be a Matrix room alias such as #city_x:example.org").Write(w)
		return
	}
	exists, err := s.queries.QueryAlias(s.logger.WithContext(r.Context()), alias)
	s.answerQuery(w, "alias", string(alias), exists, err)
}

func (s *Server) answerQuery(w http.ResponseWriter, kind, subject string, exists bool, err error) {
	switch {
	case err != nil:
		s.logger.Err(err).Str(kind, subject).Msg("Failed to answer homeserver query")
		mautrix.MUnknown.WithStatus(http.StatusInternalServerError).WithMessage("Failed to answer the query").Write(w)
	case exists:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
	default:
		mautrix.MNotFound.WithMessage("No such %s", kind).Write(w)
	}
}

func (s *Server) postPing(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TransactionID string `json:"transaction_id"`
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err == nil && len(body) > 0 {
		if json.Unmarshal(body, &req) != nil {
			mautrix.MNotJSON.WithMessage("Ping body must be a JSON object").Write(w)
			return
		}
	}
	s.logger.Info().Str("txn_id", req.TransactionID).Msg("Pinged by the homeserver")
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}"))
}
