package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	matrixbridge "github.com/daarion/matrix-bridge"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestExampleConfigIsTheDefaults(t *testing.T) {
	cfg := Default()
	if err := Parse([]byte(matrixbridge.ExampleConfig), cfg); err != nil {
		t.Fatalf("config.example.yaml does not parse: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config.example.yaml does not validate: %v", err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("config.example.yaml differs from the embedded defaults:\n%+v\n%+v", *cfg, *Default())
	}
}

func TestExampleConfigDocumentsEveryEnvName(t *testing.T) {
	for _, name := range EnvNames() {
		if !strings.Contains(matrixbridge.ExampleConfig, name) {
			t.Errorf("config.example.yaml does not mention %s", name)
		}
	}
}

func TestEnvOverrides(t *testing.T) {
	cfg := Default()
	err := cfg.ApplyEnv(env(map[string]string{
		"SYNAPSE_URL":             "http://synapse:8008",
		"MATRIX_SERVER_NAME":      "daarion.space",
		"SYNAPSE_ADMIN_TOKEN":     "adm",
		"INTERNAL_SERVICE_SECRET": "svc-secret-0123456789abcdef",
		"MATRIX_GATEWAY_PORT":     "7100",
		"APPSERVICE_URL":          "http://bridge:29330",
		"APPSERVICE_LISTEN":       "0.0.0.0:29330",
		"DATABASE_URL":            "postgres://u:p@db/bridge",
		"WEBHOOK_TIMEOUT_MS":      "1500",
		"SYNC_TIMEOUT_MS":         "1000",
		"NATS_URL":                "nats://nats:4222",
		"METRICS_LISTEN":          "127.0.0.1:9100",
		"LOG_LEVEL":               "debug",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Homeserver.URL = "http://synapse:8008"
	want.Homeserver.ServerName = "daarion.space"
	want.Homeserver.AdminToken = "adm"
	want.InternalAPI.ServiceSecret = "svc-secret-0123456789abcdef"
	want.InternalAPI.Port = 7100
	want.AppService.URL = "http://bridge:29330"
	want.AppService.Listen = "0.0.0.0:29330"
	want.Database.URL = "postgres://u:p@db/bridge"
	want.Delivery.WebhookTimeoutMS, want.Delivery.SyncTimeoutMS, want.Delivery.NATSURL = 1500, 1000, "nats://nats:4222"
	want.Metrics.Listen = "127.0.0.1:9100"
	want.Logging.Level = "debug"
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("after env:\n%+v\nwant\n%+v", *cfg, *want)
	}
	if err = cfg.Validate(); err != nil {
		t.Errorf("validate: %v", err)
	}

	// The primary name wins over its alias.
	cfg = Default()
	_ = cfg.ApplyEnv(env(map[string]string{"MATRIX_HOMESERVER_URL": "http://a:1", "SYNAPSE_URL": "http://b:2",
		"MATRIX_ADMIN_TOKEN": "primary", "SYNAPSE_ADMIN_TOKEN": "alias"}))
	if cfg.Homeserver.URL != "http://a:1" || cfg.Homeserver.AdminToken != "primary" {
		t.Errorf("alias won over the primary name: %q %q", cfg.Homeserver.URL, cfg.Homeserver.AdminToken)
	}

	for _, name := range []string{"MATRIX_GATEWAY_PORT", "WEBHOOK_TIMEOUT_MS", "SYNC_TIMEOUT_MS"} {
		err := Default().ApplyEnv(env(map[string]string{name: "soon"}))
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=soon: error %v does not name the variable", name, err)
		}
	}
}

func TestValidateNamesTheKey(t *testing.T) {
	cases := []struct {
		key    string
		mutate func(*Config)
	}{
		{"homeserver.url", func(c *Config) { c.Homeserver.URL = "ftp://x" }},
		{"homeserver.url", func(c *Config) { c.Homeserver.URL = "" }},
		{"homeserver.server_name", func(c *Config) { c.Homeserver.ServerName = "bad name" }},
		{"appservice.id", func(c *Config) { c.AppService.ID = "a b" }},
		{"appservice.url", func(c *Config) { c.AppService.URL = "127.0.0.1:29330" }},
		{"appservice.listen", func(c *Config) { c.AppService.Listen = "29330" }},
		{"appservice.listen", func(c *Config) { c.AppService.Listen = "127.0.0.1:99999" }},
		{"appservice.bot.localpart", func(c *Config) { c.AppService.Bot.Localpart = "Bot" }},
		{"appservice.bot.localpart", func(c *Config) { c.AppService.Bot.Localpart = "agent_bot" }},
		{"appservice.max_body_bytes", func(c *Config) { c.AppService.MaxBodyBytes = 1 << 20 }},
		{"appservice.double_puppet.user_regex", func(c *Config) { c.AppService.DoublePuppet.UserRegex = "(" }},
		{"database.url", func(c *Config) { c.Database.URL = "mysql://x" }},
		{"database.url", func(c *Config) { c.Database.URL = "sqlite:" }},
		{"database.max_open_conns", func(c *Config) { c.Database.MaxOpenConns = -1 }},
		{"database.poll_interval", func(c *Config) { c.Database.PollInterval = NewDuration("1ms") }},
		{"database.poll_interval", func(c *Config) { c.Database.PollInterval = NewDuration("soon") }},
		{"database.poll_interval", func(c *Config) { c.Database.PollInterval = NewDuration("") }},
		{"database.group_commit", func(c *Config) { c.Database.GroupCommit = NewDuration("-1ms") }},
		{"database.group_commit", func(c *Config) { c.Database.GroupCommit = NewDuration("101ms") }},
		{"database.group_commit", func(c *Config) { c.Database.GroupCommit = NewDuration("later") }},
		{"internal_api.port", func(c *Config) { c.InternalAPI.Port = 0 }},
		{"internal_api.host", func(c *Config) { c.InternalAPI.Host = "example.org" }},
		{"delivery.webhook_timeout_ms", func(c *Config) { c.Delivery.WebhookTimeoutMS = 0 }},
		{"delivery.sync_timeout_ms", func(c *Config) { c.Delivery.SyncTimeoutMS = -1 }},
		{"delivery.nats_url", func(c *Config) { c.Delivery.NATSURL = "nats" }},
		{"metrics.listen", func(c *Config) { c.Metrics.Listen = "nowhere" }},
		{"logging.level", func(c *Config) { c.Logging.Level = "loud" }},
		{"logging.format", func(c *Config) { c.Logging.Format = "xml" }},
		{"internal_api.services[0].name", func(c *Config) {
			c.InternalAPI.Services = []ServiceToken{{Name: "a b", Token: strings.Repeat("t", 24), Scopes: []string{"rooms"}}}
		}},
		{"internal_api.services[1].name", func(c *Config) {
			c.InternalAPI.Services = []ServiceToken{{Name: "x", Token: strings.Repeat("t", 24), Scopes: []string{"rooms"}}, {Name: "x", Token: strings.Repeat("u", 24), Scopes: []string{"rooms"}}}
		}},
		{"internal_api.services[0].token", func(c *Config) {
			c.InternalAPI.Services = []ServiceToken{{Name: "x", Token: "short", Scopes: []string{"rooms"}}}
		}},
		{"internal_api.services[0].token", func(c *Config) {
			c.InternalAPI.Services = []ServiceToken{{Name: "x", Token: strings.Repeat("t", 23), Scopes: []string{"rooms"}}}
		}},
		{"internal_api.service_secret", func(c *Config) { c.InternalAPI.ServiceSecret = "dev-secret-token" }},
		{"appservice.as_token", func(c *Config) { c.AppService.ASToken = "as" }},
		{"appservice.hs_token", func(c *Config) { c.AppService.HSToken = strings.Repeat("h", 31) }},
		{"internal_api.services[0].scopes", func(c *Config) { c.InternalAPI.Services = []ServiceToken{{Name: "x", Token: strings.Repeat("t", 24)}} }},
		{"internal_api.services[0].scopes[1]", func(c *Config) {
			c.InternalAPI.Services = []ServiceToken{{Name: "x", Token: strings.Repeat("t", 24), Scopes: []string{"rooms", "root"}}}
		}},
		{"internal_api.rate_limit.requests_per_second", func(c *Config) { c.InternalAPI.RateLimit.RequestsPerSecond = 0 }},
		{"internal_api.rate_limit.burst", func(c *Config) { c.InternalAPI.RateLimit.Burst = 0 }},
		{"internal_api.rate_limit.requests_per_second", func(c *Config) { c.InternalAPI.RateLimit.RequestsPerSecond = math.NaN() }},
		{"internal_api.max_body_bytes", func(c *Config) { c.InternalAPI.MaxBodyBytes = 10 }},
		{"rooms.history_visibility", func(c *Config) { c.Rooms.HistoryVisibility = "everyone" }},
		{"rooms.guest_access", func(c *Config) { c.Rooms.GuestAccess = "sure" }},
		{"rooms.metadata_cache_ttl", func(c *Config) { c.Rooms.MetadataCacheTTL = NewDuration("forever") }},
		{"agents.accept_invites_from[0]", func(c *Config) { c.Agents.AcceptInvitesFrom = InviteRules{"admins"} }},
		{"agents.accept_invites_from[1]", func(c *Config) { c.Agents.AcceptInvitesFrom = InviteRules{"local", "power_level:x"} }},
		{"agents.accept_invites_from[1]", func(c *Config) { c.Agents.AcceptInvitesFrom = InviteRules{"local", "server:bad server"} }},
		{"agents.accept_invites_from[0]", func(c *Config) { c.Agents.AcceptInvitesFrom = InviteRules{"@alice"} }},
		{"agents.accept_invites_from[1]", func(c *Config) { c.Agents.AcceptInvitesFrom = InviteRules{"local", "nobody"} }},
		{"agents.accept_invites_from[2]", func(c *Config) {
			c.Agents.AcceptInvitesFrom = InviteRules{"local", "power_level:50", "power_level:0"}
		}},
		{"agents.accept_invites_from", func(c *Config) { c.Agents.AcceptInvitesFrom = InviteRules{"power_level:50"} }},
		{"agents.accept_invites_into", func(c *Config) { c.Agents.AcceptInvitesInto = nil }},
		{"agents.accept_invites_into[1]", func(c *Config) { c.Agents.AcceptInvitesInto = []string{"city", "public"} }},
		{"agents.provision_unknown[0]", func(c *Config) { c.Agents.ProvisionUnknown = []string{"demo-("} }},
		{"agents.provision_unknown[1]", func(c *Config) { c.Agents.ProvisionUnknown = []string{"demo-.*", ""} }},
		{"media.max_upload_bytes", func(c *Config) { c.Media.MaxUploadBytes = 0 }},
		{"delivery.webhook_retry_window", func(c *Config) { c.Delivery.WebhookRetryWindow = NewDuration("1 day") }},
		{"delivery.webhook_max_backoff", func(c *Config) { c.Delivery.WebhookMaxBackoff = NewDuration("-1s") }},
		{"delivery.webhook_workers", func(c *Config) { c.Delivery.WebhookWorkers = 0 }},
		{`permissions["@alice:example.org"]`, func(c *Config) { c.Permissions = map[string]string{"@alice:example.org": "root"} }},
		{`permissions["@alice"]`, func(c *Config) { c.Permissions = map[string]string{"@alice": "admin"} }},
		{`permissions["@alice:bad server"]`, func(c *Config) { c.Permissions = map[string]string{"@alice:bad server": "admin"} }},
		{`permissions["not a server"]`, func(c *Config) { c.Permissions = map[string]string{"not a server": "user"} }},
		{`permissions["*"]`, func(c *Config) { c.Permissions = map[string]string{"*": ""} }},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			cfg := Default()
			tc.mutate(cfg)
			err := cfg.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Key != tc.key || !strings.HasPrefix(err.Error(), tc.key+": ") {
				t.Errorf("error %v does not name %s", err, tc.key)
			}
		})
	}
}

