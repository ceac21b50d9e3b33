// Package internalapi is the HTTP framework of the bridge's internal API,
// the one DAARION services call with an X-Internal-Service-Token. It
// authenticates the calling service, checks the route's scope, applies the
// per-service rate limit, bounds request bodies, assigns request ids, turns
// panics into 500s and writes one access-log line per request. Endpoint
// handlers live in other packages and register through Handle; they write
// their success and return their failure, which WriteError answers in the
// API's one error model (Error, errors.go).
package internalapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"time"

	"github.com/gorilla/mux"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/daarion/matrix-bridge/pkg/config"
)

// Header names the API reads and writes.
const (
	HeaderToken     = "X-Internal-Service-Token"
	HeaderRequestID = "X-Request-Id"
)

// Scope is a permission a service token carries; every authenticated route
// needs one.
type Scope string

// The scopes, as config.Scopes lists them.
const (
	ScopeRooms         Scope = "rooms"
	ScopeMessaging     Scope = "messaging"
	ScopeAgents        Scope = "agents"
	ScopeSubscriptions Scope = "subscriptions"
	ScopeAdmin         Scope = "admin"
	// ScopeTimestamps lets a service send events as of a time it gives
	// (imported history); INTERNAL_SERVICE_SECRET does not carry it.
	ScopeTimestamps Scope = "timestamps"
	// ScopeAnyRoom widens rooms and messaging from the rooms the bridge
	// manages for DAARION to every room the acting user is in (never the
	// bot's direct chats). It opens no route by itself.
	ScopeAnyRoom Scope = "any_room"
)

func knownScope(s Scope) bool { return slices.Contains(config.Scopes, string(s)) }

// Service is the authenticated caller of a request.
type Service struct {
	Name   string
	Scopes []Scope
}

// Has reports whether the service carries scope.
func (s *Service) Has(scope Scope) bool { return s != nil && slices.Contains(s.Scopes, scope) }

type serviceKey struct{}
type infoKey struct{}

// ServiceFrom returns the service that made the request, or nil on a public
// route. The value is the request's own copy.
func ServiceFrom(ctx context.Context) *Service {
	svc, _ := ctx.Value(serviceKey{}).(*Service)
	return svc
}

// WithService returns ctx carrying svc as the caller, as the auth middleware
// does (for code that runs a handler's logic outside a request, and tests).
func WithService(ctx context.Context, svc *Service) context.Context {
	return context.WithValue(ctx, serviceKey{}, svc)
}

// RequestIDFrom returns the request's id ("" outside a request).
func RequestIDFrom(ctx context.Context) string {
	if info, ok := ctx.Value(infoKey{}).(*requestInfo); ok {
		return info.id
	}
	return ""
}

// Observer is told about every request (metrics).
type Observer interface {
	ObserveRequest(route, service string, status int, d time.Duration)
}

// Options configure the API.
type Options struct {
	// Observer, when set, is told about every request.
	Observer Observer
	// Services are the named tokens, each with its scopes.
	Services []config.ServiceToken
	// Secret is INTERNAL_SERVICE_SECRET: it authenticates the service
	// config.SecretServiceName with config.SecretScopes. "" means no such
	// service.
	Secret string
	// RateLimit is a token bucket per service. A RequestsPerSecond of zero
	// (or less) turns rate limiting off; Burst is at least 1.
	RateLimit config.RateLimit
	// MaxBodyBytes bounds a request body; 0 means 1 MiB.
	MaxBodyBytes int64
	// Logger gets the access log and is the base of each request's logger.
	Logger zerolog.Logger
	// Now is the clock of the rate limiter and the access log; nil means
	// time.Now.
	Now func() time.Time
}

