package config

import (
	"bytes"
	"crypto/rand"
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
		if value := mappingChild(asNode, key); value.Value == "" {
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
