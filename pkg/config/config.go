// Package config loads the bridge's YAML configuration, applies the
// platform's environment overrides and validates the result. Every error
// names the key (or environment variable) that is wrong.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"
)

// Config is the whole bridge configuration. config.example.yaml documents
// every key.
type Config struct {
	Homeserver  Homeserver  `yaml:"homeserver"`
	AppService  AppService  `yaml:"appservice"`
	Database    Database    `yaml:"database"`
	InternalAPI InternalAPI `yaml:"internal_api"`
	Rooms       Rooms       `yaml:"rooms"`
	Agents      Agents      `yaml:"agents"`
	Media       Media       `yaml:"media"`
	Delivery    Delivery    `yaml:"delivery"`
	Metrics     Metrics     `yaml:"metrics"`
	Health      Health      `yaml:"health"`
	Retention   Retention   `yaml:"retention"`
	Reconcile   Reconcile   `yaml:"reconcile"`
	Encryption  Encryption  `yaml:"encryption"`
	Logging     Logging     `yaml:"logging"`
	// Permissions say who may use the bridge bot's commands: a Matrix user
	// id, a server name, or "*" → "admin" or "user"; the most specific wins.
	Permissions map[string]string `yaml:"permissions"`
}

// Permission levels of the bridge bot's commands.
const (
	PermissionAdmin = "admin"
	PermissionUser  = "user"
)

// Homeserver is how the bridge reaches the Matrix homeserver.
type Homeserver struct {
	URL        string `yaml:"url"`
	ServerName string `yaml:"server_name"`
	AdminToken string `yaml:"admin_token"`
	// RegistrationSharedSecret enables registering humans through the
	// homeserver's shared-secret registration (/_synapse/admin/v1/register).
	RegistrationSharedSecret string `yaml:"registration_shared_secret"`
	// PingOnStart asks the homeserver to ping the bridge back on start.
	PingOnStart bool `yaml:"ping_on_start"`
}

// AppService is the bridge's side of the appservice registration.
type AppService struct {
	ID      string `yaml:"id"`
	URL     string `yaml:"url"`
	Listen  string `yaml:"listen"`
	ASToken string `yaml:"as_token"`
	HSToken string `yaml:"hs_token"`

	Bot Bot `yaml:"bot"`

	// AllowQueryToken accepts the hs_token in the legacy access_token query
	// parameter as well as the Authorization header.
	AllowQueryToken bool `yaml:"allow_query_token"`
	// MaxBodyBytes bounds a transaction body.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// EphemeralEvents asks the homeserver for typing, receipts and presence.
	EphemeralEvents bool `yaml:"ephemeral_events"`
	// MaxJournalBacklog is the hard limit of answered transactions not yet
	// in the event log: past it, transactions are answered 503 so that the
	// homeserver backs off instead of the database filling up. 0: no limit.
	MaxJournalBacklog int64 `yaml:"max_journal_backlog"`
	// PaceJournalEvents is the soft limit: past half of it events behind
	// the transactions this process answered, the leader's answers are
	// spread at its indexer's measured rate; at it, each answer (after its
	// commit) waits, up to a second, for the indexer to catch up, so the homeserver sends no faster than the log takes
	// events in. 0: no pacing.
	PaceJournalEvents int `yaml:"pace_journal_events"`

	DoublePuppet DoublePuppet `yaml:"double_puppet"`
}

// Bot is the bridge bot user.
type Bot struct {
	Localpart   string `yaml:"localpart"`
	Displayname string `yaml:"displayname"`
	AvatarURL   string `yaml:"avatar_url"`
}

// DoublePuppet is the opt-in, non-exclusive namespace of local humans the
// bridge may act for.
type DoublePuppet struct {
	Enabled bool `yaml:"enabled"`
	// UserRegex is the users namespace regex; empty means every local user.
	UserRegex string `yaml:"user_regex"`
}