// API is the internal API's router with its middleware. Serve the API
// itself, not Router: the middleware runs in ServeHTTP.
type API struct {
	// Router holds the routes; register them through Handle and
	// HandlePublic. It is exposed for inspection (Walk, URL building).
	Router *mux.Router

	tokens       []serviceToken
	limiters     map[string]*rate.Limiter
	maxBodyBytes int64
	observer     Observer
	// bodyLimits are routes with their own body limit (uploads).
	bodyLimits map[*mux.Route]int64
	logger     zerolog.Logger
	now        func() time.Time
}

// New checks the services and builds an API with no routes yet.
func New(opts Options) (*API, error) {
	a := &API{
		limiters:     map[string]*rate.Limiter{},
		maxBodyBytes: opts.MaxBodyBytes,
		observer:     opts.Observer,
		bodyLimits:   map[*mux.Route]int64{},
		logger:       opts.Logger,
		now:          opts.Now,
	}
	if a.maxBodyBytes <= 0 {
		a.maxBodyBytes = 1 << 20
	}
	if a.now == nil {
		a.now = time.Now
	}

	services := slices.Clone(opts.Services)
	if opts.Secret != "" {
		services = append(services, config.ServiceToken{
			Name: config.SecretServiceName, Token: opts.Secret, Scopes: config.SecretScopes,
		})
	}
	var errs []error
	for i, st := range services {
		key := fmt.Sprintf("service %q", st.Name)
		if st.Name == config.SecretServiceName && opts.Secret != "" {
			key = "the service secret"
		}
		if st.Name == "" {
			errs = append(errs, fmt.Errorf("service #%d has no name", i))
			continue
		}
		if _, dup := a.limiters[st.Name]; dup {
			errs = append(errs, fmt.Errorf("service name %q is used twice", st.Name))
			continue
		}
		a.limiters[st.Name] = newLimiter(opts.RateLimit)
		if st.Token == "" {
			errs = append(errs, fmt.Errorf("%s has no token", key))
			continue
		}
		if len(st.Scopes) == 0 {
			errs = append(errs, fmt.Errorf("%s has no scopes", key))
		}
		svc := &Service{Name: st.Name}
		for _, s := range st.Scopes {
			if !knownScope(Scope(s)) {
				errs = append(errs, fmt.Errorf("%s has unknown scope %q", key, s))
			}
			svc.Scopes = append(svc.Scopes, Scope(s))
		}
		tok := serviceToken{hash: hashToken(st.Token), service: svc}
		// Never name the token itself, only who shares it.
		if j := findToken(st.Token, a.tokens); j >= 0 {
			errs = append(errs, fmt.Errorf("%s has the same token as service %q", key, a.tokens[j].service.Name))
			continue
		}
		a.tokens = append(a.tokens, tok)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("internal API: %w", err)
	}

	r := mux.NewRouter().UseEncodedPath()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, NewError(http.StatusNotFound, ErrUnrecognized, "unrecognized request"))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, NewError(http.StatusMethodNotAllowed, ErrUnrecognized, "method not allowed"))
	})
	a.Router = r
	return a, nil
}

func newLimiter(rl config.RateLimit) *rate.Limiter {
	if rl.RequestsPerSecond <= 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Limit(rl.RequestsPerSecond), max(rl.Burst, 1))
}

// Handle registers an authenticated route that needs scope. The handler
// finds the caller with ServiceFrom and its logger with zerolog.Ctx; an
// error it returns is answered by WriteError. Path
// variables are matched on the escaped path: read them with PathVar.
// An unknown scope or a nil handler panics.
func (a *API) Handle(method, path string, scope Scope, h HandlerFunc) {
	if !knownScope(scope) {
		panic(fmt.Sprintf("internalapi: route %s %s has unknown scope %q", method, path, scope))
	}
	a.handle(method, path, []Scope{scope}, errorsOrNil(h))
}

