package registration

import (
	"regexp"
	"testing"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/appservice"

	matrixbridge "github.com/daarion/matrix-bridge"
	"github.com/daarion/matrix-bridge/pkg/config"
)

func testConfig() *config.Config {
	cfg := config.Default()
	cfg.Homeserver.ServerName = "daarion.space"
	cfg.AppService.ASToken = "as'token"
	cfg.AppService.HSToken = "hs-token"
	return cfg
}

func render(t *testing.T, cfg *config.Config) (*appservice.Registration, map[string]any) {
	t.Helper()
	data, err := Render(matrixbridge.RegistrationTemplate, ValuesFromConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	var reg appservice.Registration
	var raw map[string]any
	if err = yaml.Unmarshal(data, &reg); err != nil {
		t.Fatal(err)
	}
	if err = yaml.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	return &reg, raw
}

func TestRenderedRegistration(t *testing.T) {
	reg, raw := render(t, testConfig())
	if reg.ID != "daarion" || reg.URL != "http://127.0.0.1:29330" || reg.AppToken != "as'token" ||
		reg.ServerToken != "hs-token" || reg.SenderLocalpart != "daarion-bot" {
		t.Errorf("registration = %+v", reg)
	}
	if raw["rate_limited"] != false || raw["receive_ephemeral"] != true || raw["de.sorunome.msc2409.push_ephemeral"] != true || raw["org.matrix.msc3202"] != true {
		t.Errorf("flags = rate_limited %v, receive_ephemeral %v, push_ephemeral %v",
			raw["rate_limited"], raw["receive_ephemeral"], raw["de.sorunome.msc2409.push_ephemeral"])
	}
	if len(reg.Namespaces.UserIDs) != 1 || !reg.Namespaces.UserIDs[0].Exclusive {
		t.Fatalf("users namespaces = %+v, want one exclusive", reg.Namespaces.UserIDs)
	}
	if len(reg.Namespaces.RoomAliases) != 1 || !reg.Namespaces.RoomAliases[0].Exclusive {
		t.Fatalf("alias namespaces = %+v, want one exclusive", reg.Namespaces.RoomAliases)
	}
	users := regexp.MustCompile("^" + reg.Namespaces.UserIDs[0].Regex + "$")
	aliases := regexp.MustCompile("^" + reg.Namespaces.RoomAliases[0].Regex + "$")
	for _, tc := range []struct {
		re    *regexp.Regexp
		value string
		match bool
	}{
		{users, "@agent_sofia:daarion.space", true},
		{users, "@alice:daarion.space", false},
		{users, "@agent_sofia:daarionXspace", false},
		{users, "@agent_sofia:other.org", false},
		{aliases, "#city_kyiv:daarion.space", true},
		{aliases, "#kyiv:daarion.space", false},
		{aliases, "#city:daarion.space", true}, // the city space
		{aliases, "#cityhall:daarion.space", false},
	} {
		if got := tc.re.MatchString(tc.value); got != tc.match {
			t.Errorf("%s matches %s = %v, want %v", tc.re, tc.value, got, tc.match)
		}
	}
}

func TestDoublePuppetNamespace(t *testing.T) {
	cfg := testConfig()
	cfg.AppService.DoublePuppet.Enabled = true
	reg, _ := render(t, cfg)
	if len(reg.Namespaces.UserIDs) != 2 || reg.Namespaces.UserIDs[1].Exclusive {
		t.Fatalf("users namespaces = %+v, want agents plus a non-exclusive one", reg.Namespaces.UserIDs)
	}
	if reg.Namespaces.UserIDs[1].Regex != `@.*:daarion\.space` {
		t.Errorf("double puppet regex = %s", reg.Namespaces.UserIDs[1].Regex)
	}
	cfg.AppService.EphemeralEvents = false
	_, raw := render(t, cfg)
	if raw["receive_ephemeral"] != false {
		t.Error("ephemeral_events: false did not turn receive_ephemeral off")
	}
}

func TestFromConfigMatchesTheRenderedFile(t *testing.T) {
	cfg := testConfig()
	cfg.AppService.DoublePuppet.Enabled = true
	rendered, _ := render(t, cfg)
	built := FromConfig(cfg)
	a, _ := yaml.Marshal(rendered)
	b, _ := yaml.Marshal(built)
	if string(a) != string(b) {
		t.Errorf("the running bridge's registration differs from the rendered file:\n%s\n---\n%s", a, b)
	}
}

func TestRenderRejectsATemplateThatLosesTheTokens(t *testing.T) {
	if _, err := Render("id: x\n", ValuesFromConfig(testConfig())); err == nil {
		t.Error("a template without tokens rendered without error")
	}
	if _, err := Render("{{ .Nope }}", ValuesFromConfig(testConfig())); err == nil {
		t.Error("a template with an unknown field rendered without error")
	}
}
