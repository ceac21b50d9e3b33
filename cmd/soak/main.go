// Command soak is the chaos soak behind `make soak`: two bridge processes
// (built here and run as child processes, one leading, one standby, behind
// a front door the homeserver and the agents talk to), the pinned Dendrite,
// a throwaway PostgreSQL cluster, an in-process NATS JetStream server and
// two signed webhook receivers subscribed to "*" (one normal, one slow),
// under steady load from humans (real Matrix clients) and agents (the
// internal API, with Idempotency-Key), while faults are injected at random
// moments drawn from a seed: SIGKILL of a bridge process, homeserver stop,
// webhook receiver answering 500, NATS restart, PostgreSQL stop, SIGSTOP of
// the leader past its lease, a poison event, a flood of invites of unknown
// agents. At the end it drains and checks that every produced message is in
// the log once and reached every sink, in per-room log order; that only the
// poison events were parked; that the floods registered nothing; and that
// every frozen leader was replaced within 15 s and wrote nothing after.
//
//	go run ./cmd/soak -duration 10m [-seed N]
//
// Exit status: 0 pass, 1 a guarantee failed (lost, out of order, parked
// other than the poison, a flood registration, a late or writing frozen
// leader), 2 the rig failed. See docs/reliability.md.
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
	"time"
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
	flag.DurationVar(&o.FinishPlan, "finish-plan", o.FinishPlan, "when the load time is over with planned faults still to come, go on for at most this long to finish them (0: drop them)")
	flag.DurationVar(&o.MsgTimeout, "msg-timeout", o.MsgTimeout, "a message unsent after this long is abandoned")
	flag.DurationVar(&o.Progress, "progress", o.Progress, "interval of progress lines")
	flag.StringVar(&o.Dir, "dir", "", "work directory (default: a new temporary directory, removed when the soak passes)")
	flag.BoolVar(&o.Keep, "keep", false, "keep the work directory even when the soak passes")
	flag.StringVar(&o.BridgeBin, "bridge-bin", "", "use this bridge binary instead of building one")
	flag.StringVar(&o.DendriteBin, "dendrite-bin", "", "Dendrite binary (default: bin/dendrite, built when missing)")
	flag.StringVar(&o.LogLevel, "log-level", o.LogLevel, "the bridge's log level")
	flag.IntVar(&o.FloodInvites, "flood-invites", o.FloodInvites, "unknown agents one invite-flood fault invites")
	flag.StringVar(&o.Poison, "poison", o.Poison, "poison event: private (a tombstone naming a private room the bot may not join) or missing (naming a room that does not exist)")
	flag.IntVar(&o.SlowEvery, "slow-every", o.SlowEvery, "the slow \"*\" receiver holds the first request of every n-th DTO past the attempt timeout (0: no slow receiver)")
	flag.DurationVar(&o.WebhookTimeout, "webhook-timeout", o.WebhookTimeout, "the bridge's webhook attempt timeout (delivery.webhook_timeout_ms)")
	flag.IntVar(&o.WebhookWorkers, "webhook-workers", o.WebhookWorkers, "the bridge's delivery.webhook_workers")
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
	case o.Drain <= 0 || o.MsgTimeout <= 0 || o.Progress <= 0 || o.FinishPlan < 0:
		return fmt.Errorf("-drain, -msg-timeout and -progress must be positive, -finish-plan 0 or more")
	case o.Poison != poisonPrivate && o.Poison != poisonMissing:
		return fmt.Errorf("-poison must be %s or %s", poisonPrivate, poisonMissing)
	case o.FloodInvites < 1 || o.SlowEvery < 0 || o.WebhookTimeout < time.Millisecond || o.WebhookWorkers < 1 || o.WebhookWorkers > 256:
		return fmt.Errorf("-flood-invites must be positive, -slow-every 0 or more, -webhook-timeout at least 1ms, -webhook-workers 1-256")
	}
	return nil
}