// Database is where the event log and the bridge's tables live.
type Database struct {
	URL          string `yaml:"url"`
	MaxOpenConns int    `yaml:"max_open_conns"`
	MaxIdleConns int    `yaml:"max_idle_conns"`
	// PollInterval is how often the leader's journal indexer and consumers,
	// and every process's waiting syncs, read the database for what another
	// bridge process wrote; what this process writes wakes them at once.
	PollInterval Duration `yaml:"poll_interval"`
	// GroupCommit is how often, at most, the leader's journal indexer reads
	// a batch: while transactions come faster, each commit takes all that
	// came in the interval (fewer commits under load, each taking more); a
	// longer commit, and an indexer idle for longer, do not wait. 0: none.
	GroupCommit Duration `yaml:"group_commit"`
}

// maxGroupCommit bounds the indexer's wait: it delays every event behind it.
const maxGroupCommit = 100 * time.Millisecond

// Poll is PollInterval (validated).
func (d Database) Poll() time.Duration { return d.PollInterval.Duration }

// minPollInterval bounds how hard an idle bridge reads its database.
const minPollInterval = 10 * time.Millisecond

// InternalAPI is the listener DAARION services call.
type InternalAPI struct {
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	// ServiceSecret is one token with every scope (INTERNAL_SERVICE_SECRET).
	ServiceSecret string `yaml:"service_secret"`
	// Services are named tokens, each with its scopes.
	Services []ServiceToken `yaml:"services"`
	// RateLimit applies per service.
	RateLimit RateLimit `yaml:"rate_limit"`
	// MaxBodyBytes bounds a request body (uploads have their own limit).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// ServiceToken is one DAARION service's credentials.
type ServiceToken struct {
	Name   string   `yaml:"name"`
	Token  string   `yaml:"token"`
	Scopes []string `yaml:"scopes"`
}

// Scopes a service token can have.
var Scopes = []string{"rooms", "messaging", "agents", "subscriptions", "admin", "any_room", "timestamps"}

// SecretScopes are the scopes INTERNAL_SERVICE_SECRET carries: every scope
// but any_room, which reaches rooms the bridge does not manage for DAARION,
// and timestamps, which back-dates what it sends (imported history): those
// must be given by name, to a named service.
var SecretScopes = []string{"rooms", "messaging", "agents", "subscriptions", "admin"}

// SecretServiceName names the service INTERNAL_SERVICE_SECRET authenticates.
const SecretServiceName = "internal"

// RateLimit is a token bucket: a steady rate and a burst.
type RateLimit struct {
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	Burst             int     `yaml:"burst"`
}

// Rooms configures city rooms.
type Rooms struct {
	// HistoryVisibility of new city rooms: shared, invited, joined or world_readable.
	HistoryVisibility string `yaml:"history_visibility"`
	// GuestAccess of new city rooms: can_join or forbidden.
	GuestAccess string `yaml:"guest_access"`
	// CreateOnAliasQuery lets a user joining an unknown #city_<slug> create it.
	CreateOnAliasQuery bool `yaml:"create_on_alias_query"`
	// MetadataCacheTTL bounds how long room metadata is served from the cache.
	MetadataCacheTTL Duration `yaml:"metadata_cache_ttl"`
	// Space is the city as a Matrix space (#city:<server>).
	Space CitySpace `yaml:"space"`
}

// CitySpace configures the DAARION City space that holds every city room.
type CitySpace struct {
	Enabled bool   `yaml:"enabled"`
	Name    string `yaml:"name"`
	Topic   string `yaml:"topic"`
}

// CitySpaceLocalpart is the city space's alias localpart: #city:<server>,
// inside the appservice's alias namespace (CityAliasRegex).
const CitySpaceLocalpart = "city"

// DefaultSpaceName names the city space when rooms.space.name is unset.
const DefaultSpaceName = "DAARION City"

// SpaceEnabled reports whether the city has a space.
func (r Rooms) SpaceEnabled() bool { return r.Space.Enabled }

// SpaceName is the city space's name.
func (r Rooms) SpaceName() string {
	if r.Space.Name == "" {
		return DefaultSpaceName
	}
	return r.Space.Name
}

// Agents (agent ghosts) is in agents.go.

// Media configures uploads.
type Media struct {
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
}

// Delivery tunes the sinks that carry DTOs to DAARION services.
type Delivery struct {
	WebhookTimeoutMS int    `yaml:"webhook_timeout_ms"`
	SyncTimeoutMS    int    `yaml:"sync_timeout_ms"`
	NATSURL          string `yaml:"nats_url"`
	// WebhookRetryWindow is how long a failing delivery is retried before it
	// goes to the dead-letter list.
	WebhookRetryWindow Duration `yaml:"webhook_retry_window"`
	// WebhookMaxBackoff caps the wait between two attempts.
	WebhookMaxBackoff Duration `yaml:"webhook_max_backoff"`
	// WebhookWorkers is how many (subscription, room) queues are delivered at once.
	WebhookWorkers int `yaml:"webhook_workers"`
	// WebhookAllowLinkLocal allows webhook URLs on link-local and cloud
	// metadata addresses (169.254.0.0/16, fe80::/10), refused by default.
	WebhookAllowLinkLocal bool `yaml:"webhook_allow_link_local"`
	// MaxSubscriptionsPerService caps one service's webhook subscriptions
	// (0: no cap).
	MaxSubscriptionsPerService int `yaml:"max_subscriptions_per_service"`
}

// WebhookTimeout is WebhookTimeoutMS (WEBHOOK_TIMEOUT_MS, a whole number of
// milliseconds as the platform's deployments write it).
func (d Delivery) WebhookTimeout() time.Duration {
	return time.Duration(d.WebhookTimeoutMS) * time.Millisecond
}

// SyncTimeout is SyncTimeoutMS (SYNC_TIMEOUT_MS, milliseconds).
func (d Delivery) SyncTimeout() time.Duration {
	return time.Duration(d.SyncTimeoutMS) * time.Millisecond
}

// RetryWindow is WebhookRetryWindow (validated).
func (d Delivery) RetryWindow() time.Duration { return d.WebhookRetryWindow.Duration }

// MaxBackoff is WebhookMaxBackoff (validated).
func (d Delivery) MaxBackoff() time.Duration { return d.WebhookMaxBackoff.Duration }

// Metrics is the Prometheus listener; empty Listen turns it off.
type Metrics struct {
	Listen string `yaml:"listen"`
	// Pprof also serves Go's profiler (/debug/pprof/) on the metrics
	// listener: for profiling a bridge under load; off by default, as it
	// shows the process's internals to whoever reaches the listener.
	Pprof bool `yaml:"pprof"`
}

// Health sets when /healthz reports degraded (and the health_degraded
// metric is 1): besides no process leading, a journal backlog or a
// consumer lag at or past these. 0 turns a threshold off.
type Health struct {
	MaxJournalBacklog int64 `yaml:"max_journal_backlog"`
	MaxConsumerLag    int64 `yaml:"max_consumer_lag"`
}

// Logging sets the log level and format.
type Logging struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"` // json or pretty
}

