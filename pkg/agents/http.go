package agents

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/synapseadmin"

	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
)

// RegisterRoutes adds the agent endpoints to the internal API: ghosts'
// display names and avatars, and user registration (ghosts through the
// appservice; humans through the homeserver's shared-secret registration,
// when hs.RegistrationSharedSecret is set).
func (s *Service) RegisterRoutes(api *internalapi.API, hs config.Homeserver) {
	reg := &registrar{
		s:             s,
		homeserverURL: strings.TrimRight(hs.URL, "/"),
		sharedSecret:  hs.RegistrationSharedSecret,
		httpClient:    &http.Client{Timeout: 30 * time.Second},
	}
	api.Handle(http.MethodPut, "/internal/matrix/users/{userId}/display-name", internalapi.ScopeAgents, s.handleSetDisplayName)
	api.Handle(http.MethodPut, "/internal/matrix/users/{userId}/avatar", internalapi.ScopeAgents, s.handleSetAvatar)
	api.HandleAnyScope(http.MethodPost, "/internal/matrix/register-user",
		[]internalapi.Scope{internalapi.ScopeAgents, internalapi.ScopeAdmin}, reg.handleRegisterUser)
}

// ForbiddenError is a 403 M_FORBIDDEN.
type ForbiddenError struct{ Message string }

func (e *ForbiddenError) Error() string { return e.Message }

// APIError is the answer: 403 M_FORBIDDEN.
func (e *ForbiddenError) APIError() *internalapi.Error { return internalapi.Forbidden(e.Message) }

// UserInUseError is a 409 M_USER_IN_USE.
type UserInUseError struct{ UserID id.UserID }

func (e *UserInUseError) Error() string { return e.UserID.String() + " is already registered" }

// APIError is the answer: 409 M_USER_IN_USE.
func (e *UserInUseError) APIError() *internalapi.Error {
	return internalapi.Conflict("M_USER_IN_USE", e.Error())
}

// GhostAgentID reads the agent id of a ghost from a Matrix user id
// (@agent_<id>:<server>) or a DAARION id (agent:<id>, or matrix:<the ghost's
// user id>). A well-formed id of anyone else (a human, the bot, a remote
// user) is a ForbiddenError: the bridge changes only its ghosts. A malformed
// id, or an invalid agent id, is a FieldError naming field.
func (s *Service) GhostAgentID(field, value string) (string, error) {
	if rest, ok := strings.CutPrefix(value, "matrix:"); ok {
		value = rest
		if !strings.HasPrefix(value, "@") {
			return "", &identity.FieldError{Field: field, Problem: "matrix: must be followed by a Matrix user id"}
		}
	}
	if strings.HasPrefix(value, "@") {
		localpart, server, err := id.UserID(value).Parse()
		if err != nil || localpart == "" || server == "" || len(value) > 255 {
			return "", &identity.FieldError{Field: field, Problem: "must be a Matrix user id such as @agent_sofia:" + s.mapper.ServerName}
		}
		agentID, isAgent := strings.CutPrefix(localpart, config.AgentLocalpartPrefix)
		if server != s.mapper.ServerName || !isAgent {
			return "", &ForbiddenError{Message: fmt.Sprintf("%s is not an agent of this bridge: only agents' profiles (@%s<id>:%s) can be changed",
				value, config.AgentLocalpartPrefix, s.mapper.ServerName)}
		}
		if _, err = s.mapper.AgentUserID(field, agentID); err != nil {
			return "", err
		}
		return agentID, nil
	}
	kind, agentID, ok := strings.Cut(value, ":")
	switch {
	case !ok:
		return "", &identity.FieldError{Field: field, Problem: "must be an agent id such as agent:sofia or @agent_sofia:" + s.mapper.ServerName}
	case kind == "user" || kind == "bridge":
		return "", &ForbiddenError{Message: fmt.Sprintf("%s is not an agent: only agents' profiles can be changed", value)}
	case kind != "agent":
		return "", &identity.FieldError{Field: field, Problem: fmt.Sprintf("unknown kind %q (an agent id is agent:<id>)", kind)}
	}
	if _, err := s.mapper.AgentUserID(field, agentID); err != nil {
		return "", err
	}
	return agentID, nil
}

const (
	// maxDisplayNameRunes is Synapse's limit on display names.
	maxDisplayNameRunes = 256
	minPasswordRunes    = 8
	// maxPasswordBytes is bcrypt's limit, which both homeservers hash with:
	// Synapse ignores what is past it, Dendrite fails the registration (500).
	maxPasswordBytes  = 72
	maxAvatarURLBytes = 1024
)

// mxcRegex is an mxc:// URI: a server name (host, IPv4/IPv6, optional port)
// and a media id of the spec's characters.
var mxcRegex = regexp.MustCompile(`^mxc://[A-Za-z0-9.:\[\]-]+/[A-Za-z0-9_-]+$`)

