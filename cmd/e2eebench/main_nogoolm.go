//go:build !goolm

// Command e2eebench measures end-to-bridge encryption; it needs mautrix's
// crypto on goolm, so it is built with -tags goolm (make bench-e2ee does).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "e2eebench needs end-to-bridge encryption: build it with -tags goolm (make bench-e2ee)")
	os.Exit(2)
}