// HandleAnyScope is Handle for a route a service may call with any one of
// scopes; the handler decides what each scope allows (ServiceFrom(ctx).Has).
// Used where the scope depends on the request, such as register-user
// (agents for ghosts, admin for humans).
func (a *API) HandleAnyScope(method, path string, scopes []Scope, h HandlerFunc) {
	if len(scopes) == 0 {
		panic(fmt.Sprintf("internalapi: route %s %s has no scopes", method, path))
	}
	for _, scope := range scopes {
		if !knownScope(scope) {
			panic(fmt.Sprintf("internalapi: route %s %s has unknown scope %q", method, path, scope))
		}
	}
	a.handle(method, path, slices.Clone(scopes), errorsOrNil(h))
}

// HandlePublic registers a route without authentication or rate limit
// (GET /healthz).
func (a *API) HandlePublic(method, path string, h http.HandlerFunc) {
	a.handle(method, path, nil, h)
}

// HandleWithBodyLimit is Handle for a route whose bodies may be larger (or
// must be smaller) than the API's limit, such as media uploads.
func (a *API) HandleWithBodyLimit(method, path string, scope Scope, maxBodyBytes int64, h HandlerFunc) {
	if !knownScope(scope) {
		panic(fmt.Sprintf("internalapi: route %s %s has unknown scope %q", method, path, scope))
	}
	a.bodyLimits[a.handle(method, path, []Scope{scope}, errorsOrNil(h))] = maxBodyBytes
}

// errorsOrNil is Errors(h), keeping a nil handler nil for handle to refuse.
func errorsOrNil(h HandlerFunc) http.HandlerFunc {
	if h == nil {
		return nil
	}
	return Errors(h)
}

func (a *API) handle(method, path string, scopes []Scope, h http.HandlerFunc) *mux.Route {
	if h == nil {
		panic(fmt.Sprintf("internalapi: route %s %s has no handler", method, path))
	}
	return a.Router.Handle(path, a.route(path, scopes, h)).Methods(method)
}

// bodyLimit is the body limit of the route r goes to.
func (a *API) bodyLimit(r *http.Request) int64 {
	if len(a.bodyLimits) > 0 {
		var match mux.RouteMatch
		if a.Router.Match(r, &match) && match.Route != nil {
			if limit, ok := a.bodyLimits[match.Route]; ok {
				return limit
			}
		}
	}
	return a.maxBodyBytes
}

// PathVar returns the named path variable, unescaped; false when it is
// missing, empty or badly escaped.
func PathVar(r *http.Request, name string) (string, bool) {
	raw, ok := mux.Vars(r)[name]
	if !ok {
		return "", false
	}
	value, err := url.PathUnescape(raw)
	return value, err == nil && value != ""
}

// requestInfo is what the route wrapper tells ServeHTTP's access log.
type requestInfo struct {
	id      string
	route   string
	service string
}

// ServeHTTP runs the request through the middleware and the router.
//
// The middleware is not go.mau.fi/util's requestlog and exhttp, which it
// resembles: requestlog.AccessLogger's recoverer answers a panic with a
// bare 500 (the API's is the INTERNAL_ERROR body), and its access log has
// neither the route template, the service nor an Observer, runs on
// time.Now instead of Options.Now, and logs successes at info; and
// exhttp.WriteJSONResponse sets CORS headers and encodes after the status,
// where WriteJSON answers a value it cannot encode with a 500.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := a.now()
	info := &requestInfo{id: requestID(r.Header.Get(HeaderRequestID))}
	w.Header().Set(HeaderRequestID, info.id)
	logger := a.logger.With().Str("request_id", info.id).Logger()
	ctx := logger.WithContext(context.WithValue(r.Context(), infoKey{}, info))
	rec := &recorder{ResponseWriter: w}

	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v) // a deliberate abort: net/http drops the connection quietly
			}
			logger.Error().
				Str("route", info.route).
				Str("service", info.service).
				Str("panic", fmt.Sprint(v)).
				Str("stack", string(debug.Stack())).
				Msg("Internal API handler panicked")
			// After the handler started its response, all that can be done
			// is to log; the status logged is the one the client got.
			if !rec.wroteHeader {
				WriteError(rec, r, internalError)
			}
		}
		a.logAccess(logger, r.Method, info, rec.statusCode(), a.now().Sub(start))
	}()

	limit := a.bodyLimit(r)
	if r.ContentLength > limit {
		WriteError(rec, r, TooLarge(limit))
		return
	}
	r = r.WithContext(ctx)
	if r.Body != nil && r.Body != http.NoBody {
		// The server's own writer: MaxBytesReader tells it to close the
		// connection after the response.
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	a.Router.ServeHTTP(rec, r)
}