func validateDisplayName(field, name string) error {
	switch {
	case strings.TrimSpace(name) == "":
		return &identity.FieldError{Field: field, Problem: "must not be blank"}
	case utf8.RuneCountInString(name) > maxDisplayNameRunes:
		return &identity.FieldError{Field: field, Problem: fmt.Sprintf("must be at most %d characters", maxDisplayNameRunes)}
	case strings.ContainsFunc(name, unicode.IsControl):
		return &identity.FieldError{Field: field, Problem: "must not contain control characters"}
	}
	return nil
}

func validateAvatarURL(field, uri string) error {
	if len(uri) > maxAvatarURLBytes || !mxcRegex.MatchString(uri) {
		return &identity.FieldError{Field: field, Problem: "must be an mxc://<server>/<media id> URI"}
	}
	return nil
}

func (s *Service) handleSetDisplayName(w http.ResponseWriter, r *http.Request) error {
	return s.handleSetProfile(w, r, "display_name", validateDisplayName, func(agentID, value string) error {
		return s.SetProfile(r.Context(), agentID, &value, nil)
	})
}

func (s *Service) handleSetAvatar(w http.ResponseWriter, r *http.Request) error {
	return s.handleSetProfile(w, r, "avatar_url", validateAvatarURL, func(agentID, value string) error {
		return s.SetProfile(r.Context(), agentID, nil, &value)
	})
}

// handleSetProfile reads {field: value}, checks both, and applies it.
func (s *Service) handleSetProfile(w http.ResponseWriter, r *http.Request, field string,
	validate func(field, value string) error, apply func(agentID, value string) error) error {
	raw, _ := internalapi.PathVar(r, "userId")
	agentID, err := s.GhostAgentID("userId", raw)
	if err != nil {
		return err
	}
	value, err := internalapi.DecodeField(r, field)
	if err != nil {
		return err
	}
	if err = validate(field, value); err != nil {
		return err
	}
	if err = apply(agentID, value); err != nil {
		return err
	}
	zerolog.Ctx(r.Context()).Info().Str("agent_id", agentID).Str("field", field).Msg("Agent profile updated")
	internalapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "updated"})
	return nil
}

// registrar registers users for POST /internal/matrix/register-user.
type registrar struct {
	s             *Service
	homeserverURL string
	sharedSecret  string
	// httpClient is shared by the silent mautrix clients of registerHuman.
	httpClient *http.Client
}

