//go:build tools

// Package tools pins the Dendrite homeserver used by the integration tests
// (pkg/testrig). Nothing here is compiled into the bridge; the file only
// makes `go mod tidy` keep the Dendrite commands and their dependencies in
// this module's go.mod/go.sum. Build with tools/dendrite/build.sh.
package tools

import (
	_ "github.com/element-hq/dendrite/cmd/dendrite"
	_ "github.com/element-hq/dendrite/cmd/generate-keys"
)
