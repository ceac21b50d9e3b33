package webhook

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"

	"github.com/daarion/matrix-bridge/pkg/identity"
	"github.com/daarion/matrix-bridge/pkg/internalapi"
	"github.com/daarion/matrix-bridge/pkg/rooms"
)

// API is the subscription endpoints.
type API struct {
	store     *Store
	policy    Policy
	deliverer *Deliverer
}

// NewAPI returns the subscription endpoints.
func NewAPI(store *Store, policy Policy, deliverer *Deliverer) *API {
	return &API{store: store, policy: policy, deliverer: deliverer}
}

// RegisterRoutes adds the webhook endpoints (scope subscriptions).
func (a *API) RegisterRoutes(api *internalapi.API) {
	const base = "/internal/matrix/webhook/subscribe"
	api.Handle(http.MethodPost, base, internalapi.ScopeSubscriptions, a.handleSubscribe)
	api.Handle(http.MethodGet, "/internal/matrix/webhook/subscriptions", internalapi.ScopeSubscriptions, a.handleList)
	api.Handle(http.MethodGet, base+"/{id}", internalapi.ScopeSubscriptions, a.withSubscription(a.handleGet))
	api.Handle(http.MethodDelete, base+"/{id}", internalapi.ScopeSubscriptions, a.withSubscription(a.handleDelete))
	api.Handle(http.MethodGet, base+"/{id}/dead-letters", internalapi.ScopeSubscriptions, a.withSubscription(a.handleDeadLetters))
	api.Handle(http.MethodPost, base+"/{id}/redeliver", internalapi.ScopeSubscriptions, a.withSubscription(a.handleRedeliver))
	api.Handle(http.MethodPost, base+"/{id}/pause", internalapi.ScopeSubscriptions, a.withSubscription(a.handleState(StatePaused)))
	api.Handle(http.MethodPost, base+"/{id}/resume", internalapi.ScopeSubscriptions, a.withSubscription(a.handleState(StateActive)))
}

const maxEventTypes = 100

func (a *API) handleSubscribe(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		RoomID     string   `json:"room_id"`
		CitySlug   string   `json:"city_slug"`
		WebhookURL string   `json:"webhook_url"`
		Events     []string `json:"events"`
	}
	if err := internalapi.DecodeJSON(r, &req); err != nil {
		return err
	}
	var filter string
	switch {
	case req.RoomID != "" && req.CitySlug != "":
		return internalapi.InvalidField("city_slug", `give room_id (a room id or "*") or city_slug, not both`)
	case req.RoomID == "*":
		filter = "*"
	case req.RoomID != "":
		if err := rooms.ValidateRoomID("room_id", id.RoomID(req.RoomID)); err != nil {
			return internalapi.InvalidField("room_id", `must be a Matrix room id or "*"`)
		}
		filter = req.RoomID
	case req.CitySlug != "":
		if err := rooms.ValidateSlug("city_slug", req.CitySlug); err != nil {
			return internalapi.InvalidField("city_slug", err.(*identity.FieldError).Problem)
		}
		filter = "city:" + req.CitySlug
	default:
		return internalapi.InvalidField("room_id", `is required (a room id or "*"), or city_slug`)
	}
	if req.WebhookURL == "" {
		return internalapi.InvalidField("webhook_url", "is required")
	}
	if err := a.policy.CheckURL(req.WebhookURL); err != nil {
		return internalapi.InvalidField("webhook_url", err.Error())
	}
	if len(req.Events) > maxEventTypes {
		return internalapi.InvalidField("events", "must list at most 100 types")
	}
	for i, t := range req.Events {
		if t == "" || len(t) > 255 || strings.ContainsAny(t, " \x00") {
			return internalapi.InvalidField("events["+strconv.Itoa(i)+"]", "must be a Matrix event type or a DTO type")
		}
	}
	if req.Events == nil {
		req.Events = []string{}
	}
	sub := &Subscription{
		ID: newSubscriptionID(), Service: internalapi.ServiceFrom(r.Context()).Name, RoomFilter: filter,
		URL: req.WebhookURL, EventTypes: req.Events, Secret: NewSecret(), State: StateActive,
	}
	if a.policy.MaxPerService > 0 {
		n, err := a.store.CountSubscriptions(r.Context(), sub.Service)
		if err != nil {
			return err
		}
		if n >= a.policy.MaxPerService {
			return internalapi.NewError(http.StatusForbidden, internalapi.ErrLimitExceeded,
				fmt.Sprintf("service %q has %d subscriptions, the most delivery.max_subscriptions_per_service allows; delete one first", sub.Service, n))
		}
	}
	if err := a.store.CreateSubscription(r.Context(), sub); err != nil {
		return err
	}
	internalapi.WriteJSON(w, http.StatusOK, map[string]string{"subscription_id": sub.ID, "secret": sub.Secret})
	return nil
}

func newSubscriptionID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "sub_" + hex.EncodeToString(b)
}

// subscriptionJSON is a subscription in answers; the secret is shown only
// once, when it is created.
type subscriptionJSON struct {
	SubscriptionID string    `json:"subscription_id"`
	Service        string    `json:"service"`
	RoomID         string    `json:"room_id,omitempty"`
	CitySlug       string    `json:"city_slug,omitempty"`
	WebhookURL     string    `json:"webhook_url"`
	Events         []string  `json:"events"`
	State          string    `json:"state"`
	StateReason    string    `json:"state_reason,omitempty"`
	Pending        int64     `json:"pending"`
	DeadLetters    int64     `json:"dead_letters"`
	CreatedAt      time.Time `json:"created_at"`
}

