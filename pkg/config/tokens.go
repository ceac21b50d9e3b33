package config

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// newToken returns 64 random base32 characters (320 bits) for a token.
func newToken() string {
	return (rand.Text() + rand.Text() + rand.Text())[:64]
}

// EnsureTokens fills appservice.as_token and appservice.hs_token in the config
// file at path when they are empty, keeping the file's other content and
// comments. It reports whether it wrote the file.
func EnsureTokens(path string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("failed to read config file: %w", err)
	}
	var doc yaml.Node
	if err = yaml.Unmarshal(data, &doc); err != nil {
		return false, fmt.Errorf("invalid config file: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return false, fmt.Errorf("invalid config file: the top level must be a mapping")
	}
	asNode := mappingChild(doc.Content[0], "appservice")
	changed := false
	for _, key := range []string{"as_token", "hs_token"} {
		if value := mappingChild(asNode, key); tokenUnset(value) {
			value.Kind, value.Tag, value.Style, value.Value = yaml.ScalarNode, "!!str", 0, newToken()
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(4)
	if err = enc.Encode(&doc); err != nil {
		return false, fmt.Errorf("failed to encode config file: %w", err)
	}
	// Anchors and aliases, an appservice key without a mapping, or values
	// the encoder does not write back faithfully would make the file lose
	// the tokens or change other keys: check before replacing it.
	if err = onlyTokensAdded(data, buf.Bytes()); err != nil {
		return false, fmt.Errorf("cannot add the tokens to the config file (%w): set appservice.as_token and appservice.hs_token by hand", err)
	}
	// The file now holds secrets: it is replaced atomically by one readable
	// by its owner only.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.yaml")
	if err != nil {
		return false, fmt.Errorf("failed to write config file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err = tmp.Write(buf.Bytes()); err == nil {
		err = tmp.Chmod(0o600)
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return false, fmt.Errorf("failed to write config file: %w", err)
	}
	return true, nil
}

// tokenUnset reports whether a token's node reads as empty: "", null, or an
// alias of one of those.
func tokenUnset(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n.Value == "" || n.Tag == "!!null"
}

// mappingChild returns the value node of key in a mapping, adding it (an
// empty mapping for "appservice", an empty scalar otherwise) when missing.
func mappingChild(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	value := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str"}
	if key == "appservice" {
		value = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, value)
	return value
}

// onlyTokensAdded checks that after reads as before with two new, distinct
// tokens where before had none. A file the bridge cannot read anyway is not
// compared.
func onlyTokensAdded(before, after []byte) error {
	old, updated := Default(), Default()
	if Parse(before, old) != nil {
		return nil
	}
	if err := Parse(after, updated); err != nil {
		return err
	}
	as, hs := updated.AppService.ASToken, updated.AppService.HSToken
	if as == "" || hs == "" || as == hs ||
		old.AppService.ASToken != "" && old.AppService.ASToken != as ||
		old.AppService.HSToken != "" && old.AppService.HSToken != hs {
		return errors.New("the tokens would not come out as two distinct values")
	}
	updated.AppService.ASToken, updated.AppService.HSToken = old.AppService.ASToken, old.AppService.HSToken
	oldYAML, err1 := yaml.Marshal(old)
	newYAML, err2 := yaml.Marshal(updated)
	if err1 != nil || err2 != nil || !bytes.Equal(oldYAML, newYAML) {
		return errors.New("other keys would change")
	}
	return nil
}