// Secrets shorter than their minimum are refused at start (by Load, from the
// file or the environment), naming the key and not showing the secret. An
// empty appservice token or service secret means "not set" (bridge -g fills
// the appservice tokens); a named service token is required.
func TestSecretLengths(t *testing.T) {
	for _, tc := range []struct {
		key       string
		min       int
		emptyOK   bool
		yaml, env func(v string) string
	}{
		{"appservice.as_token", 32, true, func(v string) string { return fmt.Sprintf("appservice:\n    as_token: %q\n", v) }, nil},
		{"appservice.hs_token", 32, true, func(v string) string { return fmt.Sprintf("appservice:\n    hs_token: %q\n", v) }, nil},
		{"internal_api.service_secret", 24, true, func(v string) string { return fmt.Sprintf("internal_api:\n    service_secret: %q\n", v) }, nil},
		{"internal_api.service_secret", 24, true, func(string) string { return "" }, func(v string) string { return v }},
		{"internal_api.services[0].token", 24, false, func(v string) string {
			return fmt.Sprintf("internal_api:\n    services:\n        - name: city-service\n          token: %q\n          scopes: [rooms]\n", v)
		}, nil},
	} {
		for _, value := range []string{"", "x", "dev-secret-token", strings.Repeat("s", tc.min-1), strings.Repeat("s", tc.min), strings.Repeat("ї", tc.min)} {
			n := utf8.RuneCountInString(value)
			from := "file"
			if tc.env != nil {
				from = "INTERNAL_SERVICE_SECRET"
			}
			t.Run(fmt.Sprintf("%s from %s, %d characters, %d bytes", tc.key, from, n, len(value)), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "config.yaml")
				if err := os.WriteFile(path, []byte(tc.yaml(value)), 0o600); err != nil {
					t.Fatal(err)
				}
				getenv := env(nil)
				if tc.env != nil {
					getenv = env(map[string]string{"INTERNAL_SERVICE_SECRET": tc.env(value)})
				}
				_, err := Load(path, getenv)
				tooShort := n < tc.min && !(n == 0 && tc.emptyOK)
				var fe *FieldError
				switch {
				case !tooShort && err != nil:
					t.Errorf("refused: %v", err)
				case !tooShort:
				case !errors.As(err, &fe) || fe.Key != tc.key || !strings.Contains(fe.Message, fmt.Sprintf("at least %d characters", tc.min)):
					t.Errorf("error %v does not name %s", err, tc.key)
				case len(value) > 1 && strings.Contains(err.Error(), value):
					t.Errorf("the error shows the secret: %v", err)
				}
			})
		}
	}
}