// Default returns the embedded defaults: everything local, SQLite, loopback.
func Default() *Config {
	return &Config{
		Homeserver: Homeserver{
			URL:         "http://127.0.0.1:8008",
			ServerName:  "localhost",
			PingOnStart: true,
		},
		AppService: AppService{
			ID:              "daarion",
			URL:             "http://127.0.0.1:29330",
			Listen:          "127.0.0.1:29330",
			Bot:             Bot{Localpart: "daarion-bot", Displayname: "DAARION Bridge"},
			MaxBodyBytes:    32 << 20,
			EphemeralEvents: true,
			// A transaction is at most ~6.5 MB (Synapse's 100 events of
			// 65 KB), so this bounds the journal at a few tens of GB in the
			// worst case, hundreds of MB typically; the indexer drains
			// tens of thousands a second.
			MaxJournalBacklog: 50000,
			PaceJournalEvents: 20000,
		},
		Health:     Health{MaxJournalBacklog: 1000, MaxConsumerLag: 100000},
		Retention:  defaultRetention(),
		Reconcile:  defaultReconcile(),
		Encryption: defaultEncryption(),
		Database:   Database{URL: "sqlite:daarion-bridge.db", PollInterval: NewDuration("1s"), GroupCommit: NewDuration("5ms")},
		InternalAPI: InternalAPI{
			Host:         "127.0.0.1",
			Port:         7025,
			Services:     []ServiceToken{},
			RateLimit:    RateLimit{RequestsPerSecond: 100, Burst: 200},
			MaxBodyBytes: 1 << 20,
		},
		Rooms: Rooms{
			HistoryVisibility: "shared",
			GuestAccess:       "forbidden",
			MetadataCacheTTL:  NewDuration("5m"),
			Space:             CitySpace{Enabled: true, Name: DefaultSpaceName},
		},
		Agents:      defaultAgents(),
		Media:       Media{MaxUploadBytes: 50 << 20},
		Delivery:    Delivery{WebhookTimeoutMS: 5000, SyncTimeoutMS: 30000, WebhookRetryWindow: NewDuration("24h"), WebhookMaxBackoff: NewDuration("1h"), WebhookWorkers: 8, MaxSubscriptionsPerService: 100},
		Logging:     Logging{Level: "info", Format: "json"},
		Permissions: map[string]string{},
	}
}

