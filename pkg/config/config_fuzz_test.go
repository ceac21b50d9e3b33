package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	matrixbridge "github.com/daarion/matrix-bridge"
	"github.com/daarion/matrix-bridge/database"
)

// Config files worth starting from: the example, small valid ones, and the
// YAML features a hand-written file may use.
var fuzzConfigSeeds = []string{
	matrixbridge.ExampleConfig,
	"",
	"# only a comment\n",
	"---\n",
	"{}",
	"homeserver:\n  server_name: daarion.space\n",
	"appservice:\n  as_token: \"\"\n  hs_token: \"\"\n",
	"appservice:\n  as_token: preset-as-0123456789abcdef0123456789\n  hs_token: preset-hs-0123456789abcdef0123456789\n",
	"appservice:\n  as_token: short-as\n  hs_token: \"\"\n",
	"appservice: {id: daarion, listen: \"0.0.0.0:29330\"}\n",
	"appservice:\n",
	"appservice: null\n",
	"appservice: []\n",
	"database:\n  url: postgres://bridge:secret@db:5432/bridge?sslmode=disable\n",
	"database:\n  url: \"sqlite:///var/lib/bridge.db\"\n",
	"database:\n  url: \"sqlite://\"\n",
	"database:\n  url: \"postgresql://[::1\"\n",
	"internal_api:\n  host: \"::\"\n  port: 65535\n  services:\n    - name: gateway\n      token: 0123456789abcdef01234567\n      scopes: [rooms, messaging]\n",
	"internal_api:\n  rate_limit:\n    requests_per_second: .nan\n",
	"internal_api:\n  rate_limit:\n    requests_per_second: .inf\n",
	"metrics:\n  listen: \"[::1]:9100\"\n",
	"metrics:\n  listen: \"127.0.0.1:+80\"\n",
	"appservice:\n  listen: \"exa mple:80\"\n",
	"permissions:\n  \"*\": user\n  \"@alice:daarion.space\": admin\n  daarion.space: user\n",
	"homeserver:\n  url: &u http://synapse:8008\nappservice:\n  url: *u\n",
	"homeserver:\n  admin_token: &t \"\"\nappservice:\n  as_token: *t\n",
	"appservice:\n  as_token: &t \"\"\n  hs_token: *t\n",
	"appservice:\n  as_token: &e \"\"\nhomeserver:\n  admin_token: *e\n",
	"homeserver: &h {url: \"http://hs:8008\"}\nappservice: {<<: *h, id: x}\n",
	"appservice:\n  # the tokens\n  as_token: \"\" # filled by bridge -g\n  hs_token: ''\n",
	"appservice:\n  id: daarion\n---\nappservice:\n  id: second-document\n",
	"unknown_key: 1\n",
	"logging: {level: debug, format: pretty}\n",
	"appservice:\n  max_body_bytes: 1e9\n",
	"a: &a [*a]\n",
	"\t: tab\n",
}

// checkListen: a host:port the bridge can listen on (Go's listener reads the
// port as a decimal number; a host name is resolved then, not here).
func checkListen(t *testing.T, key, addr string) {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s %q validates but does not split: %v", key, addr, err)
		return
	}
	if n, err := strconv.ParseInt(strings.TrimPrefix(port, "+"), 10, 32); err != nil || n < 0 || n > 65535 {
		t.Errorf("%s %q validates with port %q", key, addr, port)
	}
}

func checkValidConfig(t *testing.T, cfg *Config) {
	t.Helper()
	if target, err := database.ParseURL(cfg.Database.URL); err != nil {
		t.Errorf("database.url %q validates but does not parse: %v", cfg.Database.URL, err)
	} else if target.Type == "" || target.URI == "" {
		t.Errorf("database.url %q parses to %+v", cfg.Database.URL, target)
	}
	checkListen(t, "appservice.listen", cfg.AppService.Listen)
	checkListen(t, "internal_api", net.JoinHostPort(cfg.InternalAPI.Host, strconv.Itoa(cfg.InternalAPI.Port)))
	if cfg.Metrics.Listen != "" {
		checkListen(t, "metrics.listen", cfg.Metrics.Listen)
	}
	for key, raw := range map[string]string{"homeserver.url": cfg.Homeserver.URL, "appservice.url": cfg.AppService.URL} {
		if u, err := url.Parse(raw); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			t.Errorf("%s %q validates", key, raw)
		}
	}
	if _, _, err := cfg.BotUserID().Parse(); err != nil {
		t.Errorf("bot user id %q", cfg.BotUserID())
	}
}

// fieldKeys: a validation error is a join of FieldErrors, each naming a key.
func checkValidationError(t *testing.T, err error) {
	t.Helper()
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("validation error %T is not a join", err)
	}
	for _, e := range joined.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) || fe.Key == "" || fe.Message == "" {
			t.Errorf("validation error %v does not name a key", e)
		}
	}
}

