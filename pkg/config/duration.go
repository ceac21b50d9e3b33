package config

import (
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a config duration such as "1s" or "168h", parsed once, when
// the config is read. A value that is not a duration is kept as written and
// reported by Validate under its key, as every other bad value is.
type Duration struct {
	time.Duration
	raw string
	bad bool
}

// NewDuration is the Duration written s (the defaults are written this way).
func NewDuration(s string) Duration {
	var d Duration
	d.set(s)
	return d
}

func (d *Duration) set(s string) {
	d.raw = s
	v, err := time.ParseDuration(s)
	d.Duration, d.bad = v, err != nil
}

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(node *yaml.Node) error {
	var s string
	if err := node.Decode(&s); err != nil {
		return err
	}
	d.set(s)
	return nil
}

// MarshalYAML writes the duration as it was written.
func (d Duration) MarshalYAML() (any, error) { return d.raw, nil }

// String is the duration as it was written.
func (d Duration) String() string { return d.raw }

// Valid reports whether the value is a duration (an empty one is not).
func (d Duration) Valid() bool { return !d.bad && d.raw != "" }