// Load reads path (when not empty) over the defaults, applies the
// environment (as given by getenv), and validates.
func Load(path string, getenv func(string) string) (*Config, error) {
	cfg := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("failed to read config file: %w", err)
		}
		if err = Parse(data, cfg); err != nil {
			return nil, err
		}
	}
	if err := cfg.ApplyEnv(getenv); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse decodes YAML into cfg. Unknown keys are errors: a misspelt key would
// otherwise silently fall back to its default.
func Parse(data []byte, cfg *Config) (err error) {
	// yaml.v3 panics on some malformed input (a mapping used as a key
	// beside a merge key) instead of returning an error.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid config file: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("invalid config file: %w", err)
	}
	return nil
}

// envVar is one environment override: the names it is read from, first wins.
type envVar struct {
	names []string
	set   func(cfg *Config, value string) error
}

func setString(field func(*Config) *string) func(*Config, string) error {
	return func(cfg *Config, v string) error { *field(cfg) = v; return nil }
}

func setInt(field func(*Config) *int) func(*Config, string) error {
	return func(cfg *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("not a whole number: %q", v)
		}
		*field(cfg) = n
		return nil
	}
}

// EnvVars lists the environment overrides in the order they are applied.
// The names are the ones the platform's deployments use.
var envVars = []envVar{
	{[]string{"MATRIX_HOMESERVER_URL", "SYNAPSE_URL"}, setString(func(c *Config) *string { return &c.Homeserver.URL })},
	{[]string{"MATRIX_SERVER_NAME"}, setString(func(c *Config) *string { return &c.Homeserver.ServerName })},
	{[]string{"MATRIX_ADMIN_TOKEN", "SYNAPSE_ADMIN_TOKEN"}, setString(func(c *Config) *string { return &c.Homeserver.AdminToken })},
	{[]string{"INTERNAL_SERVICE_SECRET"}, setString(func(c *Config) *string { return &c.InternalAPI.ServiceSecret })},
	{[]string{"MATRIX_GATEWAY_PORT"}, setInt(func(c *Config) *int { return &c.InternalAPI.Port })},
	{[]string{"MATRIX_GATEWAY_HOST"}, setString(func(c *Config) *string { return &c.InternalAPI.Host })},
	{[]string{"APPSERVICE_URL"}, setString(func(c *Config) *string { return &c.AppService.URL })},
	{[]string{"APPSERVICE_LISTEN"}, setString(func(c *Config) *string { return &c.AppService.Listen })},
	{[]string{"DATABASE_URL"}, setString(func(c *Config) *string { return &c.Database.URL })},
	{[]string{"WEBHOOK_TIMEOUT_MS"}, setInt(func(c *Config) *int { return &c.Delivery.WebhookTimeoutMS })},
	{[]string{"SYNC_TIMEOUT_MS"}, setInt(func(c *Config) *int { return &c.Delivery.SyncTimeoutMS })},
	{[]string{"NATS_URL"}, setString(func(c *Config) *string { return &c.Delivery.NATSURL })},
	{[]string{"METRICS_LISTEN"}, setString(func(c *Config) *string { return &c.Metrics.Listen })},
	{[]string{"ENCRYPTION_PICKLE_KEY"}, setString(func(c *Config) *string { return &c.Encryption.PickleKey })},
	{[]string{"LOG_LEVEL"}, setString(func(c *Config) *string { return &c.Logging.Level })},
}