// RegisterUserRequest is POST /internal/matrix/register-user.
type RegisterUserRequest struct {
	Username    string  `json:"username"`
	Password    string  `json:"password"`
	DisplayName *string `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
	Admin       bool    `json:"admin"`
}

// RegisterUserResponse is its answer. Warnings says what failed after the
// account was made (its profile): the credentials are returned all the same,
// as they cannot be had again.
type RegisterUserResponse struct {
	UserID      id.UserID   `json:"user_id"`
	AccessToken string      `json:"access_token"`
	DeviceID    id.DeviceID `json:"device_id"`
	Warnings    []string    `json:"warnings,omitempty"`
}

// classify checks the username and says whether it is an agent's ghost
// (agent_<id>), returning the agent id if so.
func (s *Service) classifyUsername(username string) (agentID string, isAgent bool, err error) {
	switch {
	case username == "":
		return "", false, &identity.FieldError{Field: "username", Problem: "is required"}
	case strings.HasPrefix(username, "@"):
		return "", false, &identity.FieldError{Field: "username", Problem: "must be a localpart (alice), not a user id"}
	}
	if rest, ok := strings.CutPrefix(username, config.AgentLocalpartPrefix); ok {
		if _, err = s.mapper.AgentUserID("username", rest); err != nil {
			return "", false, err
		}
		return rest, true, nil
	}
	if username == s.mapper.BotLocalpart {
		return "", false, &identity.FieldError{Field: "username", Problem: "is the bridge bot's localpart"}
	}
	if _, err = s.mapper.Parse("username", "user:"+username); err != nil {
		return "", false, err
	}
	return "", false, nil
}

// validate checks the rest of the request; isAgent is the username's kind.
func (req *RegisterUserRequest) validate(isAgent bool) error {
	if req.Password != "" || !isAgent {
		n := utf8.RuneCountInString(req.Password)
		switch {
		case req.Password == "":
			return &identity.FieldError{Field: "password", Problem: "is required"}
		case n < minPasswordRunes || len(req.Password) > maxPasswordBytes:
			return &identity.FieldError{Field: "password", Problem: fmt.Sprintf("must be %d to %d characters (at most %d bytes)", minPasswordRunes, maxPasswordBytes, maxPasswordBytes)}
		case strings.ContainsRune(req.Password, 0):
			return &identity.FieldError{Field: "password", Problem: "must not contain NUL"}
		}
	}
	if req.DisplayName != nil {
		if err := validateDisplayName("display_name", *req.DisplayName); err != nil {
			return err
		}
	}
	if req.AvatarURL != nil {
		if err := validateAvatarURL("avatar_url", *req.AvatarURL); err != nil {
			return err
		}
	}
	if req.Admin && isAgent {
		return &identity.FieldError{Field: "admin", Problem: "agents cannot be homeserver admins"}
	}
	return nil
}

func (reg *registrar) handleRegisterUser(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var req RegisterUserRequest
	if err := internalapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	agentID, isAgent, err := reg.s.classifyUsername(req.Username)
	if err != nil {
		return err
	}
	svc := internalapi.ServiceFrom(ctx)
	if isAgent && !svc.Has(internalapi.ScopeAgents) {
		return &ForbiddenError{Message: fmt.Sprintf("service %q lacks the %q scope needed to register an agent", svc.Name, internalapi.ScopeAgents)}
	} else if !isAgent && !svc.Has(internalapi.ScopeAdmin) {
		return &ForbiddenError{Message: fmt.Sprintf("service %q lacks the %q scope needed to register a user outside the agents' namespace", svc.Name, internalapi.ScopeAdmin)}
	}
	if err = req.validate(isAgent); err != nil {
		return err
	}
	var resp *RegisterUserResponse
	if isAgent {
		resp, err = reg.registerAgent(ctx, agentID, &req)
	} else {
		if reg.sharedSecret == "" {
			return internalapi.NewError(http.StatusNotImplemented, internalapi.ErrUnrecognized,
				"registering users outside the agents' namespace needs the homeserver's shared secret: homeserver.registration_shared_secret is not configured")
		}
		resp, err = reg.registerHuman(ctx, &req)
	}
	if err != nil {
		return err
	}
	// Neither the password nor the access token is ever logged.
	zerolog.Ctx(ctx).Info().Stringer("user_id", resp.UserID).Bool("agent", isAgent).Bool("admin", req.Admin).
		Strs("warnings", resp.Warnings).Msg("Registered a user")
	internalapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// registerAgent registers an agent's ghost through the appservice, with a
// device and access token (unlike Ensure, which inhibits login), and applies
// the profile. The password, if any, is not used: ghosts have none.
func (reg *registrar) registerAgent(ctx context.Context, agentID string, req *RegisterUserRequest) (*RegisterUserResponse, error) {
	s := reg.s
	userID, err := s.mapper.AgentUserID("username", agentID)
	if err != nil {
		return nil, err
	}
	intent := s.as.Intent(userID)
	var out mautrix.RespRegister
	_, err = intent.Client.MakeFullRequest(ctx, mautrix.FullRequest{
		Method: http.MethodPost,
		URL:    intent.BuildClientURL("v3", "register"),
		RequestJSON: &mautrix.ReqRegister[any]{
			Username: intent.UserID.Localpart(),
			Type:     mautrix.AuthTypeAppservice,
		},
		ResponseJSON:     &out,
		SensitiveContent: true,
	})
	if errors.Is(err, mautrix.MUserInUse) {
		return nil, &UserInUseError{UserID: userID}
	} else if errors.Is(err, mautrix.MExclusive) || errors.Is(err, mautrix.MInvalidUsername) {
		return nil, &identity.FieldError{Field: "username", Problem: "the homeserver refused it: " + err.Error()}
	} else if err != nil {
		return nil, HomeserverFailure("registering "+userID.String(), err)
	}
	if out.AccessToken == "" {
		return nil, &MatrixError{Status: http.StatusBadGateway, Detail: "registering " + userID.String() + ": homeserver returned no access token"}
	}
	if err = s.as.StateStore.MarkRegistered(ctx, userID); err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to mark a ghost registered")
	}
	if err = s.store.Upsert(ctx, agentID, userID); err != nil {
		return nil, err
	}
	resp := &RegisterUserResponse{UserID: out.UserID, AccessToken: out.AccessToken, DeviceID: out.DeviceID}
	if resp.UserID == "" {
		resp.UserID = userID
	}
	if req.DisplayName != nil || req.AvatarURL != nil {
		if err = s.SetProfile(ctx, agentID, req.DisplayName, req.AvatarURL); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Stringer("user_id", userID).Msg("Registered an agent, but could not set its profile")
			resp.Warnings = append(resp.Warnings, "setting the profile: "+err.Error())
		}
	}
	return resp, nil
}

// silentClient is a mautrix client of the homeserver that retries nothing (a
// registration is not idempotent), acting with token ("" for none). Call it
// with a context whose logger is zerolog.Nop(): mautrix logs through the
// context's logger, and these bodies carry passwords and access tokens.
func (reg *registrar) silentClient(token string) (*mautrix.Client, error) {
	cli, err := mautrix.NewClient(reg.homeserverURL, "", token)
	if err != nil {
		return nil, err
	}
	cli.Client = reg.httpClient
	cli.Log = zerolog.Nop()
	cli.DefaultHTTPRetries = 0
	return cli, nil
}

// registerHuman registers a user with the homeserver's shared-secret
// registration (Synapse's admin API, which Dendrite serves too; mautrix's
// synapseadmin signs it), then sets the avatar with the new user's token.
func (reg *registrar) registerHuman(ctx context.Context, req *RegisterUserRequest) (*RegisterUserResponse, error) {
	userID := id.NewUserID(req.Username, reg.s.mapper.ServerName)
	cli, err := reg.silentClient("")
	if err != nil {
		return nil, err
	}
	admin := &synapseadmin.Client{Client: cli}
	// mautrix logs through the context's logger, request bodies included.
	silent := zerolog.Nop().WithContext(ctx)
	nonce, err := admin.GetRegisterNonce(silent)
	if err != nil {
		return nil, registrationFailure("getting a registration nonce", userID, err)
	} else if nonce == "" {
		return nil, &MatrixError{Status: http.StatusBadGateway, Detail: "getting a registration nonce: homeserver returned none"}
	}
	body := synapseadmin.ReqSharedSecretRegister{Nonce: nonce, Username: req.Username, Password: req.Password, Admin: req.Admin}
	if req.DisplayName != nil {
		body.Displayname = *req.DisplayName
	}
	out, err := admin.SharedSecretRegister(silent, reg.sharedSecret, body)
	if err != nil {
		return nil, registrationFailure("registering "+userID.String(), userID, err)
	}
	if out.AccessToken == "" || out.UserID == "" {
		return nil, &MatrixError{Status: http.StatusBadGateway, Detail: "registering " + userID.String() + ": homeserver returned no user id or access token"}
	}
	resp := &RegisterUserResponse{UserID: out.UserID, AccessToken: out.AccessToken, DeviceID: out.DeviceID}
	if req.AvatarURL != nil {
		if err := reg.setOwnAvatar(ctx, out.UserID, out.AccessToken, *req.AvatarURL); err != nil {
			warning := registrationFailure("setting the avatar", out.UserID, err).Error()
			zerolog.Ctx(ctx).Warn().Stringer("user_id", out.UserID).Str("error", warning).Msg("Registered a user, but could not set the avatar")
			resp.Warnings = append(resp.Warnings, warning)
		}
	}
	return resp, nil
}

// setOwnAvatar sets a user's avatar with the user's own token.
func (reg *registrar) setOwnAvatar(ctx context.Context, userID id.UserID, token, avatarURL string) error {
	cli, err := reg.silentClient(token)
	if err != nil {
		return err
	}
	cli.UserID = userID
	return cli.SetAvatarURL(zerolog.Nop().WithContext(ctx), id.ContentURIString(avatarURL).ParseOrIgnore())
}

// registrationFailure maps a failed shared-secret registration call: a taken
// username is 409, a username or password the homeserver refuses is a 400
// naming it, anything else is the homeserver failing.
func registrationFailure(action string, userID id.UserID, err error) error {
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		return &MatrixError{Status: http.StatusServiceUnavailable, Detail: action + ": homeserver unreachable", Err: err}
	}
	he := struct {
		Status           int
		ErrCode, Message string
	}{Status: httpErr.Response.StatusCode}
	if httpErr.RespError != nil {
		he.ErrCode, he.Message = httpErr.RespError.ErrCode, httpErr.RespError.Err
	}
	switch he.ErrCode {
	case "M_USER_IN_USE":
		return &UserInUseError{UserID: userID}
	case "M_INVALID_USERNAME", "M_EXCLUSIVE":
		return &identity.FieldError{Field: "username", Problem: "the homeserver refused it: " + he.ErrCode + " " + he.Message}
	case "M_WEAK_PASSWORD", "M_PASSWORD_TOO_SHORT", "M_PASSWORD_NO_DIGIT", "M_PASSWORD_NO_UPPERCASE",
		"M_PASSWORD_NO_LOWERCASE", "M_PASSWORD_NO_SYMBOL", "M_PASSWORD_IN_DICTIONARY":
		return &identity.FieldError{Field: "password", Problem: "the homeserver refused it: " + he.ErrCode + " " + he.Message}
	}
	detail := fmt.Sprintf("%s: homeserver answered %d %s", action, he.Status, he.ErrCode)
	if he.Status == http.StatusForbidden {
		detail += " (is homeserver.registration_shared_secret the homeserver's?)"
	}
	return &MatrixError{Status: http.StatusBadGateway, Detail: detail, Err: err}
}