func FuzzConfig(f *testing.F) {
	for _, s := range fuzzConfigSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := Default()
		if err := Parse(data, cfg); err != nil {
			if !strings.HasPrefix(err.Error(), "invalid config file: ") {
				t.Errorf("parse error %q", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			checkValidationError(t, err)
			return
		}
		checkValidConfig(t, cfg)
	})
}

func FuzzEnsureTokens(f *testing.F) {
	for _, s := range fuzzConfigSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		before := Default()
		valid := Parse(data, before) == nil && before.Validate() == nil
		wrote, err := EnsureTokens(path)
		after, readErr := os.ReadFile(path)
		if readErr != nil {
			t.Fatalf("config file gone: %v", readErr)
		}
		if err != nil || !wrote {
			if wrote || !bytes.Equal(after, data) {
				t.Fatalf("EnsureTokens = %v, %v, and the file changed", wrote, err)
			}
			if valid && err == nil && (before.AppService.ASToken == "" || before.AppService.HSToken == "") {
				t.Errorf("reported nothing to do, yet a token is empty")
			}
			return
		}
		if !valid {
			return // it was not a config the bridge accepts anyway
		}
		// A valid config stays valid, with the same keys, and gains tokens.
		got := Default()
		if err := Parse(after, got); err != nil {
			t.Fatalf("the file no longer parses: %v\n--- before\n%s\n--- after\n%s", err, data, after)
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("the file no longer validates: %v", err)
		}
		as, hs := got.AppService.ASToken, got.AppService.HSToken
		for name, pair := range map[string][2]string{"as_token": {before.AppService.ASToken, as}, "hs_token": {before.AppService.HSToken, hs}} {
			if pair[0] != "" && pair[1] != pair[0] {
				t.Errorf("%s changed from %q to %q", name, pair[0], pair[1])
			}
			if pair[0] == "" && len(pair[1]) != 64 {
				t.Errorf("%s was empty, is now %q", name, pair[1])
			}
		}
		if as == hs {
			t.Errorf("as_token and hs_token are the same: %q", as)
		}
		got.AppService.ASToken, got.AppService.HSToken = before.AppService.ASToken, before.AppService.HSToken
		if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", before) {
			t.Errorf("other keys changed:\n--- before\n%s\n--- after\n%s", data, after)
		}
		if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("the file with secrets has mode %v", info.Mode())
		}
		// Running it again has nothing to do.
		if wrote, err := EnsureTokens(path); err != nil || wrote {
			t.Errorf("second EnsureTokens = %v, %v", wrote, err)
		}
	})
}

// Regressions found by FuzzConfig and FuzzEnsureTokens.
func TestConfigFuzzRegressions(t *testing.T) {
	// yaml.v3 panicked on a mapping used as a key beside a merge key: the
	// bridge crashed at start instead of naming the bad file.
	if err := Parse([]byte("0: &h {0}\nappservice: {<<,*h }"), Default()); err == nil || !strings.HasPrefix(err.Error(), "invalid config file: ") {
		t.Errorf("merge-key panic input: %v", err)
	}
	// "sqlite://" validated, but database.ParseURL finds no path in it.
	cfg := Default()
	cfg.Database.URL = "sqlite://"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "database.url") {
		t.Errorf("sqlite:// validates: %v", err)
	}
	cfg.Database.URL = "sqlite:///var/lib/bridge.db"
	if err := cfg.Validate(); err != nil {
		t.Errorf("sqlite:///abs/path: %v", err)
	}

	// EnsureTokens wrote files that lost the tokens or changed other keys.
	// It now refuses them, leaving the file as it was.
	for name, data := range map[string]string{
		"appservice without a mapping":            "appservice:\n",
		"as_token anchor shared with admin_token": "appservice:\n  as_token: &e \"\"\nhomeserver:\n  admin_token: *e\n",
		"hs_token an alias of as_token":           "appservice:\n  as_token: &t \"\"\n  hs_token: *t\n",
	} {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		wrote, err := EnsureTokens(path)
		after, _ := os.ReadFile(path)
		if wrote || err == nil || string(after) != data {
			t.Errorf("%s: EnsureTokens = %v, %v; file now %q", name, wrote, err, after)
		}
	}
	// Tokens that read as empty are filled: null, or an alias of "".
	for name, data := range map[string]string{
		"null tokens":             "appservice:\n  as_token: ~\n  hs_token: null\n",
		"alias of an empty value": "homeserver:\n  registration_shared_secret: &t \"\"\nappservice:\n  as_token: *t\n",
	} {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		wrote, err := EnsureTokens(path)
		cfg, loadErr := Load(path, nil)
		if !wrote || err != nil || loadErr != nil || len(cfg.AppService.ASToken) != 64 || len(cfg.AppService.HSToken) != 64 {
			t.Errorf("%s: EnsureTokens = %v, %v; then %+v, %v", name, wrote, err, cfg, loadErr)
		}
	}
}
