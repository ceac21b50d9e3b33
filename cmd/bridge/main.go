// Command bridge is the DAARION Matrix bridge, a Matrix application service.
//
//	bridge -c config.yaml                        run
//	bridge -g -c config.yaml -r registration.yaml write the registration (and tokens)
//	bridge -e -c config.yaml                     write the example config
//	bridge --version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"syscall"
	"time"

	matrixbridge "github.com/daarion/matrix-bridge"
	"github.com/daarion/matrix-bridge/pkg/bridge"
	"github.com/daarion/matrix-bridge/pkg/config"
	"github.com/daarion/matrix-bridge/pkg/logging"
	"github.com/daarion/matrix-bridge/pkg/registration"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	flags := flag.NewFlagSet("bridge", flag.ContinueOnError)
	var configPath, registrationPath string
	var generate, writeExample, version bool
	flags.StringVar(&configPath, "c", "config.yaml", "config file")
	flags.StringVar(&configPath, "config", "config.yaml", "config file")
	flags.StringVar(&registrationPath, "r", "registration.yaml", "registration file to write with -g")
	flags.StringVar(&registrationPath, "registration", "registration.yaml", "registration file to write with -g")
	flags.BoolVar(&generate, "g", false, "generate the registration file (and tokens in the config) and exit")
	flags.BoolVar(&generate, "generate-registration", false, "same as -g")
	flags.BoolVar(&writeExample, "e", false, "write the example config to the -c path if it does not exist, and exit")
	flags.BoolVar(&version, "version", false, "print the version and exit")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	switch {
	case version:
		fmt.Println("daarion-matrix-bridge", bridge.Version)
		return 0
	case writeExample:
		return exitOn(writeExampleConfig(configPath))
	case generate:
		return exitOn(generateRegistration(configPath, registrationPath))
	}
	return exitOn(serve(configPath))
}

func exitOn(err error) int {
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	return 0
}

func writeExampleConfig(path string) error {
	err := os.WriteFile(path, []byte(matrixbridge.ExampleConfig), 0o600)
	if err == nil {
		fmt.Println("Wrote", path)
	}
	return err
}

func generateRegistration(configPath, registrationPath string) error {
	if _, err := os.Stat(configPath); errors.Is(err, fs.ErrNotExist) {
		if err = writeExampleConfig(configPath); err != nil {
			return err
		}
	}
	if wrote, err := config.EnsureTokens(configPath); err != nil {
		return err
	} else if wrote {
		fmt.Println("Generated as_token and hs_token in", configPath)
	}
	cfg, err := config.Load(configPath, os.Getenv)
	if err != nil {
		return err
	}
	data, err := registration.Render(matrixbridge.RegistrationTemplate, registration.ValuesFromConfig(cfg))
	if err != nil {
		return err
	}
	if err = os.WriteFile(registrationPath, data, 0o600); err != nil {
		return fmt.Errorf("failed to write registration: %w", err)
	}
	fmt.Println("Wrote", registrationPath, "- add it to the homeserver's app_service_config_files")
	return nil
}

func serve(configPath string) error {
	cfg, err := config.Load(configPath, os.Getenv)
	if err != nil {
		return err
	}
	if cfg.AppService.ASToken == "" || cfg.AppService.HSToken == "" {
		return errors.New("appservice.as_token and appservice.hs_token are empty: run `bridge -g -c " + configPath + "` first")
	}
	log, err := logging.New(cfg.Logging.Level, cfg.Logging.Format, os.Stdout)
	if err != nil {
		return err
	}
	log.Info().Str("version", bridge.Version).Msg("Starting DAARION Matrix bridge")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	br, err := bridge.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	startErr := br.Start(ctx)
	if startErr == nil {
		<-ctx.Done()
		log.Info().Msg("Shutting down")
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err = br.Stop(shutdownCtx); err != nil {
		log.Err(err).Msg("Shutdown was not clean")
	}
	if startErr != nil {
		return startErr
	}
	log.Info().Msg("Stopped")
	return err
}