func (a *API) toJSON(r *http.Request, sub *Subscription) (subscriptionJSON, error) {
	out := subscriptionJSON{SubscriptionID: sub.ID, Service: sub.Service, WebhookURL: sub.URL, Events: sub.EventTypes,
		State: sub.State, StateReason: sub.StateReason, CreatedAt: sub.CreatedAt.UTC()}
	if slug, ok := strings.CutPrefix(sub.RoomFilter, "city:"); ok {
		out.CitySlug = slug
	} else {
		out.RoomID = sub.RoomFilter
	}
	var err error
	out.Pending, out.DeadLetters, err = a.store.Counts(r.Context(), sub.ID)
	return out, err
}

// visibleTo: a service sees its own subscriptions; admin sees all.
func visibleTo(r *http.Request, sub *Subscription) bool {
	svc := internalapi.ServiceFrom(r.Context())
	return sub.Service == svc.Name || svc.Has(internalapi.ScopeAdmin)
}

func (a *API) handleList(w http.ResponseWriter, r *http.Request) error {
	svc := internalapi.ServiceFrom(r.Context())
	owner := svc.Name
	if svc.Has(internalapi.ScopeAdmin) {
		owner = ""
	}
	subs, err := a.store.Subscriptions(r.Context(), owner)
	if err != nil {
		return err
	}
	out := make([]subscriptionJSON, 0, len(subs))
	for _, sub := range subs {
		j, err := a.toJSON(r, sub)
		if err != nil {
			return err
		}
		out = append(out, j)
	}
	internalapi.WriteJSON(w, http.StatusOK, map[string]any{"subscriptions": out})
	return nil
}

func (a *API) withSubscription(h func(http.ResponseWriter, *http.Request, *Subscription) error) internalapi.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		subID, _ := internalapi.PathVar(r, "id")
		// PostgreSQL cannot compare NUL or non-UTF-8 text: no such id.
		if !storable(subID) {
			return internalapi.NotFound("no such subscription")
		}
		sub, err := a.store.Subscription(r.Context(), subID)
		if err != nil {
			return err
		}
		if sub == nil || !visibleTo(r, sub) {
			return internalapi.NotFound("no such subscription")
		}
		return h(w, r, sub)
	}
}

func (a *API) handleGet(w http.ResponseWriter, r *http.Request, sub *Subscription) error {
	j, err := a.toJSON(r, sub)
	if err != nil {
		return err
	}
	internalapi.WriteJSON(w, http.StatusOK, j)
	return nil
}

func (a *API) handleDelete(w http.ResponseWriter, r *http.Request, sub *Subscription) error {
	if err := a.store.DeleteSubscription(r.Context(), sub.ID); err != nil {
		return err
	}
	internalapi.WriteJSON(w, http.StatusOK, map[string]string{"status": "unsubscribed"})
	return nil
}

func (a *API) handleDeadLetters(w http.ResponseWriter, r *http.Request, sub *Subscription) error {
	dead, err := a.store.DeadLetters(r.Context(), sub.ID, 500)
	if err != nil {
		return err
	}
	type letter struct {
		EventID       string    `json:"event_id"`
		RoomID        string    `json:"room_id"`
		Attempts      int       `json:"attempts"`
		LastError     string    `json:"last_error"`
		FirstFailedAt time.Time `json:"first_failed_at"`
	}
	out := make([]letter, 0, len(dead))
	for _, d := range dead {
		out = append(out, letter{d.EventID, d.RoomID, d.Attempts, d.LastError, d.FirstFailedAt.UTC()})
	}
	internalapi.WriteJSON(w, http.StatusOK, map[string]any{"dead_letters": out})
	return nil
}

func (a *API) handleRedeliver(w http.ResponseWriter, r *http.Request, sub *Subscription) error {
	var req struct {
		EventID string `json:"event_id"`
	}
	if r.ContentLength != 0 {
		if err := internalapi.DecodeJSON(r, &req); err != nil {
			return err
		}
	}
	if len(req.EventID) > 255 || !storable(req.EventID) {
		return internalapi.InvalidField("event_id", "must be an event id (at most 255 bytes of UTF-8, without NUL)")
	}
	n, err := a.store.Redeliver(r.Context(), sub.ID, req.EventID)
	if err != nil {
		return err
	}
	a.deliverer.Wake()
	internalapi.WriteJSON(w, http.StatusOK, map[string]int64{"redelivered": n})
	return nil
}

// storable reports whether PostgreSQL can store s as text, or compare text
// with it: it refuses NUL and bytes that are not UTF-8, with an error (a 500)
// instead of no match.
func storable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

func (a *API) handleState(state string) func(http.ResponseWriter, *http.Request, *Subscription) error {
	return func(w http.ResponseWriter, r *http.Request, sub *Subscription) error {
		if err := a.store.SetState(r.Context(), sub.ID, state, ""); err != nil {
			return err
		}
		a.deliverer.Wake()
		internalapi.WriteJSON(w, http.StatusOK, map[string]string{"subscription_id": sub.ID, "state": state})
		return nil
	}
}