func TestLoadRejectsUnknownKeysAndBadYAML(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown key": "homeserver:\n    urll: http://x\n",
		"bad type":    "internal_api:\n    port: seven\n",
		"not yaml":    "homeserver: [\n",
	} {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(path, nil); err == nil {
			t.Errorf("%s: loaded without error", name)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), nil); err == nil {
		t.Error("missing file loaded without error")
	}
}

func TestEnsureTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(matrixbridge.ExampleConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	wrote, err := EnsureTokens(path)
	if err != nil || !wrote {
		t.Fatalf("EnsureTokens = %v, %v", wrote, err)
	}
	cfg, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	as, hs := cfg.AppService.ASToken, cfg.AppService.HSToken
	if len(as) != 64 || len(hs) != 64 || as == hs {
		t.Errorf("tokens %q %q: want two different 64-character tokens", as, hs)
	}
	if len(newToken()) < minAppserviceTokenLength || cfg.Validate() != nil {
		t.Errorf("generated tokens are refused: %v", cfg.Validate())
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "# ENV: DATABASE_URL") {
		t.Error("comments of the config file were lost")
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
		t.Errorf("config with tokens has mode %v, want 0600", info.Mode().Perm())
	}
	// Second call keeps the tokens.
	if wrote, err = EnsureTokens(path); err != nil || wrote {
		t.Errorf("second EnsureTokens = %v, %v; want no write", wrote, err)
	}
	again, _ := Load(path, nil)
	if again.AppService.ASToken != as || again.AppService.HSToken != hs {
		t.Error("second EnsureTokens changed the tokens")
	}

	// A config without an appservice section gets one.
	minimal := filepath.Join(t.TempDir(), "min.yaml")
	_ = os.WriteFile(minimal, []byte("logging:\n    level: debug\n"), 0o600)
	if _, err = EnsureTokens(minimal); err != nil {
		t.Fatal(err)
	}
	if cfg, err = Load(minimal, nil); err != nil || cfg.AppService.ASToken == "" || cfg.Logging.Level != "debug" {
		t.Errorf("minimal config after EnsureTokens: %+v, %v", cfg, err)
	}
}

