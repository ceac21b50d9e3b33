// Package matrixbridge holds the files the bridge binary carries with it: the
// registration template and the example configuration.
package matrixbridge

import _ "embed"

// RegistrationTemplate is registration.yaml.tmpl, rendered by `bridge -g`.
//
//go:embed registration.yaml.tmpl
var RegistrationTemplate string

// ExampleConfig is config.example.yaml, written by `bridge -e`.
//
//go:embed config.example.yaml
var ExampleConfig string