func (a *API) logAccess(logger zerolog.Logger, method string, info *requestInfo, status int, d time.Duration) {
	event := logger.Debug()
	if status >= 500 {
		event = logger.Error()
	}
	route := info.route
	if route == "" {
		route = "unmatched"
	}
	if a.observer != nil {
		a.observer.ObserveRequest(route, info.service, status, d)
	}
	event.
		Str("method", method).
		Str("route", route).
		Int("status", status).
		Dur("duration", d).
		Str("service", info.service).
		Msg("Internal API request")
}

// route wraps a handler with the route's logger fields and, when scopes are
// given, authentication, the rate limit and the scope check (any one of
// scopes), in that order.
func (a *API) route(path string, scopes []Scope, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		info, _ := ctx.Value(infoKey{}).(*requestInfo)
		if info != nil {
			info.route = path
		}
		logger := zerolog.Ctx(ctx).With().Str("route", path).Logger()
		if len(scopes) == 0 {
			h(w, r.WithContext(logger.WithContext(ctx)))
			return
		}

		token := r.Header.Get(HeaderToken)
		if token == "" {
			WriteError(w, r, NewError(http.StatusUnauthorized, ErrMissingToken, "missing "+HeaderToken+" header"))
			return
		}
		i := findToken(token, a.tokens)
		if i < 0 {
			WriteError(w, r, NewError(http.StatusUnauthorized, ErrUnknownToken, "unknown service token"))
			return
		}
		known := a.tokens[i].service
		if info != nil {
			info.service = known.Name
		}
		logger = logger.With().Str("service", known.Name).Logger()

		if ok, wait := a.allow(known.Name); !ok {
			WriteError(w, r, RateLimited(wait))
			return
		}
		if !slices.ContainsFunc(scopes, known.Has) {
			msg := fmt.Sprintf("service %q lacks the %q scope this route needs", known.Name, scopes[0])
			if len(scopes) > 1 {
				msg = fmt.Sprintf("service %q lacks the scopes this route needs (one of %q)", known.Name, scopes)
			}
			WriteError(w, r, Forbidden(msg))
			return
		}

		svc := &Service{Name: known.Name, Scopes: slices.Clone(known.Scopes)}
		ctx = context.WithValue(logger.WithContext(ctx), serviceKey{}, svc)
		h(w, r.WithContext(ctx))
	})
}

// allow takes a token from the service's bucket; when it is empty, it says
// how long until one is available.
func (a *API) allow(service string) (bool, time.Duration) {
	lim := a.limiters[service]
	if lim == nil {
		return true, 0
	}
	now := a.now()
	res := lim.ReserveN(now, 1)
	if !res.OK() {
		return false, time.Second
	}
	if wait := res.DelayFrom(now); wait > 0 {
		res.CancelAt(now)
		return false, wait
	}
	return true, 0
}

// recorder remembers the status for the access log.
type recorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (rec *recorder) WriteHeader(status int) {
	if !rec.wroteHeader && status >= 200 {
		rec.status = status
		rec.wroteHeader = true
	}
	rec.ResponseWriter.WriteHeader(status)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if !rec.wroteHeader {
		rec.WriteHeader(http.StatusOK)
	}
	return rec.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

func (rec *recorder) statusCode() int {
	if rec.status == 0 {
		return http.StatusOK
	}
	return rec.status
}