func TestNamespaces(t *testing.T) {
	cfg := Default()
	cfg.Homeserver.ServerName = "daarion.space"
	if got := cfg.AgentUserRegex(); got != `@agent_.*:daarion\.space` {
		t.Errorf("agent regex = %s", got)
	}
	if got := cfg.CityAliasRegex(); got != `#city(_.*)?:daarion\.space` {
		t.Errorf("city regex = %s", got)
	}
	if cfg.DoublePuppetRegex() != "" {
		t.Error("double puppeting is on by default")
	}
	cfg.AppService.DoublePuppet.Enabled = true
	if got := cfg.DoublePuppetRegex(); got != `@.*:daarion\.space` {
		t.Errorf("double puppet regex = %s", got)
	}
	if cfg.BotUserID() != "@daarion-bot:daarion.space" {
		t.Errorf("bot = %s", cfg.BotUserID())
	}
}

func TestPermissionsParseAndValidate(t *testing.T) {
	cfg := Default()
	err := Parse([]byte("permissions:\n    \"@admin:daarion.test\": admin\n    daarion.test: user\n    \"*\": user\n    \"[::1]:8448\": user\n"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"@admin:daarion.test": "admin", "daarion.test": "user", "*": "user", "[::1]:8448": "user"}
	if !reflect.DeepEqual(cfg.Permissions, want) {
		t.Errorf("permissions = %v, want %v", cfg.Permissions, want)
	}
	if err = cfg.Validate(); err != nil {
		t.Errorf("validate: %v", err)
	}
	if len(Default().Permissions) != 0 {
		t.Error("someone has permissions by default")
	}
}
