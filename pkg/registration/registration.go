// Package registration builds the bridge's appservice registration from its
// config: as mautrix's Registration for the running bridge, and rendered from
// registration.yaml.tmpl for the homeserver's app_service_config_files.
package registration

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"text/template"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/appservice"

	"github.com/daarion/matrix-bridge/pkg/config"
)

// Values are what the template is rendered with.
type Values struct {
	ID                string
	URL               string
	ASToken           string
	HSToken           string
	SenderLocalpart   string
	EphemeralEvents   bool
	AgentUserRegex    string
	CityAliasRegex    string
	DoublePuppetRegex string
}

// ValuesFromConfig takes the registration's values from the config.
func ValuesFromConfig(cfg *config.Config) Values {
	return Values{
		ID:                cfg.AppService.ID,
		URL:               cfg.AppService.URL,
		ASToken:           cfg.AppService.ASToken,
		HSToken:           cfg.AppService.HSToken,
		SenderLocalpart:   cfg.AppService.Bot.Localpart,
		EphemeralEvents:   cfg.AppService.EphemeralEvents,
		AgentUserRegex:    cfg.AgentUserRegex(),
		CityAliasRegex:    cfg.CityAliasRegex(),
		DoublePuppetRegex: cfg.DoublePuppetRegex(),
	}
}

// yamlQuote renders a string as a single-quoted YAML scalar, so regexes and
// tokens need no escaping in the template.
func yamlQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// Render renders the template and checks that the result parses back into a
// registration with the same tokens.
func Render(tmpl string, v Values) ([]byte, error) {
	t, err := template.New("registration").Funcs(template.FuncMap{"quote": yamlQuote}).Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return nil, fmt.Errorf("failed to parse registration template: %w", err)
	}
	var buf bytes.Buffer
	if err = t.Execute(&buf, v); err != nil {
		return nil, fmt.Errorf("failed to render registration template: %w", err)
	}
	var reg appservice.Registration
	if err = yaml.Unmarshal(buf.Bytes(), &reg); err != nil {
		return nil, fmt.Errorf("rendered registration is not valid YAML: %w", err)
	}
	if reg.AppToken != v.ASToken || reg.ServerToken != v.HSToken || reg.ID != v.ID {
		return nil, fmt.Errorf("rendered registration does not carry the configured id and tokens")
	}
	return buf.Bytes(), nil
}

// FromConfig returns the registration the running bridge uses.
func FromConfig(cfg *config.Config) *appservice.Registration {
	v := ValuesFromConfig(cfg)
	rateLimited := false
	reg := &appservice.Registration{
		ID:                  v.ID,
		URL:                 v.URL,
		AppToken:            v.ASToken,
		ServerToken:         v.HSToken,
		SenderLocalpart:     v.SenderLocalpart,
		RateLimited:         &rateLimited,
		EphemeralEvents:     v.EphemeralEvents,
		SoruEphemeralEvents: v.EphemeralEvents,
		MSC3202:             true,
	}
	reg.Namespaces.UserIDs.Register(regexp.MustCompile(v.AgentUserRegex), true)
	if v.DoublePuppetRegex != "" {
		reg.Namespaces.UserIDs.Register(regexp.MustCompile(v.DoublePuppetRegex), false)
	}
	reg.Namespaces.RoomAliases.Register(regexp.MustCompile(v.CityAliasRegex), true)
	return reg
}