// EnvNames returns every environment variable the bridge reads.
func EnvNames() []string {
	var names []string
	for _, ev := range envVars {
		names = append(names, ev.names...)
	}
	return names
}

// ApplyEnv overrides keys from the environment. An alias (SYNAPSE_URL) is
// used only when the primary name (MATRIX_HOMESERVER_URL) is unset.
func (cfg *Config) ApplyEnv(getenv func(string) string) error {
	if getenv == nil {
		return nil
	}
	for _, ev := range envVars {
		for _, name := range ev.names {
			value := getenv(name)
			if value == "" {
				continue
			}
			if err := ev.set(cfg, value); err != nil {
				return fmt.Errorf("environment variable %s: %w", name, err)
			}
			break
		}
	}
	return nil
}

// FieldError is a validation error that names the key.
type FieldError struct {
	Key     string
	Message string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Message }

// Shortest secrets accepted. The appservice tokens are what bridge -g
// generates (64 characters) or what a homeserver admin chose; the service
// secret and the named service tokens are handed to DAARION services.
const (
	minAppserviceTokenLength = 32
	minServiceTokenLength    = 24
)

var (
	localpartRegex  = regexp.MustCompile(`^[a-z0-9._=/+-]+$`)
	serverNameRegex = regexp.MustCompile(`^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$`)
	appserviceID    = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

// Validate checks every key; the error lists each problem with its key.
func (cfg *Config) Validate() error {
	var errs []error
	fail := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: key, Message: fmt.Sprintf(format, args...)})
	}
	checkHTTPURL := func(key, value string) {
		u, err := url.Parse(value)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			fail(key, "must be an http:// or https:// URL, got %q", value)
		}
	}
	checkOneOf := func(key, value string, allowed ...string) {
		if !slices.Contains(allowed, value) {
			last := len(allowed) - 1
			fail(key, "must be %s or %s, got %q", strings.Join(allowed[:last], ", "), allowed[last], value)
		}
	}
	checkHostPort := func(key, value string) {
		if _, port, err := net.SplitHostPort(value); err != nil {
			fail(key, "must be host:port, got %q", value)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			fail(key, "port must be 0-65535, got %q", port)
		}
	}

	checkHTTPURL("homeserver.url", cfg.Homeserver.URL)
	if !serverNameRegex.MatchString(cfg.Homeserver.ServerName) {
		fail("homeserver.server_name", "must be a Matrix server name such as example.org, got %q", cfg.Homeserver.ServerName)
	}

	as := &cfg.AppService
	if !appserviceID.MatchString(as.ID) {
		fail("appservice.id", "must be letters, digits, '.', '_' or '-', got %q", as.ID)
	}
	checkHTTPURL("appservice.url", as.URL)
	checkHostPort("appservice.listen", as.Listen)
	if !localpartRegex.MatchString(as.Bot.Localpart) {
		fail("appservice.bot.localpart", "must be a Matrix localpart (a-z, 0-9, ._=/+-), got %q", as.Bot.Localpart)
	} else if strings.HasPrefix(as.Bot.Localpart, AgentLocalpartPrefix) {
		fail("appservice.bot.localpart", "must not start with %q, the agents' namespace", AgentLocalpartPrefix)
	}
	// Empty tokens are filled by bridge -g; the bridge refuses to start
	// without them.
	for _, token := range []struct{ key, value string }{{"appservice.as_token", as.ASToken}, {"appservice.hs_token", as.HSToken}} {
		if n := utf8.RuneCountInString(token.value); n > 0 && n < minAppserviceTokenLength {
			fail(token.key, "must be at least %d characters, got %d (leave it empty for bridge -g to generate one, and register the bridge again)", minAppserviceTokenLength, n)
		}
	}
	if cfg.Delivery.MaxSubscriptionsPerService < 0 {
		fail("delivery.max_subscriptions_per_service", "must be 0 (no cap) or more, got %d", cfg.Delivery.MaxSubscriptionsPerService)
	}
	if as.PaceJournalEvents < 0 {
		fail("appservice.pace_journal_events", "must be 0 (no pacing) or more, got %d", as.PaceJournalEvents)
	}
	if as.MaxJournalBacklog < 0 {
		fail("appservice.max_journal_backlog", "must be 0 (no limit) or more, got %d", as.MaxJournalBacklog)
	}
	if cfg.Health.MaxJournalBacklog < 0 {
		fail("health.max_journal_backlog", "must be 0 (off) or more, got %d", cfg.Health.MaxJournalBacklog)
	}
	if cfg.Health.MaxConsumerLag < 0 {
		fail("health.max_consumer_lag", "must be 0 (off) or more, got %d", cfg.Health.MaxConsumerLag)
	}
	if as.MaxBodyBytes < 16<<20 {
		fail("appservice.max_body_bytes", "must be at least 16 MiB (16777216): a full transaction can be ~6.5 MB, got %d", as.MaxBodyBytes)
	}
	if as.DoublePuppet.UserRegex != "" {
		if _, err := regexp.Compile(as.DoublePuppet.UserRegex); err != nil {
			fail("appservice.double_puppet.user_regex", "invalid regular expression: %v", err)
		}
	}

	if _, _, err := splitDatabaseURL(cfg.Database.URL); err != nil {
		fail("database.url", "%v", err)
	}
	if cfg.Database.MaxOpenConns < 0 {
		fail("database.max_open_conns", "must not be negative")
	}
	if cfg.Database.MaxIdleConns < 0 {
		fail("database.max_idle_conns", "must not be negative")
	}
	if d := cfg.Database.PollInterval; !d.Valid() || d.Duration < minPollInterval {
		fail("database.poll_interval", "must be a duration of at least %v such as 1s, got %q", minPollInterval, cfg.Database.PollInterval)
	}
	if d := cfg.Database.GroupCommit; !d.Valid() || d.Duration < 0 || d.Duration > maxGroupCommit {
		fail("database.group_commit", "must be a duration from 0 (none) to %v such as 5ms, got %q", maxGroupCommit, cfg.Database.GroupCommit)
	}

	if cfg.InternalAPI.Port < 1 || cfg.InternalAPI.Port > 65535 {
		fail("internal_api.port", "must be 1-65535, got %d", cfg.InternalAPI.Port)
	}
	if net.ParseIP(cfg.InternalAPI.Host) == nil && cfg.InternalAPI.Host != "localhost" {
		fail("internal_api.host", "must be an IP address to listen on, got %q", cfg.InternalAPI.Host)
	}

	// Empty means no such token.
	if n := utf8.RuneCountInString(cfg.InternalAPI.ServiceSecret); n > 0 && n < minServiceTokenLength {
		fail("internal_api.service_secret", "must be at least %d characters (INTERNAL_SERVICE_SECRET), got %d", minServiceTokenLength, n)
	}
	seenNames := map[string]bool{}
	for i, svc := range cfg.InternalAPI.Services {
		key := fmt.Sprintf("internal_api.services[%d]", i)
		switch {
		case !appserviceID.MatchString(svc.Name):
			fail(key+".name", "must be letters, digits, '.', '_' or '-', got %q", svc.Name)
		case seenNames[svc.Name] || svc.Name == SecretServiceName && cfg.InternalAPI.ServiceSecret != "":
			fail(key+".name", "%q is used twice", svc.Name)
		}
		seenNames[svc.Name] = true
		if n := utf8.RuneCountInString(svc.Token); n < minServiceTokenLength {
			fail(key+".token", "must be at least %d characters, got %d", minServiceTokenLength, n)
		}
		if len(svc.Scopes) == 0 {
			fail(key+".scopes", "must list at least one of %s", strings.Join(Scopes, ", "))
		}
		for j, scope := range svc.Scopes {
			if !slices.Contains(Scopes, scope) {
				fail(fmt.Sprintf("%s.scopes[%d]", key, j), "unknown scope %q (known: %s)", scope, strings.Join(Scopes, ", "))
			}
		}
	}
	if rps := cfg.InternalAPI.RateLimit.RequestsPerSecond; !(rps > 0) || math.IsInf(rps, 0) { // !(>0) also catches NaN
		fail("internal_api.rate_limit.requests_per_second", "must be positive")
	}
	if cfg.InternalAPI.RateLimit.Burst < 1 {
		fail("internal_api.rate_limit.burst", "must be at least 1")
	}
	if cfg.InternalAPI.MaxBodyBytes < 1024 {
		fail("internal_api.max_body_bytes", "must be at least 1024")
	}
	checkOneOf("rooms.history_visibility", cfg.Rooms.HistoryVisibility, "shared", "invited", "joined", "world_readable")
	checkOneOf("rooms.guest_access", cfg.Rooms.GuestAccess, "can_join", "forbidden")
	if d := cfg.Rooms.MetadataCacheTTL; !d.Valid() || d.Duration <= 0 {
		fail("rooms.metadata_cache_ttl", "must be a positive duration such as 5m, got %q", cfg.Rooms.MetadataCacheTTL)
	}

	cfg.Agents.validate(fail)
	cfg.Retention.validate(fail)
	cfg.Reconcile.validate(fail)
	cfg.Encryption.validate(cfg.AppService.EphemeralEvents, fail)
	if cfg.Media.MaxUploadBytes < 1 {
		fail("media.max_upload_bytes", "must be positive, got %d", cfg.Media.MaxUploadBytes)
	}

	if cfg.Delivery.WebhookTimeoutMS < 1 {
		fail("delivery.webhook_timeout_ms", "must be positive, got %d", cfg.Delivery.WebhookTimeoutMS)
	}
	if d := cfg.Delivery.WebhookRetryWindow; !d.Valid() || d.Duration <= 0 {
		fail("delivery.webhook_retry_window", "must be a positive duration such as 24h, got %q", cfg.Delivery.WebhookRetryWindow)
	}
	if d := cfg.Delivery.WebhookMaxBackoff; !d.Valid() || d.Duration <= 0 {
		fail("delivery.webhook_max_backoff", "must be a positive duration such as 1h, got %q", cfg.Delivery.WebhookMaxBackoff)
	}
	if cfg.Delivery.WebhookWorkers < 1 || cfg.Delivery.WebhookWorkers > 256 {
		fail("delivery.webhook_workers", "must be 1-256, got %d", cfg.Delivery.WebhookWorkers)
	}
	if cfg.Delivery.SyncTimeoutMS < 0 {
		fail("delivery.sync_timeout_ms", "must not be negative, got %d", cfg.Delivery.SyncTimeoutMS)
	}
	if cfg.Delivery.NATSURL != "" {
		if u, err := url.Parse(cfg.Delivery.NATSURL); err != nil || u.Host == "" {
			fail("delivery.nats_url", "must be a URL such as nats://127.0.0.1:4222")
		}
	}
	if cfg.Metrics.Listen != "" {
		checkHostPort("metrics.listen", cfg.Metrics.Listen)
	}

	for key, level := range cfg.Permissions {
		field := fmt.Sprintf("permissions[%q]", key)
		switch {
		case key == "*":
		case strings.HasPrefix(key, "@"):
			if _, server, err := id.UserID(key).Parse(); err != nil || !serverNameRegex.MatchString(server) {
				fail(field, "must be a Matrix user id such as @alice:example.org, a server name, or \"*\"")
			}
		case !serverNameRegex.MatchString(key):
			fail(field, "must be a Matrix user id such as @alice:example.org, a server name, or \"*\"")
		}
		checkOneOf(field, level, PermissionAdmin, PermissionUser)
	}

	checkOneOf("logging.level", cfg.Logging.Level, "trace", "debug", "info", "warn", "error")
	checkOneOf("logging.format", cfg.Logging.Format, "json", "pretty")
	return errors.Join(errs...)
}

// splitDatabaseURL checks a DATABASE_URL's scheme without opening it.
func splitDatabaseURL(raw string) (dialect, rest string, err error) {
	switch {
	case strings.HasPrefix(raw, "postgres://"), strings.HasPrefix(raw, "postgresql://"):
		if _, err = url.Parse(raw); err != nil {
			return "", "", errors.New("not a valid postgres:// URL")
		}
		return "postgres", raw, nil
	case strings.HasPrefix(raw, "sqlite:") && strings.TrimPrefix(strings.TrimPrefix(raw, "sqlite:"), "//") != "":
		// database.ParseURL drops a leading "//": "sqlite://" has no path.
		return "sqlite", strings.TrimPrefix(raw, "sqlite:"), nil
	default:
		return "", "", errors.New("must be postgres://… or sqlite:PATH")
	}
}
