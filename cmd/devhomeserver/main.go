// Command devhomeserver runs the pinned Dendrite homeserver on loopback for
// local development (`make run`): it writes a config into -dir, starts
// Dendrite with pkg/testrig, prints the URL and stops it on SIGINT/SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/daarion/matrix-bridge/pkg/testrig"
)

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devhomeserver:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		kind         = flag.String("kind", testrig.Dendrite, "homeserver: dendrite (the pinned Go binary, quick to start) or synapse (the pinned Synapse from tools/synapse)")
		dir          = flag.String("dir", ".devhomeserver", "working directory for config, signing key, SQLite databases and the homeserver's log (kept between runs)")
		port         = flag.Int("port", 8008, "HTTP port on 127.0.0.1 (0 picks a free one)")
		serverName   = flag.String("server-name", testrig.DefaultServerName, "Matrix server name")
		sharedSecret = flag.String("shared-secret", "", "registration shared secret (default: random, printed)")
		bin          = flag.String("dendrite-bin", "", "Dendrite binary, or with -kind synapse the venv's python (default: $DENDRITE_BIN/$SYNAPSE_PYTHON, else bin/dendrite or bin/synapse-venv, built if missing)")
		logLevel     = flag.String("log-level", "info", "homeserver log level: trace, debug, info, warn, error")
		registration listFlag
	)
	flag.Var(&registration, "registration", "appservice registration YAML file (repeatable or comma-separated)")
	var users listFlag
	flag.Var(&users, "user", "a human user to register once started, as localpart:password (repeatable)")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", flag.Args())
	}

	// Registered first and kept: a signal during start-up is seen both here
	// and by startCtx (which aborts the start, e.g. a Dendrite build).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	startCtx, stopStartSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	startCtx, cancel := context.WithTimeout(startCtx, 5*time.Minute)
	hs, err := testrig.StartHomeserver(startCtx, testrig.HomeserverOptions{
		Kind:              *kind,
		Dir:               *dir,
		ServerName:        *serverName,
		RegistrationFiles: registration,
		SharedSecret:      *sharedSecret,
		Port:              *port,
		BinPath:           *bin,
		LogLevel:          *logLevel,
	})
	interrupted := errors.Is(startCtx.Err(), context.Canceled)
	cancel()
	stopStartSignals()
	if err != nil {
		if interrupted {
			return fmt.Errorf("interrupted during start-up: %w", err)
		}
		return err
	}

	version := testrig.DendriteVersion
	if hs.Kind == testrig.Synapse {
		version = testrig.SynapseVersion
	}
	fmt.Printf("%s %s is running\n", hs.Kind, version)
	fmt.Printf("  homeserver URL: %s\n", hs.URL)
	fmt.Printf("  server name:    %s\n", hs.ServerName)
	fmt.Printf("  shared secret:  %s\n", hs.SharedSecret)
	fmt.Printf("  config:         %s\n", hs.ConfigPath)
	fmt.Printf("  log:            %s\n", hs.LogFile)
	for _, r := range registration {
		fmt.Printf("  appservice:     %s\n", r)
	}
	for _, user := range users {
		localpart, password, ok := strings.Cut(user, ":")
		if !ok || localpart == "" || password == "" {
			_ = hs.Stop()
			return fmt.Errorf("-user %q: want localpart:password", user)
		}
		if _, err := hs.RegisterUser(context.Background(), localpart, password, false); err != nil {
			// On a second run the user is already there: that is fine.
			fmt.Printf("  user %s: not registered (%v)\n", hs.UserID(localpart), err)
		} else {
			fmt.Printf("  user:           %s (password %q)\n", hs.UserID(localpart), password)
		}
	}
	fmt.Println("press Ctrl-C to stop")

	select {
	case sig := <-sigs:
		fmt.Printf("received %v, stopping %s\n", sig, hs.Kind)
		return hs.Stop()
	case <-hs.Done():
		_ = hs.Stop()
		return fmt.Errorf("%s exited on its own; see %s", hs.Kind, hs.LogFile)
	}
}
