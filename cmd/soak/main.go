// Command soak is the chaos soak behind `make soak`: the bridge binary (built
// here and run as a child process), the pinned Dendrite, a throwaway
// PostgreSQL cluster, an in-process NATS JetStream server and a signed
// webhook receiver subscribed to "*", under steady load from humans (real
// Matrix clients) and agents (the internal API, with Idempotency-Key),
// while faults are injected at random moments drawn from a seed: SIGKILL of
// the bridge, homeserver stop, webhook receiver answering 500, NATS
// restart, PostgreSQL stop. At the end it drains and checks that every
// produced message is in the log once and reached both sinks, in per-room
// log order.
//
//	go run ./cmd/soak -duration 10m [-seed N]
//
// Exit status: 0 pass, 1 a guarantee failed (lost, out of order, duplicated
// events), 2 the rig failed. See docs/reliability.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

func main() {
	o := defaultOptions()
	flag.DurationVar(&o.Duration, "duration", o.Duration, "how long the load and the chaos run")
	flag.Uint64Var(&o.Seed, "seed", 0, "seed of the chaos plan (0: pick one; it is printed)")
	flag.IntVar(&o.Humans, "humans", o.Humans, "humans on the homeserver posting")
	flag.IntVar(&o.Agents, "agents", o.Agents, "agents posting through the internal API")
	flag.IntVar(&o.Rooms, "rooms", o.Rooms, "city rooms")
	flag.Float64Var(&o.Rate, "rate", o.Rate, "messages per second, all producers together")
	flag.DurationVar(&o.Warmup, "warmup", o.Warmup, "load before the first fault")
	flag.DurationVar(&o.GapMin, "gap-min", o.GapMin, "shortest pause between two faults")
	flag.DurationVar(&o.GapMax, "gap-max", o.GapMax, "longest pause between two faults")
	flag.DurationVar(&o.FaultMin, "fault-min", o.FaultMin, "shortest fault")
	flag.DurationVar(&o.FaultMax, "fault-max", o.FaultMax, "longest fault")
	flag.IntVar(&o.MaxFaults, "max-faults", o.MaxFaults, "at most this many faults (0: no limit)")
	flag.DurationVar(&o.Drain, "drain", o.Drain, "longest wait for the sinks after the load")
	flag.DurationVar(&o.MsgTimeout, "msg-timeout", o.MsgTimeout, "a message unsent after this long is abandoned")
	flag.DurationVar(&o.Progress, "progress", o.Progress, "interval of progress lines")
	flag.StringVar(&o.Dir, "dir", "", "work directory (default: a new temporary directory, removed when the soak passes)")
	flag.BoolVar(&o.Keep, "keep", false, "keep the work directory even when the soak passes")
	flag.StringVar(&o.BridgeBin, "bridge-bin", "", "use this bridge binary instead of building one")
	flag.StringVar(&o.DendriteBin, "dendrite-bin", "", "Dendrite binary (default: bin/dendrite, built when missing)")
	flag.StringVar(&o.LogLevel, "log-level", o.LogLevel, "the bridge's log level")
	kinds := flag.String("faults", strings.Join(faultKinds, ","), "fault kinds to inject, comma-separated")
	flag.Parse()
	for _, k := range strings.Split(*kinds, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains(faultKinds, k) {
			fmt.Fprintf(os.Stderr, "soak: unknown fault kind %q (known: %s)\n", k, strings.Join(faultKinds, ", "))
			os.Exit(2)
		}
		o.Kinds = append(o.Kinds, k)
	}
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	rep.print(os.Stdout)
	if !rep.ok() {
		os.Exit(1)
	}
}

func (o options) validate() error {
	switch {
	case o.Duration <= 0:
		return fmt.Errorf("-duration must be positive")
	case o.Humans < 0 || o.Agents < 0 || o.Humans+o.Agents == 0:
		return fmt.Errorf("need at least one human or agent")
	case o.Rooms < 1:
		return fmt.Errorf("-rooms must be at least 1")
	case o.Rate <= 0:
		return fmt.Errorf("-rate must be positive")
	case o.FaultMin <= 0 || o.FaultMax < o.FaultMin || o.GapMin < 0 || o.GapMax < o.GapMin:
		return fmt.Errorf("fault and gap bounds must be positive and min ≤ max")
	case o.Drain <= 0 || o.MsgTimeout <= 0 || o.Progress <= 0:
		return fmt.Errorf("-drain, -msg-timeout and -progress must be positive")
	}
	return nil
}
