// Package logging builds the bridge's zerolog logger from its config.
package logging

import (
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"
)

// New returns a logger writing to out at level, as JSON or human-readable.
// Request bodies mautrix-go logs at debug are left out (redact.go).
func New(level, format string, out io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("logging.level: %w", err)
	}
	if format == "pretty" {
		out = zerolog.ConsoleWriter{Out: out, TimeFormat: time.TimeOnly}
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	// No request body of a Matrix call reaches the log (bodyRedactor).
	return zerolog.New(bodyRedactor{out}).Level(lvl).With().Timestamp().Logger(), nil
}
