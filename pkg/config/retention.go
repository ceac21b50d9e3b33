package config

import "time"

// Retention says how long the bridge keeps what it no longer needs, so that
// no table grows for ever. Durations such as 168h; "0" keeps for ever.
type Retention struct {
	// Events: an event is deleted from the log this long after it was
	// received, once every consumer has passed it. A sync since older than
	// what is kept is answered 400 (start again without since).
	Events string `yaml:"events"`
	// Transactions: the record of a transaction id (retries, counts).
	Transactions string `yaml:"transactions"`
	// Sent: the record of an event the bridge sent, and a completed
	// Idempotency-Key (a retry after this long sends again).
	Sent string `yaml:"sent"`
	// DeadLetters: a webhook dead letter not redelivered.
	DeadLetters string `yaml:"dead_letters"`
	// Interval: how often the leader prunes.
	Interval string `yaml:"interval"`
}

func defaultRetention() Retention {
	return Retention{Events: "168h", Transactions: "168h", Sent: "720h", DeadLetters: "720h", Interval: "10m"}
}

// Durations of the retention keys (validated; empty is the default); 0
// keeps for ever.
func (r Retention) EventsFor() time.Duration { return orDefault(r.Events, defaultRetention().Events) }
func (r Retention) TransactionsFor() time.Duration {
	return orDefault(r.Transactions, defaultRetention().Transactions)
}
func (r Retention) SentFor() time.Duration { return orDefault(r.Sent, defaultRetention().Sent) }
func (r Retention) DeadLettersFor() time.Duration {
	return orDefault(r.DeadLetters, defaultRetention().DeadLetters)
}
func (r Retention) Every() time.Duration { return orDefault(r.Interval, defaultRetention().Interval) }

func orDefault(s, def string) time.Duration {
	if s == "" {
		s = def
	}
	d, _ := time.ParseDuration(s)
	return d
}

func (r Retention) validate(fail func(key, format string, args ...any)) {
	for _, k := range []struct{ key, value string }{
		{"retention.events", r.Events}, {"retention.transactions", r.Transactions},
		{"retention.sent", r.Sent}, {"retention.dead_letters", r.DeadLetters},
	} {
		if k.value == "" {
			continue
		}
		if d, err := time.ParseDuration(k.value); err != nil || d < 0 {
			fail(k.key, "must be a duration such as 168h (0 keeps for ever), got %q", k.value)
		}
	}
	if d, err := time.ParseDuration(r.Interval); r.Interval != "" && (err != nil || d < time.Second) {
		fail("retention.interval", "must be a duration of at least 1s such as 10m, got %q", r.Interval)
	}
}
