package config

import "time"

// Reconcile configures gap repair: the bridge compares each city room's
// recent timeline (/messages as the bot) with the event log and stores
// what the log lacks, so it is delivered like any other event. Durations
// such as 30s; "0" turns that trigger off.
type Reconcile struct {
	// Window: how many of a room's newest events are compared (at most
	// 1000; one /messages page up to 100).
	Window int `yaml:"window"`
	// AfterStart: how long after a process becomes the leader it
	// reconciles the city, time for the homeserver to replay what it held
	// back while the bridge was away.
	AfterStart Duration `yaml:"after_start"`
	// Interval: a reconcile of the city this often as well (0: only on the
	// other triggers).
	Interval Duration `yaml:"interval"`
	// OnTransactionGap: reconcile when the transaction ids of a Synapse
	// skip a number (Synapse can leave a transaction unsent when the bridge
	// comes back; see docs/homeservers.md).
	OnTransactionGap bool `yaml:"on_transaction_gap"`
	// MinInterval: the least time between two automatic reconciles (the
	// bot's reconcile command is not held back).
	MinInterval Duration `yaml:"min_interval"`
	// Concurrency: how many rooms are compared at once.
	Concurrency int `yaml:"concurrency"`
}

// MaxReconcileWindow bounds reconcile.window.
const MaxReconcileWindow = 1000

func defaultReconcile() Reconcile {
	return Reconcile{Window: 50, AfterStart: NewDuration("30s"), Interval: NewDuration("1h"),
		OnTransactionGap: true, MinInterval: NewDuration("1m"), Concurrency: 4}
}

// Durations of the reconcile keys (validated; empty is the default).
func (r Reconcile) AfterStartFor() time.Duration {
	return orDefault(r.AfterStart, defaultReconcile().AfterStart)
}
func (r Reconcile) Every() time.Duration { return orDefault(r.Interval, defaultReconcile().Interval) }
func (r Reconcile) MinIntervalFor() time.Duration {
	return orDefault(r.MinInterval, defaultReconcile().MinInterval)
}

func (r Reconcile) validate(fail func(key, format string, args ...any)) {
	if r.Window < 1 || r.Window > MaxReconcileWindow {
		fail("reconcile.window", "must be between 1 and %d events, got %d", MaxReconcileWindow, r.Window)
	}
	if r.Concurrency < 1 || r.Concurrency > 64 {
		fail("reconcile.concurrency", "must be between 1 and 64, got %d", r.Concurrency)
	}
	for _, k := range []struct {
		key   string
		value Duration
	}{
		{"reconcile.after_start", r.AfterStart}, {"reconcile.interval", r.Interval},
		{"reconcile.min_interval", r.MinInterval},
	} {
		if k.value.String() != "" && (!k.value.Valid() || k.value.Duration < 0) {
			fail(k.key, "must be a duration such as 30s (0 turns it off), got %q", k.value)
		}
	}
}
